//! Validator runs as independent jobs: run concurrently, each keyed by what it reads so that
//! `up` can take an unchanged success from its cache.

use std::path::Path;

use super::{
    Outcome, Scratch, Verdict, apache, cert_manager, compose, gixy, gunicorn, hadolint, kubernetes, mod_wsgi, nginx,
    systemd, uwsgi,
};
use crate::plan::Validator;
use crate::render::FileTree;

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
    pub(super) fn new(
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

/// Every validator each output of the plan names, in the report's order: by validator, then
/// by file (`Validator`'s order is nginx, gixy, uWSGI, Gunicorn, systemd).
pub(super) fn for_plan<'a>(s: &'a Scratch) -> Vec<Job<'a>> {
    let mut pairs: Vec<(Validator, &str)> = s
        .plan
        .outputs
        .iter()
        .flat_map(|o| o.validators.iter().map(move |v| (*v, o.path.as_str())))
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(v, rel)| match v {
            Validator::NginxT => nginx::job(s, rel),
            Validator::Gixy => gixy::job(s, rel),
            Validator::ApacheT => apache::job(s, rel),
            Validator::ModWsgiPython => mod_wsgi::job(s, rel),
            Validator::UwsgiStrict => uwsgi::job(s, rel),
            Validator::GunicornCheckConfig => gunicorn::job(s, rel),
            Validator::SystemdVerify => systemd::verify(s, rel),
            Validator::SystemdSecurity => systemd::security(s, rel),
            Validator::KubernetesValidate => kubernetes::job(s, rel),
            Validator::ComposeConfig => compose::job(s, rel),
            Validator::CertManagerSchema => cert_manager::job(s, rel),
            Validator::Hadolint => hadolint::job(s, rel),
        })
        .collect()
}

/// Runs `jobs`, every one of them; the verdicts in job order.
pub(super) fn run(jobs: Vec<Job<'_>>, tree: &FileTree) -> Vec<Verdict> {
    run_jobs(jobs, None, tree, None).0
}

/// Runs `jobs`, each unchanged one since its last success recorded in `cache` taken from
/// it; records the new successes (never a failure). Returns the verdicts in job order and how
/// many came from the cache.
pub(super) fn run_cached(s: &Scratch, jobs: Vec<Job<'_>>, cache: &Path) -> (Vec<Verdict>, usize) {
    let mut known = Cache::read(cache);
    let listen = s.plan.spec.server.listen.to_string();
    let port = listen
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .filter(|p| !p.contains("443"));
    let (verdicts, hits, passed) = run_jobs(jobs, Some(&known), s.tree, port.as_deref());
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
