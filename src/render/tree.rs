//! A rendered set of files held in memory, and the ways it meets the disk: an atomic
//! replace of the output directory (which holds a manifest of what was written, so a later
//! render knows which files are its own), a drift diff, and a plain listing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};

use crate::printer::hinted;
use crate::spec::display_path;

/// The list of files a render wrote into its directory, with their SHA-256, in `sha256sum`
/// format (`cd DIR && sha256sum -c .deployctl-manifest` verifies them).
pub const MANIFEST: &str = ".deployctl-manifest";

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
        std::fs::write(staging.path().join(MANIFEST), self.manifest())
            .with_context(|| format!("cannot write {MANIFEST} in {}", staging.path().display()))?;
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

    /// `HASH  PATH` per file, sorted: the manifest [`write_atomic`](Self::write_atomic) leaves.
    pub fn manifest(&self) -> String {
        self.files
            .iter()
            .map(|(name, f)| format!("{}  {name}\n", sha256_hex(f.text.as_bytes())))
            .collect()
    }

    /// Refuses to let [`write_atomic`](Self::write_atomic) replace `out` when that would lose
    /// anything: `out` may not exist, be empty, or hold only files a render wrote (listed in its
    /// manifest, unchanged) or files identical to this tree's. Whatever the contents, `out` may
    /// not be the project directory or one of its parents. With `force`, rendered files changed
    /// by hand since may be replaced; files deployctl did not write never are.
    pub fn check_replaceable(&self, out: &Path, project: &Path, force: bool) -> anyhow::Result<()> {
        let meta = match std::fs::symlink_metadata(out) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", display_path(out))),
        };
        let shown = display_path(out);
        if meta.file_type().is_symlink() {
            return Err(hinted(
                format!("{shown} is a symbolic link; render replaces a directory and will not replace a link"),
                "pass the directory it points to (`--out DIR`)",
            ));
        }
        if !meta.is_dir() {
            return Err(hinted(
                format!("{shown} is a file, not a directory; render will not replace it"),
                "pass a new or empty directory with `--out DIR`",
            ));
        }
        let real_out = std::fs::canonicalize(out).with_context(|| format!("cannot resolve {shown}"))?;
        let real_project = std::fs::canonicalize(project).unwrap_or_else(|_| project.to_path_buf());
        if real_project.starts_with(&real_out) {
            let what = if real_project == real_out {
                "is the project directory".to_string()
            } else {
                format!("is a parent of the project directory {}", real_project.display())
            };
            return Err(hinted(
                format!(
                    "refusing to render into {}: it {what}, and render replaces the whole directory",
                    real_out.display()
                ),
                "render into a directory of its own, e.g. `--out deploy/TARGET` (the default)",
            ));
        }
        let manifest = read_manifest(&out.join(MANIFEST));
        let (mut foreign, mut changed) = (Vec::new(), Vec::new());
        for (rel, kind) in walk(out)? {
            if rel == MANIFEST {
                continue;
            }
            let ours = match kind {
                Entry::File(path) => {
                    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                    let same_as_new = self.get(&rel).is_some_and(|t| t.as_bytes() == bytes.as_slice());
                    match manifest.as_ref().and_then(|m| m.get(&rel)) {
                        _ if same_as_new => Some(true),
                        Some(hash) => Some(*hash == sha256_hex(&bytes)),
                        None => None,
                    }
                }
                Entry::Other => None,
            };
            match ours {
                Some(true) => {}
                Some(false) => changed.push(rel),
                None => foreign.push(rel),
            }
        }
        if !foreign.is_empty() {
            let why = if manifest.is_some() {
                format!("holds files deployctl did not write (not in its {MANIFEST})")
            } else {
                format!("is not empty and was not written by deployctl (it has no {MANIFEST})")
            };
            return Err(hinted(
                format!(
                    "refusing to render into {}: it {why}: {}",
                    real_out.display(),
                    list(&foreign)
                ),
                "render replaces the whole directory: move those files away, or pass a new or empty directory with `--out DIR`",
            ));
        }
        if !changed.is_empty() && !force {
            return Err(hinted(
                format!(
                    "refusing to render into {}: files rendered there were changed since: {}",
                    real_out.display(),
                    list(&changed)
                ),
                "`deployctl render --check` shows the changes; pass `--force` to replace them",
            ));
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
                } else if path == dir.join(MANIFEST) {
                    continue;
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

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A manifest's `PATH → HASH`, or `None` when there is none (or it is not one).
fn read_manifest(path: &Path) -> Option<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (hash, name) = l.split_once("  ")?;
            (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| (name.to_string(), hash.to_string()))
        })
        .collect()
}

enum Entry {
    File(PathBuf),
    /// A symbolic link, socket, device: nothing render writes.
    Other,
}

/// Every non-directory under `dir`, by relative path (empty directories hold nothing to lose).
fn walk(dir: &Path) -> anyhow::Result<Vec<(String, Entry)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let e = e?;
            let path = e.path();
            let kind = e.file_type()?;
            let rel = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().into_owned();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                out.push((rel, Entry::File(path)));
            } else {
                out.push((rel, Entry::Other));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// `a, b, c and 4 more`.
fn list(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        let _ = write!(s, " and {} more", names.len() - SHOWN);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_is_sha256sum_format_and_reads_back() {
        let mut t = FileTree::default();
        t.insert("nginx/a.conf".into(), "x\n".into(), 0o644);
        let m = t.manifest();
        assert_eq!(
            m,
            "73cb3858a687a8494ca3323053016282f3dad39d42cf62ca4e79dda2aac7d9ac  nginx/a.conf\n"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST), &m).unwrap();
        let read = read_manifest(&dir.path().join(MANIFEST)).unwrap();
        assert_eq!(read.get("nginx/a.conf").map(String::len), Some(64));
        std::fs::write(dir.path().join(MANIFEST), "not a manifest\n").unwrap();
        assert!(read_manifest(&dir.path().join(MANIFEST)).is_none());
    }
}
