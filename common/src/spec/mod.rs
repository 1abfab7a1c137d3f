//! `deploy.toml`: the one description of a project.
//!
//! Owns: reading the file and turning it into a validated [`Spec`] with every default filled
//! in and every path absolute — or a [`SpecError`] listing every problem found.
//! Pure: reads one file and looks at the directories it names; writes nothing, runs nothing.
//! Everything downstream takes a `Spec`, never raw TOML (design.md invariant 1).

pub mod cluster;
mod diag;
mod plain;
mod raw;
pub mod refusals;
mod resolve;
mod tls;
pub mod units;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use cluster::Cluster;
pub use diag::{Diagnostic, Position, SpecError, display_path};
pub use resolve::{parse_entry, parse_listen};
pub use tls::{Acme, CertificateSource, Tls, TlsProfile};
pub use units::{Seconds, Size};
pub use units::{parse_duration, parse_size};

use crate::target::{Backend, Frontend, Target};

/// The file name `deployctl` looks for.
pub const FILE_NAME: &str = "deploy.toml";

/// A validated project description. Paths are absolute.
#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    /// The `deploy.toml` this came from.
    #[serde(skip)]
    pub path: PathBuf,
    pub app: App,
    pub server: Server,
    #[serde(rename = "static")]
    pub statics: Vec<Static>,
    pub backend: BackendSettings,
    pub frontend: FrontendSettings,
    pub health: Health,
    pub systemd: Systemd,
    pub render: RenderSettings,
    /// `[tls]`: HTTPS at the front, when the table is there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// `[cluster]`: the `kubernetes` and `compose` targets.
    pub cluster: Cluster,
}

#[derive(Debug, Clone, Serialize)]
pub struct App {
    /// Unit, socket and log names. Default: the project directory's name.
    pub name: String,
    /// The WSGI callable.
    pub entry: Entry,
    /// Import directory. Default: the directory of `deploy.toml`.
    pub root: PathBuf,
    /// Virtualenv used by every backend. Default: [`crate::defaults::VENV`].
    pub venv: PathBuf,
    /// Requirements file, when there is one. Default: [`crate::defaults::REQUIREMENTS`] if it exists.
    pub requirements: Option<PathBuf>,
    /// Environment of the app process.
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are secrets: the cluster targets reference them by
    /// name (a Kubernetes Secret, the environment of `docker-compose`), never hold a value.
    pub secret_env: Vec<String>,
}

/// `module:attr` or `module:factory()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub module: String,
    pub attr: String,
    /// `module:factory()`: the attribute is called with no arguments to get the app.
    pub factory: bool,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}{}",
            self.module,
            self.attr,
            if self.factory { "()" } else { "" }
        )
    }
}

impl Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// Host names served (`server_name`). Default: [`crate::defaults::SERVER_NAMES`].
    pub names: Vec<String>,
    /// Public address. Default: [`crate::defaults::listen`], `0.0.0.0:80`.
    pub listen: Listen,
    /// Largest request body, enforced by every layer. Default: [`crate::defaults::MAX_BODY`].
    pub max_body: Size,
    /// Request timeout of the backend; the front waits a little longer. Default: [`crate::defaults::TIMEOUT`].
    pub timeout: Seconds,
    /// Peers whose `X-Forwarded-*` headers the public-facing server trusts.
    /// Default: [`crate::defaults::FORWARDED_ALLOW_IPS`], loopback.
    pub forwarded_allow_ips: Vec<String>,
}

/// A TCP address `host:port`; IPv6 hosts in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Listen {
    /// The host a browser on this machine puts in its URL to reach this address: the
    /// address itself (IPv6 in brackets), or loopback for the unspecified 0.0.0.0 and ::.
    pub fn browser_host(&self) -> String {
        match self.host.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".into(),
            Ok(ip) if ip.is_unspecified() => "[::1]".into(),
            Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => self.host.clone(),
        }
    }

    /// `browser_host`, with the port unless it is HTTP's default: what a browser sends as
    /// `Host` and shows in its address bar.
    pub fn browser_authority(&self) -> String {
        match self.port {
            80 => self.browser_host(),
            port => format!("{}:{port}", self.browser_host()),
        }
    }
}

