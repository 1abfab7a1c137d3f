//! The stack of one target, running: the backend first (ready when it sends `READY=1`; none
//! when mod_wsgi runs the app inside Apache), then the fronts from the inside out — Apache
//! (`super::apache`), nginx — each ready when its port answers, then a health check through
//! the edge, then supervision until a signal, and a stop in reverse order.
//!
//! A reload never makes things worse: the new configuration is first tried by a probe (one
//! app instance on a private socket, health-checked there, never reached by a client); then
//! the app takes it over — the embedded server through its own generation-aware HUP (its new
//! workers replace the old ones only once all are ready; it reports the outcome on the
//! readiness socket), Gunicorn and uWSGI through a new instance started beside the old one
//! on the same activation socket, health-checked on a private socket of its own before the
//! old one is stopped gracefully — and then the fronts (nginx: HUP; Apache: a graceful
//! restart; each rolled back to its previous configuration when the health check through the
//! edge fails). With mod_wsgi there is no probe: Apache's restart is the app's. Until then the
//! old processes serve, from the rendered files of their own generation (`conf-N/`).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::process::{Component, MakeCommand};
use super::state::ComponentState;
use super::{health, interrupt};
use crate::plan::{Address, Plan, Protocol, RunFiles, Tier};
use crate::printer::{Printer, hinted};
use crate::spec::Spec;
use crate::target::Target;

/// A local-run plan, with what `up` found on this machine to run it.
pub struct RunPlan<'a> {
    /// The resolved plan (`Environment::Local`): every path, socket and command line.
    pub plan: &'a Plan,
    /// `plan.spec` and `plan.target`, for short.
    pub spec: &'a Spec,
    pub target: Target,
    /// The run directory's files (`.deployctl/<target>/`).
    pub files: RunFiles,
    /// The public address, resolved (the front's, or the lone backend's).
    pub listen: SocketAddr,
    /// The app server's executable: `deployctl-server`, the venv's `gunicorn`, `uwsgi`, or
    /// `apache2` when mod_wsgi runs the app inside Apache.
    pub backend_bin: PathBuf,
    pub nginx_bin: Option<PathBuf>,
    /// `apache2`, when the plan runs Apache httpd (`super::apache`).
    pub apache_bin: Option<PathBuf>,
}

impl<'a> RunPlan<'a> {
    pub fn new(
        plan: &'a Plan,
        listen: SocketAddr,
        backend_bin: PathBuf,
        nginx_bin: Option<PathBuf>,
    ) -> anyhow::Result<RunPlan<'a>> {
        let files = plan
            .run_files()
            .with_context(|| format!("`up` runs a local-run plan, not a {} one", plan.environment.name()))?;
        Ok(RunPlan {
            plan,
            spec: &plan.spec,
            target: plan.target,
            files,
            listen,
            backend_bin,
            nginx_bin,
            apache_bin: None,
        })
    }

    /// The same, running Apache httpd with `apache2` at `bin` (`None`: no Apache).
    pub fn with_apache(self, bin: Option<PathBuf>) -> RunPlan<'a> {
        RunPlan {
            apache_bin: bin,
            ..self
        }
    }

    /// Whether the app runs inside the front's processes (mod_wsgi in Apache): no process
    /// of its own to start, probe or replace.
    fn app_in_process(&self) -> bool {
        self.plan.app().process.is_none()
    }

    /// The rendered files of generation `generation` (1 at start, one more per reload): each
    /// has a directory of its own, kept while a process runs from it; `conf` links to the
    /// one in use.
    pub fn conf_dir(&self, generation: u32) -> PathBuf {
        self.files.conf_dir(generation)
    }

    /// The nginx site of generation `generation`.
    fn site(&self, generation: u32) -> anyhow::Result<PathBuf> {
        let config = self
            .plan
            .tier(Tier::Nginx)
            .and_then(|t| t.config.as_ref())
            .context("the plan has no nginx site")?;
        Ok(self.files.config_of(generation, config))
    }

    /// The app server's config file of generation `generation`.
    fn app_config(&self, generation: u32) -> anyhow::Result<PathBuf> {
        let config = self
            .plan
            .app()
            .config
            .as_ref()
            .context("the app server has no config file")?;
        Ok(self.files.config_of(generation, config))
    }
}

pub struct Running {
    /// In start order; stopped in reverse.
    components: Vec<Component>,
    pub url: String,
    /// The app's readiness socket, kept open for its later notifications (RELOADING=1,
    /// READY=1 and STATUS= after a reload).
    notify: Option<UnixDatagram>,
    /// The socket the backend serves, created here and inherited by every instance: an
    /// instance started beside another on a reload takes the same one.
    listener: Option<Arc<OwnedFd>>,
    /// The generation of the rendered files the app instance runs from, and the front's.
    app_generation: u32,
    front_generation: u32,
    /// A uWSGI instance is stopped gracefully through its master FIFO (SIGTERM, with
    /// `die-on-term`, kills its workers at once, cutting their requests).
    app_fifo: Option<PathBuf>,
    /// Files of the running app instance to remove once it is replaced.
    app_files: Vec<PathBuf>,
}

