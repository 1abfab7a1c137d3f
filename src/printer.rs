//! The one way messages reach the user: stderr, coloured only on a terminal without
//! `NO_COLOR`, silenced by `--quiet` except for errors. Data goes to stdout elsewhere.
//!
//! The error kinds and the format of an error chain are `deployctl_common::error` (the
//! embedded server prints its errors the same way); they are re-exported here.

use std::io::{IsTerminal, Write};

use deployctl_common::error;
pub use deployctl_common::error::{Hinted, Usage, hinted, is_usage, usage};

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub quiet: bool,
    pub color: bool,
    pub terminal: bool,
}

impl Printer {
    pub fn new(quiet: bool) -> Printer {
        let terminal = std::io::stderr().is_terminal();
        Printer {
            quiet,
            color: error::stderr_color(),
            terminal,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        error::paint(self.color, code, text)
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

    /// `error: …`, each cause as `  Caused by: …`, then any `hint:` ([`error::report`]).
    pub fn error(&self, err: &anyhow::Error) {
        let _ = writeln!(std::io::stderr(), "{}", error::report(err, self.color));
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
