//! The stack of one target, running: the backend first (ready when it sends `READY=1`), then
//! the front (ready when its port answers), then a health check through the front, then
//! supervision until a signal, and a stop in reverse order.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::health;
use super::process::{Component, MakeCommand};
use super::state::ComponentState;
use crate::printer::{Printer, hinted};
use crate::spec::Spec;
use crate::target::{Backend, Frontend, Target};

/// Where and how this run happens; filled in by the `up` command.
pub struct RunPlan<'a> {
    pub spec: &'a Spec,
    pub target: Target,
    /// `.deployctl/<target>/`: rendered configs, sockets, pid files, logs.
    pub run_dir: PathBuf,
    /// The public address (the front's, or the lone backend's).
    pub listen: SocketAddr,
    /// The backend's executable: `deployctl-server`, the venv's `gunicorn`, or `uwsgi`.
    pub backend_bin: PathBuf,
    pub nginx_bin: Option<PathBuf>,
    /// The site file rendered for the front, inside `run_dir`.
    pub nginx_site: Option<PathBuf>,
}

pub struct Running {
    /// In start order; stopped in reverse.
    components: Vec<Component>,
    pub url: String,
    /// Kept open for the backend's later notifications (RELOADING=1, STOPPING=1).
    notify: Option<UnixDatagram>,
}

/// Restarts within `CRASH_WINDOW` that make a crash loop.
const CRASH_LIMIT: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(30);
/// How long a component gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn unblock_signals(cmd: &mut Command) {
    // The supervisor blocks INT/TERM/HUP for its signalfd; exec keeps a blocked mask, and a
    // child must get its signals. SAFETY: sigprocmask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
}

