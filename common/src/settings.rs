//! The embedded server's settings: the flags of `deployctl serve` ([`ServeArgs`]) and what
//! they resolve to ([`ServeSettings`]), with `deploy.toml` under the flags and the defaults
//! under both.
//!
//! Owned here, in the crate the CLI and the server share, so that `deployctl serve` (the
//! launcher) and `deployctl-server` (the binary that links CPython) take exactly the same
//! flags. Does not own: what the server does with the settings (`server/`), nor how the
//! launcher finds and starts the server (`deployctl::commands::serve`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::defaults;
use crate::error::hinted;
use crate::spec::{self, Entry, Spec, display_path};
/// Kept at their old paths; they live in [`crate::venv`].
pub use crate::venv::{check_venv_version, venv_python_version};

/// Flags of `deployctl serve` and `deployctl-server`: Gunicorn's names where Gunicorn has the
/// setting. The one definition: the CLI flattens it into its `serve` subcommand, the server
/// binary into its own command line.
///
/// Serialisable because `deployctl serve` hands the flags it parsed to the server it starts
/// ([`Handoff`]): the server's master resolves them again on HUP.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
pub struct ServeArgs {
    /// The WSGI callable, `module:attr` or `module:factory()`. Default: `[app].entry` of `--config`.
    pub entry: Option<String>,
    /// Take settings from this deploy.toml; flags given here win.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen on `HOST:PORT`, `[::1]:PORT` or `unix:PATH` (repeatable). Default: 127.0.0.1:8000.
    #[arg(long, short = 'b', value_name = "ADDR")]
    pub bind: Vec<String>,
    /// Permissions of unix sockets created by `--bind unix:PATH`, in octal.
    #[arg(long, value_name = "MODE", default_value = defaults::UDS_MODE, value_parser = parse_mode)]
    pub uds_mode: u32,
    /// Worker processes. Default: the CPUs available to the process.
    #[arg(long, short = 'w', value_name = "N")]
    pub workers: Option<u32>,
    /// Write the master's PID to this file (removed on exit).
    #[arg(long = "pid", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// The protocol on the listening sockets: `http`, or `uwsgi` for nginx's `uwsgi_pass` and
    /// Apache's mod_proxy_uwsgi.
    #[arg(long, value_enum, default_value_t = defaults::PROTOCOL)]
    pub protocol: Protocol,
    /// Python threads per worker. Default: 1.
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,
    /// Change to this directory and put it first on `sys.path` before importing the app.
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,
    /// The app's virtualenv. Default: `$VIRTUAL_ENV`, else the interpreter the server was built with.
    #[arg(long, value_name = "DIR")]
    pub venv: Option<PathBuf>,
    /// Set an environment variable for the app (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    /// Seconds a request may run (enforced by the master once workers exist). Default: 30.
    /// (Gunicorn's `-t` is not taken: in deployctl `-t` is `--target`.)
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// `-t`, which Gunicorn reads as `--timeout`: refused with a hint, since in deployctl
    /// `-t` is `--target` (which `serve` does not take).
    #[arg(short = 't', hide = true, value_name = "VALUE", num_args = 0..=1, default_missing_value = "")]
    pub short_t: Option<String>,
    /// Recycle a worker after this many requests (0: never). Default: 0.
    #[arg(long, value_name = "N")]
    pub max_requests: Option<u64>,
    /// Add up to this many requests to each worker's --max-requests, so workers do not all
    /// recycle at once. Default: 0.
    #[arg(long, value_name = "N")]
    pub max_requests_jitter: Option<u64>,
    /// Recycle a worker after this many seconds (0: never). Default: 0.
    #[arg(long, value_name = "SECS")]
    pub max_lifetime: Option<u64>,
    /// Recycle a worker whose resident memory exceeds this, e.g. `512M`. Default: no limit.
    #[arg(long, value_name = "SIZE")]
    pub max_rss: Option<String>,
    /// Seconds in-flight requests get to finish on a graceful stop. Default: 30.
    #[arg(long, value_name = "SECS")]
    pub graceful_timeout: Option<u64>,
    /// Seconds an idle keep-alive connection is kept open. Default: 5.
    #[arg(long, value_name = "SECS")]
    pub keep_alive: Option<u64>,
    /// Seconds a client gets to send a whole request head (slow-client defence). Default: 10.
    #[arg(long, value_name = "SECS")]
    pub header_timeout: Option<u64>,
    /// Seconds a body read or a response write may wait without progress. Default: 30.
    #[arg(long, value_name = "SECS")]
    pub body_timeout: Option<u64>,
    /// Peers whose X-Forwarded-* and Forwarded headers are trusted: addresses, CIDRs or `*`,
    /// comma-separated. Default: 127.0.0.1,::1 (unix-socket peers are always trusted).
    #[arg(long, value_name = "IPS")]
    pub forwarded_allow_ips: Option<String>,
    /// Write the access log here (`-` is stdout). Default: no access log.
    #[arg(long, value_name = "FILE")]
    pub access_log: Option<String>,
    /// Access log line format.
    #[arg(long, value_enum, default_value_t = defaults::ACCESS_LOG_FORMAT)]
    pub access_log_format: AccessLogFormat,
    /// Write errors and tracebacks here (`-` is stderr). Default: stderr.
    #[arg(long, value_name = "FILE")]
    pub error_log: Option<String>,
    /// Longest request line, in bytes (414 above). Default: 8190 (RFC 9112 §3 recommends at
    /// least 8000; nginx accepts 8 KiB).
    #[arg(long, value_name = "BYTES")]
    pub limit_request_line: Option<usize>,
    /// Most header fields in a request (431 above). Default: 100.
    #[arg(long, value_name = "N")]
    pub limit_request_fields: Option<usize>,
    /// Longest header field line, in bytes (431 above). Default: 8190.
    #[arg(long, value_name = "BYTES")]
    pub limit_request_field_size: Option<usize>,
    /// Largest request body (413 above), e.g. `10M`. Default: 10M.
    #[arg(long, value_name = "SIZE")]
    pub max_body: Option<String>,
    /// Request bodies up to this size are read whole by the worker's event loop before the app
    /// is called, so a slow upload costs a buffer, not the worker; larger ones are read by the
    /// app as they arrive. Default: 1M.
    #[arg(long, value_name = "SIZE")]
    pub body_buffer: Option<String>,
    /// Slowest transfer accepted, in bytes per second: a request body or a response that is
    /// slower than this on average, after its first --body-timeout, is cut. 0: no minimum.
    /// Default: 1K.
    #[arg(long, value_name = "SIZE")]
    pub min_rate: Option<String>,
    /// Least important messages logged. Default: info.
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// Terminate TLS on every listener with this certificate chain (PEM, leaf first); needs
    /// --keyfile. Read again by each new generation of workers (HUP).
    #[arg(long, value_name = "FILE", requires = "keyfile")]
    pub certfile: Option<PathBuf>,
    /// The private key of --certfile (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "certfile")]
    pub keyfile: Option<PathBuf>,
    /// Mozilla's server-side TLS profile for --certfile: `intermediate` (TLS 1.2 and 1.3) or
    /// `modern` (TLS 1.3 only). Default: intermediate.
    #[arg(long, value_enum, value_name = "PROFILE")]
    pub tls_profile: Option<crate::spec::TlsProfile>,
    /// Serve the files of DIR under the URL prefix URL on the I/O thread, without the app
    /// (repeatable): `URL=DIR`, or `URL:EXPIRES=DIR` for a cache lifetime other than 7d
    /// (`/static/:30d=/srv/app/static`). Replaces `[[static]]` of `--config`.
    #[arg(long = "static", value_name = "URL=DIR")]
    pub statics: Vec<String>,
    /// Serve no `[[static]]` of `--config` (a front serves them).
    #[arg(long, conflicts_with = "statics")]
    pub no_static: bool,
    /// With --certfile: also listen on ADDR in plain HTTP (repeatable), answering only
    /// `/.well-known/acme-challenge/` (from --acme-webroot) and a 301 to `https://` for the rest.
    #[arg(long, value_name = "ADDR", requires = "certfile")]
    pub redirect_bind: Vec<String>,
    /// The ACME HTTP-01 webroot the --redirect-bind listeners serve
    /// `/.well-known/acme-challenge/` from (the files under `DIR/.well-known/acme-challenge/`).
    #[arg(long, value_name = "DIR")]
    pub acme_webroot: Option<PathBuf>,
    /// A host name the --redirect-bind listeners redirect for (repeatable; `*.example.com`
    /// matches subdomains); any other Host is answered 421. Default: any.
    #[arg(long = "server-name", value_name = "NAME")]
    pub server_names: Vec<String>,
    /// The `Strict-Transport-Security` value sent with every answer over TLS (the app's own
    /// is replaced), e.g. `max-age=63072000`.
    #[arg(long, value_name = "VALUE", requires = "certfile")]
    pub hsts: Option<String>,
    /// Add deployctl's security headers (`X-Content-Type-Options`, `X-Frame-Options`,
    /// `Referrer-Policy`, `Cross-Origin-Opener-Policy`) to every answer of the app that has
    /// none of that name, as the nginx and Apache fronts do: for a server with no front.
    #[arg(long)]
    pub security_headers: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize, Deserialize)]
