//! Parse errors of `deploy.toml` in plain words.
//!
//! Owns: turning what the TOML parser and serde say ("invalid type: string \"two\", expected
//! i64", "invalid float, expected `nan`") into what a user can act on ("expected a whole
//! number, found the string \"two\""; "text values need quotes" with the quoted line as a
//! hint). Works on the message and the source line only; knows nothing of the spec's keys
//! beyond what the parser reports.

use std::ops::Range;

use super::diag::Diagnostic;

/// A parser error at `span` of `source`, rewritten; `None` for the key is filled in later
/// from the source position.
pub fn diagnostic(source: &str, span: Range<usize>, message: &str) -> Diagnostic {
    let message = message.trim();
    if let Some(d) = unquoted(source, &span, message) {
        return d;
    }
    let (message, hint) = if let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    {
        match rest.rsplit_once(", expected ") {
            Some((found, expected)) => (
                format!("expected {}, found {}", expected_words(expected), found_words(found)),
                None,
            ),
            None => (message.to_string(), None),
        }
    } else if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        (
            format!("the required key `{field}` is missing"),
            Some(match field {
                "entry" => "add the WSGI callable, e.g. entry = \"app:app\" (`deployctl init` detects it)".to_string(),
                _ => format!("add `{field} = …` to this table"),
            }),
        )
    } else if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|k| !k.is_empty())
            .collect();
        let hint = match closest(field, &known) {
            Some(k) => format!("did you mean `{k}`?"),
            None if known.is_empty() => "see the `deploy.toml` reference in README.md".to_string(),
            None => format!(
                "this table takes: {}; see the `deploy.toml` reference in README.md",
                known.join(", ")
            ),
        };
        let header = source[..span.start.min(source.len())]
            .rsplit('\n')
            .next()
            .is_some_and(|before| before.trim_start().starts_with('['));
        if header {
            (format!("unknown table `[{field}]`"), Some(hint))
        } else {
            (format!("unknown key `{field}`"), Some(hint))
        }
    } else if message.starts_with("a ") && !message.contains("expected") {
        // An untagged enum's `expecting` text ("a size such as \"10M\" or a number of bytes").
        (format!("expected {message}"), None)
    } else {
        (message.to_string(), None)
    };
    Diagnostic {
        span,
        key: None,
        message,
        hint,
    }
}

/// What serde expected, in words.
fn expected_words(expected: &str) -> String {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "isize" => {
            "a whole number".into()
        }
        "f32" | "f64" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a string" => "text in quotes".into(),
        "a sequence" => "a list, e.g. [\"a\", \"b\"]".into(),
        "a map" => "a table, e.g. { KEY = \"value\" }".into(),
        e if e.starts_with("struct ") => "a table".into(),
        e => e.to_string(),
    }
}

/// What serde found, in words: `string "two"` → `the text "two"`.
fn found_words(found: &str) -> String {
    let inner = |s: &str| s.trim_matches('`').to_string();
    if let Some(s) = found.strip_prefix("string ") {
        format!("the text {s}")
    } else if let Some(n) = found.strip_prefix("integer ") {
        match n.split_once(" as ") {
            Some((n, _)) => format!("{}, which is too large", inner(n)),
            None => format!("the number {}", inner(n)),
        }
    } else if let Some(n) = found.strip_prefix("floating point ") {
        format!("the decimal number {}", inner(n))
    } else if let Some(b) = found.strip_prefix("boolean ") {
        inner(b)
    } else if found == "sequence" {
        "a list".into()
    } else if found == "map" {
        "a table".into()
    } else {
        found.to_string()
    }
}

