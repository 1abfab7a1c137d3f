//! A rendered set of files held in memory, and the ways it meets the disk: an atomic
//! replace of the output directory, a drift diff, and a plain listing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub text: String,
    pub mode: u32,
}

/// Relative path → file. Sorted, so every listing and diff is deterministic.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileTree {
    pub files: BTreeMap<String, RenderedFile>,
}

impl FileTree {
    pub fn insert(&mut self, path: String, text: String, mode: u32) {
        self.files.insert(path, RenderedFile { text, mode });
    }

    pub fn get(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(|f| f.text.as_str())
    }

    /// Writes every file under `dir`, which must exist.
    pub fn write_into(&self, dir: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for (rel, file) in &self.files {
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(&path, &file.text).with_context(|| format!("cannot write {}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))?;
        }
        Ok(())
    }

    /// Replaces `out` with exactly these files, or leaves it as it was.
    ///
    /// The files are written to a sibling staging directory first; only when all of them are
    /// on disk is the old directory moved aside and the new one renamed into place (two
    /// renames in the same parent directory, so a reader never sees a half-written set).
    pub fn write_atomic(&self, out: &Path) -> anyhow::Result<()> {
        let parent = out.parent().context("the output directory has no parent")?;
        let base = out
            .file_name()
            .and_then(|n| n.to_str())
            .context("the output directory has no name")?;
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{base}.new-"))
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a staging directory in {}", parent.display()))?;
        self.write_into(staging.path())?;
        let staged = staging.keep();
        if out.exists() {
            let old = tempfile::Builder::new()
                .prefix(&format!(".{base}.old-"))
                .tempdir_in(parent)?
                .keep();
            std::fs::remove_dir(&old)?;
            std::fs::rename(out, &old).with_context(|| format!("cannot move {} aside", out.display()))?;
            if let Err(e) = std::fs::rename(&staged, out) {
                let _ = std::fs::rename(&old, out);
                let _ = std::fs::remove_dir_all(&staged);
                return Err(e).with_context(|| format!("cannot move the new files into {}", out.display()));
            }
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("cannot remove the previous files in {}", old.display()))?;
        } else {
            std::fs::rename(&staged, out)
                .with_context(|| format!("cannot move the new files into {}", out.display()))?;
        }
        Ok(())
    }

    /// A unified diff of `dir` on disk against this tree, or `None` when they match.
    /// Files on disk that this tree does not have count as drift too.
    pub fn diff_against(&self, dir: &Path) -> anyhow::Result<Option<String>> {
        let on_disk = FileTree::read(dir)?;
        let mut out = String::new();
        let names: std::collections::BTreeSet<&String> = self.files.keys().chain(on_disk.files.keys()).collect();
        for name in names {
            let old = on_disk.get(name).unwrap_or("");
            let new = self.get(name).unwrap_or("");
            if on_disk.files.contains_key(name) && self.files.contains_key(name) && old == new {
                continue;
            }
            let old_name = if on_disk.files.contains_key(name) {
                format!("a/{name}")
            } else {
                "/dev/null".into()
            };
            let new_name = if self.files.contains_key(name) {
                format!("b/{name}")
            } else {
                "/dev/null".into()
            };
            let diff = similar::TextDiff::from_lines(old, new);
            let _ = write!(
                out,
                "{}",
                diff.unified_diff().context_radius(3).header(&old_name, &new_name)
            );
        }
        Ok(if out.is_empty() { None } else { Some(out) })
    }

    /// Reads every file under `dir` (missing dir: empty tree).
    pub fn read(dir: &Path) -> anyhow::Result<FileTree> {
        use std::os::unix::fs::PermissionsExt;
        let mut tree = FileTree::default();
        if !dir.exists() {
            return Ok(tree);
        }
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
                let path = e?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(dir) {
                    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| String::from("(not text)"));
                    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o7777;
                    tree.insert(rel.to_string_lossy().into_owned(), text, mode);
                }
            }
        }
        Ok(tree)
    }

    /// Every file with a header line, for `--stdout` and snapshots.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        for (name, file) in &self.files {
            let _ = writeln!(out, "# ==> {name} <==");
            out.push_str(&file.text);
            if !file.text.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }
}
