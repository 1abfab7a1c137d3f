//! Checking rendered files with the real tools: nginx, gixy, Apache httpd, uWSGI, Gunicorn,
//! systemd, kubernetes-validate, cert-manager's CRD schema, docker-compose, hadolint.
//!
//! Owns: the one validation gate that `render`, `check` and `up` go through ([`gate`]): the
//! tree written to a scratch directory, every validator the plan's outputs name run on its
//! file (concurrently; `up` takes unchanged successes from its cache), one [`Report`], and
//! one policy for a tool that is not installed ([`Policy`]). Also how each tool is found and
//! run, and turning its output into a [`Verdict`].
//! Does not own: which validators apply to which file (each output of the plan says), or
//! writing the user's output directory.

pub mod apache;
mod cert_manager;
mod compose;
mod gate;
mod gixy;
mod gunicorn;
mod hadolint;
mod jobs;
mod kubernetes;
mod mod_wsgi;
pub mod nginx;
mod systemd;
mod uwsgi;

use std::path::{Path, PathBuf};

pub use gate::{Policy, Report, gate};
use jobs::Job;

use crate::plan::Plan;
use crate::render::FileTree;

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

/// What every validator gets: the plan, the tree, and where the tree was written.
pub struct Scratch<'a> {
    pub plan: &'a Plan,
    pub tree: &'a FileTree,
    pub dir: &'a Path,
}

impl Scratch<'_> {
    /// A rendered file's path under the scratch directory.
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

/// The identity of an installed tool for cache keys: its resolved path, size and modification
/// time (an upgrade or reinstall replaces the file); `missing` when it is not there.
pub fn tool_identity(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    match std::fs::metadata(&resolved) {
        Ok(m) => format!(
            "{} {} {}.{} {:o}",
            resolved.display(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.mode()
        ),
        Err(_) => format!("{} missing", path.display()),
    }
}

/// A tool found on `PATH`, or the `Missing` outcome that says how to get it.
fn find_tool(name: &str, hint: &str) -> Result<PathBuf, Outcome> {
    which::which(name).map_err(|_| Outcome::Missing { hint: hint.to_string() })
}

/// Runs a command, capturing stdout and stderr together; never fails on a non-zero exit.
/// A stop asked for (Ctrl-C during `up`) ends it and is an error.
fn run(program: &Path, args: &[&std::ffi::OsStr], env: &[(String, String)]) -> std::io::Result<(bool, String)> {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = crate::orchestrate::interrupt::output(cmd).map_err(|e| match e.downcast::<std::io::Error>() {
        Ok(io) => io,
        Err(other) => std::io::Error::other(format!("{other:#}")),
    })?;
    Ok((out.status.success(), out.text.trim().to_string()))
}

/// One tool run on one rendered file `rel` and nothing else: found on `PATH` (else the
/// `Missing` outcome with `hint`), run with the arguments `before`, the file's path and
/// `after`, its exit status and output read by `read`. Cached by the tool's identity and the file's contents.
fn one_file_job<'a>(
    s: &'a Scratch,
    rel: &str,
    validator: &'static str,
    (tool, hint): (&str, &str),
    (before, after): (&[&str], &[&str]),
    read: fn(bool, String) -> Outcome,
) -> Job<'a> {
    let tool = find_tool(tool, hint);
    let path = s.path(rel);
    let rel = rel.to_string();
    let extra = tool.as_ref().ok().map(|t| tool_identity(t));
    let mut argv: Vec<std::ffi::OsString> = before.iter().map(|a| a.into()).collect();
    argv.push(path.into_os_string());
    argv.extend(after.iter().map(|a| a.into()));
    Job::new(validator, &rel.clone(), vec![rel.clone()], extra, move || {
        let outcome = match tool {
            Ok(tool) => {
                let argv: Vec<&std::ffi::OsStr> = argv.iter().map(|a| a.as_os_str()).collect();
                run(&tool, &argv, &[]).map(|(ok, out)| read(ok, out))
            }
            Err(missing) => Ok(missing),
        };
        verdict(validator, &rel, outcome)
    })
}

/// A verdict for each file, with an I/O error running the tool reported as a failure.
fn verdict(validator: &str, subject: &str, outcome: std::io::Result<Outcome>) -> Verdict {
    Verdict {
        validator: validator.to_string(),
        subject: subject.to_string(),
        outcome: outcome.unwrap_or_else(|e| Outcome::Failed(format!("cannot run {validator}: {e}"))),
    }
}