/// A bare word where TOML wants a quoted string (`kind = nginx`): the parser says "invalid
/// float" or "string values must be quoted" and may point into the middle of the value.
fn unquoted(source: &str, span: &Range<usize>, message: &str) -> Option<Diagnostic> {
    let looks_unquoted = message.starts_with("string values must be quoted")
        || message.starts_with("invalid float")
        || message.starts_with("invalid number")
        || message.starts_with("invalid integer");
    if !looks_unquoted {
        return None;
    }
    let at = span.start.min(source.len());
    let line_start = source[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[at..].find('\n').map_or(source.len(), |i| at + i);
    let line = &source[line_start..line_end];
    let (key, value) = line.split_once('=')?;
    let value_offset = line_start + key.len() + 1 + (value.len() - value.trim_start().len());
    let value = strip_comment(value).trim();
    let quoted = quote_bare(value)?;
    let what = if value.starts_with('[') {
        format!("the text in `{value}` needs quotes")
    } else {
        format!("`{value}` needs quotes")
    };
    Some(Diagnostic {
        span: value_offset..value_offset + value.len(),
        key: None,
        message: format!("{what}: text values are written in quotes in TOML"),
        hint: Some(format!("write {} = {quoted}", key.trim())),
    })
}

fn strip_comment(value: &str) -> &str {
    // Only bare values reach here, so a `#` cannot be inside a string.
    value.split('#').next().unwrap_or(value)
}

/// `nginx` → `"nginx"`; `[a, b]` → `["a", "b"]`; `None` when nothing in it is a bare word.
fn quote_bare(value: &str) -> Option<String> {
    let quote_one = |t: &str| -> (String, bool) {
        let t = t.trim();
        let literal = t.is_empty()
            || t.starts_with(['"', '\''])
            || matches!(t, "true" | "false")
            || t.parse::<f64>().is_ok()
            || t.replace('_', "").parse::<i64>().is_ok();
        if literal {
            (t.to_string(), false)
        } else {
            (format!("{t:?}"), true)
        }
    };
    if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
        let parts: Vec<(String, bool)> = inner.split(',').map(quote_one).collect();
        let any = parts.iter().any(|(_, q)| *q);
        let items: Vec<String> = parts.into_iter().map(|(s, _)| s).filter(|s| !s.is_empty()).collect();
        any.then(|| format!("[{}]", items.join(", ")))
    } else {
        let (q, bare) = quote_one(value);
        bare.then_some(q)
    }
}

/// The known key nearest to a misspelt one (at most two edits away).
fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (distance(word, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance, with a transposition counted as one edit.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(source: &str, needle: &str, message: &str) -> Diagnostic {
        let i = source.find(needle).unwrap();
        diagnostic(source, i..i + 1, message)
    }

    #[test]
    fn types_in_words() {
        let d = at(
            "threads = \"two\"\n",
            "\"two\"",
            "invalid type: string \"two\", expected i64",
        );
        assert_eq!(d.message, "expected a whole number, found the text \"two\"");
        let d = at("x = 2.5\n", "2.5", "invalid type: floating point `2.5`, expected u16");
        assert_eq!(d.message, "expected a whole number, found the decimal number 2.5");
        let d = at(
            "x = \"yes\"\n",
            "\"yes\"",
            "invalid type: string \"yes\", expected a boolean",
        );
        assert_eq!(d.message, "expected true or false, found the text \"yes\"");
        let d = at(
            "x = 99999999999999999999\n",
            "9",
            "invalid type: integer `99999999999999999999` as i128, expected i64",
        );
        assert_eq!(
            d.message,
            "expected a whole number, found 99999999999999999999, which is too large"
        );
    }

    #[test]
    fn unquoted_values_get_a_quoted_hint() {
        let src = "[frontend]\nkind = nginx # the front\n";
        let d = at(src, "ginx", "invalid float, expected `nan`");
        assert_eq!(d.hint.as_deref(), Some("write kind = \"nginx\""));
        assert_eq!(&src[d.span.clone()], "nginx");
        let src = "names = [localhost, 3]\n";
        let d = at(
            src,
            "localhost",
            "string values must be quoted, expected literal string",
        );
        assert_eq!(d.hint.as_deref(), Some("write names = [\"localhost\", 3]"));
        let src = "listen = 0.0.0.0:80\n";
        let d = at(src, ":80", "invalid float, expected nothing");
        assert_eq!(d.hint.as_deref(), Some("write listen = \"0.0.0.0:80\""));
    }

    #[test]
    fn misspelt_keys() {
        assert_eq!(closest("lsiten", &["names", "listen", "max_body"]), Some("listen"));
        assert_eq!(closest("colour", &["names", "listen"]), None);
    }
}
