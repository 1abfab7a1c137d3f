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

/// One validator run on one rendered file (or one check of it): independent of every other,
/// so they run concurrently, and keyed by what it reads so that an unchanged one can be
/// taken from the cache of the last successful run.
pub struct Job<'a> {
    /// The validator and the file, for the cache key and messages.
    pub validator: &'static str,
    pub subject: String,
    /// The rendered files it reads (relative names in the tree).
    inputs: Vec<String>,
    /// Everything else its verdict depends on: the tool's identity (its executable's path,
    /// size and modification time: any install or upgrade changes it), and what the tool
    /// reads beyond the rendered files. `None`: not cacheable.
    extra: Option<String>,
    run: Box<dyn FnOnce() -> Verdict + Send + 'a>,
}

impl<'a> Job<'a> {
    fn new(
        validator: &'static str,
        subject: &str,
        inputs: Vec<String>,
        extra: Option<String>,
        run: impl FnOnce() -> Verdict + Send + 'a,
    ) -> Job<'a> {
        Job {
            validator,
            subject: subject.to_string(),
            inputs,
            extra,
            run: Box::new(run),
        }
    }

    /// The cache key: SHA-256 of the validator, the file, the contents of its inputs and the
    /// rest it depends on.
    fn key(&self, tree: &FileTree, port: Option<&str>) -> Option<String> {
        use sha2::{Digest, Sha256};
        let extra = self.extra.as_ref()?;
        let mut h = Sha256::new();
        for part in [self.validator, self.subject.as_str(), extra.as_str()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        for name in &self.inputs {
            let text = &tree.files.get(name)?.text;
            let text = &match port {
                Some(p) => abstract_port(text, p),
                None => text.clone(),
            };
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        }
        Some(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// `text` with the listen port (`:PORT`, not followed by a digit) replaced by `:<port>`: no
/// validator judges the number — `nginx -t` binds nothing, `systemd-analyze` and Gunicorn's
/// `--check-config` neither — so a stack run on another port finds its verdicts in the cache.
/// gixy does look for `443` in `listen`: such a port is never abstracted (see the caller).
fn abstract_port(text: &str, port: &str) -> String {
    let needle = format!(":{port}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&needle) {
        let after = &rest[at + needle.len()..];
        out.push_str(&rest[..at]);
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str(&needle);
        } else {
            out.push_str(":<port>");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Every validator that applies to the target, in a fixed order.
fn jobs<'a>(s: &'a Scratch) -> Vec<Job<'a>> {
    let mut jobs = Vec::new();
    if s.target.frontend == Frontend::Nginx {
        jobs.extend(nginx::jobs(s));
        jobs.extend(gixy::jobs(s));
    }
    match s.target.backend {
        Backend::Uwsgi => jobs.extend(uwsgi::jobs(s)),
        Backend::Gunicorn => jobs.extend(gunicorn::jobs(s)),
        Backend::Embedded | Backend::ModWsgi => {}
    }
    jobs.extend(systemd::jobs(s));
    jobs
}

/// Runs every validator that applies to the target, concurrently (they are independent);
/// the verdicts come in a fixed order.
pub fn run_all(s: &Scratch) -> Vec<Verdict> {
    run_jobs(jobs(s), None, s.tree, None).0
}

/// [`run_all`], but a validator whose inputs are unchanged since its last success recorded in
/// `cache` (a file, e.g. under `up`'s run directory) is not run again: its verdict is taken
/// from the cache. Failures are never recorded. Also returns how many were cached.
pub fn run_all_cached(s: &Scratch, cache: &Path) -> (Vec<Verdict>, usize) {
    let mut known = Cache::read(cache);
    let listen = s.spec.server.listen.to_string();
    let port = listen
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .filter(|p| !p.contains("443"));
    let (verdicts, hits, passed) = run_jobs(jobs(s), Some(&known), s.tree, port.as_deref());
    if !passed.is_empty() {
        known.insert(passed);
        known.write(cache);
    }
    (verdicts, hits)
}

/// At most this many cached verdicts are kept (the oldest go first).
const CACHE_ENTRIES: usize = 256;

/// Successful verdicts by key: `{"entries": [[key, detail], …]}`, oldest first.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Cache {
    entries: Vec<(String, String)>,
}

impl Cache {
    fn read(path: &Path) -> Cache {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, d)| d.as_str())
    }

    fn insert(&mut self, new: Vec<(String, String)>) {
        self.entries.retain(|(k, _)| !new.iter().any(|(n, _)| n == k));
        self.entries.extend(new);
        let excess = self.entries.len().saturating_sub(CACHE_ENTRIES);
        self.entries.drain(..excess);
    }

    /// Best effort: a cache that cannot be written only costs the next run its time.
    fn write(&self, path: &Path) {
        let tmp = path.with_extension("tmp");
        if let Ok(bytes) = serde_json::to_vec(self)
            && std::fs::write(&tmp, bytes).is_ok()
        {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

/// Runs the jobs not found in `cache`, each on a thread of its own; returns the verdicts in
/// job order, the number of cache hits, and the keys and details of the jobs that passed.
fn run_jobs(
    jobs: Vec<Job<'_>>,
    cache: Option<&Cache>,
    tree: &FileTree,
    port: Option<&str>,
) -> (Vec<Verdict>, usize, Vec<(String, String)>) {
    let mut slots: Vec<Option<Verdict>> = Vec::new();
    let mut pending = Vec::new();
    let mut hits = 0;
    for job in jobs {
        let key = cache.and(job.key(tree, port));
        let cached = key.as_deref().and_then(|k| cache.and_then(|c| c.get(k)));
        match cached {
            Some(detail) => {
                hits += 1;
                slots.push(Some(Verdict {
                    validator: job.validator.to_string(),
                    subject: job.subject.clone(),
                    outcome: Outcome::Ok(detail.to_string()),
                }));
            }
            None => {
                pending.push((slots.len(), key, job.run));
                slots.push(None);
            }
        }
    }
    let mut passed = Vec::new();
    let results: Vec<(usize, Option<String>, Verdict)> = std::thread::scope(|scope| {
        let handles: Vec<_> = pending
            .into_iter()
            .map(|(i, key, run)| (i, key, scope.spawn(run)))
            .collect();
        handles
            .into_iter()
            .map(|(i, key, h)| {
                let v = h.join().unwrap_or_else(|_| Verdict {
                    validator: "validator".into(),
                    subject: String::new(),
                    outcome: Outcome::Failed("the validator thread panicked".into()),
                });
                (i, key, v)
            })
            .collect()
    });
    for (i, key, v) in results {
        if let (Some(k), Outcome::Ok(detail)) = (key, &v.outcome) {
            passed.push((k, detail.clone()));
        }
        slots[i] = Some(v);
    }
    (slots.into_iter().flatten().collect(), hits, passed)
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

/// A verdict for each file, with an I/O error running the tool reported as a failure.
fn verdict(validator: &str, subject: &str, outcome: std::io::Result<Outcome>) -> Verdict {
    Verdict {
        validator: validator.to_string(),
        subject: subject.to_string(),
        outcome: outcome.unwrap_or_else(|e| Outcome::Failed(format!("cannot run {validator}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::abstract_port;

    #[test]
    fn the_listen_port_is_abstracted_only_where_it_is_the_whole_number() {
        assert_eq!(
            abstract_port("listen 127.0.0.1:8000;\nlisten [::1]:8000 x;\nproxy :80001;", "8000"),
            "listen 127.0.0.1:<port>;\nlisten [::1]:<port> x;\nproxy :80001;"
        );
    }
}
