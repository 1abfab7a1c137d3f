//! View models: everything a template prints, computed in Rust.
//!
//! Templates only loop and branch over these fields. Values that must agree across files —
//! the socket path, the body limit, the timeouts — are computed once here, so the layers
//! cannot disagree.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::quote;
use crate::spec::{Spec, UwsgiBuild};
use crate::target::{Backend, Frontend, Target};

/// How much longer the front waits for the backend than the backend's own request timeout,
/// so a backend that times out answers with its own error before the front gives up (504).
pub const FRONT_TIMEOUT_SLACK_SECS: u64 = 5;

/// nginx upstream keep-alive pool; must be at least the expected concurrency
/// (reference deploy-configs.md §1 row 21).
pub const UPSTREAM_KEEPALIVE: u32 = 64;

#[derive(Debug, Serialize)]
pub struct View {
    /// What the files were rendered from, for the header comment (no absolute path, so the
    /// same project renders the same header anywhere).
    pub source: String,
    pub target: String,
    pub name: String,
    pub app: AppView,
    pub server: ServerView,
    pub statics: Vec<StaticView>,
    pub backend: BackendView,
    pub nginx: Option<NginxView>,
    pub uwsgi: Option<UwsgiView>,
    pub gunicorn: Option<GunicornView>,
    pub systemd: SystemdView,
}

#[derive(Debug, Serialize)]
pub struct AppView {
    pub entry: String,
    pub module: String,
    pub attr: String,
    pub factory: bool,
    pub root: String,
    pub venv: String,
}

#[derive(Debug, Serialize)]
pub struct ServerView {
    pub names: Vec<String>,
    /// `listen` argument for nginx / the public address of a lone backend.
    pub listen: String,
    pub max_body: String,
    pub max_body_bytes: u64,
    pub timeout_secs: u64,
    pub front_timeout_secs: u64,
    pub forwarded_allow_ips: String,
}

#[derive(Debug, Serialize)]
pub struct StaticView {
    pub url: String,
    /// Absolute directory with a trailing slash, matching the URL's trailing slash
    /// (an `alias` without it allows `/static../` traversal).
    pub alias: String,
    pub expires_secs: u64,
}

#[derive(Debug, Serialize)]
pub struct BackendView {
    pub kind: String,
    /// Where the backend listens: `unix:/run/NAME.sock` behind a front, else `host:port`.
    pub bind: String,
    /// The unix socket path behind a front.
    pub socket: Option<String>,
    /// `None` means one worker per CPU, decided on the server.
    pub workers: Option<u32>,
    pub threads: u32,
    pub graceful_timeout_secs: u64,
    /// Whether the backend speaks HTTP (`proxy_pass`) or uwsgi (`uwsgi_pass`) to the front.
    pub protocol: &'static str,
}

/// The front's default for a security header (deployctl's policy).
const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
];

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

