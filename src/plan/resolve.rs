//! Building a [`Plan`]: every name, path, command line, listener, timeout and trusted set,
//! computed once from the spec, the chain and the environment.

use std::path::{Path, PathBuf};

use super::chain::{self, Chain, Protocol, Role, Tier};
use super::model::*;
use super::policy;
use crate::render::quote;
use crate::spec::{Listen, Spec, UwsgiBuild};
use crate::target::Target;

/// The loopback port of a web server behind another (Apache cannot listen on a unix socket).
pub const INNER_WEB_PORT: u16 = 8081;

impl Plan {
    /// Resolves `target` for `spec` in `environment`. Infallible: a chain this build does not
    /// render still resolves (tiers, links, processes); it has no outputs.
    pub fn resolve(spec: &Spec, target: Target, environment: Environment) -> Plan {
        Plan::resolve_assigned(spec, target, environment, Assigned::default())
    }

    /// [`Plan::resolve`] with what the host assigned the app ([`Assigned`]: install's pick of
    /// a loopback port no other installed app uses).
    pub fn resolve_assigned(spec: &Spec, target: Target, environment: Environment, assigned: Assigned) -> Plan {
        let chain = Chain::from(target);
        // A certificate is for the names as written, not the ones a local run adds.
        let names_written = spec.server.names.clone();
        let mut spec = spec.clone();
        match &environment {
            Environment::Local { .. } => spec.server.names = local_names(&spec),
            Environment::Container => relocate(&mut spec),
            Environment::Production { .. } => {}
        }
        let name = spec.app.name.clone();
        let conf_dir = match &environment {
            Environment::Production { out } => out.clone(),
            Environment::Local { conf_dir, .. } => conf_dir.clone(),
            Environment::Container => PathBuf::from(CONTAINER_CONF),
        };
        let units = match &environment {
            Environment::Production { .. } | Environment::Local { .. } => Some(Units {
                service: format!("{name}.service"),
                socket: format!("{name}.socket"),
                directory: name.clone(),
                secrets_file: (matches!(environment, Environment::Production { .. })
                    && !spec.app.secret_env.is_empty())
                .then(|| Path::new(SECRETS_DIR).join(&name).join("secrets.env")),
            }),
            Environment::Container => None,
        };
        let tiers = tiers(&spec, &chain, (&environment, assigned), &conf_dir, units.as_ref());
        let apache = apache_files(&spec, &chain, &environment, &conf_dir);
        let mut plan = Plan {
            spec,
            target,
            chain,
            environment,
            name,
            tiers,
            conf_dir,
            units,
            apache,
            tls: None,
            outputs: Vec::new(),
            cluster: None,
        };
        plan.tls = super::tls::resolve(&plan, &names_written);
        super::tls::embedded_edge(&mut plan);
        super::tls::apache_edge(&mut plan);
        plan.outputs = outputs(&plan);
        let renewal = super::tls::outputs(&plan);
        plan.outputs.extend(renewal);
        plan
    }
}

/// The names a local run answers: `[server].names`, then `localhost` and the host of the
/// listen address as a browser writes it (`127.0.0.1` for `--listen 127.0.0.1:8000`), so the
/// URL `up` prints is not refused by the default server.
pub fn local_names(spec: &Spec) -> Vec<String> {
    let mut names = spec.server.names.clone();
    for extra in ["localhost".to_string(), spec.server.listen.browser_host()] {
        if !names.contains(&extra) {
            names.push(extra);
        }
    }
    names
}

/// A container holds the project at [`CONTAINER_APP`]: paths under deploy.toml's directory
/// move there; the `deployctl` binary is the image's.
fn relocate(spec: &mut Spec) {
    let project = spec.dir().to_path_buf();
    let inside = |p: &Path| match p.strip_prefix(&project) {
        Ok(rel) if rel.as_os_str().is_empty() => PathBuf::from(CONTAINER_APP),
        Ok(rel) => Path::new(CONTAINER_APP).join(rel),
        Err(_) => p.to_path_buf(),
    };
    spec.path = inside(&spec.path);
    spec.app.root = inside(&spec.app.root);
    spec.app.venv = inside(&spec.app.venv);
    spec.app.requirements = spec.app.requirements.as_deref().map(inside);
    for s in &mut spec.statics {
        s.dir = inside(&s.dir);
    }
    spec.systemd.read_write_paths = spec.systemd.read_write_paths.iter().map(|p| inside(p)).collect();
    spec.systemd.deployctl = PathBuf::from(CONTAINER_DEPLOYCTL);
    if spec.server.listen.port < 1024 {
        spec.server.listen = Listen {
            host: spec.server.listen.host.clone(),
            port: CONTAINER_EDGE_PORT,
        };
    }
}

fn loopback(port: u16) -> Listen {
    Listen {
        host: "127.0.0.1".into(),
        port,
    }
}

