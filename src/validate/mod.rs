//! Checking rendered files with the real tools: nginx, gixy, uWSGI, Gunicorn, systemd.
//!
//! Owns: which validators apply to a target, how each tool is found and run, and turning its
//! output into a [`Verdict`]. Works on a tree already written to a scratch directory; never
//! writes the user's output directory. A tool that is not installed is a `Missing` verdict
//! with an install hint — a failure only when the caller requires every validator.

mod gixy;
mod gunicorn;
pub mod nginx;
mod systemd;
mod uwsgi;

use std::path::{Path, PathBuf};

use crate::render::FileTree;
use crate::spec::Spec;
use crate::target::{Backend, Frontend, Target};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed; the detail says what was shown (e.g. an exposure score).
    Ok(String),
    /// The tool rejected the file; its own message.
    Failed(String),
    /// The tool is not installed; how to install it.
    Missing { hint: String },
}

#[derive(Debug, Clone)]
pub struct Verdict {
    /// The validator, as the user would run it (`nginx -t`).
    pub validator: String,
    /// The rendered file it looked at, relative to the output directory.
    pub subject: String,
    pub outcome: Outcome,
}

impl Verdict {
    pub fn is_failure(&self, require_all: bool) -> bool {
        match self.outcome {
            Outcome::Ok(_) => false,
            Outcome::Failed(_) => true,
            Outcome::Missing { .. } => require_all,
        }
    }
}

/// What every validator gets: the spec, the target, and where the tree was written.
pub struct Scratch<'a> {
    pub spec: &'a Spec,
    pub target: Target,
    pub tree: &'a FileTree,
    pub dir: &'a Path,
}

impl Scratch<'_> {
    /// Paths of rendered files whose name ends with `suffix`, under the scratch directory.
    fn files_ending(&self, suffix: &str) -> Vec<(String, PathBuf)> {
        self.tree
            .files
            .keys()
            .filter(|k| k.ends_with(suffix))
            .map(|k| (k.clone(), self.dir.join(k)))
            .collect()
    }
}

/// Runs every validator that applies to the target, in a fixed order.
pub fn run_all(s: &Scratch) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    if s.target.frontend == Frontend::Nginx {
        verdicts.extend(nginx::check(s));
        verdicts.extend(gixy::check(s));
    }
    match s.target.backend {
        Backend::Uwsgi => verdicts.extend(uwsgi::check(s)),
        Backend::Gunicorn => verdicts.extend(gunicorn::check(s)),
        Backend::Embedded | Backend::ModWsgi => {}
    }
    verdicts.extend(systemd::check(s));
    verdicts
}

/// A tool found on `PATH`, or the `Missing` outcome that says how to get it.
fn find_tool(name: &str, hint: &str) -> Result<PathBuf, Outcome> {
    which::which(name).map_err(|_| Outcome::Missing { hint: hint.to_string() })
}

/// Runs a command, capturing stdout and stderr together; never fails on a non-zero exit.
fn run(program: &Path, args: &[&std::ffi::OsStr], env: &[(String, String)]) -> std::io::Result<(bool, String)> {
    let mut cmd = duct::cmd(program, args)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .stdin_null();
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let out = cmd.run()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// A verdict for each file, with an I/O error running the tool reported as a failure.
fn verdict(validator: &str, subject: &str, outcome: std::io::Result<Outcome>) -> Verdict {
    Verdict {
        validator: validator.to_string(),
        subject: subject.to_string(),
        outcome: outcome.unwrap_or_else(|e| Outcome::Failed(format!("cannot run {validator}: {e}"))),
    }
}