pub enum LogLevel {
    /// Every connection event (timeouts, refusals, clients going away), one line each.
    Debug,
    /// Start, stop, workers, reloads, and a periodic summary of connection events.
    Info,
    /// Only what needs attention.
    Warning,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Protocol {
    /// HTTP/1.1 (and 1.0).
    Http,
    /// The binary uwsgi protocol: one request per connection, variables set by the front.
    Uwsgi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum AccessLogFormat {
    /// NCSA common log format.
    Common,
    /// Common plus referer and user agent (nginx's `combined`).
    Combined,
    /// One JSON object per line.
    Json,
}

impl Default for LogLevel {
    fn default() -> LogLevel {
        defaults::LOG_LEVEL
    }
}

impl Default for Protocol {
    fn default() -> Protocol {
        defaults::PROTOCOL
    }
}

impl Default for AccessLogFormat {
    fn default() -> AccessLogFormat {
        defaults::ACCESS_LOG_FORMAT
    }
}

/// A listening address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bind {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bind::Tcp(a) => write!(f, "{a}"),
            Bind::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A trusted-proxy rule: an address with a prefix length, or everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllowIp {
    Any,
    Net(IpAddr, u8),
}

impl AllowIp {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (AllowIp::Any, _) => true,
            (AllowIp::Net(IpAddr::V4(net), len), IpAddr::V4(a)) => prefix_eq(&net.octets(), &a.octets(), *len),
            (AllowIp::Net(IpAddr::V6(net), len), IpAddr::V6(a)) => prefix_eq(&net.octets(), &a.octets(), *len),
            (AllowIp::Net(IpAddr::V4(net), len), IpAddr::V6(a)) => a
                .to_ipv4_mapped()
                .is_some_and(|a| prefix_eq(&net.octets(), &a.octets(), *len)),
            (AllowIp::Net(IpAddr::V6(_), _), IpAddr::V4(_)) => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let full = usize::from(len / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = len % 8;
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

/// Everything the server needs, resolved: defaults applied, paths absolute, values checked.
///
/// Resolved once by the server's master (at start and on each HUP) and handed to the workers
/// it starts as JSON ([`ServeSettings::to_json`], [`ServeSettings::from_json`]): a worker never
/// reads `deploy.toml` or the flags itself, so a file broken or changed after the master read
/// it cannot make a replacement worker differ from, or fail where, its generation did not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeSettings {
    #[serde(deserialize_with = "entry_from_str")]
    pub entry: Entry,
    pub binds: Vec<Bind>,
    pub uds_mode: u32,
    pub protocol: Protocol,
    pub workers: u32,
    pub pid_file: Option<PathBuf>,
    pub threads: u32,
    pub chdir: PathBuf,
    pub venv: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
    pub timeout: u64,
    pub graceful_timeout: u64,
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    pub max_lifetime: u64,
    pub max_rss: Option<u64>,
    pub keep_alive: u64,
    pub header_timeout: u64,
    pub body_timeout: u64,
    pub forwarded_allow_ips: Vec<AllowIp>,
    pub access_log: Option<String>,
    pub access_log_format: AccessLogFormat,
    pub error_log: Option<String>,
    pub limit_request_line: usize,
    pub limit_request_fields: usize,
    pub limit_request_field_size: usize,
    pub max_body: u64,
    pub body_buffer: u64,
    pub min_rate: u64,
    pub log_level: LogLevel,
    /// TLS on every listener: the certificate chain and key files (absolute), and the profile.
    pub tls: Option<TlsFiles>,
    /// Directories served under URL prefixes by the server itself (`--static`, `[[static]]`).
    #[serde(default)]
    pub statics: Vec<StaticMount>,
    /// Plain HTTP listeners beside the TLS ones (`--redirect-bind`): the ACME challenge and a
    /// 301 to https. Bound after `binds` (socket activation passes them in the same order).
    #[serde(default)]
    pub redirect_binds: Vec<Bind>,
    #[serde(default)]
    pub acme_webroot: Option<PathBuf>,
    #[serde(default)]
    pub server_names: Vec<String>,
    #[serde(default)]
    pub hsts: Option<String>,
    #[serde(default)]
    pub security_headers: bool,
}

/// One `--static` (or `[[static]]`) mount: a URL prefix (starting and ending with `/`), the
/// directory served under it (absolute) and the cache lifetime sent with its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticMount {
    pub url: String,
    pub dir: PathBuf,
    pub expires_secs: u64,
}

impl StaticMount {
    /// The `--static` value that gives this mount back.
    pub fn to_arg(&self) -> String {
        format!("{}:{}s={}", self.url, self.expires_secs, self.dir.display())
    }
}

/// `URL=DIR` or `URL:EXPIRES=DIR` (the URL ends with `/`, so what follows its last `/`
/// before the `=` is the lifetime); a relative DIR is taken from `cwd`.
pub fn parse_static(s: &str, cwd: &std::path::Path) -> anyhow::Result<StaticMount> {
    let Some((left, dir)) = s.split_once('=') else {
        bail!("--static {s:?}: expected URL=DIR, e.g. /static/=/srv/app/static");
    };
    let cut = left.rfind('/').map_or(0, |i| i + 1);
    let (url, rest) = left.split_at(cut);
    let expires_secs = match rest {
        "" => defaults::STATIC_EXPIRES.0,
        r => match r.strip_prefix(':') {
            Some(e) => {
                spec::parse_duration(e)
                    .map_err(|m| anyhow::anyhow!("--static {s:?}: {m}"))?
                    .0
            }
            None => bail!("--static {s:?}: the URL prefix must end with `/` (URL=DIR or URL:EXPIRES=DIR)"),
        },
    };
    if let Some(why) = spec::refusals::url_prefix_problem(url) {
        bail!("--static {s:?}: {why}");
    }
    let dir = cwd.join(dir);
    if !dir.is_dir() {
        bail!("--static {s:?}: {} is not a directory", display_path(&dir));
    }
    Ok(StaticMount {
        url: url.to_string(),
        dir,
        expires_secs,
    })
}

/// `--certfile`, `--keyfile`, `--tls-profile`, resolved: paths absolute. The files are read by
/// the server (each worker at start, the master to check them on HUP), not here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFiles {
    pub certfile: PathBuf,
    pub keyfile: PathBuf,
    pub profile: crate::spec::TlsProfile,
}

impl ServeSettings {
    /// Fails only for a path that is not UTF-8, which JSON cannot hold.
    pub fn to_json(&self) -> anyhow::Result<String> {
        serde_json::to_string(self).context("handing the settings to a worker (a path that is not UTF-8?)")
    }

