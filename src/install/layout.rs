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
    /// HTTP/2 is turned on by `http2 on;` (nginx 1.25.1 and later), not `listen … http2`:
    /// as the site's own servers (`NginxTls::http2_directive`). A manifest written before it
    /// was recorded has none: the file was rendered with the listen parameter.
    #[serde(default)]
    pub http2_directive: bool,
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
            http2_directive: t.http2_directive,
            protocols: t.protocols,
            ciphers: t.ciphers,
            ciphersuites: t.ciphersuites,
            groups: t.groups,
            prefer_server_ciphers: t.prefer_server_ciphers.to_string(),
            prioritize_chacha: t.prioritize_chacha,
        })
    }

    /// Whether the two differ in what a handshake on their address gets: the profile and
    /// HTTP/2, not how this host's nginx spells HTTP/2 (an app installed before nginx was
    /// upgraded keeps the older spelling until it is installed again).
    pub fn differs_for_clients(&self, other: &TlsCatchAll) -> bool {
        let spelling = |t: &TlsCatchAll| TlsCatchAll {
            http2_directive: false,
            ..t.clone()
        };
        spelling(self) != spelling(other)
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::plan::Environment;
    use crate::tls::Capabilities;

    /// The shared catch-all as install renders it for a TLS app on the nginx `nginx -V` reports.
    fn catch_all(nginx_v: &str) -> String {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let source = "[app]\nname = \"shop\"\nentry = \"app:app\"\n[server]\nnames = [\"shop.example\"]\n\
                      [tls]\ncertificate = \"a.pem\"\nkey = \"a.key\"\n";
        let spec = crate::spec::Spec::from_source(&dir.path().join("deploy.toml"), source).expect("a valid spec");
        let capabilities = Capabilities::of_nginx(nginx_v).expect("an OpenSSL in the report");
        let plan = Plan::resolve(
            &spec,
            "nginx+gunicorn".parse().expect("a target"),
            Environment::Production { out: conf_dir("shop") },
        )
        .with_tls_capabilities(capabilities);
        let tls = TlsCatchAll::of(&plan).expect("the site has an HTTPS address");
        let templates = crate::render::Templates::load(None).expect("the built-in templates");
        let listens = BTreeSet::from(["0.0.0.0:80".to_string()]);
        let entries = default_site(&templates, &listens, &BTreeMap::from([(tls.listen.clone(), tls)]))
            .expect("the catch-all renders");
        match entries.first().map(|e| &e.content) {
            Some(Content::File { text, .. }) => text.clone(),
            other => panic!("the catch-all's file first, got {other:?}"),
        }
    }

    fn nginx_v(version: &str) -> String {
        format!(
            "nginx version: nginx/{version}\nbuilt with OpenSSL 3.0.19 27 Jan 2026\n\
             configure arguments: --with-http_ssl_module --with-http_v2_module"
        )
    }

    #[test]
    fn the_catch_all_spells_http2_as_the_hosts_nginx_does() {
        // Debian 12's 1.22 has no `http2` directive: the listen parameter.
        let old = catch_all(&nginx_v("1.22.1"));
        assert!(old.contains("listen 0.0.0.0:443 ssl http2 default_server;"), "{old}");
        assert!(!old.contains("http2 on;"), "{old}");
        // 1.25.1 and later deprecate it: `http2 on;` in the server, as the app's own site has.
        let new = catch_all(&nginx_v("1.26.3"));
        assert!(
            new.contains("listen 0.0.0.0:443 ssl default_server;\n    http2 on;\n"),
            "{new}"
        );
        assert!(!new.contains("ssl http2"), "{new}");
        // Without HTTP/2 in the build, neither.
        let none = catch_all("nginx version: nginx/1.26.3\nbuilt with OpenSSL 3.0.19 27 Jan 2026\n");
        assert!(!none.contains("http2"), "{none}");
    }

    #[test]
    fn a_manifest_without_the_spelling_is_read_as_the_listen_parameter() {
        let json = r#"{"listen": "0.0.0.0:443", "http2": true, "protocols": "TLSv1.2 TLSv1.3", "ciphers": null,
            "ciphersuites": "", "groups": "", "prefer_server_ciphers": "off", "prioritize_chacha": false}"#;
        let old: TlsCatchAll = serde_json::from_str(json).expect("an older manifest's catch-all");
        assert!(!old.http2_directive);
        let upgraded = TlsCatchAll {
            http2_directive: true,
            ..old.clone()
        };
        assert!(!old.differs_for_clients(&upgraded), "the spelling is no clash");
        let modern = TlsCatchAll {
            protocols: "TLSv1.3".into(),
            ..old.clone()
        };
        assert!(old.differs_for_clients(&modern));
    }
}
