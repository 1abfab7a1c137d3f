//! The one way messages reach the user: stderr, coloured only on a terminal without
//! `NO_COLOR`, silenced by `--quiet` except for errors. Data goes to stdout elsewhere.

use std::io::{IsTerminal, Write};

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub quiet: bool,
    pub color: bool,
    pub terminal: bool,
}

impl Printer {
    pub fn new(quiet: bool) -> Printer {
        let terminal = std::io::stderr().is_terminal();
        let color = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Printer { quiet, color, terminal }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A status line: `   label message`.
    pub fn status(&self, label: &str, message: &str) {
        if !self.quiet {
            let _ = writeln!(
                std::io::stderr(),
                "{} {message}",
                self.paint("1;32", &format!("{label:>12}"))
            );
        }
    }

    pub fn warn(&self, message: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr(), "{}: {message}", self.paint("1;33", "warning"));
        }
    }

    /// `error: …`, each cause as `  Caused by: …`, then any `hint:`.
    pub fn error(&self, err: &anyhow::Error) {
        let mut out = format!("{}: {err}", self.paint("1;31", "error"));
        for cause in err.chain().skip(1) {
            out.push_str(&format!("\n  {} {cause}", self.paint("1", "Caused by:")));
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
            out.push_str(&format!("\n{}: {h}", self.paint("1;36", "hint")));
        }
        let _ = writeln!(std::io::stderr(), "{out}");
    }

    /// A spinner on a terminal; a plain line otherwise.
    pub fn progress(&self, message: &str) -> Option<indicatif::ProgressBar> {
        if self.quiet {
            return None;
        }
        if self.terminal {
            let bar = indicatif::ProgressBar::new_spinner().with_message(message.to_string());
            bar.enable_steady_tick(std::time::Duration::from_millis(100));
            Some(bar)
        } else {
            let _ = writeln!(std::io::stderr(), "{message}");
            None
        }
    }
}

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
