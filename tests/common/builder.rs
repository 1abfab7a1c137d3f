//! A test project built step by step (casey/just's `Test` builder is the model): an example
//! copied into a temporary directory, then its `deploy.toml` edited by chained calls —
//! `Project::example("flask-hello").replace(…).table("tls", …)` — each written at once, so
//! the directory is always what the test reads.
//!
//! Owns: the copy and the edits of `deploy.toml`. Does not own: running the CLI (`Cli`) or
//! reading what it rendered.

use std::path::{Path, PathBuf};

/// A copy of an example project whose `deploy.toml` the chained calls edit.
pub struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    /// `examples/NAME` copied: `deploy.toml` and every other top-level file and directory
    /// but hidden ones (the virtualenv) and `__pycache__`.
    pub fn example(name: &str) -> Project {
        let ex = super::example(name);
        let dir = tempfile::tempdir().expect("a temporary directory");
        copy_tree(&ex, dir.path(), true);
        Project { dir }
    }

    /// The project's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Its `deploy.toml`.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("deploy.toml")
    }

    /// The text of `deploy.toml` now.
    pub fn toml(&self) -> String {
        std::fs::read_to_string(self.config()).expect("read deploy.toml")
    }

    /// `deploy.toml` rewritten by `edit`.
    pub fn edit(self, edit: impl FnOnce(String) -> String) -> Project {
        let text = edit(self.toml());
        std::fs::write(self.config(), text).expect("write deploy.toml");
        self
    }

    /// Every `from` in `deploy.toml` replaced by `to`; `from` must be there (an example whose
    /// file changed fails here, not in a later assertion).
    pub fn replace(self, from: &str, to: &str) -> Project {
        self.edit(|t| {
            assert!(t.contains(from), "the example's deploy.toml has no {from:?}:\n{t}");
            t.replace(from, to)
        })
    }

    /// `text` added at the end of `deploy.toml` (into its last table).
    pub fn append(self, text: &str) -> Project {
        self.edit(|t| t + text)
    }

    /// A table `[name]` with `lines` added at the end of `deploy.toml`.
    pub fn table(self, name: &str, lines: &str) -> Project {
        self.append(&format!("\n[{name}]\n{lines}"))
    }
}

fn copy_tree(from: &Path, to: &Path, top: bool) {
    for e in std::fs::read_dir(from).expect("read the example").flatten() {
        let name = e.file_name();
        let hidden = name.to_string_lossy().starts_with('.') || name == "__pycache__";
        if top && hidden {
            continue;
        }
        let (src, dest) = (e.path(), to.join(&name));
        if src.is_dir() {
            std::fs::create_dir_all(&dest).expect("create a directory");
            copy_tree(&src, &dest, false);
        } else {
            std::fs::copy(&src, &dest).expect("copy a file");
        }
    }
}