/// Restarts within `CRASH_WINDOW` that make a crash loop.
const CRASH_LIMIT: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(30);
/// How long a component gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long nginx's old workers get to finish before the health check of a reload (one
/// still busy with a long request then answers no new connection anyway).
const OLD_WORKERS_WAIT: Duration = Duration::from_secs(10);

/// A web server in front, as a reload switches it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Front {
    Nginx,
    Apache,
}

impl Front {
    fn name(self) -> &'static str {
        match self {
            Front::Nginx => "nginx",
            Front::Apache => super::apache::NAME,
        }
    }
}

/// What an app instance is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Serves the public socket: the first instance, or one started beside it on a reload
    /// (which also gets a private socket, to be health-checked on its own).
    Serve,
    /// A trial of a new configuration on a private socket only, with one worker, stopped
    /// after its health check: no client ever reaches it.
    Probe,
}

/// One app instance to start: its command and readiness socket.
struct Instance {
    make: MakeCommand,
    notify: UnixDatagram,
    fifo: Option<PathBuf>,
    /// What it leaves in the run directory (readiness socket, FIFO, private socket).
    files: Vec<PathBuf>,
}

/// The embedded server's flags (each with its value) a probe instance goes without: its TLS
/// and the plain listener beside it (`plan::tls::embedded_edge` adds them).
const PROBE_DROPS: [&str; 7] = [
    "--certfile",
    "--keyfile",
    "--tls-profile",
    "--hsts",
    "--redirect-bind",
    "--acme-webroot",
    "--server-name",
];

