//! Where a production plan's files go on a Debian host, relative to the install root.
//!
//! The plan is resolved with its configuration directory at [`conf_dir`]
//! (`/etc/deployctl/NAME`), so the configs the units name are read from where they are
//! installed; the nginx site goes to `sites-available/` with its `sites-enabled/` link and
//! the units to `/etc/systemd/system/`, as the site's own header says. Does not own: the
//! names of the files (the plan's outputs).

use std::path::{Path, PathBuf};

use crate::plan::{OutputKind, Plan};
use crate::render::FileTree;

/// Where installed apps keep their configs: `/etc/deployctl/NAME`, the plan's `out`.
pub fn conf_dir(name: &str) -> PathBuf {
    Path::new("/etc/deployctl").join(name)
}

/// Where install keeps its record of an app: the plan's state directory of a site,
/// `/var/lib/deployctl/NAME` (its TLS state lives there too).
pub fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

/// Every app's state directory lives here (the shared default site reads them all).
pub use crate::plan::STATE_ROOT;

/// The manifest of installed files (`installed.json` in the state directory).
pub fn manifest_path(name: &str) -> PathBuf {
    state_dir(name).join("installed.json")
}

pub const NGINX_AVAILABLE: &str = "/etc/nginx/sites-available";
pub const NGINX_ENABLED: &str = "/etc/nginx/sites-enabled";
pub const SYSTEMD_UNITS: &str = "/etc/systemd/system";

/// What one installed path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    File {
        text: String,
        mode: u32,
    },
    /// A symbolic link, relative to its directory (so it resolves in a staged root too).
    Link(PathBuf),
}

/// One path install places: absolute as on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub content: Content,
}

/// The host paths of `tree`, rendered from `plan` (whose configuration directory is
/// [`conf_dir`]). Refuses outputs this slice does not install (Apache, cluster files).
pub fn entries(plan: &Plan, tree: &FileTree) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for o in &plan.outputs {
        let Some(file) = tree.files.get(&o.path) else {
            anyhow::bail!("the rendered tree has no {}", o.path);
        };
        let base = Path::new(&o.path)
            .file_name()
            .map(PathBuf::from)
            .ok_or_else(|| anyhow::anyhow!("output {} has no file name", o.path))?;
        let content = Content::File {
            text: file.text.clone(),
            mode: file.mode,
        };
        match o.kind {
            OutputKind::NginxSite => {
                out.push(Entry {
                    path: Path::new(NGINX_AVAILABLE).join(&base),
                    content,
                });
                out.push(Entry {
                    path: Path::new(NGINX_ENABLED).join(&base),
                    content: Content::Link(Path::new("../sites-available").join(&base)),
                });
            }
            OutputKind::SystemdService
            | OutputKind::SystemdSocket
            | OutputKind::CertService
            | OutputKind::CertTimer => out.push(Entry {
                path: Path::new(SYSTEMD_UNITS).join(&base),
                content,
            }),
            OutputKind::UwsgiIni | OutputKind::GunicornConf => out.push(Entry {
                path: plan.conf_dir.join(&o.path),
                content,
            }),
            OutputKind::ApacheSite | OutputKind::ApacheHttpd | OutputKind::WsgiScript => {
                anyhow::bail!("install does not place Apache's files yet (target `{}`)", plan.target)
            }
            OutputKind::Containerfile
            | OutputKind::ContainerIgnore
            | OutputKind::KubeConfigMap
            | OutputKind::KubeDeployment
            | OutputKind::KubeService
            | OutputKind::KubeIngress
            | OutputKind::KubePdb
            | OutputKind::KubeHpa
            | OutputKind::KubeIssuer
            | OutputKind::Compose => {
                anyhow::bail!("`{}` is a cluster target: install places a host's files", plan.target)
            }
        }
    }
    Ok(out)
}

/// `path` (absolute, as on the host) under `root`.
pub fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// The catch-all site shared by every installed app.
pub const DEFAULT_SITE: &str = "deployctl-default.conf";

/// The shared catch-all site for the listen addresses `listens` (its file and its link),
/// or nothing when no app needs one.
pub fn default_site(listens: &std::collections::BTreeSet<String>) -> Vec<Entry> {
    if listens.is_empty() {
        return Vec::new();
    }
    let mut text = String::from(
        "# deployctl: the catch-all server of every app `deployctl install` placed on this host,\n\
         # kept while one of them listens on these addresses. Requests for a host name no app\n\
         # serves are dropped without an answer.\n",
    );
    for l in listens {
        text.push_str(&format!(
            "\nserver {{\n    listen {} default_server;\n    server_name _;\n    server_tokens off;\n    return 444;\n}}\n",
            crate::render::quote::nginx_literal(l)
        ));
    }
    vec![
        Entry {
            path: Path::new(NGINX_AVAILABLE).join(DEFAULT_SITE),
            content: Content::File { text, mode: 0o644 },
        },
        Entry {
            path: Path::new(NGINX_ENABLED).join(DEFAULT_SITE),
            content: Content::Link(Path::new("../sites-available").join(DEFAULT_SITE)),
        },
    ]
}