/// Where the tier at `index` (not the edge) listens, and who creates that socket.
fn inner_address(
    spec: &Spec,
    tier: Tier,
    index: usize,
    (env, assigned): (&Environment, Assigned),
    units: Option<&Units>,
) -> (Option<Address>, SocketCreator) {
    let unit = || units.map_or(SocketCreator::Up, |u| SocketCreator::SystemdUnit(u.socket.clone()));
    let unix = |dir: &Path| Address::Unix(dir.join(format!("{}.sock", spec.app.name)));
    match tier.role() {
        Role::InProcessApp => (None, SocketCreator::Nobody),
        // Apache cannot listen on a unix socket: a web server behind another is on loopback.
        Role::WebServer => (
            Some(Address::Tcp(loopback(
                assigned.inner_web_port.unwrap_or_else(|| inner_web_port(spec, env)),
            ))),
            SocketCreator::Tier,
        ),
        Role::AppServer => match env {
            Environment::Production { .. } => (Some(unix(Path::new("/run"))), unit()),
            Environment::Local { socket_dir, .. } => (Some(unix(socket_dir)), SocketCreator::Up),
            Environment::Container => (
                Some(Address::Tcp(loopback(CONTAINER_FIRST_PORT + index as u16 - 1))),
                SocketCreator::Tier,
            ),
        },
    }
}

/// The loopback port of a web server behind another, unless the host assigned one
/// ([`Assigned::inner_web_port`]): [`INNER_WEB_PORT`] on a server; in a
/// local run the public port's nearest neighbour that is not `[tls].listen`'s (one above, two
/// above, one below, …), so that stacks of several projects run side by side (`up` checks that
/// it is free before starting).
fn inner_web_port(spec: &Spec, env: &Environment) -> u16 {
    match env {
        Environment::Local { .. } => {
            let port = spec.server.listen.port;
            let tls = spec.tls.as_ref().map(|t| t.listen.port);
            [1i32, 2, -1, -2]
                .iter()
                .filter_map(|d| u16::try_from(i32::from(port) + d).ok())
                .find(|p| *p != 0 && Some(*p) != tls)
                .unwrap_or(INNER_WEB_PORT)
        }
        Environment::Production { .. } | Environment::Container => INNER_WEB_PORT,
    }
}

fn tiers(
    spec: &Spec,
    chain: &Chain,
    (env, assigned): (&Environment, Assigned),
    conf_dir: &Path,
    units: Option<&Units>,
) -> Vec<TierPlan> {
    let list = chain.tiers();
    let n = list.len();
    // Where each tier listens, edge first.
    let listens: Vec<(Option<Address>, SocketCreator)> = list
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            if i == 0 {
                let by = match env {
                    Environment::Production { .. } => match t.role() {
                        // A lone app server's public socket comes from its socket unit; a
                        // front's listen is its own.
                        Role::AppServer => {
                            units.map_or(SocketCreator::Tier, |u| SocketCreator::SystemdUnit(u.socket.clone()))
                        }
                        Role::WebServer | Role::InProcessApp => SocketCreator::Tier,
                    },
                    Environment::Local { .. } => match t.role() {
                        Role::AppServer => SocketCreator::Up,
                        Role::WebServer | Role::InProcessApp => SocketCreator::Tier,
                    },
                    Environment::Container => SocketCreator::Tier,
                };
                (Some(Address::Tcp(spec.server.listen.clone())), by)
            } else {
                inner_address(spec, t, i, (env, assigned), units)
            }
        })
        .collect();
    // Timeouts, innermost first: the app's own, then one slack per hop outward (none in
    // process: one server).
    let mut timeouts = vec![0u64; n];
    for i in (0..n).rev() {
        timeouts[i] = if i == n - 1 {
            spec.server.timeout.0
        } else {
            match chain::link(list[i], list[i + 1]) {
                Ok(Protocol::InProcess) => timeouts[i + 1],
                Ok(Protocol::Http | Protocol::Uwsgi) | Err(_) => timeouts[i + 1] + policy::HOP_TIMEOUT_SLACK_SECS,
            }
        };
    }
    (0..n)
        .map(|i| {
            let tier = list[i];
            let next = (i + 1 < n).then(|| {
                let (addr, by) = &listens[i + 1];
                Link {
                    protocol: chain::link(tier, list[i + 1]).unwrap_or(Protocol::Http),
                    transport: match addr {
                        Some(Address::Unix(p)) => Transport::Unix(p.clone()),
                        Some(Address::Tcp(l)) => Transport::Tcp(l.clone()),
                        None => Transport::InProcess,
                    },
                    socket_by: by.clone(),
                    timeout_secs: timeouts[i],
                    connect_timeout_secs: policy::CONNECT_TIMEOUT_SECS,
                }
            });
            let (listen, listen_by) = listens[i].clone();
            let config = config_file(spec, tier, conf_dir);
            let trusted_proxies = trusted(spec, tier, i);
            let hop = Hop {
                listen: listen.as_ref(),
                config: config.as_ref(),
                trusted: &trusted_proxies,
                timeout_secs: timeouts[i],
                in_process_app: list.get(i + 1).is_some_and(|t| t.role() == Role::InProcessApp),
                edge: i == 0,
            };
            let process = process(spec, tier, env, &hop, units);
            let unit_exec = unit_exec(spec, tier, env, &hop, units);
            TierPlan {
                tier,
                listen,
                listen_by,
                next,
                process,
                config,
                trusted_proxies,
                timeout_secs: timeouts[i],
                control_socket: control_socket(tier, env, units),
                unit_exec,
            }
        })
        .collect()
}

