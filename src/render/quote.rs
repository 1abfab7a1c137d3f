//! Quoting for each config language, done in Rust so templates never have to.

/// A Python string literal. JSON string syntax is a subset of Python's.
pub fn python(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "''".into())
}

/// One systemd command-line word: `%` and `$` are specifiers and variables in
/// `ExecStart=`, so they are doubled; words with spaces or quotes are double-quoted.
pub fn systemd_word(s: &str) -> String {
    let escaped = s.replace('%', "%%").replace('$', "$$");
    if escaped.is_empty() || escaped.contains(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';')) {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}

/// One `Environment=` assignment, quoted as a whole.
pub fn systemd_env(k: &str, v: &str) -> String {
    format!(
        "\"{}={}\"",
        k,
        v.replace('%', "%%").replace('\\', "\\\\").replace('"', "\\\"")
    )
}

/// An nginx argument: quoted when it holds characters nginx's tokenizer treats specially.
pub fn nginx(s: &str) -> String {
    if s.contains(|c: char| c.is_whitespace() || matches!(c, ';' | '{' | '}' | '"' | '\'' | '$' | '#' | '\\')) {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\").replace('"', "\\\"").replace('$', "${dollar}")
        )
    } else {
        s.to_string()
    }
}

/// A uWSGI ini value: `%` starts a magic variable, so a literal one is doubled.
pub fn uwsgi(s: &str) -> String {
    s.replace('%', "%%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(python("a\"b"), r#""a\"b""#);
        assert_eq!(systemd_word("/srv/app"), "/srv/app");
        assert_eq!(systemd_word("/srv/my app"), "\"/srv/my app\"");
        assert_eq!(systemd_word("50%"), "50%%");
        assert_eq!(systemd_env("A", "x \"y\""), r#""A=x \"y\"""#);
        assert_eq!(nginx("/srv/static/"), "/srv/static/");
        assert_eq!(nginx("/srv/my static/"), "\"/srv/my static/\"");
        assert_eq!(uwsgi("100%"), "100%%");
    }
}
