//! Errors as the user reads them, uv's style: `error: …`, each cause as `  Caused by: …`, then
//! `hint: …` when the fix is known.
//!
//! Owns: the error kinds that carry a hint ([`Hinted`]) or mean "called wrongly" ([`Usage`],
//! exit status 2), and the one formatting of an error chain ([`report`]), shared by the CLI's
//! printer and the embedded server. Does not own: where messages go or progress display
//! (`deployctl::printer`), nor exit codes beyond [`is_usage`].

use std::io::IsTerminal;

/// An error whose fix we know: shown as the error, then `hint: …`.
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// `error: MESSAGE` … `hint: HINT`.
pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        message: message.into(),
        hint: hint.into(),
    })
}

/// A mistake in how the command was called (an unknown target, a malformed flag value):
/// `main` exits with status 2 for it, as for clap's own usage errors.
#[derive(Debug)]
pub struct Usage {
    pub message: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Usage {}

/// A usage error: `error: MESSAGE` (and `hint: HINT`), exit status 2.
pub fn usage(message: impl Into<String>, hint: Option<String>) -> anyhow::Error {
    anyhow::Error::new(Usage {
        message: message.into(),
        hint,
    })
}

/// Whether an error is a usage error (exit status 2).
pub fn is_usage(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<Usage>())
}

/// Whether messages on stderr are coloured: it is a terminal and `NO_COLOR` is unset or empty.
pub fn stderr_color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `text` in the ANSI style `code` when `color`, as it is otherwise.
pub fn paint(color: bool, code: &str, text: &str) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// `error: …`, each cause as `  Caused by: …`, then any `hint:` (no trailing newline).
pub fn report(err: &anyhow::Error, color: bool) -> String {
    let mut out = format!("{}: {err}", paint(color, "1;31", "error"));
    for cause in err.chain().skip(1) {
        out.push_str(&format!("\n  {} {cause}", paint(color, "1", "Caused by:")));
    }
    // A `Hinted` given as context (`err.context(Hinted { … })`) is found by anyhow's own
    // downcast; one that is the error or a cause, in the chain.
    let hint = err.downcast_ref::<Hinted>().map(|h| h.hint.as_str()).or_else(|| {
        err.chain().find_map(|e| {
            e.downcast_ref::<Hinted>()
                .map(|h| h.hint.as_str())
                .or_else(|| e.downcast_ref::<Usage>().and_then(|u| u.hint.as_deref()))
        })
    });
    if let Some(h) = hint {
        out.push_str(&format!("\n{}: {h}", paint(color, "1;36", "hint")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_shows_the_chain_and_the_hint() {
        let err = hinted("the server is missing", "build it").context("starting");
        assert_eq!(
            report(&err, false),
            "error: starting\n  Caused by: the server is missing\nhint: build it"
        );
        let err = anyhow::Error::msg("inner").context(Hinted {
            message: "outer".into(),
            hint: "do this".into(),
        });
        assert!(report(&err, false).ends_with("\nhint: do this"));
        assert!(report(&usage("bad flag", None), true).starts_with("\x1b[1;31merror\x1b[0m: bad flag"));
        assert!(is_usage(&usage("x", None).context("y")));
    }
}
