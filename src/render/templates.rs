//! The template set: built into the binary, each replaceable by a user file of the same
//! relative name (`--templates DIR` or `[render].templates`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use include_dir::{Dir, include_dir};

static BUILT_IN: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");

pub struct Templates {
    tera: tera::Tera,
    /// Template names replaced from the user directory, for messages.
    pub overridden: Vec<String>,
}

impl Templates {
    /// The built-in set, with any file under `user_dir` replacing the one of the same name.
    pub fn load(user_dir: Option<&Path>) -> anyhow::Result<Templates> {
        let mut sources: Vec<(String, String)> = Vec::new();
        collect_built_in(&BUILT_IN, &mut sources);
        let mut overridden = Vec::new();
        if let Some(dir) = user_dir {
            for (name, path) in walk(dir)? {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read template {}", path.display()))?;
                match sources.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = text,
                    None => anyhow::bail!(
                        "{} does not replace a built-in template; built-in names are: {}",
                        path.display(),
                        sources.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                }
                overridden.push(name);
            }
        }
        let mut tera = tera::Tera::default();
        // Configs are not HTML: nothing is escaped by the engine; quoting is done in Rust.
        tera.autoescape_on(vec![]);
        tera.add_raw_templates(sources).map_err(tera_error)?;
        Ok(Templates { tera, overridden })
    }

    pub fn render(&self, name: &str, context: &tera::Context) -> anyhow::Result<String> {
        self.tera.render(name, context).map_err(tera_error)
    }
}

/// Tera hides the useful part of an error (an undefined variable, a syntax error) in its
/// source chain; flatten it into one message.
fn tera_error(e: tera::Error) -> anyhow::Error {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    anyhow::anyhow!(msg)
}

fn collect_built_in(dir: &Dir<'static>, out: &mut Vec<(String, String)>) {
    for f in dir.files() {
        if let Some(text) = f.contents_utf8() {
            out.push((f.path().to_string_lossy().replace('\\', "/"), text.to_string()));
        }
    }
    for d in dir.dirs() {
        collect_built_in(d, out);
    }
}

fn walk(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("cannot read template directory {}", d.display()))?;
        for e in entries {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push((rel.to_string_lossy().replace('\\', "/"), path));
            }
        }
    }
    out.sort();
    Ok(out)
}
