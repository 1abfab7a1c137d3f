//! Problems found in a `deploy.toml`, each pointing at a byte span of the source.
//!
//! Owns: turning a span into `file:line:column` and the dotted key it belongs to, and the
//! report format. A report lists every problem found, not just the first.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub span: Range<usize>,
    /// The dotted key, when the caller knows it better than the source does.
    pub key: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(span: Range<usize>, key: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            span,
            key: Some(key.into()),
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Every problem in one file, with the source kept to compute positions.
#[derive(Debug)]
pub struct SpecError {
    pub path: PathBuf,
    pub source: String,
    pub diagnostics: Vec<Diagnostic>,
}

/// A resolved position of a diagnostic.
#[derive(Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
    pub key: String,
}

impl SpecError {
    pub fn position(&self, d: &Diagnostic) -> Position {
        let (line, column) = line_column(&self.source, d.span.start);
        let key = d.key.clone().unwrap_or_else(|| key_at(&self.source, d.span.start));
        Position { line, column, key }
    }
}

impl std::error::Error for SpecError {}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        let file = display_path(&self.path);
        if n == 1 {
            write!(f, "{file} has a problem")?;
        } else {
            write!(f, "{file} has {n} problems")?;
        }
        for d in &self.diagnostics {
            let p = self.position(d);
            write!(f, "\n  --> {file}:{}:{}: `{}`: {}", p.line, p.column, p.key, d.message)?;
            if let Some(line) = self.source.lines().nth(p.line.saturating_sub(1)) {
                write!(f, "\n      | {}", line.trim_end())?;
            }
            if let Some(hint) = &d.hint {
                write!(f, "\n      hint: {hint}")?;
            }
        }
        Ok(())
    }
}

/// Paths under the current directory print relative, others absolute.
pub fn display_path(path: &Path) -> String {
    match std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
    {
        Some(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => path.display().to_string(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..floor_char_boundary(source, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The dotted key written at (or around) a byte offset: the last table header above it
/// joined with the key on its line, e.g. `server.listen`. Used for parse errors, where
/// serde reports a span but no path.
pub fn key_at(source: &str, offset: usize) -> String {
    let offset = floor_char_boundary(source, offset.min(source.len()));
    let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[offset..].find('\n').map_or(source.len(), |i| offset + i);
    let line = source[line_start..line_end].trim();
    let table = source[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(header_name);
    if line.starts_with('[') {
        return header_name(line);
    }
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .unwrap_or("");
    match (table, key.is_empty()) {
        (Some(t), false) => format!("{t}.{key}"),
        (Some(t), true) => t,
        (None, false) => key.to_string(),
        (None, true) => "(top level)".to_string(),
    }
}

fn header_name(line: &str) -> String {
    let inner = line.split('#').next().unwrap_or(line).trim();
    inner.trim_start_matches('[').trim_end_matches(']').trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_keys() {
        let src = "[app]\nentry = \"x\"\n\n[server]\nlisten = \"bad\"\n";
        let at = src.find("\"bad\"").unwrap();
        assert_eq!(line_column(src, at), (5, 10));
        assert_eq!(key_at(src, at), "server.listen");
        assert_eq!(key_at(src, src.find("[server]").unwrap()), "server");
    }

    #[test]
    fn array_of_tables_header() {
        let src = "[[static]]\nurl = 3\n";
        assert_eq!(key_at(src, src.find('3').unwrap()), "static.url");
    }
}
