//! Where a production plan's files go on a Debian host, relative to the install root.
//!
//! The plan is resolved with its configuration directory at [`conf_dir`]
//! (`/etc/deployctl/NAME`), so the configs the units name are read from where they are
//! installed; the nginx site goes to `sites-available/` with its `sites-enabled/` link and
//! the units to `/etc/systemd/system/`, as the site's own header says; an Apache site goes
//! to `/etc/apache2/sites-available/` with its `sites-enabled/` link and the `mods-enabled/`
//! links of its modules (what `a2ensite` and `a2enmod` make), mod_wsgi's script to the
//! configuration directory, where the plan names it. Does not own: the
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
pub const APACHE_AVAILABLE: &str = "/etc/apache2/sites-available";
pub const APACHE_ENABLED: &str = "/etc/apache2/sites-enabled";
pub const APACHE_MODS_AVAILABLE: &str = "/etc/apache2/mods-available";
pub const APACHE_MODS_ENABLED: &str = "/etc/apache2/mods-enabled";

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
/// [`conf_dir`]). Apache's self-contained `httpd.conf` is not placed (Debian's
/// `apache2.service` runs the site); cluster targets are refused.
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
            OutputKind::ApacheSite => {
                out.push(Entry {
                    path: Path::new(APACHE_AVAILABLE).join(&base),
                    content,
                });
                out.push(Entry {
                    path: Path::new(APACHE_ENABLED).join(&base),
                    content: Content::Link(Path::new("../sites-available").join(&base)),
                });
            }
            // The self-contained configuration is `up`'s: on a host Debian's apache2.service
            // runs the site.
            OutputKind::ApacheHttpd => {}
            OutputKind::UwsgiIni | OutputKind::GunicornConf | OutputKind::WsgiScript => out.push(Entry {
                path: plan.conf_dir.join(&o.path),
                content,
            }),
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

/// The template of the shared catch-all site (by id, replaceable like the others).
pub const DEFAULT_SITE_TEMPLATE: &str = "nginx/default.conf.tera";

/// The HTTPS catch-all of one TLS address: the listener and the TLS profile every handshake
/// on it gets (the apps' there, which must agree), as nginx's view spells them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCatchAll {
    pub listen: String,
    pub http2: bool,
    pub protocols: String,
    pub ciphers: Option<String>,
    pub ciphersuites: String,
    pub groups: String,
    pub prefer_server_ciphers: String,
    pub prioritize_chacha: bool,
}

impl TlsCatchAll {
    /// The catch-all the site of `plan` needs on its TLS address (none without `[tls]`).
    pub fn of(plan: &Plan) -> Option<TlsCatchAll> {
        let t = crate::render::tls_view::NginxTls::new(plan)?;
        Some(TlsCatchAll {
            listen: t.listen,
            http2: t.http2,
            protocols: t.protocols,
            ciphers: t.ciphers,
            ciphersuites: t.ciphersuites,
            groups: t.groups,
            prefer_server_ciphers: t.prefer_server_ciphers.to_string(),
            prioritize_chacha: t.prioritize_chacha,
        })
    }
}

/// The shared catch-all site for the plain listen addresses `listens` and the TLS ones
/// `tls` (its file and its link), or nothing when no app needs one.
pub fn default_site(
    templates: &crate::render::Templates,
    listens: &std::collections::BTreeSet<String>,
    tls: &std::collections::BTreeMap<String, TlsCatchAll>,
) -> anyhow::Result<Vec<Entry>> {
    if listens.is_empty() && tls.is_empty() {
        return Ok(Vec::new());
    }
    let mut context = tera::Context::new();
    let quoted: Vec<String> = listens.iter().map(|l| crate::render::quote::nginx_literal(l)).collect();
    context.insert("listens", &quoted);
    context.insert("tls", &tls.values().collect::<Vec<_>>());
    let mut text = templates.render(DEFAULT_SITE_TEMPLATE, &context)?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(vec![
        Entry {
            path: Path::new(NGINX_AVAILABLE).join(DEFAULT_SITE),
            content: Content::File { text, mode: 0o644 },
        },
        Entry {
            path: Path::new(NGINX_ENABLED).join(DEFAULT_SITE),
            content: Content::Link(Path::new("../sites-available").join(DEFAULT_SITE)),
        },
    ])
}

/// The links `a2enmod MODULE` makes under `root`: `mods-enabled/MODULE.load` and, when the
/// module has one, `MODULE.conf` beside it, each relative to `mods-available/`. Refuses a
/// module the root's Apache does not have.
pub fn module_links(root: &Path, module: &str) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for ext in ["load", "conf"] {
        let file = format!("{module}.{ext}");
        let available = Path::new(APACHE_MODS_AVAILABLE).join(&file);
        if !under(root, &available).exists() {
            if ext == "load" {
                return Err(crate::printer::hinted(
                    format!(
                        "Apache's module `{module}` is not available: {} does not exist",
                        under(root, &available).display()
                    ),
                    if module == "wsgi" {
                        "install Debian's mod_wsgi (`apt-get install libapache2-mod-wsgi-py3`) on the host"
                    } else {
                        "install Debian's Apache (`apt-get install apache2`) on the host"
                    },
                ));
            }
            continue;
        }
        out.push(Entry {
            path: Path::new(APACHE_MODS_ENABLED).join(&file),
            content: Content::Link(Path::new("../mods-available").join(&file)),
        });
    }
    Ok(out)
}