/// Whose `X-Forwarded-*` a tier believes: the app server, `[server].forwarded_allow_ips`
/// (the same list behind a front and alone, as before per-hop sets existed); a web server at
/// the edge, nobody (it sets the headers); one behind another, that one on loopback.
fn trusted(spec: &Spec, tier: Tier, index: usize) -> Vec<String> {
    match tier.role() {
        Role::AppServer | Role::InProcessApp => spec.server.forwarded_allow_ips.clone(),
        Role::WebServer if index == 0 => Vec::new(),
        Role::WebServer => vec!["127.0.0.1".into()],
    }
}

/// Gunicorn's control socket: it opens one under `$HOME` by default, which `ProtectHome`
/// hides, so it is kept in the runtime directory.
fn control_socket(tier: Tier, env: &Environment, units: Option<&Units>) -> Option<PathBuf> {
    match tier {
        Tier::Gunicorn => Some(match env {
            Environment::Production { .. } => units
                .map_or_else(|| PathBuf::from("/run"), Units::runtime_dir)
                .join("gunicorn.ctl"),
            Environment::Local { socket_dir, .. } => socket_dir.join("gunicorn.ctl"),
            Environment::Container => PathBuf::from("/tmp/gunicorn.ctl"),
        }),
        Tier::Nginx | Tier::Apache | Tier::Embedded | Tier::Uwsgi | Tier::ModWsgi => None,
    }
}

fn config_file(spec: &Spec, tier: Tier, conf_dir: &Path) -> Option<ConfigFile> {
    let name = &spec.app.name;
    let rel = match tier {
        Tier::Nginx => format!("nginx/{name}.conf"),
        Tier::Uwsgi => format!("uwsgi/{name}.ini"),
        Tier::Gunicorn => "gunicorn/gunicorn.conf.py".into(),
        // The embedded server takes its settings on its command line (or deploy.toml).
        Tier::Embedded => return None,
        // The Debian site; the self-contained configuration is `Plan::apache`'s.
        Tier::Apache => format!("apache/{name}.conf"),
        // mod_wsgi's settings live in Apache's configuration.
        Tier::ModWsgi => return None,
    };
    Some(ConfigFile {
        path: conf_dir.join(&rel),
        rel,
    })
}

/// Where Debian's `apache2` package keeps the modules.
pub const APACHE_MODULE_DIR: &str = "/usr/lib/apache2/modules";

/// Apache's files when the chain has it: the site, the self-contained configuration and
/// where that one keeps its runtime files, and the modules the site needs.
fn apache_files(spec: &Spec, chain: &Chain, env: &Environment, conf_dir: &Path) -> Option<ApacheFiles> {
    let index = chain.tiers().iter().position(|t| *t == Tier::Apache)?;
    let name = &spec.app.name;
    let site = config_file(spec, Tier::Apache, conf_dir)?;
    let rel = "apache/httpd.conf".to_string();
    let httpd_conf = ConfigFile {
        path: conf_dir.join(&rel),
        rel,
    };
    let (run_dir, error_log) = match env {
        Environment::Local { socket_dir, .. } => {
            let files = RunFiles {
                dir: socket_dir.clone(),
            };
            (files.apache_dir(), files.apache_dir().join("error.log"))
        }
        Environment::Production { .. } | Environment::Container => (
            PathBuf::from(format!("/run/apache2-{name}")),
            PathBuf::from(format!("/var/log/apache2/{name}-error.log")),
        ),
    };
    // What the site's directives need: access control, MIME types, static aliases, headers,
    // expiry, then what the link inward speaks.
    let mut modules = vec!["authz_core", "mime", "alias", "headers", "expires"];
    if index > 0 {
        // Behind nginx: the client address from nginx's header (remoteip), the scheme from
        // nginx's (setenvif: `HTTPS=on`).
        modules.extend(["remoteip", "setenvif"]);
    }
    let inner = chain.tiers().get(index + 1).copied();
    let wsgi = (inner == Some(Tier::ModWsgi)).then(|| mod_wsgi(spec, conf_dir));
    match inner.map(|t| chain::link(Tier::Apache, t)) {
        // rewrite: the body limit of proxied requests (LimitRequestBody skips them).
        Some(Ok(Protocol::Http)) => modules.extend(["rewrite", "proxy", "proxy_http"]),
        Some(Ok(Protocol::Uwsgi)) => modules.extend(["rewrite", "proxy", "proxy_uwsgi"]),
        Some(Ok(Protocol::InProcess)) => modules.push("wsgi"),
        Some(Err(_)) | None => {}
    }
    Some(ApacheFiles {
        site,
        httpd_conf,
        run_dir,
        error_log,
        module_dir: PathBuf::from(APACHE_MODULE_DIR),
        modules,
        mpm: "event",
        wsgi,
    })
}