    pub fn from_json(json: &str) -> anyhow::Result<ServeSettings> {
        serde_json::from_str(json).context("reading the settings handed over by the master")
    }
}

fn entry_from_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Entry, D::Error> {
    let s = String::deserialize(d)?;
    spec::parse_entry(&s).map_err(serde::de::Error::custom)
}

/// What `deployctl serve` hands to the `deployctl-server` it `exec`s, as JSON in
/// [`HANDOFF_ENV`] instead of a command line: the settings it resolved, so the server starts
/// with them without reading `deploy.toml` or the flags again, and the flags themselves, which
/// the server's master resolves again on HUP (a changed `deploy.toml` takes effect, as with
/// the server started directly). A flag only the CLI takes (`-q` before or after `serve`) is
/// applied to the flags first, never passed on as a word the server might not know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handoff {
    pub args: ServeArgs,
    pub settings: ServeSettings,
}

/// The environment variable holding the [`Handoff`]; the server removes it at start, so
/// neither its workers nor the app see it.
pub const HANDOFF_ENV: &str = "DEPLOYCTL_SERVE_HANDOFF";

impl Handoff {
    /// Fails only for a path that is not UTF-8, which JSON cannot hold.
    pub fn to_json(&self) -> anyhow::Result<String> {
        serde_json::to_string(self).context("handing the settings to the server (a path that is not UTF-8?)")
    }