#[derive(Debug, Serialize)]
pub struct UwsgiView {
    /// Debian's uWSGI loads Python as a plugin; a pip-built one has it built in.
    pub plugin: bool,
    pub binary: String,
    pub chdir: String,
    pub virtualenv: String,
    /// `[[static]]` served by uWSGI itself: only without a front, which serves them otherwise.
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

#[derive(Debug, Serialize)]
pub struct GunicornView {
    pub wsgi_app: String,
    pub chdir: String,
    pub bind: String,
    pub worker_class: String,
    pub forwarded_allow_ips: String,
    pub control_socket: String,
    pub proc_name: String,
    /// Behind nginx, over a unix socket: REMOTE_ADDR is set from nginx's X-Forwarded-For by a
    /// `post_worker_init` hook (Gunicorn itself leaves it empty).
    pub remote_addr_from_front: bool,
}

#[derive(Debug, Serialize)]
pub struct SystemdView {
    pub description: String,
    pub user: String,
    pub group: String,
    pub working_directory: String,
    pub exec_start: String,
    pub exec_reload: String,
    pub environment: Vec<String>,
    /// `ListenStream=` of the socket unit.
    pub listen_stream: String,
    /// Owner, group and mode of a unix socket; absent for TCP.
    pub socket_user: Option<String>,
    pub socket_group: Option<String>,
    pub stop_timeout_secs: u64,
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

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl View {
    pub fn new(spec: &Spec, target: Target, out_dir: &Path) -> View {
        View::with_socket_dir(spec, target, out_dir, Path::new("/run"))
    }

    /// The same configs with the sockets between components in `socket_dir` (a local run
    /// keeps them under the project instead of `/run`).
    pub fn with_socket_dir(spec: &Spec, target: Target, out_dir: &Path, socket_dir: &Path) -> View {
        let name = spec.app.name.clone();
        let behind_front = target.frontend != Frontend::None;
        let socket = behind_front.then(|| path_str(&socket_dir.join(format!("{name}.sock"))));
        let bind = match &socket {
            Some(s) => format!("unix:{s}"),
            None => spec.server.listen.to_string(),
        };
        let timeout = spec.server.timeout.0;
        let protocol = if target.backend == Backend::Uwsgi && behind_front {
            "uwsgi"
        } else {
            "http"
        };
        let forwarded_allow_ips = spec.server.forwarded_allow_ips.join(",");
        let env: Vec<(String, String)> = spec.app.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();

        let app = AppView {
            entry: spec.app.entry.to_string(),
            module: spec.app.entry.module.clone(),
            attr: spec.app.entry.attr.clone(),
            factory: spec.app.entry.factory,
            root: path_str(&spec.app.root),
            venv: path_str(&spec.app.venv),
        };
        let server = ServerView {
            // The spec keeps names as nginx compares them (lower case, punycode).
            names: spec.server.names.iter().map(|n| quote::nginx_literal(n)).collect(),
            listen: spec.server.listen.to_string(),
            max_body: spec.server.max_body.to_string(),
            max_body_bytes: spec.server.max_body.0,
            timeout_secs: timeout,
            front_timeout_secs: timeout + FRONT_TIMEOUT_SLACK_SECS,
            forwarded_allow_ips: forwarded_allow_ips.clone(),
        };
        let alias_dirs: Vec<String> = spec
            .statics
            .iter()
            .map(|s| format!("{}/", path_str(&s.dir).trim_end_matches('/')))
            .collect();
        let statics = spec
            .statics
            .iter()
            .zip(&alias_dirs)
            .map(|(s, dir)| StaticView {
                url: quote::nginx_literal(&s.url),
                alias: quote::nginx_script(dir),
                expires_secs: s.expires.0,
            })
            .collect();
        let backend = BackendView {
            kind: target.backend.name().to_string(),
            bind: bind.clone(),
            socket: socket.clone(),
            workers: spec.backend.workers,
            threads: spec.backend.threads,
            graceful_timeout_secs: spec.backend.graceful_timeout.0,
            protocol,
        };
        let nginx = (target.frontend == Frontend::Nginx).then(|| NginxView {
            upstream: format!("{}_backend", name.replace(['-', '.'], "_")),
            upstream_server: quote::nginx_literal(&bind),
            keepalive: UPSTREAM_KEEPALIVE,
            connection_var: quote::nginx_variable(&name, "connection"),
            host_port_var: quote::nginx_variable(&name, "host_port"),
            dollar_geo: alias_dirs
                .iter()
                .any(|d| quote::nginx_needs_dollar(d))
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
                        var: quote::nginx_variable(&name, &snake),
                    }
                })
                .collect(),
        });
        let uwsgi_binary = match spec.backend.uwsgi_build {
            UwsgiBuild::Debian => "/usr/bin/uwsgi".to_string(),
            UwsgiBuild::Pip => path_str(&spec.app.venv.join("bin/uwsgi")),
        };
        let uwsgi = (target.backend == Backend::Uwsgi).then(|| UwsgiView {
            plugin: spec.backend.uwsgi_build == UwsgiBuild::Debian,
            binary: uwsgi_binary.clone(),
            chdir: quote::uwsgi_path(&path_str(&spec.app.root)),
            virtualenv: quote::uwsgi_path(&path_str(&spec.app.venv)),
            statics: if behind_front {
                Vec::new()
            } else {
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
            },
        });
        let gunicorn = (target.backend == Backend::Gunicorn).then(|| GunicornView {
            wsgi_app: quote::python(&spec.app.entry.to_string()),
            chdir: quote::python(&path_str(&spec.app.root)),
            bind: quote::python(&bind),
            worker_class: quote::python(if spec.backend.threads > 1 { "gthread" } else { "sync" }),
            forwarded_allow_ips: quote::python(&forwarded_allow_ips),
            // Gunicorn 27 opens a control socket under $HOME by default, which ProtectHome
            // hides: keep it in the runtime directory.
            control_socket: quote::python(&if socket_dir == Path::new("/run") {
                format!("/run/{name}/gunicorn.ctl")
            } else {
                path_str(&socket_dir.join("gunicorn.ctl"))
            }),
            proc_name: quote::python(&name),
            remote_addr_from_front: behind_front,
        });