/// Where Debian's `libapache2-mod-wsgi-py3` installs the module.
pub const MOD_WSGI_MODULE: &str = "/usr/lib/apache2/modules/mod_wsgi.so";
/// The interpreter Debian's mod_wsgi is built against.
pub const MOD_WSGI_PYTHON: &str = "/usr/bin/python3";

/// mod_wsgi's daemon process group: the app server's settings of deploy.toml, in Apache.
fn mod_wsgi(spec: &Spec, conf_dir: &Path) -> ModWsgi {
    let rel = format!("mod_wsgi/{}.wsgi", spec.app.name);
    ModWsgi {
        group: spec.app.name.clone(),
        script: ConfigFile {
            path: conf_dir.join(&rel),
            rel,
        },
        processes: spec.backend.workers.unwrap_or(policy::MOD_WSGI_AUTO_PROCESSES),
        threads: spec.backend.threads,
        python_home: spec.app.venv.clone(),
        python_path: spec.app.root.clone(),
        request_timeout_secs: spec.server.timeout.0,
        // Apache's wait for the app: the app's timeout and one slack, as for any backend.
        socket_timeout_secs: spec.server.timeout.0 + policy::HOP_TIMEOUT_SLACK_SECS,
        graceful_timeout_secs: spec.backend.graceful_timeout.0,
        python: PathBuf::from(MOD_WSGI_PYTHON),
        module: PathBuf::from(MOD_WSGI_MODULE),
    }
}

/// The uWSGI binary: Debian's, or the one pip installed into the virtualenv.
fn uwsgi_binary(spec: &Spec) -> PathBuf {
    match spec.backend.uwsgi_build {
        UwsgiBuild::Debian => PathBuf::from("/usr/bin/uwsgi"),
        UwsgiBuild::Pip => deployctl_common::venv::bin(&spec.app.venv, "uwsgi"),
    }
}

/// What a tier's command line is made of, besides the spec.
struct Hop<'a> {
    listen: Option<&'a Address>,
    config: Option<&'a ConfigFile>,
    trusted: &'a [String],
    timeout_secs: u64,
    /// The next tier runs the app inside this one's processes (Apache hosting mod_wsgi).
    in_process_app: bool,
    /// The tier is the edge: nothing in front serves `[[static]]` (the embedded server then
    /// serves it itself).
    edge: bool,
}

fn process(spec: &Spec, tier: Tier, env: &Environment, hop: &Hop, units: Option<&Units>) -> Option<Process> {
    let app_stop = spec.backend.graceful_timeout.0 + policy::STOP_SLACK_SECS;
    let unit = match env {
        Environment::Production { .. } => units.map(|u| u.service.clone()),
        Environment::Local { .. } | Environment::Container => None,
    };
    let config_path = || hop.config.map(|c| c.path.display().to_string()).unwrap_or_default();
    let bind = hop.listen.map(Address::bind).unwrap_or_default();
    let (program, args) = match tier {
        Tier::Embedded => match env {
            // `up` runs the server itself; it reads deploy.toml (and follows it on reload),
            // `[[static]]` included unless a front serves it.
            Environment::Local { .. } => {
                let mut args = vec![
                    "--config".into(),
                    spec.path.display().to_string(),
                    "--bind".into(),
                    bind,
                ];
                if !hop.edge && !spec.statics.is_empty() {
                    args.push("--no-static".into());
                }
                // Alone, it adds the security headers a front would.
                if hop.edge {
                    args.push("--security-headers".into());
                }
                (Program::Server, args)
            }
            Environment::Production { .. } | Environment::Container => (
                Program::Path(spec.systemd.deployctl.clone()),
                embedded_args(spec, &bind, hop),
            ),
        },
        Tier::Gunicorn => (
            Program::Path(deployctl_common::venv::bin(&spec.app.venv, "gunicorn")),
            vec!["--config".into(), config_path()],
        ),
        Tier::Uwsgi => (
            Program::Path(uwsgi_binary(spec)),
            vec!["--ini".into(), quote::uwsgi_ini_arg(&config_path())],
        ),
        Tier::Nginx => {
            return match env {
                // The host's nginx runs the installed site.
                Environment::Production { .. } => None,
                Environment::Local { socket_dir, .. } => Some(Process {
                    program: Program::Nginx,
                    args: vec![
                        "-p".into(),
                        RunFiles {
                            dir: socket_dir.clone(),
                        }
                        .nginx_prefix()
                        .display()
                        .to_string(),
                        "-c".into(),
                        "nginx.conf".into(),
                    ],
                    stop_timeout_secs: policy::FRONT_STOP_SECS,
                    unit: None,
                }),
                Environment::Container => Some(Process {
                    program: Program::Path(PathBuf::from("/usr/sbin/nginx")),
                    args: vec!["-g".into(), "daemon off;".into()],
                    stop_timeout_secs: policy::FRONT_STOP_SECS,
                    unit: None,
                }),
            };
        }
        Tier::Apache => {
            return match env {
                // `up` runs Apache in the foreground from the self-contained configuration,
                // its errors on stderr (multiplexed with the other components' lines). It
                // hosts the app when mod_wsgi runs inside it: then it gets the app's time to
                // stop.
                Environment::Local { socket_dir, .. } => Some(Process {
                    program: Program::Apache,
                    args: vec![
                        "-f".into(),
                        RunFiles {
                            dir: socket_dir.clone(),
                        }
                        .apache_conf()
                        .display()
                        .to_string(),
                        "-D".into(),
                        "FOREGROUND".into(),
                        "-c".into(),
                        "ErrorLog /dev/stderr".into(),
                    ],
                    stop_timeout_secs: if hop.in_process_app {
                        app_stop
                    } else {
                        policy::FRONT_STOP_SECS
                    },
                    unit: None,
                }),
                // Debian's apache2.service runs the installed site; a container's Apache is
                // the Kubernetes issue's.
                Environment::Production { .. } | Environment::Container => None,
            };
        }
        // mod_wsgi has no process of its own: it runs inside Apache's.
        Tier::ModWsgi => return None,
    };
    Some(Process {
        program,
        args,
        stop_timeout_secs: app_stop,
        unit,
    })
}

