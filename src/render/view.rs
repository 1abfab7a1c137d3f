//! Typed views: one per template, everything it prints, read from the plan.
//!
//! Templates only loop and branch over these fields. Every string field is already quoted
//! for the language of its template (`quote`); numbers are numbers; policy values come from
//! `plan::policy`. A view derives no path, file, socket or unit name, command line or timeout:
//! those are the plan's. It only names what lives inside its one file (nginx's upstream and
//! `map` variables).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::quote;
use crate::plan::{Address, OutputKind, Plan, Protocol, Tier, Transport, policy};

/// The `ExecReload=` of every service: the servers reload on HUP.
const EXEC_RELOAD: &str = "/bin/kill -s HUP $MAINPID";

/// The context of the template of `kind`.
pub fn context(plan: &Plan, kind: OutputKind) -> anyhow::Result<tera::Context> {
    let context = match kind {
        OutputKind::NginxSite => tera::Context::from_serialize(NginxSite::new(plan)),
        OutputKind::UwsgiIni => tera::Context::from_serialize(UwsgiIni::new(plan)),
        OutputKind::GunicornConf => tera::Context::from_serialize(GunicornConf::new(plan)),
        OutputKind::SystemdService => tera::Context::from_serialize(SystemdService::new(plan)),
        OutputKind::SystemdSocket => tera::Context::from_serialize(SystemdSocket::new(plan)),
        OutputKind::ApacheSite | OutputKind::ApacheHttpd => tera::Context::from_serialize(ApacheConf::new(plan)?),
        OutputKind::CertService | OutputKind::CertTimer => {
            tera::Context::from_serialize(super::tls_view::CertUnitsView::new(plan, Header::new(plan)))
        }
        OutputKind::KubeConfigMap
        | OutputKind::KubeDeployment
        | OutputKind::KubeService
        | OutputKind::KubeIngress
        | OutputKind::KubePdb
        | OutputKind::KubeHpa
        | OutputKind::KubeIssuer => tera::Context::from_serialize(super::cluster_view::KubeManifests::new(plan)?),
        OutputKind::Compose => tera::Context::from_serialize(super::cluster_view::ComposeView::new(plan)?),
        OutputKind::Containerfile | OutputKind::ContainerIgnore => {
            tera::Context::from_serialize(super::cluster_view::ContainerfileView::new(plan)?)
        }
        OutputKind::WsgiScript => tera::Context::from_serialize(WsgiScript::new(plan)?),
    };
    Ok(context?)
}

/// What every file's header comment says.
#[derive(Debug, Serialize)]
pub struct Header {
    /// What the files were rendered from (no absolute path, so the same project renders the
    /// same header anywhere).
    pub source: String,
    pub target: String,
    /// `[app].name`, as validated (letters, digits, `-`, `_`, `.`: plain in every language).
    pub name: String,
}