        let config = |rel: &str| path_str(&out_dir.join(rel));
        let exec_start = match target.backend {
            Backend::Gunicorn => quote::systemd_exec(&[
                path_str(&spec.app.venv.join("bin/gunicorn")),
                "--config".into(),
                config("gunicorn/gunicorn.conf.py"),
            ]),
            Backend::Uwsgi => quote::systemd_exec(&[
                uwsgi_binary,
                "--ini".into(),
                quote::uwsgi_ini_arg(&config(&format!("uwsgi/{name}.ini"))),
            ]),
            Backend::Embedded | Backend::ModWsgi => embedded_command(spec, &bind),
        };
        let socket_unit_owner = socket.is_some();
        let systemd = SystemdView {
            description: quote::systemd_text(&format!("{name} ({target}, rendered by deployctl)")),
            user: spec.systemd.user.clone(),
            group: spec.systemd.group.clone(),
            working_directory: quote::systemd_path(&path_str(&spec.app.root)),
            exec_start,
            exec_reload: "/bin/kill -s HUP $MAINPID".into(),
            environment: env.iter().map(|(k, v)| quote::systemd_env(k, v)).collect(),
            listen_stream: quote::systemd_text(&socket.clone().unwrap_or_else(|| spec.server.listen.to_string())),
            socket_user: socket_unit_owner.then(|| spec.systemd.user.clone()),
            socket_group: socket_unit_owner.then(|| spec.frontend.group.clone()),
            stop_timeout_secs: spec.backend.graceful_timeout.0 + FRONT_TIMEOUT_SLACK_SECS,
            hardening: hardening(spec, out_dir),
        };
        View {
            source: crate::spec::FILE_NAME.to_string(),
            target: target.to_string(),
            name,
            app,
            server,
            statics,
            backend,
            nginx,
            uwsgi,
            gunicorn,
            systemd,
        }
    }
}

/// The `deployctl serve` command line of `*+embedded` units: the Gunicorn-style flag
/// contract that the embedded server implements.
fn embedded_command(spec: &Spec, bind: &str) -> String {
    let mut w = vec![
        path_str(&spec.systemd.deployctl),
        "serve".into(),
        spec.app.entry.to_string(),
        "--bind".into(),
        bind.to_string(),
    ];
    if let Some(n) = spec.backend.workers {
        w.extend(["--workers".into(), n.to_string()]);
    }
    w.extend([
        "--threads".into(),
        spec.backend.threads.to_string(),
        "--timeout".into(),
        spec.server.timeout.0.to_string(),
        "--graceful-timeout".into(),
        spec.backend.graceful_timeout.0.to_string(),
        "--max-body".into(),
        spec.server.max_body.0.to_string(),
        "--forwarded-allow-ips".into(),
        spec.server.forwarded_allow_ips.join(","),
        "--chdir".into(),
        path_str(&spec.app.root),
        "--venv".into(),
        path_str(&spec.app.venv),
    ]);
    quote::systemd_exec(&w)
}

/// `ProtectHome=yes` hides /home and /root, and `PrivateTmp=yes` hides the host's /tmp, so an
/// app living there could not start. Rather than weakening either, such paths are bound back
/// read-only (`ProtectHome=tmpfs` + `BindReadOnlyPaths=`), which keeps the exposure score low.
fn hardening(spec: &Spec, out_dir: &Path) -> Hardening {
    let hidden = |p: &Path| {
        ["/home", "/root", "/run/user", "/tmp", "/var/tmp"]
            .iter()
            .any(|h| p.starts_with(h))
    };
    let mut binds: Vec<PathBuf> = Vec::new();
    let mut wanted = vec![spec.app.root.clone(), spec.app.venv.clone(), out_dir.to_path_buf()];
    if spec.backend.kind == Backend::Embedded {
        wanted.push(spec.systemd.deployctl.clone());
    }
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