/// The command line of the systemd service of an app server tier (production and local
/// runs render units; a container has none).
fn unit_exec(spec: &Spec, tier: Tier, env: &Environment, hop: &Hop, units: Option<&Units>) -> Option<Vec<String>> {
    match env {
        Environment::Container => return None,
        Environment::Production { .. } | Environment::Local { .. } => {}
    }
    // What production runs: the same whatever the environment the units are rendered for.
    let production = Environment::Production { out: PathBuf::new() };
    let p = match tier.role() {
        Role::AppServer => process(spec, tier, &production, hop, units)?,
        Role::WebServer | Role::InProcessApp => return None,
    };
    let mut argv = vec![p.program.path()?.display().to_string()];
    argv.extend(p.args);
    Some(argv)
}

/// The `deployctl serve` arguments of an embedded server under systemd or in a container:
/// the Gunicorn-style flag contract that the embedded server implements.
fn embedded_args(spec: &Spec, bind: &str, hop: &Hop) -> Vec<String> {
    let mut w = vec![
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
        hop.timeout_secs.to_string(),
        "--graceful-timeout".into(),
        spec.backend.graceful_timeout.0.to_string(),
        "--max-body".into(),
        spec.server.max_body.0.to_string(),
        "--forwarded-allow-ips".into(),
        hop.trusted.join(","),
        "--chdir".into(),
        spec.app.root.display().to_string(),
        "--venv".into(),
        spec.app.venv.display().to_string(),
    ]);
    // Alone, it serves `[[static]]` itself and adds the security headers; behind a front, the
    // front does both.
    if hop.edge {
        w.push("--security-headers".into());
        for s in &spec.statics {
            w.push("--static".into());
            w.push(
                deployctl_common::settings::StaticMount {
                    url: s.url.clone(),
                    dir: s.dir.clone(),
                    expires_secs: s.expires.0,
                }
                .to_arg(),
            );
        }
    }
    w
}

/// Every file the plan renders, with the validators that apply to each. A chain with a tier
/// this build does not render has none (render refuses it); a container has none yet (the
/// Kubernetes issue adds its manifests).
fn outputs(plan: &Plan) -> Vec<Output> {
    if !plan.chain.is_implemented() {
        return Vec::new();
    }
    match plan.environment {
        Environment::Container => return Vec::new(),
        // A local run renders the units too: `up` does not use them, but they are validated
        // as the production ones are, so what runs locally is what a server would run.
        Environment::Production { .. } | Environment::Local { .. } => {}
    }
    let out = |kind, path: String, validators: Vec<Validator>| Output {
        kind,
        path,
        mode: 0o644,
        validators,
    };
    let mut files = Vec::new();
    for t in &plan.tiers {
        let rel = t.config.as_ref().map(|c| c.rel.clone()).unwrap_or_default();
        match t.tier {
            Tier::Nginx => files.push(out(
                OutputKind::NginxSite,
                rel,
                vec![Validator::NginxT, Validator::Gixy],
            )),
            Tier::Uwsgi => files.push(out(OutputKind::UwsgiIni, rel, vec![Validator::UwsgiStrict])),
            Tier::Gunicorn => files.push(out(OutputKind::GunicornConf, rel, vec![Validator::GunicornCheckConfig])),
            Tier::Apache => {
                if let Some(apache) = &plan.apache {
                    files.push(out(
                        OutputKind::ApacheSite,
                        apache.site.rel.clone(),
                        vec![Validator::ApacheT],
                    ));
                    files.push(out(
                        OutputKind::ApacheHttpd,
                        apache.httpd_conf.rel.clone(),
                        vec![Validator::ApacheT],
                    ));
                }
            }
            Tier::ModWsgi => {
                if let Some(wsgi) = plan.apache.as_ref().and_then(|a| a.wsgi.as_ref()) {
                    files.push(out(
                        OutputKind::WsgiScript,
                        wsgi.script.rel.clone(),
                        vec![Validator::ModWsgiPython],
                    ));
                }
            }
            Tier::Embedded => {}
        }
    }
    // The app server's service and the socket unit that creates its socket.
    match (plan.app().tier.role(), &plan.units) {
        (Role::AppServer, Some(units)) => {
            files.push(out(
                OutputKind::SystemdService,
                format!("systemd/{}", units.service),
                vec![Validator::SystemdVerify, Validator::SystemdSecurity],
            ));
            files.push(out(
                OutputKind::SystemdSocket,
                format!("systemd/{}", units.socket),
                vec![Validator::SystemdVerify],
            ));
        }
        (Role::AppServer, None) | (Role::WebServer | Role::InProcessApp, _) => {}
    }
    files
}

