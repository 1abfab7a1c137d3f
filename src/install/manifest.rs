//! `installed.json`: what install placed for one app, each file with its SHA-256 and each
//! link with its target, so uninstall removes exactly that and a file changed by hand since
//! is told apart. Does not own: where it is kept (`layout::manifest_path`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::layout::{self, Content};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Recorded {
    Sha256(String),
    Symlink(PathBuf),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub app: String,
    /// The project installed under this name: the absolute path of its deploy.toml. A
    /// manifest written before it was recorded has none, and is taken as the same project.
    #[serde(default)]
    pub project: Option<PathBuf>,
    pub target: String,
    /// Host path → what was placed there.
    pub files: BTreeMap<PathBuf, Recorded>,
    /// `server_name`s of the app's site with the address they listen on (`ADDR NAME`), for
    /// the conflict check between apps.
    #[serde(default)]
    pub names: Vec<String>,
    /// The listen addresses whose shared default site the app needs.
    #[serde(default)]
    pub default_listens: Vec<String>,
    /// The TLS address whose shared HTTPS catch-all the app needs, with its profile.
    #[serde(default)]
    pub default_tls: Option<layout::TlsCatchAll>,
    /// The Apache modules whose `mods-enabled/` links install made (or shares with another
    /// app that made them); a module enabled before any install is not listed, and stays.
    #[serde(default)]
    pub modules_enabled: Vec<String>,
    /// Its TCP listeners as `KIND ADDR` (`clash::listeners`), for the port check between apps.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// The loopback port install assigned its web server behind another (`ports`), kept by a
    /// reinstall; none for other targets and in a manifest written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner_web_port: Option<u16>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl Recorded {
    pub fn of(content: &Content) -> Recorded {
        match content {
            Content::File { text, .. } => Recorded::Sha256(sha256_hex(text.as_bytes())),
            Content::Link(target) => Recorded::Symlink(target.clone()),
        }
    }

    /// What is at `path` now, recorded the same way; `None` when nothing is.
    pub fn on_disk(path: &Path) -> anyhow::Result<Option<Recorded>> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(path).with_context(|| format!("cannot read {}", path.display()))?;
            return Ok(Some(Recorded::Symlink(target)));
        }
        if meta.is_dir() {
            return Ok(Some(Recorded::Sha256("(a directory)".into())));
        }
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Some(Recorded::Sha256(sha256_hex(&bytes))))
    }
}

impl Manifest {
    /// The manifest of app `name` under `root`, when one is installed.
    pub fn read(root: &Path, name: &str) -> anyhow::Result<Option<Manifest>> {
        let path = layout::under(root, &layout::manifest_path(name));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let m =
            serde_json::from_str(&text).with_context(|| format!("{} is not an install manifest", path.display()))?;
        Ok(Some(m))
    }

    /// Every app installed under `root`, by name.
    pub fn all(root: &Path) -> anyhow::Result<BTreeMap<String, Manifest>> {
        let dir = layout::under(root, Path::new(layout::STATE_ROOT));
        let mut out = BTreeMap::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        for e in entries {
            let e = e?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if let Some(m) = Manifest::read(root, &name)? {
                out.insert(name, m);
            }
        }
        Ok(out)
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}
