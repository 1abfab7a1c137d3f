//! Shared test helpers: a small builder for running the real `deployctl` binary, and parsers
//! for the rendered formats so tests assert on structure rather than on substrings.
#![allow(dead_code)]

pub mod builder;
pub mod containerfile;
pub mod parse;
pub mod pebble;
pub mod tls;
pub mod up;

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn example(name: &str) -> PathBuf {
    repo().join("examples").join(name)
}

/// Every example project (each directory of `examples/` with a `deploy.toml`).
pub fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("deploy.toml").is_file())
        .collect();
    v.sort();
    v
}

/// Every implemented target, in the order help texts list them.
pub const TARGETS: [&str; 11] = [
    "embedded",
    "uwsgi",
    "gunicorn",
    "nginx+embedded",
    "nginx+uwsgi",
    "nginx+gunicorn",
    "apache+mod_wsgi",
    "apache+uwsgi",
    "apache+gunicorn",
    "apache+embedded",
    "nginx+apache+mod_wsgi",
];

/// The targets `deployctl up` runs from any project directory (Apache's, whose children run
/// as www-data when `up` is root, are run by tests/up_apache.rs).
pub const UP_TARGETS: [&str; 6] = [
    "embedded",
    "uwsgi",
    "gunicorn",
    "nginx+embedded",
    "nginx+uwsgi",
    "nginx+gunicorn",
];

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn success(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn failure(self) -> Self {
        assert_eq!(
            self.code, 1,
            "expected exit 1\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// `deployctl ARGS` in `dir`, with a fixed environment (no colour, no inherited venv).
pub struct Cli {
    cmd: Command,
}

impl Cli {
    pub fn new(dir: &Path) -> Cli {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_deployctl"));
        cmd.current_dir(dir).env("NO_COLOR", "1").env_remove("VIRTUAL_ENV");
        Cli { cmd }
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, args: I) -> Cli {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Cli {
        self.cmd.env(k, v);
        self
    }

    pub fn run(mut self) -> Run {
        let out = self.cmd.output().expect("run deployctl");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Renders `target` of the project at `dir` to stdout and splits the listing into files.
pub fn render(dir: &Path, target: &str) -> std::collections::BTreeMap<String, String> {
    let run = Cli::new(dir)
        .args(["render", "--stdout", "--target", target])
        .run()
        .success();
    split_listing(&run.stdout)
}

pub fn split_listing(listing: &str) -> std::collections::BTreeMap<String, String> {
    let mut files = std::collections::BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in listing.split_inclusive('\n') {
        if let Some(name) = line
            .strip_prefix("# ==> ")
            .and_then(|l| l.trim_end().strip_suffix(" <=="))
        {
            if let Some((n, t)) = current.take() {
                files.insert(n, t);
            }
            current = Some((name.to_string(), String::new()));
        } else if let Some((_, t)) = current.as_mut() {
            t.push_str(line);
        }
    }
    if let Some((n, t)) = current {
        files.insert(n, t);
    }
    files
}

/// A scratch project: a copy of `deploy.toml` text plus the directories it names.
pub fn project(toml: &str, dirs: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for d in dirs {
        std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
    }
    std::fs::write(dir.path().join("deploy.toml"), toml).expect("write deploy.toml");
    dir
}

/// Replaces machine-specific paths so snapshots are the same on every machine. Where the
/// checkout lives (/root, /home, /tmp or elsewhere) decides `ProtectHome=` and the
/// `BindReadOnlyPaths=` lines; those are normalised here and tested in `content.rs`.
pub fn filter_paths(text: &str) -> String {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_deployctl"));
    let replaced = text
        .replace(&exe.display().to_string(), "[DEPLOYCTL]")
        .replace(&repo().display().to_string(), "[REPO]");
    replaced
        .lines()
        .filter(|l| !l.starts_with("BindReadOnlyPaths="))
        .map(|l| {
            if l.starts_with("ProtectHome=") {
                "ProtectHome=[yes or tmpfs]"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Copies the built-in template `name` to an override directory with `edit` applied.
pub fn override_dir(name: &str, edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(repo().join("templates").join(name)).unwrap();
    let edited = edit(&src);
    assert_ne!(src, edited, "the edit must change the template");
    let dest = dir.path().join(name);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(dest, edited).unwrap();
    dir
}

/// `deployctl check` of the example for `target` with the templates of `templates`, every
/// validator required.
pub fn check_with(target: &str, templates: &tempfile::TempDir) -> Run {
    Cli::new(&example("flask-hello"))
        .args(["check", "-t", target, "--templates"])
        .args([templates.path()])
        .env("DEPLOYCTL_REQUIRE_VALIDATORS", "1")
        .run()
}