impl Plan {
    /// What the user installs and enables for a chain with Apache in it (`render` prints it):
    /// the site into Debian's Apache, its modules, and the app server's socket unit; Apache
    /// itself is Debian's `apache2.service`.
    pub fn apache_install_steps(&self) -> Option<String> {
        let apache = self.apache.as_ref()?;
        let name = &self.name;
        let units = self
            .units
            .as_ref()
            .filter(|_| self.app().tier.role() == Role::AppServer)
            .map(|u| {
                format!(
                    "; install systemd/{} and systemd/{} into /etc/systemd/system and `systemctl enable --now {}`",
                    u.service, u.socket, u.socket
                )
            })
            .unwrap_or_default();
        let wsgi = apache
            .wsgi
            .as_ref()
            .map(|w| {
                format!(
                    "; the app runs inside Apache, in mod_wsgi's daemon processes (`apt-get install \
                     libapache2-mod-wsgi-py3`; no unit of its own), from {} where it was rendered, with \
                     a virtualenv made by {}",
                    w.script.path.display(),
                    w.python.display()
                )
            })
            .unwrap_or_default();
        // Behind nginx, Apache listens on loopback only; nginx has the public port.
        let behind = match (
            &self.edge().tier,
            self.tier(Tier::Apache).and_then(|t| t.listen.as_ref()),
        ) {
            (Tier::Nginx, Some(Address::Tcp(l))) => format!(
                "; nginx's site proxies to Apache on {l}: remove `Listen 80` from /etc/apache2/ports.conf (nginx \
                 has that port)"
            ),
            _ => String::new(),
        };
        Some(format!(
            "copy {} to /etc/apache2/sites-available/{name}.conf, then `a2enmod {}`, `a2ensite {name}`, \
             `a2dissite 000-default` and `systemctl reload apache2` (Apache runs the site in Debian's apache2.service){units}{wsgi}{behind}",
            apache.site.rel,
            apache.modules.join(" "),
        ))
    }

