//! The change set of an install against what is under the root, and applying it with an
//! undo log: every file replaced or removed is kept in memory, every file and directory
//! created is remembered, so a failure at any later step (a validator, a write) puts the
//! root back byte for byte. Does not own: what the files are (`layout`) or checking them
//! (`host`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::layout::{Content, Entry, under};
use super::manifest::{Manifest, Recorded};
use crate::printer::hinted;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Replace,
    Unchanged,
    Remove,
}

/// One path and what install does to it.
#[derive(Debug, Clone)]
pub struct Change {
    /// Absolute, as on the host.
    pub path: PathBuf,
    pub action: Action,
    /// What it will hold (`None` when removed).
    pub new: Option<Content>,
}

/// What `entries` change under `root`, given the app's manifest `old`. Refuses, naming
/// them, to replace paths install did not place (or that changed since) unless `force`.
/// Paths of `old` no longer rendered are removed when unchanged; `kept` lists those changed
/// by hand, which stay.
pub fn changes(
    root: &Path,
    entries: &[Entry],
    old: Option<&Manifest>,
    force: bool,
) -> anyhow::Result<(Vec<Change>, Vec<PathBuf>)> {
    let mut out = Vec::new();
    let mut foreign = Vec::new();
    for e in entries {
        let now = Recorded::on_disk(&under(root, &e.path))?;
        let new = Recorded::of(&e.content);
        let action = match now {
            None => Action::Create,
            Some(r) if r == new => Action::Unchanged,
            Some(r) => {
                if old.and_then(|m| m.files.get(&e.path)) != Some(&r) {
                    foreign.push(e.path.display().to_string());
                }
                Action::Replace
            }
        };
        out.push(Change {
            path: e.path.clone(),
            action,
            new: Some(e.content.clone()),
        });
    }
    if !foreign.is_empty() && !force {
        return Err(hinted(
            format!(
                "refusing to replace {}: install did not place {} (or it was changed since)",
                foreign.join(", "),
                if foreign.len() == 1 { "it" } else { "them" }
            ),
            "move it away, or pass `--force` to replace it (the old contents are not kept)",
        ));
    }
    let mut kept = Vec::new();
    if let Some(old) = old {
        for (path, recorded) in &old.files {
            if entries.iter().any(|e| &e.path == path) {
                continue;
            }
            match Recorded::on_disk(&under(root, path))? {
                None => {}
                Some(r) if &r == recorded => out.push(Change {
                    path: path.clone(),
                    action: Action::Remove,
                    new: None,
                }),
                Some(_) => kept.push(path.clone()),
            }
        }
    }
    Ok((out, kept))
}

/// A unified diff of `changes` against what is under `root` (links shown as `-> TARGET`).
pub fn diff(root: &Path, changes: &[Change]) -> String {
    let mut out = String::new();
    for c in changes {
        if c.action == Action::Unchanged {
            continue;
        }
        let old = match c.action {
            Action::Create => None,
            _ => Some(shown(&under(root, &c.path))),
        };
        let new = c.new.as_ref().map(|n| match n {
            Content::File { text, .. } => text.clone(),
            Content::Link(t) => format!("-> {}\n", t.display()),
        });
        let p = c.path.display();
        let (a, b) = (
            old.as_ref().map_or("/dev/null".to_string(), |_| format!("a{p}")),
            new.as_ref().map_or("/dev/null".to_string(), |_| format!("b{p}")),
        );
        let (old, new) = (old.unwrap_or_default(), new.unwrap_or_default());
        let d = similar::TextDiff::from_lines(&old, &new);
        let _ = write!(out, "{}", d.unified_diff().context_radius(3).header(&a, &b));
    }
    out
}

fn shown(path: &Path) -> String {
    match std::fs::read_link(path) {
        Ok(t) => format!("-> {}\n", t.display()),
        Err(_) => std::fs::read_to_string(path).unwrap_or_else(|_| "(not text)\n".into()),
    }
}