impl Serialize for Listen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Static {
    /// URL prefix, starting and ending with `/`.
    pub url: String,
    /// Directory served under it, absolute.
    pub dir: PathBuf,
    /// Cache lifetime sent with the files. Default: [`crate::defaults::STATIC_EXPIRES`].
    pub expires: Seconds,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendSettings {
    /// Default: [`crate::defaults::BACKEND`].
    pub kind: Backend,
    /// `None` means "auto": one per CPU available, decided on the server at start.
    #[serde(serialize_with = "ser_workers")]
    pub workers: Option<u32>,
    /// Python threads per worker. Default: [`crate::defaults::THREADS`].
    pub threads: u32,
    /// Time in-flight requests get to finish on stop or reload. Default: [`crate::defaults::GRACEFUL_TIMEOUT`].
    pub graceful_timeout: Seconds,
    /// Which uWSGI is installed: `debian` (plugin build, needs `plugins = python3`)
    /// or `pip` (Python built in, installed in the virtualenv). Default: [`crate::defaults::UWSGI_BUILD`].
    pub uwsgi_build: UwsgiBuild,
}

fn ser_workers<S: serde::Serializer>(w: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match w {
        Some(n) => s.serialize_u32(*n),
        None => s.serialize_str("auto"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UwsgiBuild {
    Debian,
    Pip,
}

#[derive(Debug, Clone, Serialize)]
pub struct FrontendSettings {
    /// Default: [`crate::defaults::FRONTEND`].
    pub kind: Frontend,
    /// Group the web server's workers run as; owns the backend socket. Default: [`crate::defaults::FRONTEND_GROUP`].
    pub group: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Path requested to decide the app is healthy. Default: [`crate::defaults::HEALTH_PATH`].
    pub path: String,
    /// The status that means healthy. Default: none, any status below 500 (a fresh Django
    /// project answers `/` with 404; only a server error or no answer is unhealthy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<u16>,
    /// How long one health request may take. Default: [`crate::defaults::HEALTH_TIMEOUT`].
    pub timeout: Seconds,
}

impl Health {
    /// Whether an answer with this status is healthy.
    pub fn accepts(&self, status: u16) -> bool {
        match self.expect {
            Some(e) => status == e,
            None => status < 500,
        }
    }

    /// What `accepts` wants, in words: `200`, `a status below 500`.
    pub fn wanted(&self) -> String {
        match self.expect {
            Some(e) => e.to_string(),
            None => "a status below 500".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Systemd {
    /// User the backend runs as. Default: [`crate::defaults::SYSTEMD_ACCOUNT`].
    pub user: String,
    /// Group the backend runs as. Default: [`crate::defaults::SYSTEMD_ACCOUNT`].
    pub group: String,
    /// The `deployctl` binary `*+embedded` units run. Default: this executable (else
    /// [`crate::defaults::DEPLOYCTL_BIN`]).
    pub deployctl: PathBuf,
    /// `MemoryDenyWriteExecute=yes`. Turn off for cffi/ctypes callbacks or JITs.
    /// Default: [`crate::defaults::MEMORY_DENY_WRITE_EXECUTE`].
    pub memory_deny_write_execute: bool,
    /// `PrivateUsers=yes`. Default: [`crate::defaults::PRIVATE_USERS`].
    pub private_users: bool,
    /// `SystemCallFilter=~@resources` (the unit sets `LimitNOFILE=` itself, so servers need not call
    /// `setrlimit`). Turn off for an app that changes its own limits or priorities.
    /// Default: [`crate::defaults::DENY_RESOURCE_SYSCALLS`].
    pub deny_resource_syscalls: bool,
    /// `IPAddressDeny=any` + `IPAddressAllow=localhost`: breaks apps calling external
    /// services or a remote database. Default: [`crate::defaults::LOCALHOST_ONLY`].
    pub localhost_only: bool,
    /// Extra writable paths (`ReadWritePaths=`), absolute.
    pub read_write_paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RenderSettings {
    /// Directory whose files replace the built-in templates by relative name.
    pub templates: Option<PathBuf>,
    /// Where `render` writes: `<out>/<target>/`. Default: [`crate::defaults::RENDER_OUT`].
    pub out: PathBuf,
}

impl Spec {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Spec, anyhow::Error> {
        let source =
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", display_path(path)))?;
        let abs = std::path::absolute(path)?;
        Ok(resolve::resolve(&abs, &source)?)
    }

    /// Parses `source` as if read from `path` (absolute).
    pub fn from_source(path: &Path, source: &str) -> Result<Spec, SpecError> {
        resolve::resolve(path, source)
    }

    /// The directory holding `deploy.toml`; relative paths resolve against it.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    /// The chain named by `[frontend].kind` and `[backend].kind`.
    pub fn default_target(&self) -> Target {
        Target::new(self.frontend.kind, self.backend.kind)
    }

    /// The resolved description as TOML, every default filled in.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot show the spec: {e}\n"))
    }
}