impl Header {
    pub(super) fn new(plan: &Plan) -> Header {
        Header {
            source: crate::spec::FILE_NAME.to_string(),
            target: plan.target_name(),
            name: plan.name.clone(),
        }
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------------------
// nginx/site.conf.tera

#[derive(Debug, Serialize)]
pub struct NginxSite {
    #[serde(flatten)]
    pub header: Header,
    pub server: NginxServer,
    pub statics: Vec<StaticView>,
    pub backend: NginxBackend,
    pub nginx: NginxView,
    /// HTTPS, with `[tls]` (`tls_view`).
    pub tls: Option<super::tls_view::NginxTls>,
}

#[derive(Debug, Serialize)]
pub struct NginxServer {
    pub names: Vec<String>,
    /// `listen` argument.
    pub listen: String,
    pub max_body: String,
    /// How long nginx waits for the tier behind it (the link's timeout).
    pub front_timeout_secs: u64,
    /// `X-Forwarded-Proto` to the backend: `$scheme`, or `https` behind TLS.
    pub forwarded_proto: &'static str,
    /// Whether the site has its own catch-all server (`Plan::site_has_default_server`).
    pub own_default_server: bool,
}

#[derive(Debug, Serialize)]
pub struct NginxBackend {
    /// `http` (`proxy_pass`) or `uwsgi` (`uwsgi_pass`): the link's protocol.
    pub protocol: &'static str,
}

#[derive(Debug, Serialize)]
pub struct StaticView {
    pub url: String,
    /// Absolute directory with a trailing slash, matching the URL's trailing slash
    /// (an `alias` without it allows `/static../` traversal).
    pub alias: String,
    pub expires_secs: u64,
}

/// The front's default for a security header (deployctl's policy).
use deployctl_common::defaults::SECURITY_HEADERS;

/// One security header of the front: `var` (a `map` on the app's own header) holds `value`
/// when the app sent none, and is empty otherwise — nginx skips an `add_header` whose value is
/// empty, so an app's own policy (Django's `X-Frame-Options: DENY`, `Referrer-Policy:
/// same-origin`) is neither duplicated nor weakened by the front's.
#[derive(Debug, Serialize)]
pub struct SecurityHeader {
    pub name: &'static str,
    pub value: &'static str,
    /// `$upstream_http_x_frame_options`: the app's own header of that name.
    pub upstream_var: String,
    pub var: String,
}

#[derive(Debug, Serialize)]
pub struct NginxView {
    pub upstream: String,
    pub upstream_server: String,
    pub keepalive: u32,
    pub connect_timeout_secs: u64,
    /// `map $http_upgrade` variable, unique per site so several sites can share an http block,
    /// and short whatever the app name (`quote::nginx_variable`).
    pub connection_var: String,
    /// `map $http_host` variable: `:PORT` when the client's Host carried a numeric port
    /// (short whatever the app name, like `connection_var`).
    pub host_port_var: String,
    /// The `geo` block defining the variable that holds a literal `$`, when a value needs it
    /// (`quote::nginx_script`).
    pub dollar_geo: Option<&'static str>,
    /// The security headers the front adds, each only when the app sent none of that name.
    pub security_headers: Vec<SecurityHeader>,
    /// `server_names_hash_bucket_size`, when a server name is too long for nginx's default.
    pub server_names_hash_bucket_size: Option<u32>,
}

impl NginxSite {
    fn new(plan: &Plan) -> NginxSite {
        let spec = &plan.spec;
        let name = &plan.name;
        let tier = plan.tier(Tier::Nginx).unwrap_or_else(|| plan.edge());
        let link = tier.next.as_ref();
        let upstream_address = link
            .and_then(|l| l.transport.address())
            .map(|a| a.bind())
            .unwrap_or_default();
        let alias_dirs: Vec<String> = spec
            .statics
            .iter()
            .map(|s| format!("{}/", path_str(&s.dir).trim_end_matches('/')))
            .collect();
        NginxSite {
            header: Header::new(plan),
            server: NginxServer {
                // The spec keeps names as nginx compares them (lower case, punycode).
                names: spec.server.names.iter().map(|n| quote::nginx_literal(n)).collect(),
                listen: tier.listen.as_ref().map(Address::bind).unwrap_or_default(),
                max_body: spec.server.max_body.to_string(),
                front_timeout_secs: link.map_or(tier.timeout_secs, |l| l.timeout_secs),
                forwarded_proto: if plan.tls.is_some() { "https" } else { "$scheme" },
                own_default_server: plan.site_has_default_server(),
            },
            statics: spec
                .statics
                .iter()
                .zip(&alias_dirs)
                .map(|(s, dir)| StaticView {
                    url: quote::nginx_literal(&s.url),
                    alias: quote::nginx_script(dir),
                    expires_secs: s.expires.0,
                })
                .collect(),
            backend: NginxBackend {
                protocol: link.map_or(Protocol::Http, |l| l.protocol).name(),
            },
            nginx: NginxView {
                upstream: format!("{}_backend", name.replace(['-', '.'], "_")),
                upstream_server: quote::nginx_literal(&upstream_address),
                keepalive: policy::UPSTREAM_KEEPALIVE,
                connect_timeout_secs: link.map_or(policy::CONNECT_TIMEOUT_SECS, |l| l.connect_timeout_secs),
                connection_var: quote::nginx_variable(name, "connection"),
                host_port_var: quote::nginx_variable(name, "host_port"),
                dollar_geo: (alias_dirs.iter().any(|d| quote::nginx_needs_dollar(d))
                    || super::tls_view::NginxTls::needs_dollar(plan))
                .then_some(quote::NGINX_DOLLAR_GEO),
                server_names_hash_bucket_size: quote::nginx_server_names_bucket_size(&spec.server.names),
                security_headers: SECURITY_HEADERS
                    .iter()
                    .map(|(header, value)| {
                        let snake = header.to_ascii_lowercase().replace('-', "_");
                        SecurityHeader {
                            name: header,
                            value,
                            upstream_var: format!("$upstream_http_{snake}"),
                            var: quote::nginx_variable(name, &snake),
                        }
                    })
                    .collect(),
            },
            tls: super::tls_view::NginxTls::new(plan),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// uwsgi/app.ini.tera

#[derive(Debug, Serialize)]
pub struct UwsgiIni {
    #[serde(flatten)]
    pub header: Header,
    pub app: UwsgiApp,
    pub backend: AppServerView,
    pub server: UwsgiServer,
    pub uwsgi: UwsgiView,
}

#[derive(Debug, Serialize)]
pub struct UwsgiApp {
    /// Python identifiers (the spec checks the entry), as uWSGI values.
    pub module: String,
    pub attr: String,
    pub factory: bool,
}

/// What every app server's config says about its workers.
#[derive(Debug, Serialize)]
pub struct AppServerView {
    /// `None` means one worker per CPU, decided on the server.
    pub workers: Option<u32>,
    pub threads: u32,
    pub graceful_timeout_secs: u64,
    /// What it is spoken to in: `http`, or `uwsgi` behind nginx.
    pub protocol: &'static str,
}

#[derive(Debug, Serialize)]
pub struct UwsgiServer {
    pub timeout_secs: u64,
    pub max_body_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct UwsgiView {
    /// Debian's uWSGI loads Python as a plugin; a pip-built one has it built in.
    pub plugin: bool,
    pub chdir: String,
    pub virtualenv: String,
    pub post_buffering: u32,
    pub buffer_size: u32,
    /// `[[static]]` served by uWSGI itself: only at the edge (a front serves them otherwise).
    pub statics: Vec<UwsgiStaticView>,
}

#[derive(Debug, Serialize)]
pub struct UwsgiStaticView {
    /// `static-map` value: `URL=DIR/`.
    pub map: String,
    /// PCRE matching the paths (PATH_INFO, decoded, as `static-map` sees them) under the mount.
    pub path_regex: String,
    /// Response-routing label of the mount.
    pub label: String,
    pub expires_secs: u64,
}

fn app_server(plan: &Plan) -> AppServerView {
    let spec = &plan.spec;
    AppServerView {
        workers: spec.backend.workers,
        threads: spec.backend.threads,
        graceful_timeout_secs: spec.backend.graceful_timeout.0,
        protocol: plan.app_protocol().name(),
    }
}

impl UwsgiIni {
    fn new(plan: &Plan) -> UwsgiIni {
        let spec = &plan.spec;
        let serves_statics = plan.statics_served_by() == Some(Tier::Uwsgi);
        UwsgiIni {
            header: Header::new(plan),
            app: UwsgiApp {
                module: quote::uwsgi(&spec.app.entry.module),
                attr: quote::uwsgi(&spec.app.entry.attr),
                factory: spec.app.entry.factory,
            },
            backend: app_server(plan),
            server: UwsgiServer {
                timeout_secs: plan.app().timeout_secs,
                max_body_bytes: spec.server.max_body.0,
            },
            uwsgi: UwsgiView {
                plugin: spec.backend.uwsgi_build == crate::spec::UwsgiBuild::Debian,
                chdir: quote::uwsgi_path(&path_str(&spec.app.root)),
                virtualenv: quote::uwsgi_path(&path_str(&spec.app.venv)),
                post_buffering: policy::UWSGI_POST_BUFFERING,
                buffer_size: policy::UWSGI_BUFFER_SIZE,
                statics: if serves_statics {
                    spec.statics
                        .iter()
                        .enumerate()
                        .map(|(i, s)| UwsgiStaticView {
                            map: quote::uwsgi(&format!("{}={}/", s.url, path_str(&s.dir).trim_end_matches('/'))),
                            path_regex: quote::uwsgi(&format!("^{}", quote::pcre_literal(&s.url))),
                            label: format!("deployctl-static-{i}"),
                            expires_secs: s.expires.0,
                        })
                        .collect()
                } else {
                    Vec::new()
                },
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// gunicorn/gunicorn.conf.py.tera

#[derive(Debug, Serialize)]
pub struct GunicornConf {
    #[serde(flatten)]
    pub header: Header,
    pub backend: AppServerView,
    pub server: GunicornServer,
    pub gunicorn: GunicornView,
}

#[derive(Debug, Serialize)]
pub struct GunicornServer {
    pub timeout_secs: u64,
    /// For a comment.
    pub max_body: String,
}

#[derive(Debug, Serialize)]
pub struct GunicornView {
    pub wsgi_app: String,
    pub chdir: String,
    pub bind: String,
    pub worker_class: String,
    pub forwarded_allow_ips: String,
    pub control_socket: String,
    pub proc_name: String,
    pub keepalive: u32,
    pub limit_request_line: u32,
    pub limit_request_fields: u32,
    pub limit_request_field_size: u32,
    /// The front that enforces `max_body` (Gunicorn has no body limit); `None` alone.
    pub body_limit_by: Option<&'static str>,
    /// Behind nginx, over a unix socket: REMOTE_ADDR is set from nginx's X-Forwarded-For by a
    /// `post_worker_init` hook (Gunicorn itself leaves it empty).
    pub remote_addr_from_front: bool,
}

impl GunicornConf {
    fn new(plan: &Plan) -> GunicornConf {
        let spec = &plan.spec;
        let app = plan.app();
        let bind = app.listen.as_ref().map(Address::bind).unwrap_or_default();
        let front = plan
            .behind_front()
            .then(|| plan.tiers[plan.tiers.len() - 2].tier.name());
        GunicornConf {
            header: Header::new(plan),
            backend: app_server(plan),
            server: GunicornServer {
                timeout_secs: app.timeout_secs,
                max_body: spec.server.max_body.to_string(),
            },
            gunicorn: GunicornView {
                wsgi_app: quote::python(&spec.app.entry.to_string()),
                chdir: quote::python(&path_str(&spec.app.root)),
                bind: quote::python(&bind),
                worker_class: quote::python(if spec.backend.threads > 1 { "gthread" } else { "sync" }),
                forwarded_allow_ips: quote::python(&app.trusted_proxies.join(",")),
                control_socket: quote::python(&app.control_socket.as_deref().map(path_str).unwrap_or_default()),
                proc_name: quote::python(&plan.name),
                keepalive: policy::GUNICORN_KEEPALIVE_SECS,
                limit_request_line: policy::REQUEST_LINE_LIMIT,
                limit_request_fields: policy::REQUEST_FIELDS_LIMIT,
                limit_request_field_size: policy::REQUEST_FIELD_SIZE_LIMIT,
                body_limit_by: front,
                remote_addr_from_front: plan
                    .app_link()
                    .is_some_and(|l| matches!(l.transport, Transport::Unix(_))),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// systemd/app.service.tera and systemd/app.socket.tera

#[derive(Debug, Serialize)]
pub struct SystemdService {
    #[serde(flatten)]
    pub header: Header,
    pub systemd: ServiceView,
}

#[derive(Debug, Serialize)]
pub struct ServiceView {
    pub description: String,
    /// The socket unit it requires (`NAME.socket`).
    pub socket_unit: String,
    /// `RuntimeDirectory=`, `StateDirectory=`, `LogsDirectory=`.
    pub directory: String,
    pub user: String,
    pub group: String,
    pub working_directory: String,
    pub exec_start: String,
    pub exec_reload: String,
    pub environment: Vec<String>,
    /// `EnvironmentFile=` of `[app].secret_env`, and the names it must hold.
    pub environment_file: Option<String>,
    pub secret_env: Vec<String>,
    pub stop_timeout_secs: u64,
    pub restart_secs: u32,
    pub nofile: u32,
    pub hardening: Hardening,
}

#[derive(Debug, Serialize)]
pub struct Hardening {
    pub protect_home: &'static str,
    pub bind_read_only_paths: Vec<String>,
    pub read_write_paths: Vec<String>,
    pub memory_deny_write_execute: bool,
    pub private_users: bool,
    pub deny_resource_syscalls: bool,
    pub localhost_only: bool,
}

#[derive(Debug, Serialize)]
pub struct SystemdSocket {
    #[serde(flatten)]
    pub header: Header,
    pub systemd: SocketView,
}

#[derive(Debug, Serialize)]
pub struct SocketView {
    pub description: String,
    /// `ListenStream=` of the socket unit.
    pub listen_stream: String,
    /// More `ListenStream=`, in the order the server expects them after the first (the lone
    /// embedded server's plain listener beside TLS).
    pub more_listen_streams: Vec<String>,
    /// Owner and group of a unix socket; absent for TCP.
    pub socket_user: Option<String>,
    pub socket_group: Option<String>,
    pub backlog: u32,
}

fn description(plan: &Plan) -> String {
    quote::systemd_text(&format!("{} ({}, rendered by deployctl)", plan.name, plan.target))
}

impl SystemdService {
    fn new(plan: &Plan) -> SystemdService {
        let spec = &plan.spec;
        let app = plan.app();
        let exec = app.unit_exec.clone().unwrap_or_default();
        SystemdService {
            header: Header::new(plan),
            systemd: ServiceView {
                description: description(plan),
                socket_unit: plan.units.as_ref().map(|u| u.socket.clone()).unwrap_or_default(),
                directory: plan.units.as_ref().map(|u| u.directory.clone()).unwrap_or_default(),
                user: quote::systemd_text(&spec.systemd.user),
                group: quote::systemd_text(&spec.systemd.group),
                working_directory: quote::systemd_path(&path_str(&spec.app.root)),
                exec_start: quote::systemd_exec(&exec),
                exec_reload: EXEC_RELOAD.into(),
                environment: spec.app.env.iter().map(|(k, v)| quote::systemd_env(k, v)).collect(),
                environment_file: plan
                    .units
                    .as_ref()
                    .and_then(|u| u.secrets_file.as_deref())
                    .map(|f| quote::systemd_path(&path_str(f))),
                secret_env: spec.app.secret_env.clone(),
                stop_timeout_secs: app.process.as_ref().map_or(0, |p| p.stop_timeout_secs),
                restart_secs: policy::RESTART_SECS,
                nofile: policy::UNIT_NOFILE,
                hardening: hardening(plan, exec.first().map(PathBuf::from)),
            },
        }
    }
}

impl SystemdSocket {
    fn new(plan: &Plan) -> SystemdSocket {
        let spec = &plan.spec;
        let listen = plan.app().listen.as_ref();
        let unix = listen.is_some_and(|a| a.unix_path().is_some());
        SystemdSocket {
            header: Header::new(plan),
            systemd: SocketView {
                description: description(plan),
                listen_stream: quote::systemd_text(&listen.map(Address::listen_stream).unwrap_or_default()),
                more_listen_streams: plan
                    .tls
                    .as_ref()
                    .and_then(|t| t.embedded_http.as_ref())
                    .map(|l| quote::systemd_text(&Address::Tcp(l.clone()).listen_stream()))
                    .into_iter()
                    .collect(),
                socket_user: unix.then(|| quote::systemd_text(&spec.systemd.user)),
                socket_group: unix.then(|| quote::systemd_text(&spec.frontend.group)),
                backlog: policy::SOCKET_BACKLOG,
            },
        }
    }
}

/// `ProtectHome=yes` hides /home and /root, and `PrivateTmp=yes` hides the host's /tmp, so an
/// app living there could not start. Rather than weakening either, such paths are bound back
/// read-only (`ProtectHome=tmpfs` + `BindReadOnlyPaths=`), which keeps the exposure score low.
/// The paths: the app's directory, its virtualenv, the configs, and the program the service
/// runs (the `deployctl` of an embedded server may live anywhere).
pub(super) fn hardening(plan: &Plan, program: Option<PathBuf>) -> Hardening {
    let spec = &plan.spec;
    let hidden = |p: &Path| {
        ["/home", "/root", "/run/user", "/tmp", "/var/tmp"]
            .iter()
            .any(|h| p.starts_with(h))
    };
    let mut binds: Vec<PathBuf> = Vec::new();
    let mut wanted = vec![spec.app.root.clone(), spec.app.venv.clone(), plan.conf_dir.clone()];
    wanted.extend(program);
    for p in wanted {
        if hidden(&p) && !binds.iter().any(|b| p.starts_with(b)) {
            binds.retain(|b| !b.starts_with(&p));
            binds.push(p);
        }
    }
    binds.sort();
    let under_home = binds
        .iter()
        .any(|p| !(p.starts_with("/tmp") || p.starts_with("/var/tmp")));
    Hardening {
        protect_home: if under_home { "tmpfs" } else { "yes" },
        // `-` prefix: a path missing on the server is skipped rather than failing the unit.
        bind_read_only_paths: binds
            .iter()
            .map(|p| format!("-{}", quote::systemd_path_item(&path_str(p))))
            .collect(),
        read_write_paths: spec
            .systemd
            .read_write_paths
            .iter()
            .map(|p| quote::systemd_path_item(&path_str(p)))
            .collect(),
        memory_deny_write_execute: spec.systemd.memory_deny_write_execute,
        private_users: spec.systemd.private_users,
        deny_resource_syscalls: spec.systemd.deny_resource_syscalls,
        localhost_only: spec.systemd.localhost_only,
    }
}

// ---------------------------------------------------------------------------------------------
// apache/site.conf.tera and apache/httpd.conf.tera (both include apache/_vhosts.tera)

/// Where Debian's mime-support keeps the MIME types the self-contained configuration reads
/// (Debian's own `mime.conf` names the same file).
const APACHE_TYPES_CONFIG: &str = "/etc/mime.types";

/// The port Debian's `ports.conf` already listens on: a site on it adds no `Listen`.
const APACHE_DEBIAN_PORT: u16 = 80;

#[derive(Debug, Serialize)]
pub struct ApacheConf {
    #[serde(flatten)]
    pub header: Header,
    pub server: ApacheServer,
    pub statics: Vec<ApacheStatic>,
    pub backend: ApacheBackend,
    pub apache: ApacheView,
    /// mod_wsgi's daemon mode, when the app runs inside Apache (no proxy then).
    pub wsgi: Option<ApacheWsgi>,
    /// Behind another web server: whose `X-Forwarded-*` Apache believes (`mod_remoteip`).
    pub remoteip: Option<ApacheRemoteIp>,
    /// HTTPS with mod_ssl, when Apache is the edge and `[tls]` is set (`tls_view`).
    pub tls: Option<super::tls_view::ApacheTls>,
}

#[derive(Debug, Serialize)]
pub struct ApacheRemoteIp {
    /// `RemoteIPInternalProxy` arguments: the Apache tier's trusted proxies (the web server
    /// in front, on loopback), quoted.
    pub internal_proxies: Vec<String>,
}

/// `WSGIDaemonProcess` and the lines around it.
#[derive(Debug, Serialize)]
pub struct ApacheWsgi {
    /// The process group's name (plain: `[app].name`'s characters).
    pub group: String,
    /// `display-name=…`, `python-home=…` and `python-path=…`: mod_wsgi reads `key=` then an
    /// Apache word (`ap_getword_conf`), so the value alone is quoted.
    pub display_name: String,
    pub python_home: String,
    pub python_path: String,
    pub processes: u32,
    pub threads: u32,
    pub request_timeout_secs: u64,
    pub socket_timeout_secs: u64,
    pub graceful_timeout_secs: u64,
    /// The script, quoted.
    pub script: String,
    /// Its directory, quoted (`<Directory>`), and its file name, quoted (`<Files>`).
    pub script_dir: String,
    pub script_name: String,
    /// `WSGISocketPrefix` of the self-contained configuration (its runtime directory),
    /// quoted; Debian's configuration has its own.
    pub socket_prefix: String,
}

#[derive(Debug, Serialize)]
pub struct ApacheServer {
    /// `ServerName`: the first exact name of `[server].names` (the spec keeps them as Apache
    /// compares them: lower case, punycode), quoted.
    pub name: String,
    /// `ServerAlias`: the other names, wildcards included, quoted.
    pub aliases: Vec<String>,
    /// `Listen` argument: `HOST:PORT`.
    pub listen: String,
    /// `<VirtualHost *:PORT>`.
    pub vhost: String,
    /// `LimitRequestBody`: deploy.toml's `max_body`, in bytes.
    pub max_body_bytes: u64,
    /// `Timeout` and `ProxyTimeout`: how long Apache waits for the tier behind it (the link's
    /// timeout), as nginx's `proxy_read_timeout`.
    pub front_timeout_secs: u64,
    /// `X-Forwarded-Proto` to the app server, quoted: `https` behind mod_ssl, else the
    /// request's scheme.
    pub forwarded_proto: String,
}

#[derive(Debug, Serialize)]
pub struct ApacheStatic {
    /// The URL prefix, quoted, with its trailing slash.
    pub url: String,
    /// The directory, quoted, with a trailing slash matching the URL's.
    pub dir: String,
    pub expires_secs: u64,
}

#[derive(Debug, Serialize)]
pub struct ApacheBackend {
    /// `ProxyPass` target: `"unix:/run/NAME.sock|http://localhost/"` or `"http://HOST:PORT/"`.
    pub proxy_pass: String,
    /// `ProxyPassReverse` target: the URL part of `proxy_pass`.
    pub proxy_pass_reverse: String,
    pub connect_timeout_secs: u64,
}

#[derive(Debug, Serialize)]
pub struct LoadModule {
    /// `NAME_module`.
    pub id: String,
    /// The module's file, quoted.
    pub path: String,
}

#[derive(Debug, Serialize)]
pub struct ApacheView {
    /// `a2enmod` arguments, space-separated.
    pub a2enmod: String,
    /// `LoadModule` lines of the self-contained configuration: the MPM first.
    pub load_modules: Vec<LoadModule>,
    /// A `Listen` line in the Debian site (not when Debian's `ports.conf` has the port).
    pub site_listen: bool,
    /// `Define DEPLOYCTL_RUN` value (`quote::apache_variable`).
    pub run_dir_define: String,
    pub error_log: String,
    pub types_config: String,
    pub security_headers: Vec<ApacheHeader>,
}

#[derive(Debug, Serialize)]
pub struct ApacheHeader {
    pub name: &'static str,
    /// Quoted.
    pub value: String,
    /// `"expr=-z resp('NAME')"`: only when the app sent none of that name.
    pub condition: String,
}

impl ApacheConf {
    fn new(plan: &Plan) -> anyhow::Result<ApacheConf> {
        let spec = &plan.spec;
        let apache = plan
            .apache
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the plan has no Apache tier"))?;
        let tier = plan
            .tier(Tier::Apache)
            .ok_or_else(|| anyhow::anyhow!("the plan has no Apache tier"))?;
        let link = tier.next.as_ref();
        // Every value that reaches an Apache line, checked for the one thing it cannot hold.
        let q = |s: &str| -> anyhow::Result<String> {
            match quote::apache_problem(s) {
                Some(problem) => anyhow::bail!("{problem}"),
                None => Ok(quote::apache(s)),
            }
        };
        let listen = match &tier.listen {
            Some(Address::Tcp(l)) => l.clone(),
            Some(Address::Unix(_)) | None => anyhow::bail!("Apache listens on TCP only"),
        };
        // mod_proxy_http's `http://` or mod_proxy_uwsgi's `uwsgi://`, over the link's socket;
        // redirects are rewritten as the app builds them (with the Host Apache preserved).
        let scheme = match link.map(|l| l.protocol) {
            Some(Protocol::Uwsgi) => "uwsgi",
            Some(Protocol::Http | Protocol::InProcess) | None => "http",
        };
        let (proxy_pass, reverse) = match link.map(|l| &l.transport) {
            Some(Transport::Unix(p)) => {
                let socket = path_str(p);
                if let Some(problem) = quote::apache_proxy_unix_problem(&socket) {
                    return Err(crate::printer::hinted(
                        problem,
                        "a local run keeps the socket in its run directory: `--run-dir DIR` puts it in a path \
                         without that character",
                    ));
                }
                (
                    quote::apache_proxy_unix(&socket, scheme),
                    "http://localhost/".to_string(),
                )
            }
            Some(Transport::Tcp(l)) => (format!("{scheme}://{l}/"), format!("http://{l}/")),
            Some(Transport::InProcess) | None => (String::new(), String::new()),
        };
        let mut load_modules = vec![LoadModule {
            id: format!("mpm_{}_module", apache.mpm),
            path: q(&path_str(&apache.module_dir.join(format!("mod_mpm_{}.so", apache.mpm))))?,
        }];
        for m in &apache.modules {
            load_modules.push(LoadModule {
                id: format!("{m}_module"),
                path: q(&path_str(&apache.module_dir.join(format!("mod_{m}.so"))))?,
            });
        }
        let statics = spec
            .statics
            .iter()
            .map(|s| {
                let url = if s.url.ends_with('/') {
                    s.url.clone()
                } else {
                    format!("{}/", s.url)
                };
                Ok(ApacheStatic {
                    url: q(&url)?,
                    dir: q(&format!("{}/", path_str(&s.dir).trim_end_matches('/')))?,
                    expires_secs: s.expires.0,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // nginx's `.example.com` is `example.com` and its subdomains; Apache's wildcards are
        // `*` and `?`, and only ServerAlias takes them. ServerName is the first exact name,
        // or a name no client sends when there is none (`.invalid`, RFC 2606).
        let aliases: Vec<String> = spec
            .server
            .names
            .iter()
            .flat_map(|n| match n.strip_prefix('.') {
                Some(domain) => vec![domain.to_string(), format!("*.{domain}")],
                None => vec![n.clone()],
            })
            .collect();
        let exact = |n: &&String| !n.contains(['*', '?']);
        let server_name = aliases
            .iter()
            .find(exact)
            .cloned()
            .unwrap_or_else(|| format!("{}.invalid", plan.name));
        let aliases: Vec<String> = aliases.into_iter().filter(|n| *n != server_name).collect();
        let run_dir = path_str(&apache.run_dir);
        if let Some(problem) = quote::apache_problem(&run_dir) {
            anyhow::bail!("{problem}");
        }
        let wsgi = match &apache.wsgi {
            Some(w) => {
                let dir = w.script.path.parent().map(path_str).unwrap_or_default();
                let name = w
                    .script
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Some(ApacheWsgi {
                    group: w.group.clone(),
                    // mod_wsgi reads `key=VALUE`, the value an Apache word (quoted as any).
                    display_name: format!("display-name={}", q(&format!("(wsgi:{})", w.group))?),
                    python_home: format!("python-home={}", q(&path_str(&w.python_home))?),
                    python_path: format!("python-path={}", q(&path_str(&w.python_path))?),
                    processes: w.processes,
                    threads: w.threads,
                    request_timeout_secs: w.request_timeout_secs,
                    socket_timeout_secs: w.socket_timeout_secs,
                    graceful_timeout_secs: w.graceful_timeout_secs,
                    script: q(&path_str(&w.script.path))?,
                    script_dir: q(&dir)?,
                    script_name: q(&name)?,
                    // `${DEPLOYCTL_RUN}` is substituted by Apache: the runtime directory the
                    // configuration was started with.
                    socket_prefix: "\"${DEPLOYCTL_RUN}/wsgi\"".into(),
                })
            }
            None => None,
        };
        let tls = super::tls_view::ApacheTls::new(plan)?;
        Ok(ApacheConf {
            header: Header::new(plan),
            server: ApacheServer {
                name: q(&server_name)?,
                aliases: aliases.iter().map(|n| q(n)).collect::<anyhow::Result<Vec<_>>>()?,
                listen: listen.to_string(),
                vhost: format!("*:{}", listen.port),
                max_body_bytes: spec.server.max_body.0,
                front_timeout_secs: link.map_or(tier.timeout_secs, |l| l.timeout_secs),
                forwarded_proto: quote::apache(if tls.is_some() {
                    "https"
                } else {
                    "expr=%{REQUEST_SCHEME}"
                }),
            },
            statics,
            backend: ApacheBackend {
                proxy_pass: q(&proxy_pass)?,
                proxy_pass_reverse: q(&reverse)?,
                connect_timeout_secs: link.map_or(policy::CONNECT_TIMEOUT_SECS, |l| l.connect_timeout_secs),
            },
            apache: ApacheView {
                a2enmod: apache.modules.join(" "),
                load_modules,
                site_listen: listen.port != APACHE_DEBIAN_PORT,
                run_dir_define: quote::apache_variable(&run_dir),
                error_log: q(&path_str(&apache.error_log))?,
                types_config: q(APACHE_TYPES_CONFIG)?,
                security_headers: SECURITY_HEADERS
                    .iter()
                    .map(|(name, value)| ApacheHeader {
                        name,
                        value: quote::apache(value),
                        condition: quote::apache(&format!("expr=-z resp('{name}')")),
                    })
                    .collect(),
            },
            wsgi,
            remoteip: match plan.edge().tier {
                Tier::Apache => None,
                Tier::Nginx | Tier::Embedded | Tier::Uwsgi | Tier::Gunicorn | Tier::ModWsgi => Some(ApacheRemoteIp {
                    internal_proxies: tier
                        .trusted_proxies
                        .iter()
                        .map(|p| q(p))
                        .collect::<anyhow::Result<_>>()?,
                }),
            },
            tls,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// mod_wsgi/app.wsgi.tera

/// The script mod_wsgi loads: it imports `[app].entry` as `application`.
#[derive(Debug, Serialize)]
pub struct WsgiScript {
    #[serde(flatten)]
    pub header: Header,
    /// The module, as a Python string literal.
    pub module: String,
    /// The attribute, as a Python string literal.
    pub attr: String,
    /// `module:factory()`: the attribute is called.
    pub factory: bool,
    /// `[app].env`, set in `os.environ` before the import (Apache's `SetEnv` does not reach
    /// it), each a Python string literal.
    pub env: Vec<EnvVar>,
}

#[derive(Debug, Serialize)]
pub struct EnvVar {
    pub key: String,
    pub value: String,
}

impl WsgiScript {
    fn new(plan: &Plan) -> anyhow::Result<WsgiScript> {
        let entry = &plan.spec.app.entry;
        Ok(WsgiScript {
            header: Header::new(plan),
            module: quote::python(&entry.module),
            attr: quote::python(&entry.attr),
            factory: entry.factory,
            env: plan
                .spec
                .app
                .env
                .iter()
                .map(|(k, v)| EnvVar {
                    key: quote::python(k),
                    value: quote::python(v),
                })
                .collect(),
        })
    }
}