/// What was under the root before, to put back.
#[derive(Debug)]
enum Undo {
    /// A file or link install created.
    Created(PathBuf),
    /// A directory install created (removed when empty).
    Dir(PathBuf),
    /// A file replaced or removed: its bytes and mode.
    File(PathBuf, Vec<u8>, u32),
    /// A link replaced or removed.
    Link(PathBuf, PathBuf),
}

/// The undo log of one install or uninstall.
#[derive(Debug, Default)]
pub struct Transaction {
    log: Vec<Undo>,
}

impl Transaction {
    /// Applies `changes` under `root`; on an error, rolls back what it did so far.
    pub fn apply(&mut self, root: &Path, changes: &[Change]) -> anyhow::Result<()> {
        for c in changes {
            let r = match (&c.action, &c.new) {
                (Action::Unchanged, _) => Ok(()),
                (Action::Remove, _) | (_, None) => self.remove(&under(root, &c.path)),
                (Action::Create | Action::Replace, Some(new)) => self.place(&under(root, &c.path), new),
            };
            if let Err(e) = r {
                self.rollback();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes `new` at `path`, through a temporary file renamed into place.
    pub fn place(&mut self, path: &Path, new: &Content) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let parent = path.parent().context("a path without a parent")?;
        self.create_dirs(parent)?;
        self.save(path)?;
        match new {
            Content::File { text, mode } => {
                let mut tmp = tempfile::Builder::new()
                    .prefix(".deployctl-")
                    .tempfile_in(parent)
                    .with_context(|| format!("cannot write in {}", parent.display()))?;
                std::io::Write::write_all(&mut tmp, text.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(*mode))?;
                tmp.persist(path)
                    .map_err(|e| e.error)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Content::Link(target) => {
                remove_path(path)?;
                std::os::unix::fs::symlink(target, path)
                    .with_context(|| format!("cannot create the link {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// Removes the file or link at `path`, keeping it to restore.
    pub fn remove(&mut self, path: &Path) -> anyhow::Result<()> {
        self.save(path)?;
        remove_path(path)
    }

    /// Removes the directories `dirs` (deepest first) when they are empty.
    pub fn remove_empty_dirs(&mut self, dirs: &[PathBuf]) {
        for d in dirs {
            if std::fs::remove_dir(d).is_ok() {
                self.log.push(Undo::Dir(d.clone()));
            }
        }
    }

    fn save(&mut self, path: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.log.push(Undo::Created(path.to_path_buf())),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            Ok(m) if m.file_type().is_symlink() => {
                self.log.push(Undo::Link(path.to_path_buf(), std::fs::read_link(path)?));
            }
            Ok(m) => {
                let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
                self.log
                    .push(Undo::File(path.to_path_buf(), bytes, m.permissions().mode() & 0o7777));
            }
        }
        Ok(())
    }

    fn create_dirs(&mut self, dir: &Path) -> anyhow::Result<()> {
        let mut missing = Vec::new();
        let mut d = Some(dir);
        while let Some(p) = d {
            if p.exists() {
                break;
            }
            missing.push(p.to_path_buf());
            d = p.parent();
        }
        for p in missing.into_iter().rev() {
            std::fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
            self.log.push(Undo::Dir(p));
        }
        Ok(())
    }

    /// Creates `dir` and its missing parents, remembered for the rollback.
    pub fn ensure_dir(&mut self, dir: &Path) -> anyhow::Result<()> {
        self.create_dirs(dir)
    }

    /// Puts back everything this transaction changed, newest first. Best effort: every step
    /// is tried.
    pub fn rollback(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        while let Some(u) = self.log.pop() {
            match u {
                Undo::Created(p) => {
                    let _ = remove_path(&p);
                }
                Undo::Dir(p) => {
                    if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                        let _ = std::fs::remove_dir(&p);
                    } else {
                        let _ = std::fs::create_dir(&p);
                    }
                }
                Undo::File(p, bytes, mode) => {
                    let _ = remove_path(&p);
                    if std::fs::write(&p, bytes).is_ok() {
                        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode));
                    }
                }
                Undo::Link(p, target) => {
                    let _ = remove_path(&p);
                    let _ = std::os::unix::fs::symlink(target, &p);
                }
            }
        }
    }
}

fn remove_path(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}