/// The app instance of generation `generation`, inheriting `fds` as fds 3, 4, … (socket
/// activation: `LISTEN_FDS`), reporting readiness on a socket of its own.
fn instance(plan: &RunPlan<'_>, generation: u32, role: Role, fds: Vec<Arc<OwnedFd>>) -> anyhow::Result<Instance> {
    let spec = plan.spec;
    let tag = match role {
        Role::Serve => format!("{generation}"),
        Role::Probe => format!("{generation}-probe"),
    };
    let app = plan.plan.app();
    let mut files = Vec::new();
    let mut fifo = None;
    let (program, args): (PathBuf, Vec<std::ffi::OsString>) = match app.tier {
        // The embedded server reads deploy.toml itself (the plan's arguments: the config and
        // the address; the inherited sockets take the address's place).
        Tier::Embedded => {
            let mut args: Vec<std::ffi::OsString> = app
                .process
                .as_ref()
                .map(|p| p.args.iter().map(Into::into).collect())
                .unwrap_or_default();
            match role {
                Role::Serve => args.extend(["--pid".into(), plan.files.pid_file().into()]),
                Role::Probe => {
                    // One private socket, asked in plain HTTP by the health check: no TLS and
                    // no plain listener beside it on a probe. (The pair is checked before the
                    // reload, and by the server's master on the HUP that follows.)
                    for flag in PROBE_DROPS {
                        while let Some(at) = args.iter().position(|a| a == flag) {
                            args.drain(at..(at + 2).min(args.len()));
                        }
                    }
                    args.extend(["--workers".into(), "1".into()])
                }
            }
            (plan.backend_bin.clone(), args)
        }
        Tier::Gunicorn => {
            let mut args: Vec<std::ffi::OsString> = vec!["--config".into(), plan.app_config(generation)?.into()];
            if role == Role::Probe || generation > 1 {
                // Each instance has its own control socket; the one running keeps its own.
                let ctl = plan.files.gunicorn_control(&tag);
                files.push(ctl.clone());
                args.extend(["--control-socket".into(), ctl.into()]);
            }
            if role == Role::Probe {
                args.extend(["--workers".into(), "1".into()]);
            }
            (plan.backend_bin.clone(), args)
        }
        Tier::Uwsgi => {
            let path = plan.files.uwsgi_fifo(&tag);
            let _ = std::fs::remove_file(&path);
            let mut args: Vec<std::ffi::OsString> = vec![
                "--ini".into(),
                crate::render::quote::uwsgi_ini_arg(&plan.app_config(generation)?.display().to_string()).into(),
                "--master-fifo".into(),
                path.clone().into(),
            ];
            if role == Role::Probe {
                args.extend(["--processes".into(), "1".into()]);
            }
            files.push(path.clone());
            fifo = Some(path);
            (plan.backend_bin.clone(), args)
        }
        Tier::ModWsgi | Tier::Nginx | Tier::Apache => bail!("`deployctl up` cannot run {} yet", app.tier),
    };
    let notify_path = plan.files.notify_socket(&tag);
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path).context("creating the readiness socket")?;
    files.push(notify_path.clone());
    let env = spec.app.env.clone();
    let count = fds.len();
    let make: MakeCommand = Box::new(move || {
        // LISTEN_PID must be the backend's own PID, known only after fork: `sh` sets it to
        // its `$$` and execs the backend in place, which keeps that PID.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("LISTEN_PID=$$ LISTEN_FDS={count} exec \"$0\" \"$@\""))
            .arg(&program)
            .args(&args)
            .env("NOTIFY_SOCKET", &notify_path)
            .envs(&env);
        let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        // SAFETY: only fcntl/dup2 between fork and exec. Each fd is first copied above the
        // targets, so that placing one at 3 + i never overwrites another not yet placed.
        unsafe {
            cmd.pre_exec(move || {
                let mut high = [0i32; 8];
                for (i, &fd) in raw.iter().enumerate().take(high.len()) {
                    high[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64);
                    if high[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (i, &h) in high.iter().enumerate().take(raw.len()) {
                    // The copy at 3 + i is not close-on-exec.
                    if libc::dup2(h, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        super::interrupt::unblock_in_child(&mut cmd);
        cmd
    });
    Ok(Instance {
        make,
        notify,
        fifo,
        files,
    })
}

/// A unix socket only `up` can reach (0600), for an instance to be checked on its own; with
/// the way to ask it for a page (HTTP, or uWSGI's protocol behind nginx).
fn private_socket(plan: &RunPlan<'_>, path: &Path) -> anyhow::Result<(Arc<OwnedFd>, health::Via)> {
    let _ = std::fs::remove_file(path);
    let l = std::os::unix::net::UnixListener::bind(path).with_context(|| format!("creating {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let via = if plan.plan.app_protocol() == Protocol::Uwsgi {
        health::Via::Uwsgi(path.to_path_buf())
    } else {
        health::Via::Unix(path.to_path_buf())
    };
    Ok((Arc::new(l.into()), via))
}

/// Whether a notification says `READY=1`.
fn says_ready(message: &str) -> bool {
    message.lines().any(|l| l == "READY=1")
}

/// Wait for `READY=1` on the instance's socket (or its exit, or the timeout).
fn wait_notified(c: &mut Component, notify: &UnixDatagram) -> anyhow::Result<()> {
    notify.set_read_timeout(Some(Duration::from_millis(50)))?;
    wait_ready(c, || {
        let mut buf = [0u8; 4096];
        notify
            .recv(&mut buf)
            .ok()
            .is_some_and(|n| says_ready(&String::from_utf8_lossy(&buf[..n])))
    })
}

pub fn start(plan: &RunPlan<'_>, printer: &Printer) -> anyhow::Result<Running> {
    let spec = plan.spec;
    // The URL a browser can use: the local-run front answers the listen address as well as
    // `[server].names` (plan::local_names); the health check below asks for it.
    let mut running = Running {
        components: Vec::new(),
        url: format!("http://{}/", spec.server.listen.browser_authority()),
        notify: None,
        listener: None,
        app_generation: 1,
        front_generation: 1,
        app_fifo: None,
        app_files: Vec::new(),
    };
    let result = (|| -> anyhow::Result<()> {
        // Like under systemd, the socket is created here (owned by us, 0660) and handed to the
        // backend by socket activation: it exists with the right mode before the backend
        // starts, nothing else can race to create it, and it survives backend restarts (a
        // request queued during a restart waits instead of failing) and reloads (a new
        // instance takes it beside the old one). All three backends take LISTEN_FDS; their
        // own bind settings then do not apply.
        let apache = match plan.apache_bin {
            Some(_) => Some(super::apache::identity()?),
            None => None,
        };
        let inst = if plan.app_in_process() {
            None
        } else {
            let listener = Arc::new(activation_socket(plan.plan.app().listen.as_ref(), plan.listen)?);
            if let (Some(identity), Some(Address::Unix(path))) = (&apache, plan.plan.app().listen.as_ref()) {
                super::apache::grant_socket(identity.as_ref(), path)?;
            }
            running.listener = Some(listener.clone());
            let mut fds = vec![listener];
            // The lone embedded server beside TLS: its plain listener (the challenge and the
            // redirect) is the second socket, as under systemd.
            if let Some(http) = plan.plan.tls.as_ref().and_then(|t| t.embedded_http.as_ref()) {
                use std::net::ToSocketAddrs;
                let addr = http
                    .to_string()
                    .replace("localhost:", "127.0.0.1:")
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .with_context(|| format!("resolving {http}"))?;
                let l = std::net::TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
                fds.push(Arc::new(l.into()));
            }
            Some(instance(plan, 1, Role::Serve, fds)?)
        };
        // nginx's wrapper (which asks `nginx -V` where its configuration directory is) is
        // written while the app starts.
        let wrapper = match plan.nginx_bin.clone() {
            Some(nginx) => {
                let prefix = plan.files.nginx_prefix();
                let site = plan.site(1)?;
                Some(std::thread::spawn(move || write_nginx_wrapper(&nginx, &prefix, &site)))
            }
            None => None,
        };
        if let Some(inst) = inst {
            let progress = printer.progress(&format!("starting app ({})", plan.target));
            running
                .components
                .push(Component::spawn("app", inst.make, printer.quiet)?);
            running.app_fifo = inst.fifo;
            running.app_files = inst.files;
            wait_notified(running.components.last_mut().expect("just pushed"), &inst.notify)?;
            finish(progress, printer, "app", "ready (READY=1)");
            running.notify = Some(inst.notify);
        }

        if let (Some(bin), Some(identity)) = (&plan.apache_bin, &apache) {
            let progress = printer.progress("starting Apache httpd");
            let c = super::apache::start(plan, bin, identity.as_ref(), printer.quiet)?;
            running.components.push(c);
            // Behind nginx, Apache listens on its own loopback port.
            let addr = match plan.plan.tier(Tier::Apache).and_then(|t| t.listen.as_ref()) {
                Some(Address::Tcp(l)) if plan.nginx_bin.is_some() => {
                    use std::net::ToSocketAddrs;
                    l.to_string()
                        .to_socket_addrs()
                        .ok()
                        .and_then(|mut a| a.next())
                        .with_context(|| format!("resolving Apache's address {l}"))?
                }
                Some(_) | None => probe_addr(plan.listen),
            };
            wait_ready(running.components.last_mut().expect("just pushed"), || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })?;
            let how = match identity {
                Some(id) => format!("ready (port answers; children run as {})", id.user),
                None => "ready (port answers)".into(),
            };
            finish(progress, printer, super::apache::NAME, &how);
        }

        if let (Some(nginx), Some(wrapper)) = (&plan.nginx_bin, wrapper) {
            wrapper
                .join()
                .map_err(|_| anyhow::anyhow!("writing nginx's configuration panicked"))??;
            let nginx = nginx.clone();
            let args = plan
                .plan
                .tier(Tier::Nginx)
                .and_then(|t| t.process.as_ref())
                .map(|p| p.args.clone())
                .context("the plan runs no nginx")?;
            let make = move || {
                let mut cmd = Command::new(&nginx);
                cmd.args(&args);
                super::interrupt::unblock_in_child(&mut cmd);
                cmd
            };
            let progress = printer.progress("starting nginx");
            running
                .components
                .push(Component::spawn("nginx", Box::new(make), printer.quiet)?);
            let addr = probe_addr(plan.listen);
            wait_ready(running.components.last_mut().expect("just pushed"), || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })?;
            finish(progress, printer, "nginx", "ready (port answers)");
        }
        health_check(plan, printer)
    })();
    match result {
        Ok(()) => Ok(running),
        Err(e) => {
            // A stop asked for meanwhile is what ended the start, whatever step noticed.
            let e = match interrupt::stop_requested() {
                Some(sig) if !interrupt::is_interrupted(&e) => anyhow::Error::new(interrupt::Interrupted(sig)),
                _ => e,
            };
            let tails: String = running.components.iter().map(Component::tail).collect();
            // Nothing served yet: no request to let finish (and an app still importing would
            // not see a graceful stop before its graceful timeout).
            running.stop_now();
            if tails.is_empty() || interrupt::is_interrupted(&e) {
                Err(e)
            } else {
                // What went wrong first, then the components' last lines (and the hint last).
                let message = format!("{e:#}\nlast output:\n{}", tails.trim_end());
                let hint = e
                    .chain()
                    .find_map(|c| c.downcast_ref::<crate::printer::Hinted>())
                    .map(|h| h.hint.clone());
                Err(match hint {
                    Some(h) => hinted(message, h),
                    None => anyhow::anyhow!(message),
                })
            }
        }
    }
}

/// The socket a socket-activated backend inherits: the plan's unix socket in the run directory
/// (0660, a stale file from a crashed run replaced) behind a front, else the public address.
fn activation_socket(address: Option<&Address>, listen: SocketAddr) -> anyhow::Result<std::os::fd::OwnedFd> {
    match address {
        Some(Address::Unix(path)) => {
            let _ = std::fs::remove_file(path);
            let l =
                std::os::unix::net::UnixListener::bind(path).with_context(|| format!("creating {}", path.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
            Ok(l.into())
        }
        Some(Address::Tcp(_)) => {
            let l = std::net::TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
            Ok(l.into())
        }
        None => bail!("the app has no socket of its own"),
    }
}

fn finish(progress: Option<indicatif::ProgressBar>, printer: &Printer, label: &str, msg: &str) {
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    printer.status(label, msg);
}

/// 0.0.0.0 and :: are for listening; probes go to loopback.
fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = if listen.ip().is_unspecified() {
        if listen.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        }
    } else {
        listen.ip()
    };
    SocketAddr::new(ip, listen.port())
}

fn wait_ready(c: &mut Component, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        if ready() {
            return Ok(());
        }
        if let Some(status) = c.exited() {
            bail!("{} exited ({status}) before it was ready", c.name);
        }
        interrupt::check()?;
        if Instant::now() > deadline {
            bail!("{} was not ready within {} s", c.name, READY_TIMEOUT.as_secs());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// `[health]` asked of one instance on its private socket, until it answers (Gunicorn says
/// `READY=1` before its workers have loaded the app): an answer that is not healthy, the
/// instance's exit or the timeout is an error.
fn healthy_via(plan: &RunPlan<'_>, via: &health::Via, c: &mut Component) -> anyhow::Result<u16> {
    let spec = plan.spec;
    let host = spec.server.listen.browser_authority();
    let t = Duration::from_secs(spec.health.timeout.0);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match health::get_via(via, &host, &spec.health.path, t) {
            Ok(r) if spec.health.accepts(r.status) => return Ok(r.status),
            Ok(r) => bail!(
                "health check GET {} answered {}, expected {} ([health] in {})",
                spec.health.path,
                r.status,
                spec.health.wanted(),
                crate::spec::display_path(&spec.path)
            ),
            Err(e) => {
                interrupt::check()?;
                if let Some(status) = c.exited() {
                    bail!("the new app exited ({status}) before it answered its health check");
                }
                if Instant::now() > deadline {
                    return Err(e).with_context(|| format!("health check GET {} on {via}", spec.health.path));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Stop an app instance gracefully: uWSGI through its master FIFO (`q`), the others with
/// SIGTERM (both finish the requests in flight), then SIGKILL to its group after `grace`.
fn stop_app(c: &mut Component, fifo: Option<&Path>, grace: Duration) {
    c.stop_by(
        |c| {
            if fifo.is_some_and(|f| write_fifo(f, b"q").is_ok()) {
                return;
            }
            c.signal(libc::SIGTERM);
        },
        grace,
    );
}

/// A command on uWSGI's master FIFO; an error when no master reads it.
fn write_fifo(path: &Path, word: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    f.write_all(word)
}

/// The children of a process (nginx's workers, Apache's children).
pub(super) fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn remove_files(files: &[PathBuf]) {
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

/// nginx's wrapper configuration in the run directory, including the site `site`
/// (`validate::nginx::write_wrapper`, the one `check` uses, for a run in the foreground).
fn write_nginx_wrapper(nginx: &Path, prefix: &Path, site: &Path) -> anyhow::Result<()> {
    crate::validate::nginx::write_wrapper(nginx, prefix, site, crate::validate::nginx::Purpose::Run)?;
    Ok(())
}

/// `[health]` through the public address, and one static file that the front (or uWSGI
/// alone) must serve itself: its `Cache-Control` carries the `expires` of the `[[static]]`
/// mount, which only the static location (or uWSGI's static map) sets.
fn health_check(plan: &RunPlan<'_>, printer: &Printer) -> anyhow::Result<()> {
    if plan.plan.tls.is_some() {
        return super::tls::health_check(probe_addr(plan.listen), plan.plan, printer);
    }
    app_health_check(plan, printer)?;
    static_check(plan, printer)
}

/// `[health]` through the public address only: after a tier behind the edge reloaded (Apache
/// behind nginx), whose static files are still the edge's of its own generation.
fn app_health_check(plan: &RunPlan<'_>, printer: &Printer) -> anyhow::Result<()> {
    let spec = plan.spec;
    let addr = probe_addr(plan.listen);
    // The Host a browser sends for the printed URL: the check proves that URL works.
    let authority = spec.server.listen.browser_authority();
    let host = authority.as_str();
    let t = Duration::from_secs(spec.health.timeout.0);
    let r = health::get(addr, host, &spec.health.path, t)
        .with_context(|| format!("health check GET {} on {addr}", spec.health.path))?;
    if !spec.health.accepts(r.status) {
        return Err(hinted(
            format!(
                "health check GET {} answered {}, expected {} ([health] in {})",
                spec.health.path,
                r.status,
                spec.health.wanted(),
                crate::spec::display_path(&spec.path)
            ),
            "the app's log lines above show why",
        ));
    }
    printer.status("health", &format!("GET {} → {}", spec.health.path, r.status));
    Ok(())
}

/// One static file the edge (or uWSGI alone) must serve itself, with its `Cache-Control`.
fn static_check(plan: &RunPlan<'_>, printer: &Printer) -> anyhow::Result<()> {
    let spec = plan.spec;
    let addr = probe_addr(plan.listen);
    let authority = spec.server.listen.browser_authority();
    let host = authority.as_str();
    let t = Duration::from_secs(spec.health.timeout.0);
    let Some(by) = plan.plan.statics_served_by() else {
        return Ok(());
    };
    let Some((mount, file)) = spec.statics.iter().find_map(|s| first_file(&s.dir).map(|f| (s, f))) else {
        return Ok(());
    };
    let path = format!("{}{file}", mount.url);
    let r = health::get(addr, host, &path, t).with_context(|| format!("static check GET {path}"))?;
    let want = format!("max-age={}", mount.expires.0);
    let cache: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cache-control"))
        .map(|(_, v)| v.as_str())
        .collect();
    let server = match by {
        Tier::Uwsgi => "uWSGI",
        Tier::Embedded => "the embedded server",
        Tier::Nginx | Tier::Apache | Tier::Gunicorn | Tier::ModWsgi => "the front",
    };
    if r.status != 200 || cache != [want.as_str()] {
        bail!(
            "static check GET {path} answered {} with Cache-Control {cache:?}, not one `{want}`: {server} did not \
             serve {}",
            r.status,
            mount.dir.join(&file).display()
        );
    }
    printer.status("static", &format!("GET {path} → 200 from {server}"));
    Ok(())
}

fn first_file(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names.into_iter().next()
}

impl Running {
    /// Restart components that exited on their own, with exponential backoff (0.1 s, doubling
    /// per recent restart). `Err` with the component's last lines when it crashes in a loop
    /// (`CRASH_LIMIT` restarts within `CRASH_WINDOW`): the caller then stops everything.
    pub fn restart_crashed(&mut self, printer: &Printer) -> anyhow::Result<()> {
        for c in &mut self.components {
            let Some(status) = c.exited() else { continue };
            let now = Instant::now();
            c.restarts.retain(|t| now.duration_since(*t) < CRASH_WINDOW);
            if c.restarts.len() >= CRASH_LIMIT {
                bail!(
                    "{} is crashing in a loop ({} restarts in {} s, last: {status}); everything was stopped\n{}",
                    c.name,
                    c.restarts.len(),
                    CRASH_WINDOW.as_secs(),
                    c.tail().trim_end()
                );
            }
            let delay = Duration::from_millis(100 << c.restarts.len());
            printer.warn(&format!(
                "{} exited ({status}); restarting in {} ms",
                c.name,
                delay.as_millis()
            ));
            std::thread::sleep(delay);
            c.restarts.push(Instant::now());
            c.respawn()?;
        }
        Ok(())
    }

    /// Stop in reverse start order: the fronts first (nginx QUIT, Apache WINCH: both graceful),
    /// then the backend
    /// (gracefully: it finishes in-flight requests), each bounded, then SIGKILL to what is left.
    pub fn stop(&mut self, plan: &Plan) {
        while let Some(mut c) = self.components.pop() {
            if c.name == "nginx" {
                c.stop(libc::SIGQUIT, grace(plan, &c.name));
            } else if c.name == super::apache::NAME {
                c.stop(super::apache::STOP, grace(plan, &c.name));
            } else {
                let grace = grace(plan, &c.name);
                stop_app(&mut c, self.app_fifo.as_deref(), grace);
            }
        }
    }

    /// Fast stop, in reverse start order: nginx and Apache TERM, the app INT (all three
    /// backends stop at once on it), SIGKILL to what is left of each group after 2 s.
    pub fn stop_now(&mut self) {
        while let Some(mut c) = self.components.pop() {
            let sig = match c.name.as_str() {
                "nginx" => libc::SIGTERM,
                super::apache::NAME => super::apache::STOP_NOW,
                _ => libc::SIGINT,
            };
            c.stop(sig, Duration::from_secs(2));
        }
    }

    /// The generations of rendered files in use: the app's and the front's.
    pub fn generations(&self) -> (u32, u32) {
        (self.app_generation, self.front_generation)
    }

    /// Let generation `generation` (rendered and validated into `plan.conf_dir(generation)`)
    /// take over, each component only once the new configuration is proven: a probe first,
    /// then the app, then the front. `Err` says what failed; the processes serving then are
    /// the previous ones, except when the front's check failed after the app took over (the
    /// app keeps the configuration its probe and its own health check proved; the front is
    /// rolled back).
    pub fn reload(&mut self, plan: &RunPlan<'_>, generation: u32, printer: &Printer) -> anyhow::Result<()> {
        if plan.app_in_process() {
            // mod_wsgi: the app is reloaded with Apache, which hosts it (rolled back when the
            // health check through the front fails).
            self.reload_front(plan, generation, printer, Front::Apache)?;
            self.app_generation = generation;
            return match plan.nginx_bin {
                Some(_) => self.reload_front(plan, generation, printer, Front::Nginx),
                None => Ok(()),
            };
        }
        self.probe(plan, generation, printer)?;
        match plan.plan.app().tier {
            Tier::Embedded => self.reload_embedded(plan, printer)?,
            Tier::Gunicorn | Tier::Uwsgi | Tier::ModWsgi | Tier::Nginx | Tier::Apache => {
                self.replace_app(plan, generation, printer)?
            }
        }
        self.app_generation = generation;
        if plan.nginx_bin.is_some() {
            self.reload_front(plan, generation, printer, Front::Nginx)
        } else if plan.apache_bin.is_some() {
            self.reload_front(plan, generation, printer, Front::Apache)
        } else {
            health_check(plan, printer)
        }
    }

    /// The new configuration on one app instance of one worker with a private socket: it
    /// must become ready and answer its health check; it is stopped either way.
    fn probe(&mut self, plan: &RunPlan<'_>, generation: u32, printer: &Printer) -> anyhow::Result<()> {
        let path = plan.files.probe_socket(generation);
        let (fd, via) = private_socket(plan, &path)?;
        let inst = instance(plan, generation, Role::Probe, vec![fd])?;
        let progress = printer.progress("trying the new configuration on a probe instance");
        let mut c = Component::spawn("probe", inst.make, printer.quiet)?;
        let result = wait_notified(&mut c, &inst.notify).and_then(|()| healthy_via(plan, &via, &mut c));
        // No client can reach it: a fast stop.
        c.stop(libc::SIGINT, Duration::from_secs(5));
        remove_files(&inst.files);
        let _ = std::fs::remove_file(&path);
        if let Some(p) = progress {
            p.finish_and_clear();
        }
        let status = result.map_err(|e| with_tail(e, &c.tail()))?;
        printer.status(
            "probe",
            &format!(
                "the new configuration is healthy on its own: GET {} → {status}",
                plan.spec.health.path
            ),
        );
        Ok(())
    }

    /// The embedded server's own reload (HUP): its master starts a new generation of workers
    /// and stops the old one only once every new worker is ready; a new worker that fails to
    /// boot cancels it. The outcome comes on the readiness socket: `READY=1` with
    /// `STATUS=reload failed: …`, or `READY=1` once the reload is complete.
    fn reload_embedded(&mut self, plan: &RunPlan<'_>, printer: &Printer) -> anyhow::Result<()> {
        let _ = self.notifications();
        let notify = self.notify.as_ref().context("the app has no readiness socket")?;
        notify.set_nonblocking(false)?;
        notify.set_read_timeout(Some(Duration::from_millis(100)))?;
        let app = &mut self.components[0];
        let mark = app.lines_seen();
        app.signal(libc::SIGHUP);
        let deadline = Instant::now() + READY_TIMEOUT + grace(plan.plan, "app");
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = notify.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                if let Some(why) = message.lines().find_map(|l| l.strip_prefix("STATUS=reload failed: ")) {
                    let e = anyhow::anyhow!("the app's reload failed, its previous workers keep serving: {why}");
                    return Err(with_tail(e, &app.tail_since(mark)));
                }
                if says_ready(&message) {
                    break;
                }
            }
            if let Some(status) = app.exited() {
                bail!("the app exited ({status}) while reloading");
            }
            if Instant::now() > deadline {
                bail!("the app did not finish its reload in time");
            }
        }
        printer.status("app", "new workers serving, the previous ones stopped (HUP)");
        Ok(())
    }

    /// Gunicorn and uWSGI: a HUP would stop the old workers before the new ones have proved
    /// anything (and Gunicorn exits when a new worker cannot load the app), so a new instance
    /// is started beside the running one on the same socket, with a private socket of its own
    /// for its health check; the old one is stopped gracefully only once the new one is
    /// healthy.
    fn replace_app(&mut self, plan: &RunPlan<'_>, generation: u32, printer: &Printer) -> anyhow::Result<()> {
        let listener = self.listener.clone().context("no activation socket")?;
        let path = plan.files.private_socket(generation);
        let (private, via) = private_socket(plan, &path)?;
        let inst = instance(plan, generation, Role::Serve, vec![listener, private])?;
        let mut files = inst.files;
        files.push(path);
        let grace = grace(plan.plan, "app");
        let progress = printer.progress("starting the new app instance beside the running one");
        let mut c = Component::spawn("app", inst.make, printer.quiet)?;
        let ready = wait_notified(&mut c, &inst.notify).and_then(|()| healthy_via(plan, &via, &mut c));
        if let Some(p) = progress {
            p.finish_and_clear();
        }
        if let Err(e) = ready {
            let tail = c.tail();
            stop_app(&mut c, inst.fifo.as_deref(), grace);
            remove_files(&files);
            return Err(with_tail(e.context("the new app instance is not healthy"), &tail));
        }
        let pid = c.pid();
        let mut old = std::mem::replace(&mut self.components[0], c);
        let old_fifo = std::mem::replace(&mut self.app_fifo, inst.fifo);
        let old_files = std::mem::replace(&mut self.app_files, files);
        self.notify = Some(inst.notify);
        stop_app(&mut old, old_fifo.as_deref(), grace);
        remove_files(&old_files);
        printer.status(
            "app",
            &format!(
                "new instance (pid {pid}) serving; the previous one (pid {}) stopped gracefully",
                old.pid()
            ),
        );
        Ok(())
    }

    /// A front's graceful reload (nginx: HUP; Apache: USR1) onto the configuration of
    /// `generation`, then the health check through the edge; when that fails, back to the
    /// previous configuration. Apache's generation is the app's when it hosts the app
    /// (mod_wsgi), the front's otherwise.
    fn reload_front(
        &mut self,
        plan: &RunPlan<'_>,
        generation: u32,
        printer: &Printer,
        front: Front,
    ) -> anyhow::Result<()> {
        let hosts_app = front == Front::Apache && plan.app_in_process();
        let previous = if hosts_app {
            self.app_generation
        } else {
            self.front_generation
        };
        let name = front.name();
        self.switch(plan, generation, front)?;
        // The static check is the edge's: a front behind it is checked through it by
        // `[health]` alone.
        let at_edge = match front {
            Front::Nginx => plan.plan.edge().tier == Tier::Nginx,
            Front::Apache => plan.plan.edge().tier == Tier::Apache,
        };
        // With `[tls]` the checks are HTTPS's, which has no static check.
        let checked = if at_edge || plan.plan.tls.is_some() {
            health_check(plan, printer)
        } else {
            app_health_check(plan, printer)
        };
        match checked {
            Ok(()) => {
                if !hosts_app {
                    self.front_generation = generation;
                }
                printer.status(name, "reloaded");
                Ok(())
            }
            Err(e) => Err(match self.switch(plan, previous, front) {
                Ok(()) => e.context(format!("{name} went back to the previous configuration")),
                Err(back) => e.context(format!(
                    "{name} could not go back to the previous configuration: {back:#}"
                )),
            }),
        }
    }

    /// Moves one front onto the configuration of `generation` (without checking it).
    fn switch(&mut self, plan: &RunPlan<'_>, generation: u32, front: Front) -> anyhow::Result<()> {
        match front {
            Front::Nginx => self.switch_front(plan, generation),
            Front::Apache => {
                let c = self
                    .components
                    .iter_mut()
                    .find(|c| c.name == super::apache::NAME)
                    .context("Apache is not running")?;
                super::apache::switch(c, plan, generation)
            }
        }
    }

    /// Point nginx's wrapper at the site of `generation` and HUP it: done once its master has
    /// started a new worker (it read the configuration); an `[emerg]` line means it kept the
    /// old one.
    fn switch_front(&mut self, plan: &RunPlan<'_>, generation: u32) -> anyhow::Result<()> {
        let nginx_bin = plan.nginx_bin.as_ref().context("no front")?;
        write_nginx_wrapper(nginx_bin, &plan.files.nginx_prefix(), &plan.site(generation)?)?;
        let c = self
            .components
            .iter_mut()
            .find(|c| c.name == "nginx")
            .context("nginx is not running")?;
        let before = children(c.pid());
        let mark = c.lines_seen();
        c.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = children(c.pid());
            if now.iter().any(|p| !before.contains(p)) {
                // The old workers stop accepting and finish their requests: until they are
                // gone, a health check could be answered with the previous configuration.
                let until = Instant::now() + OLD_WORKERS_WAIT;
                while Instant::now() < until && children(c.pid()).iter().any(|p| before.contains(p)) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return Ok(());
            }
            let said = c.tail_since(mark);
            if said.contains("[emerg]") {
                bail!("nginx kept its previous configuration:\n{}", said.trim_end());
            }
            if let Some(status) = c.exited() {
                bail!("nginx exited ({status}) while reloading");
            }
            if Instant::now() > deadline {
                bail!("nginx did not start workers with the new configuration within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The front at the edge re-reads its configuration and the certificates it names (nginx:
    /// HUP; Apache: a graceful restart, USR1), the configuration unchanged: a certificate
    /// switched under `live` takes effect, gracefully. The lone embedded server terminates TLS
    /// itself: a HUP, whose new workers read the pair.
    pub fn reload_front_certificates(&mut self, plan: &RunPlan<'_>, printer: &Printer) -> anyhow::Result<()> {
        match plan.plan.edge().tier {
            Tier::Apache => {
                let generation = if plan.app_in_process() {
                    self.app_generation
                } else {
                    self.front_generation
                };
                self.switch(plan, generation, Front::Apache)
            }
            Tier::Embedded if plan.plan.tiers.len() == 1 => self.reload_embedded(plan, printer),
            _ => self.switch_front(plan, self.front_generation),
        }
    }

    /// Notifications the app sent since the last call (`READY=1` after a reload).
    pub fn notifications(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(n) = &self.notify {
            let _ = n.set_nonblocking(true);
            let mut buf = [0u8; 4096];
            while let Ok(len) = n.recv(&mut buf) {
                out.push(String::from_utf8_lossy(&buf[..len]).into_owned());
            }
        }
        out
    }

    pub fn pids(&self) -> Vec<(String, u32)> {
        self.components.iter().map(|c| (c.name.clone(), c.pid())).collect()
    }

    /// Each component as the state file records it: its main process (which leads its
    /// group), its restarts, and the time it gets between TERM and KILL.
    pub fn processes(&self, plan: &Plan) -> Vec<ComponentState> {
        self.components
            .iter()
            .map(|c| ComponentState {
                name: c.name.clone(),
                process: c.process(),
                pgid: c.pid(),
                restarts: c.total_restarts,
                grace_secs: grace(plan, &c.name).as_secs(),
            })
            .collect()
    }
}

/// How long a component gets to stop before what is left of its group is killed: the
/// plan's stop timeout of its tier (nginx, or the app's `graceful_timeout` and the slack).
pub fn grace(plan: &Plan, component: &str) -> Duration {
    let tier = match component {
        "nginx" => plan.tier(Tier::Nginx),
        super::apache::NAME => plan.tier(Tier::Apache),
        _ => Some(plan.app()),
    };
    let secs = tier.and_then(|t| t.process.as_ref()).map_or(
        plan.spec.backend.graceful_timeout.0 + crate::plan::policy::STOP_SLACK_SECS,
        |p| p.stop_timeout_secs,
    );
    Duration::from_secs(secs)
}

/// `e`, followed by the last lines of the process it is about.
fn with_tail(e: anyhow::Error, tail: &str) -> anyhow::Error {
    if tail.trim().is_empty() {
        e
    } else {
        anyhow::anyhow!("{e:#}\nlast output:\n{}", tail.trim_end())
    }
}