    /// The warning `render`, `check` and `up` print when the plan leaves `[[static]]` to the
    /// app: Gunicorn alone serves no files (an app may serve the URLs itself, as Flask does
    /// for its `static/` folder, but without the `expires` of deploy.toml).
    pub fn static_warning(&self) -> Option<String> {
        if self.cluster.is_some() {
            return self.cluster_warning();
        }
        if self.spec.statics.is_empty() || self.statics_served_by().is_some() {
            return None;
        }
        let mounts: Vec<String> = self
            .spec
            .statics
            .iter()
            .map(|s| format!("{} ({})", s.url, crate::spec::display_path(&s.dir)))
            .collect();
        let app = self.app().tier;
        let server = match app {
            Tier::Gunicorn => "Gunicorn",
            Tier::Embedded => "the embedded server",
            Tier::Uwsgi => "uWSGI",
            Tier::ModWsgi => "mod_wsgi",
            Tier::Nginx => "nginx",
            Tier::Apache => "Apache",
        };
        let target = self.target;
        Some(format!(
            "target `{target}` does not serve [[static]] {}: {server} serves no files, so these URLs go to \
             the app (404 unless it serves them itself, and without their `expires`); put a front before \
             it (`--target nginx+{}`) or use the `uwsgi` or `embedded` target, which serve them themselves",
            mounts.join(", "),
            app.name()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::chain::Chain;

    fn spec(dir: &Path, extra: &str) -> Spec {
        let source = format!("[app]\nname = \"hello\"\nentry = \"app:app\"\n{extra}");
        Spec::from_source(&dir.join("deploy.toml"), &source).expect("a valid spec")
    }

    fn target(name: &str) -> Target {
        name.parse::<Chain>().expect("a chain").target().expect("a target")
    }

    #[test]
    fn production_links_nginx_to_uwsgi_over_systemd_socket() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("deploy/nginx+uwsgi");
        let plan = Plan::resolve(
            &spec(dir.path(), ""),
            target("nginx+uwsgi"),
            Environment::Production { out: out.clone() },
        );
        let tiers: Vec<Tier> = plan.tiers.iter().map(|t| t.tier).collect();
        assert_eq!(tiers, [Tier::Nginx, Tier::Uwsgi]);
        let link = plan.edge().next.as_ref().expect("nginx links to uWSGI");
        assert_eq!(link.protocol, Protocol::Uwsgi);
        assert_eq!(link.transport, Transport::Unix("/run/hello.sock".into()));
        assert_eq!(link.socket_by, SocketCreator::SystemdUnit("hello.socket".into()));
        assert_eq!(link.timeout_secs, 30 + policy::HOP_TIMEOUT_SLACK_SECS);
        assert_eq!(plan.app().timeout_secs, 30);
        let exec = plan.app().unit_exec.clone().expect("a unit");
        assert_eq!(exec[..2], ["/usr/bin/uwsgi".to_string(), "--ini".into()]);
        assert_eq!(exec[2], out.join("uwsgi/hello.ini").display().to_string());
        let outputs: Vec<(&str, &[Validator])> = plan
            .outputs
            .iter()
            .map(|o| (o.path.as_str(), o.validators.as_slice()))
            .collect();
        assert_eq!(
            outputs,
            [
                ("nginx/hello.conf", &[Validator::NginxT, Validator::Gixy][..]),
                ("uwsgi/hello.ini", &[Validator::UwsgiStrict][..]),
                (
                    "systemd/hello.service",
                    &[Validator::SystemdVerify, Validator::SystemdSecurity][..]
                ),
                ("systemd/hello.socket", &[Validator::SystemdVerify][..]),
            ]
        );
        // nginx itself is the host's: no process of deployctl's.
        assert!(plan.edge().process.is_none());
        assert!(plan.edge().trusted_proxies.is_empty());
        assert_eq!(plan.app().trusted_proxies, plan.spec.server.forwarded_allow_ips);
    }

    #[test]
    fn a_local_run_has_its_sockets_and_server_in_the_run_directory() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join(".deployctl/nginx+embedded");
        let plan = Plan::resolve(
            &spec(dir.path(), ""),
            target("nginx+embedded"),
            Environment::Local {
                conf_dir: run.join("conf"),
                socket_dir: run.clone(),
            },
        );
        let sock = run.join("hello.sock");
        assert_eq!(plan.app().listen, Some(Address::Unix(sock.clone())));
        assert_eq!(plan.app().listen_by, SocketCreator::Up);
        let p = plan.app().process.as_ref().expect("the server runs");
        assert_eq!(p.program, Program::Server);
        assert_eq!(p.args[2..], ["--bind".to_string(), format!("unix:{}", sock.display())]);
        assert_eq!(
            plan.tier(Tier::Nginx)
                .and_then(|t| t.process.as_ref())
                .map(|p| &p.program),
            Some(&Program::Nginx)
        );
        // The units are rendered too, with what a server would run.
        assert_eq!(plan.app().unit_exec.as_ref().map(|e| e[1].as_str()), Some("serve"));
        assert!(plan.spec.server.names.contains(&"localhost".to_string()));
        assert_eq!(
            plan.run_files().map(|f| f.validated_cache()),
            Some(run.join("validated.json"))
        );
    }

    #[test]
    fn a_container_plan_has_tcp_links_no_units_no_host_paths_and_no_outputs_yet() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan::resolve(&spec(dir.path(), ""), target("nginx+gunicorn"), Environment::Container);
        assert_eq!(
            plan.edge().listen,
            Some(Address::Tcp(Listen {
                host: "0.0.0.0".into(),
                port: CONTAINER_EDGE_PORT
            }))
        );
        let link = plan.edge().next.as_ref().expect("a link");
        assert_eq!(link.transport, Transport::Tcp(loopback(CONTAINER_FIRST_PORT)));
        assert_eq!(link.socket_by, SocketCreator::Tier);
        assert_eq!(plan.app().unit_exec, None);
        assert_eq!(plan.app().process.as_ref().and_then(|p| p.unit.clone()), None);
        assert_eq!(plan.spec.app.root, Path::new(CONTAINER_APP));
        assert_eq!(
            plan.app().config.as_ref().map(|c| c.path.clone()),
            Some(Path::new(CONTAINER_CONF).join("gunicorn/gunicorn.conf.py"))
        );
        assert!(plan.outputs.is_empty());
        let embedded = Plan::resolve(&spec(dir.path(), ""), target("embedded"), Environment::Container);
        let p = embedded.app().process.as_ref().expect("the server runs");
        assert_eq!(p.program, Program::Path(CONTAINER_DEPLOYCTL.into()));
        assert!(p.args.iter().any(|a| a == "0.0.0.0:8080"), "{:?}", p.args);
    }