pub fn start(plan: &RunPlan<'_>, printer: &Printer) -> anyhow::Result<Running> {
    let spec = plan.spec;
    let name = &spec.app.name;
    // The URL a browser can use: the local-run front answers the listen address as well as
    // `[server].names` (render::local_names); the health check below asks for it.
    let mut running = Running {
        components: Vec::new(),
        url: format!("http://{}/", spec.server.listen.browser_authority()),
        notify: None,
    };
    let result = (|| -> anyhow::Result<()> {
        // Backend: the embedded server reads deploy.toml itself; only the address differs.
        let behind = plan.target.frontend != Frontend::None;
        let bind = if behind {
            format!("unix:{}", plan.run_dir.join(format!("{name}.sock")).display())
        } else {
            plan.listen.to_string()
        };
        let notify_path = plan.run_dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).context("creating the readiness socket")?;
        notify.set_read_timeout(Some(Duration::from_millis(200)))?;
        let conf = plan.run_dir.join("conf");
        // Like under systemd, the socket is created here (owned by us, 0660) and handed to the
        // backend by socket activation: it exists with the right mode before the backend
        // starts, nothing else can race to create it, and it survives backend restarts (a
        // request queued during a restart waits instead of failing). All three backends take
        // LISTEN_FDS; their own bind settings then do not apply.
        let listener = std::sync::Arc::new(activation_socket(behind, &bind, plan.listen)?);
        let (program, args): (PathBuf, Vec<std::ffi::OsString>) = match plan.target.backend {
            // The embedded server reads deploy.toml itself.
            Backend::Embedded => (
                plan.backend_bin.clone(),
                vec![
                    "--config".into(),
                    spec.path.clone().into(),
                    "--bind".into(),
                    bind.clone().into(),
                    "--pid".into(),
                    plan.run_dir.join("app.pid").into(),
                ],
            ),
            Backend::Gunicorn => (
                plan.backend_bin.clone(),
                vec!["--config".into(), conf.join("gunicorn/gunicorn.conf.py").into()],
            ),
            Backend::Uwsgi => (
                plan.backend_bin.clone(),
                vec![
                    "--ini".into(),
                    crate::render::quote::uwsgi_ini_arg(&conf.join(format!("uwsgi/{name}.ini")).display().to_string())
                        .into(),
                ],
            ),
            other => bail!("`deployctl up` cannot run the {other:?} backend yet"),
        };
        let env = spec.app.env.clone();
        let make: MakeCommand = Box::new(move || {
            // LISTEN_PID must be the backend's own PID, known only after fork: `sh` sets it to
            // its `$$` and execs the backend in place, which keeps that PID.
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
                .arg(&program)
                .args(&args)
                .env("NOTIFY_SOCKET", &notify_path)
                .envs(&env);
            let fd = listener.as_raw_fd();
            // SAFETY: only dup2/fcntl between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    // dup2(3, 3) would keep close-on-exec set.
                    let r = if fd == 3 {
                        libc::fcntl(3, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(fd, 3)
                    };
                    if r < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            unblock_signals(&mut cmd);
            cmd
        });
        let progress = printer.progress(&format!("starting app ({})", plan.target));
        running.components.push(Component::spawn("app", make, printer.quiet)?);
        wait_ready(running.components.last_mut().expect("just pushed"), || {
            let mut buf = [0u8; 512];
            notify
                .recv(&mut buf)
                .ok()
                .is_some_and(|n| String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1"))
        })?;
        finish(progress, printer, "app", "ready (READY=1)");
        running.notify = Some(notify);

        if let (Some(nginx), Some(site)) = (&plan.nginx_bin, &plan.nginx_site) {
            let prefix = plan.run_dir.join("nginx");
            write_nginx_wrapper(nginx, &prefix, site)?;
            let nginx = nginx.clone();
            let make = move || {
                let mut cmd = Command::new(&nginx);
                cmd.arg("-p").arg(&prefix).args(["-c", "nginx.conf"]);
                unblock_signals(&mut cmd);
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
            let tails: String = running.components.iter().map(Component::tail).collect();
            running.stop(spec);
            if tails.is_empty() {
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

/// The socket a socket-activated backend inherits: the unix socket in the run directory
/// (0660, a stale file from a crashed run replaced) behind a front, else the public address.
fn activation_socket(behind: bool, bind: &str, listen: SocketAddr) -> anyhow::Result<std::os::fd::OwnedFd> {
    if behind {
        let path = Path::new(bind.trim_start_matches("unix:"));
        let _ = std::fs::remove_file(path);
        let l = std::os::unix::net::UnixListener::bind(path).with_context(|| format!("creating {}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        Ok(l.into())
    } else {
        let l = std::net::TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
        Ok(l.into())
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
    loop {
        if ready() {
            return Ok(());
        }
        if let Some(status) = c.exited() {
            bail!("{} exited ({status}) before it was ready", c.name);
        }
        if Instant::now() > deadline {
            bail!("{} was not ready within {} s", c.name, READY_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `http {}` around the rendered site file, with everything nginx writes kept under the
/// run directory, in the foreground (`daemon off`), so it runs unprivileged.
fn write_nginx_wrapper(nginx: &Path, prefix: &Path, site: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(prefix.join("temp"))?;
    // The site includes both by relative name, resolved in the prefix as in /etc/nginx.
    let conf_dir = crate::validate::nginx::conf_dir(nginx);
    if let Some(d) = conf_dir {
        for name in ["uwsgi_params", "mime.types"] {
            if d.join(name).is_file() {
                std::fs::copy(d.join(name), prefix.join(name))?;
            }
        }
    }
    // As root, nginx would switch its workers to `nobody`, who cannot reach the app's socket
    // under the project: keep them as the invoking user, as an unprivileged run does anyway.
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    // The project's path may hold spaces, quotes or `$`: every path is quoted for nginx.
    let p = |rel: &str| crate::render::quote::nginx_literal(&prefix.join(rel).display().to_string());
    let conf = format!(
        "{user}daemon off;\nworker_processes 1;\npid {pid};\nerror_log stderr;\nevents {{}}\nhttp {{\n    \
         access_log /dev/stdout;\n    client_body_temp_path {body};\n    proxy_temp_path {proxy};\n    \
         fastcgi_temp_path {fastcgi};\n    uwsgi_temp_path {uwsgi};\n    scgi_temp_path {scgi};\n    \
         include {site};\n}}\n",
        pid = p("nginx.pid"),
        body = p("temp/body"),
        proxy = p("temp/proxy"),
        fastcgi = p("temp/fastcgi"),
        uwsgi = p("temp/uwsgi"),
        scgi = p("temp/scgi"),
        site = crate::render::quote::nginx_include(&site.display().to_string())
    );
    std::fs::write(prefix.join("nginx.conf"), conf)?;
    Ok(())
}

/// `[health]` through the public address, and one static file that the front (or uWSGI
/// alone) must serve itself: its `Cache-Control` carries the `expires` of the `[[static]]`
/// mount, which only the static location (or uWSGI's static map) sets.
fn health_check(plan: &RunPlan<'_>, printer: &Printer) -> anyhow::Result<()> {
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
    if !crate::render::serves_statics(plan.target) {
        return Ok(());
    }
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
    let server = if plan.target.frontend == Frontend::None {
        "uWSGI"
    } else {
        "the front"
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

    /// Stop in reverse start order: the front first (graceful QUIT), then the backend (TERM,
    /// which finishes in-flight requests), each bounded, then SIGKILL to what is left.
    pub fn stop(&mut self, spec: &Spec) {
        while let Some(mut c) = self.components.pop() {
            let sig = match c.name.as_str() {
                "nginx" => libc::SIGQUIT,
                _ => libc::SIGTERM,
            };
            c.stop(sig, grace(spec, &c.name));
        }
    }

    /// Graceful reload of every component: HUP to the app's master (rolling worker reload)
    /// and to nginx's master (new configuration, old workers finish their requests).
    pub fn reload(&self) {
        for c in &self.components {
            c.signal(libc::SIGHUP);
        }
    }

    /// Notifications the app sent since the last call (`READY=1` after a reload).
    pub fn notifications(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(n) = &self.notify {
            let _ = n.set_nonblocking(true);
            let mut buf = [0u8; 512];
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
    pub fn processes(&self, spec: &Spec) -> Vec<ComponentState> {
        self.components
            .iter()
            .map(|c| ComponentState {
                name: c.name.clone(),
                process: c.process(),
                pgid: c.pid(),
                restarts: c.total_restarts,
                grace_secs: grace(spec, &c.name).as_secs(),
            })
            .collect()
    }
}

/// How long a component gets to stop before what is left of its group is killed: nginx 10 s,
/// the app its `graceful_timeout` and 5 s.
pub fn grace(spec: &Spec, component: &str) -> Duration {
    match component {
        "nginx" => Duration::from_secs(10),
        _ => Duration::from_secs(spec.backend.graceful_timeout.0 + 5),
    }
}