    pub fn from_json(json: &str) -> anyhow::Result<Handoff> {
        serde_json::from_str(json).with_context(|| format!("reading the settings handed over in ${HANDOFF_ENV}"))
    }
}

impl ServeArgs {
    /// `-q`/`--quiet`: only warnings and errors, unless `--log-level` is given.
    pub fn quiet(&mut self) {
        if self.log_level.is_none() {
            self.log_level = Some(LogLevel::Warning);
        }
    }

    /// Apply `--config` (if any) under the flags, then the defaults, and check every value.
    pub fn resolve(&self) -> anyhow::Result<ServeSettings> {
        if let Some(v) = &self.short_t {
            let example = if v.is_empty() { "SECS" } else { v.as_str() };
            return Err(crate::error::usage(
                "`-t` is not a flag of `serve`: in deployctl, `-t` means `--target`",
                Some(format!(
                    "for the request timeout (Gunicorn's `-t`), write `--timeout {example}`"
                )),
            ));
        }
        let spec = match &self.config {
            Some(path) => Some(Spec::load(path)?),
            None => None,
        };
        let spec = spec.as_ref();
        let entry = match (&self.entry, spec) {
            (Some(e), _) => spec::parse_entry(e).map_err(|m| anyhow::anyhow!("ENTRY: {m}"))?,
            (None, Some(s)) => s.app.entry.clone(),
            (None, None) => {
                return Err(hinted(
                    "no app to serve: give ENTRY (`module:attr` or `module:factory()`)",
                    "e.g. `deployctl serve app:app`, or `deployctl serve -c deploy.toml`",
                ));
            }
        };
        let binds = if !self.bind.is_empty() {
            self.bind
                .iter()
                .map(|b| parse_bind(b))
                .collect::<anyhow::Result<Vec<_>>>()?
        } else if let Some(s) = spec {
            vec![parse_bind(&s.server.listen.to_string())?]
        } else {
            vec![parse_bind(defaults::BIND)?]
        };
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let chdir = match (&self.chdir, spec) {
            (Some(d), _) => cwd.join(d),
            (None, Some(s)) => s.app.root.clone(),
            (None, None) => cwd.clone(),
        };
        if !chdir.is_dir() {
            bail!("--chdir {}: not a directory", display_path(&chdir));
        }
        let venv = match (&self.venv, spec) {
            (Some(v), _) => Some(cwd.join(v)),
            (None, Some(s)) => Some(s.app.venv.clone()),
            (None, None) => std::env::var_os("VIRTUAL_ENV")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        };
        let mut env = spec.map(|s| s.app.env.clone()).unwrap_or_default();
        for kv in &self.env {
            let Some((k, v)) = kv.split_once('=') else {
                bail!("--env {kv:?}: expected K=V");
            };
            if k.is_empty() || k.contains('\0') || v.contains('\0') {
                bail!("--env {kv:?}: not a valid environment variable");
            }
            env.insert(k.to_string(), v.to_string());
        }
        let workers = match self.workers.or(spec.and_then(|s| s.backend.workers)) {
            Some(n) => n,
            None => defaults::workers(),
        };
        let threads = self
            .threads
            .or(spec.map(|s| s.backend.threads))
            .unwrap_or(defaults::THREADS);
        positive("--workers", u64::from(workers))?;
        positive("--threads", u64::from(threads))?;
        let max_body = match (&self.max_body, spec) {
            (Some(m), _) => spec::parse_size(m).map_err(|e| anyhow::anyhow!("--max-body: {e}"))?.0,
            (None, Some(s)) => s.server.max_body.0,
            (None, None) => defaults::MAX_BODY.0,
        };
        let allow = match (&self.forwarded_allow_ips, spec) {
            (Some(list), _) => list.split(',').map(str::to_string).collect(),
            (None, Some(s)) => s.server.forwarded_allow_ips.clone(),
            (None, None) => defaults::FORWARDED_ALLOW_IPS.map(String::from).to_vec(),
        };
        let forwarded_allow_ips = allow
            .iter()
            .map(|a| parse_allow_ip(a.trim()).map_err(|e| anyhow::anyhow!("--forwarded-allow-ips: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let settings = ServeSettings {
            entry,
            binds,
            uds_mode: self.uds_mode,
            protocol: self.protocol,
            workers,
            pid_file: self.pid_file.as_ref().map(|p| cwd.join(p)),
            threads,
            chdir,
            venv,
            env,
            timeout: self
                .timeout
                .or(spec.map(|s| s.server.timeout.0))
                .unwrap_or(defaults::TIMEOUT.0),
            graceful_timeout: self
                .graceful_timeout
                .or(spec.map(|s| s.backend.graceful_timeout.0))
                .unwrap_or(defaults::GRACEFUL_TIMEOUT.0),
            max_requests: self.max_requests.unwrap_or(defaults::MAX_REQUESTS),
            max_requests_jitter: self.max_requests_jitter.unwrap_or(defaults::MAX_REQUESTS_JITTER),
            max_lifetime: self.max_lifetime.unwrap_or(defaults::MAX_LIFETIME),
            max_rss: match &self.max_rss {
                Some(m) => Some(spec::parse_size(m).map_err(|e| anyhow::anyhow!("--max-rss: {e}"))?.0),
                None => None,
            },
            keep_alive: self.keep_alive.unwrap_or(defaults::KEEP_ALIVE),
            header_timeout: self.header_timeout.unwrap_or(defaults::HEADER_TIMEOUT),
            body_timeout: self.body_timeout.unwrap_or(defaults::BODY_TIMEOUT),
            forwarded_allow_ips,
            access_log: self.access_log.clone(),
            access_log_format: self.access_log_format,
            error_log: self.error_log.clone(),
            limit_request_line: self.limit_request_line.unwrap_or(defaults::LIMIT_REQUEST_LINE),
            limit_request_fields: self.limit_request_fields.unwrap_or(defaults::LIMIT_REQUEST_FIELDS),
            limit_request_field_size: self
                .limit_request_field_size
                .unwrap_or(defaults::LIMIT_REQUEST_FIELD_SIZE),
            max_body,
            body_buffer: match &self.body_buffer {
                Some(m) => {
                    spec::parse_size(m)
                        .map_err(|e| anyhow::anyhow!("--body-buffer: {e}"))?
                        .0
                }
                None => defaults::BODY_BUFFER.0,
            },
            min_rate: match self.min_rate.as_deref() {
                Some(m) => spec::parse_size(m).map_err(|e| anyhow::anyhow!("--min-rate: {e}"))?.0,
                None => defaults::MIN_RATE.0,
            },
            log_level: self.log_level.unwrap_or(defaults::LOG_LEVEL),
            tls: match (&self.certfile, &self.keyfile) {
                (Some(c), Some(k)) => Some(TlsFiles {
                    certfile: cwd.join(c),
                    keyfile: cwd.join(k),
                    profile: self.tls_profile.unwrap_or(crate::spec::TlsProfile::Intermediate),
                }),
                (None, None) if self.tls_profile.is_some() => bail!("--tls-profile needs --certfile and --keyfile"),
                (None, None) => None,
                _ => bail!("--certfile and --keyfile go together"),
            },
            statics: Vec::new(),
            redirect_binds: self
                .redirect_bind
                .iter()
                .map(|b| parse_bind(b).map_err(|e| anyhow::anyhow!("--redirect-bind: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?,
            acme_webroot: self.acme_webroot.as_ref().map(|w| cwd.join(w)),
            server_names: self.server_names.clone(),
            hsts: match &self.hsts {
                Some(v) if v.is_empty() || v.bytes().any(|b| b.is_ascii_control()) => {
                    bail!("--hsts {v:?}: not a header value")
                }
                v => v.clone(),
            },
            security_headers: self.security_headers,
        };
        if !settings.redirect_binds.is_empty() && settings.tls.is_none() {
            bail!("--redirect-bind needs --certfile and --keyfile (it redirects to their listeners)");
        }
        let mut settings = settings;
        settings.statics = if !self.statics.is_empty() {
            let mut mounts: Vec<StaticMount> = Vec::new();
            for v in &self.statics {
                let m = parse_static(v, &cwd)?;
                if mounts.iter().any(|o| o.url == m.url) {
                    bail!("--static {v:?}: {} is mounted twice", m.url);
                }
                mounts.push(m);
            }
            mounts
        } else if self.no_static {
            Vec::new()
        } else {
            spec.map(|s| {
                s.statics
                    .iter()
                    .map(|st| StaticMount {
                        url: st.url.clone(),
                        dir: st.dir.clone(),
                        expires_secs: st.expires.0,
                    })
                    .collect()
            })
            .unwrap_or_default()
        };
        for (flag, v) in [
            ("--timeout", settings.timeout),
            ("--header-timeout", settings.header_timeout),
            ("--body-timeout", settings.body_timeout),
            ("--limit-request-line", settings.limit_request_line as u64),
            ("--limit-request-fields", settings.limit_request_fields as u64),
            ("--limit-request-field-size", settings.limit_request_field_size as u64),
        ] {
            positive(flag, v)?;
        }
        Ok(settings)
    }
}

fn positive(flag: &str, v: u64) -> anyhow::Result<()> {
    if v == 0 {
        bail!("{flag} must be at least 1");
    }
    Ok(())
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim_start_matches("0o");
    u32::from_str_radix(t, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode such as 660"))
}

/// `host:port`, `[v6]:port`, `unix:PATH`.
pub fn parse_bind(s: &str) -> anyhow::Result<Bind> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            bail!("--bind {s:?}: the unix socket path is empty");
        }
        let cwd = std::env::current_dir().context("reading the current directory")?;
        return Ok(Bind::Unix(cwd.join(path)));
    }
    // Port 0 (any free port) is fine here, unlike in deploy.toml: tests and `up` use it.
    if let Ok(addr) = s.parse::<std::net::SocketAddr>() {
        return Ok(Bind::Tcp(addr));
    }
    let listen = spec::parse_listen(s).map_err(|m| anyhow::anyhow!("--bind {s:?}: {m}"))?;
    let ip: IpAddr = match listen.host.as_str() {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        h => h.parse().map_err(|_| {
            anyhow::anyhow!("--bind {s:?}: {h:?} is not an IP address (names other than localhost are not resolved)")
        })?,
    };
    Ok(Bind::Tcp(std::net::SocketAddr::new(ip, listen.port)))
}

pub fn parse_allow_ip(s: &str) -> Result<AllowIp, String> {
    if s == "*" {
        return Ok(AllowIp::Any);
    }
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{s:?} has a bad prefix length"))?,
        None => max,
    };
    Ok(AllowIp::Net(ip, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_ip_prefixes() {
        let net = parse_allow_ip("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one = parse_allow_ip("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("127.0.0.1".parse().unwrap()));
        assert!(parse_allow_ip("10.0.0.0/33").is_err());
        assert!(parse_allow_ip("host").is_err());
    }

    #[test]
    fn settings_survive_the_trip_to_a_worker() {
        let args = ServeArgs {
            entry: Some("pkg.mod:make()".into()),
            bind: vec!["127.0.0.1:0".into(), "unix:/run/a.sock".into(), "[::1]:81".into()],
            env: vec!["K=v=w".into()],
            forwarded_allow_ips: Some("10.0.0.0/8,*".into()),
            max_rss: Some("512M".into()),
            ..ServeArgs::default()
        };
        let s = args.resolve().unwrap();
        let back = ServeSettings::from_json(&s.to_json().unwrap()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{s:?}"));
        assert!(back.entry.factory);
        assert!(ServeSettings::from_json("{}").is_err());
    }

    #[test]
    fn the_handoff_keeps_the_flags_and_the_settings() {
        let mut args = ServeArgs {
            entry: Some("app:app".into()),
            bind: vec!["127.0.0.1:0".into()],
            uds_mode: 0o600,
            timeout: Some(7),
            ..ServeArgs::default()
        };
        args.quiet();
        let settings = args.resolve().unwrap();
        assert_eq!(settings.log_level, LogLevel::Warning);
        let json = Handoff { args, settings }.to_json().unwrap();
        let back = Handoff::from_json(&json).unwrap();
        assert_eq!(back.args.timeout, Some(7));
        assert_eq!(back.args.log_level, Some(LogLevel::Warning));
        assert_eq!(back.settings.uds_mode, 0o600);
        // What the master resolves again on HUP is what the launcher resolved.
        assert_eq!(
            format!("{:?}", back.args.resolve().unwrap()),
            format!("{:?}", back.settings)
        );
        // An explicit --log-level wins over -q.
        let mut loud = ServeArgs {
            log_level: Some(LogLevel::Debug),
            ..ServeArgs::default()
        };
        loud.quiet();
        assert_eq!(loud.log_level, Some(LogLevel::Debug));
    }

    #[test]
    fn binds() {
        assert_eq!(
            parse_bind("127.0.0.1:80").unwrap(),
            Bind::Tcp("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(parse_bind("[::1]:80").unwrap(), Bind::Tcp("[::1]:80".parse().unwrap()));
        assert!(
            matches!(parse_bind("unix:/run/a.sock").unwrap(), Bind::Unix(p) if p == std::path::Path::new("/run/a.sock"))
        );
        assert!(parse_bind("example.com:80").is_err());
    }
}