    #[test]
    fn mod_wsgi_is_in_process_inside_apache_behind_nginx() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan::resolve(
            &spec(dir.path(), ""),
            target("nginx+apache+mod_wsgi"),
            Environment::Production {
                out: dir.path().join("out"),
            },
        );
        let tiers: Vec<Tier> = plan.tiers.iter().map(|t| t.tier).collect();
        assert_eq!(tiers, [Tier::Nginx, Tier::Apache, Tier::ModWsgi]);
        let to_apache = plan.tiers[0].next.as_ref().expect("nginx → apache");
        assert_eq!(to_apache.protocol, Protocol::Http);
        assert_eq!(to_apache.transport, Transport::Tcp(loopback(INNER_WEB_PORT)));
        // One slack per hop that crosses a socket; none in process.
        assert_eq!(to_apache.timeout_secs, 30 + policy::HOP_TIMEOUT_SLACK_SECS);
        let to_app = plan.tiers[1].next.as_ref().expect("apache → mod_wsgi");
        assert_eq!(to_app.protocol, Protocol::InProcess);
        assert_eq!(to_app.transport, Transport::InProcess);
        assert_eq!(to_app.socket_by, SocketCreator::Nobody);
        assert!(plan.app().process.is_none() && plan.app().listen.is_none());
        assert_eq!(plan.tiers[1].trusted_proxies, ["127.0.0.1"]);
        // nginx's site, Apache's two shapes, mod_wsgi's script; no unit (Apache's own runs it).
        let outputs: Vec<&str> = plan.outputs.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(
            outputs,
            [
                "nginx/hello.conf",
                "apache/hello.conf",
                "apache/httpd.conf",
                "mod_wsgi/hello.wsgi"
            ]
        );
        let apache = plan.apache.as_ref().expect("Apache's files");
        assert!(apache.modules.contains(&"remoteip") && apache.modules.contains(&"wsgi"));
        // A port the host assigned (install's, one per app) is where Apache listens and nginx
        // proxies to.
        let assigned = Plan::resolve_assigned(
            &spec(dir.path(), ""),
            target("nginx+apache+mod_wsgi"),
            Environment::Production {
                out: dir.path().join("out"),
            },
            Assigned {
                inner_web_port: Some(8082),
            },
        );
        assert_eq!(assigned.tiers[1].listen, Some(Address::Tcp(loopback(8082))));
        let to_apache = assigned.tiers[0].next.as_ref().expect("nginx → apache");
        assert_eq!(to_apache.transport, Transport::Tcp(loopback(8082)));
        // A local run puts Apache on the public port's neighbour, so that stacks run side by side.
        let local = Plan::resolve(
            &spec(dir.path(), "[server]\nlisten = \"127.0.0.1:9000\"\n"),
            target("nginx+apache+mod_wsgi"),
            Environment::Local {
                conf_dir: dir.path().join("run/conf"),
                socket_dir: dir.path().join("run"),
            },
        );
        assert_eq!(local.tiers[1].listen, Some(Address::Tcp(loopback(9001))));
        // Never on the TLS listener's port.
        let with_tls = Plan::resolve(
            &spec(
                dir.path(),
                "[server]\nlisten = \"127.0.0.1:9000\"\n[tls]\nlisten = \"127.0.0.1:9001\"\n",
            ),
            target("nginx+apache+mod_wsgi"),
            Environment::Local {
                conf_dir: dir.path().join("run/conf"),
                socket_dir: dir.path().join("run"),
            },
        );
        assert_eq!(with_tls.tiers[1].listen, Some(Address::Tcp(loopback(9002))));
    }

    #[test]
    fn apache_in_front_of_gunicorn_renders_two_shapes_checked_by_apache2_t() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let plan = Plan::resolve(
            &spec(dir.path(), ""),
            target("apache+gunicorn"),
            Environment::Production { out: out.clone() },
        );
        let link = plan.edge().next.as_ref().expect("apache → gunicorn");
        assert_eq!(link.protocol, Protocol::Http);
        assert_eq!(link.transport, Transport::Unix("/run/hello.sock".into()));
        assert_eq!(link.timeout_secs, 30 + policy::HOP_TIMEOUT_SLACK_SECS);
        let apache = plan.apache.as_ref().expect("Apache's files");
        assert_eq!(apache.site.path, out.join("apache/hello.conf"));
        assert_eq!(apache.httpd_conf.path, out.join("apache/httpd.conf"));
        assert_eq!(apache.run_dir, Path::new("/run/apache2-hello"));
        assert_eq!(
            apache.modules,
            [
                "authz_core",
                "mime",
                "alias",
                "headers",
                "expires",
                "rewrite",
                "proxy",
                "proxy_http"
            ]
        );
        let outputs: Vec<(&str, &[Validator])> = plan
            .outputs
            .iter()
            .map(|o| (o.path.as_str(), o.validators.as_slice()))
            .collect();
        assert_eq!(
            outputs[..3],
            [
                ("apache/hello.conf", &[Validator::ApacheT][..]),
                ("apache/httpd.conf", &[Validator::ApacheT][..]),
                ("gunicorn/gunicorn.conf.py", &[Validator::GunicornCheckConfig][..]),
            ]
        );
        // A local run keeps Apache's runtime files in the run directory.
        let run = dir.path().join(".deployctl/apache+gunicorn");
        let local = Plan::resolve(
            &spec(dir.path(), ""),
            target("apache+gunicorn"),
            Environment::Local {
                conf_dir: run.join("conf"),
                socket_dir: run.clone(),
            },
        );
        assert_eq!(local.apache.map(|a| a.run_dir), Some(run.join("apache")));
        // Possible, not designed, not built: nginx in front of Apache in front of an app server.
        for t in ["nginx+apache+uwsgi", "nginx+apache+gunicorn"] {
            let c: Chain = t.parse().expect("a chain");
            assert!(!c.is_implemented(), "{t}");
        }
    }
}
