//! `deployctl up`: check everything that can be checked before starting anything, render the
//! local-run configs into `.deployctl/<target>/` (or `--run-dir DIR/<target>/`), start the
//! stack, supervise it until Ctrl-C or SIGTERM, then stop it in reverse order.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::UpArgs;
use crate::commands::serve::{find_server, probe};
use crate::commands::{Status, down_command, listen_arg, load, parse_target, run_root};
use crate::orchestrate::interrupt;
use crate::orchestrate::procs::{self, ProcId};
use crate::orchestrate::stack::{self, RunPlan, Running};
use crate::orchestrate::state::{Condition, Found, Phase, State};
use crate::plan::{Environment, Plan, Program, RunFiles, Tier};
use crate::printer::{Printer, hinted};
use crate::render::{self, FileTree};
use crate::settings::check_venv_version;
use crate::spec::{Spec, display_path};
use crate::target::Target;
use crate::validate::{self, Policy};

/// Set in the background supervisor that `--detach` starts.
const DETACHED_ENV: &str = "DEPLOYCTL_UP_DETACHED";

pub fn run(args: &UpArgs, printer: &Printer) -> anyhow::Result<Status> {
    // From the first step on, Ctrl-C and SIGTERM are events that every wait of the start-up
    // checks (a pip install, a validator, a readiness wait, a health check), not a kill.
    interrupt::install().context("blocking signals")?;
    let detached = std::env::var_os(DETACHED_ENV).is_some();
    // The background supervisor's output is up.log: `-q` quiets the terminal of the `up
    // --detach` that started it, never the log.
    let printer = &if detached {
        Printer {
            quiet: false,
            ..*printer
        }
    } else {
        *printer
    };
    let result = if args.detach && !detached {
        detach(args, printer)
    } else {
        supervise(args, printer)
    };
    match result {
        Err(e) if interrupt::is_interrupted(&e) => {
            let sig = interrupt::stop_requested().unwrap_or(libc::SIGINT);
            Err(anyhow::anyhow!(
                "{} during start-up: stopped what was started, nothing is left running",
                interrupt::Interrupted(sig)
            ))
        }
        other => other,
    }
}

fn supervise(args: &UpArgs, printer: &Printer) -> anyhow::Result<Status> {
    // Everything that can fail before a process starts, fails here: usage first (the target,
    // --listen), then the address, before anything is written; then the tools, the
    // virtualenv, and the rendered configs with their validators.
    let (spec, _) = load(&args.spec)?;
    let target = parse_target(&spec, args.target.as_deref())?;
    check_secret_env(&spec)?;
    let listen = public_address(args, &spec)?;
    // A stack of this target still running, supervised or orphaned, is never overwritten (its
    // state file is all that finds its processes); before the port check, which it would fail.
    refuse_over_running(args, &spec, target, printer)?;
    check_port(listen)?;
    let dir = make_run_dir(args, &spec, target)?;
    // A detached supervisor records itself at once, so that even a kill during start-up (the
    // virtualenv, the validators, a component not ready yet) leaves its processes findable:
    // they are in the session it leads. Removed again if the start fails.
    let _starting = match std::env::var_os(DETACHED_ENV) {
        Some(_) => {
            let mut st = new_state(&spec, target, format!("http://{listen}/"))?;
            st.phase = Phase::Starting;
            st.write(&dir).context("writing the state file")?;
            Some(RemoveOnDrop(dir))
        }
        None => None,
    };
    let Prepared {
        plan,
        tree,
        tools,
        pending,
    } = prepare(args, printer)?;
    if let Some(tls) = &plan.tls {
        check_port(resolve(&tls.listen.to_string())?)?;
    }
    // A web server behind another listens on a loopback port of its own.
    for t in &plan.tiers[1..] {
        if let Some(crate::plan::Address::Tcp(l)) = &t.listen {
            check_port(resolve(&l.to_string())?)?;
        }
    }
    if let Some(warning) = plan.static_warning() {
        printer.warn(&warning);
    }
    let Tools {
        backend_bin,
        nginx_bin,
        apache_bin,
        ..
    } = tools;
    let spec = &plan.spec;
    // The lone embedded server with [tls] listens on the HTTPS address only.
    let listen = match (&plan.tls, plan.edge().tier) {
        (Some(tls), Tier::Embedded) => resolve(&tls.listen.to_string())?,
        _ => listen,
    };
    let run = RunPlan::new(&plan, listen, backend_bin, nginx_bin)?.with_apache(apache_bin);
    let run_dir = run.files.dir.clone();
    clear_generations(&run_dir)?;
    tree.write_atomic(&run.conf_dir(1))?;
    link_conf(&run.files, 1)?;
    printer.status("rendered", &format!("{target} into {}", display_path(&run_dir)));

    let mut running = stack::start(&run, printer)?;
    tls_after_start(&run, &mut running, &pending, printer);
    printer.status("up", &format!("{} — Ctrl-C stops, SIGHUP reloads", running.url));
    println!("{}", running.url);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // A HUP that came during the start-up asked for a configuration the start-up may have read
    // before it changed (the `deploy.toml` was read first): it is kept, and the loop below
    // reloads once, now that there is a stack to reload — as systemd queues a reload job
    // behind a start job.
    if interrupt::hup_pending() {
        printer.status(
            "reload",
            "a SIGHUP came during the start-up: reloading now that the stack is up",
        );
    }
    let mut state = new_state(spec, target, running.url.clone())?;
    state.components = running.processes(&plan);
    state.write(&run_dir).context("writing the state file")?;
    loop {
        // A restarted component has a new main process: the state file follows at once, so
        // `status` and `down` never look for the old one.
        let now = running.processes(&plan);
        if now != state.components {
            state.components = now;
            if let Err(e) = state.write(&run_dir) {
                printer.warn(&format!("cannot update the state file: {e}"));
            }
        }
        let mut pfd = libc::pollfd {
            fd: interrupt::fd().unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polling one valid fd (or none: -1 is ignored by poll).
        unsafe { libc::poll(&mut pfd, 1, 200) };
        if interrupt::stop_requested().is_some() {
            printer.status("stopping", "front first, then the app");
            running.stop(&plan);
            State::remove(&run_dir);
            printer.status("stopped", "no process left");
            return Ok(Status::Success);
        }
        if interrupt::take_hup() {
            // The state file follows a new app instance at the top of the loop.
            reload(args, printer, &run, &mut running);
            continue;
        }
        for note in running.notifications() {
            if note.lines().any(|l| l == "READY=1") {
                printer.status("app", "ready (READY=1)");
            }
        }
        if let Err(e) = running.restart_crashed(printer) {
            running.stop(&plan);
            State::remove(&run_dir);
            return Err(e);
        }
    }
}

/// The state file's record of this supervisor, its stack running, no component yet.
fn new_state(spec: &Spec, target: Target, url: String) -> anyhow::Result<State> {
    Ok(State {
        version: crate::orchestrate::state::VERSION,
        target: target.to_string(),
        boot_id: procs::boot_id(),
        supervisor: ProcId::of(std::process::id()).context("reading this process's start time in /proc")?,
        // SAFETY: getsid(0) has no preconditions.
        session: unsafe { libc::getsid(0) } as u32,
        phase: Phase::Running,
        url,
        health_path: spec.health.path.clone(),
        health_expect: spec.health.expect,
        components: Vec::new(),
    })
}

/// Removes the state file of a start-up that returns early (with an error); once running,
/// the supervisor's loop replaces and removes it.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let ours = |st: &State| st.supervisor.pid == std::process::id() && st.phase == Phase::Starting;
        if matches!(State::read(&self.0), Some(Found::State(st)) if ours(&st)) {
            State::remove(&self.0);
        }
    }
}

/// Remove the rendered files of an earlier run (`conf`, `conf-N/`, staging leftovers).
fn clear_generations(run_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", display_path(run_dir)))?;
    for e in std::fs::read_dir(run_dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name == "conf" || name.starts_with("conf-") || name.starts_with(".conf") {
            if path.is_symlink() || !path.is_dir() {
                let _ = std::fs::remove_file(&path);
            } else {
                std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", display_path(&path)))?;
            }
        }
    }
    Ok(())
}

/// `conf` → `conf-N`: the rendered files in use, under one stable name (atomic swap).
fn link_conf(files: &RunFiles, generation: u32) -> anyhow::Result<()> {
    let link = files.conf_link();
    let tmp = files.dir.join(".conf-link");
    let _ = std::fs::remove_file(&tmp);
    let target = files.conf_dir(generation);
    let name = target.file_name().context("a generation directory has a name")?;
    std::os::unix::fs::symlink(name, &tmp)?;
    std::fs::rename(&tmp, &link).with_context(|| format!("linking {}", display_path(&link)))?;
    Ok(())
}

/// `--detach`: run the same `up` as a background supervisor in its own session, its output
/// in `.deployctl/<target>/up.log`; return once it is healthy (its state file appears), or
/// fail with its last lines.
/// `[app].secret_env` in a local run: each name is taken from `up`'s own environment, which
/// the app's process inherits (a detached supervisor too: it is started with it); one that is
/// not set stops `up` before anything starts. The values are never printed or written.
fn check_secret_env(spec: &Spec) -> anyhow::Result<()> {
    let missing: Vec<&str> = spec
        .app
        .secret_env
        .iter()
        .filter(|name| std::env::var_os(name).is_none())
        .map(String::as_str)
        .collect();
    let Some(first) = missing.first() else {
        return Ok(());
    };
    let (names, verb) = match missing.len() {
        1 => (format!("`{first}`"), "is"),
        _ => (
            missing.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
            "are",
        ),
    };
    Err(hinted(
        format!(
            "[app].secret_env lists {names}, which {verb} not set in the environment of `deployctl up` ({})",
            display_path(&spec.path)
        ),
        format!(
            "set the variable{} for `up` (`{first}=… deployctl up`, or export it): up passes it to the app and \
             never prints or writes its value",
            if missing.len() == 1 { "" } else { "s" }
        ),
    ))
}

fn detach(args: &UpArgs, printer: &Printer) -> anyhow::Result<Status> {
    let (spec, _) = load(&args.spec)?;
    let target = parse_target(&spec, args.target.as_deref())?;
    check_secret_env(&spec)?;
    // The virtualenv step shows its progress here, in the foreground; the background `up`
    // then finds it up to date.
    refuse_over_running(args, &spec, target, printer)?;
    let dir = make_run_dir(args, &spec, target)?;
    let plan = local_plan(args, &spec, target);
    let tools = tools(&plan)?;
    venv(args, &plan, &tools, printer)?;
    State::remove(&dir);
    let log_path = dir.join(crate::orchestrate::state::LOG);
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", display_path(&log_path)))?;
    let exe = std::env::current_exe().context("finding the deployctl executable")?;
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).filter(|a| a != "--detach").collect();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(argv)
        .env(DETACHED_ENV, "1")
        .env(
            PROBED_ENV,
            tools
                .server
                .as_ref()
                .map(|(b, v)| format!("{}\t{v}", b.display()))
                .unwrap_or_default(),
        )
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid between fork and exec: the supervisor leaves our session and terminal,
    // so closing the terminal does not send it SIGHUP (which would mean "reload").
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::setsid();
            Ok(())
        });
    }
    interrupt::unblock_in_child(&mut cmd);
    let mut child = cmd.spawn().context("starting the background supervisor")?;
    let progress = printer.progress("starting in the background");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let healthy = State::read(&dir).and_then(|f| match f {
            Found::State(s) if s.supervisor.pid == child.id() && s.phase == Phase::Running => Some(s),
            _ => None,
        });
        if let Some(st) = healthy {
            if let Some(p) = progress {
                p.finish_and_clear();
            }
            printer.status(
                "up",
                &format!("{} in the background (supervisor {})", st.url, st.supervisor.pid),
            );
            println!("{}", st.url);
            return Ok(Status::Success);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!(
                "the background `up` exited ({status}) before it was healthy:\n{}",
                tail.join("\n")
            );
        }
        if let Some(sig) = interrupt::stop_requested() {
            // The supervisor stops what it started (it was starting: nothing is up yet).
            // SAFETY: signalling the child we started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            return Err(interrupt::Interrupted(sig).into());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the background `up` was not healthy within 180 s; see {}",
                display_path(&log_path)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Set by `up --detach` for its supervisor: the server it probed (`PATH\tX.Y`), so that the
/// supervisor's start-up does not run `deployctl-server --probe` again.
const PROBED_ENV: &str = "DEPLOYCTL_UP_SERVER_PROBED";

/// What the `up --detach` that started this supervisor found `bin` to be built for, when it
/// is the same server.
fn probed(bin: &Path) -> Option<String> {
    // Only for the start-up: a reload probes again (the server may have been rebuilt).
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return None;
    }
    let value = std::env::var(PROBED_ENV).ok()?;
    let (path, version) = value.split_once('\t')?;
    (Path::new(path) == bin).then(|| version.to_string())
}

/// The programs a target runs, found before anything is installed or started.
struct Tools {
    /// `deployctl-server`, the virtualenv's `gunicorn` (installed by [`venv`]), or `uwsgi`.
    backend_bin: PathBuf,
    nginx_bin: Option<PathBuf>,
    /// `apache2`, when the target runs Apache httpd.
    apache_bin: Option<PathBuf>,
    /// `deployctl-server` and the Python `X.Y` it links, when it is installed (required for
    /// the embedded backend; its Python is preferred for every virtualenv).
    server: Option<(PathBuf, String)>,
}

fn tools(plan: &Plan) -> anyhow::Result<Tools> {
    let spec = &plan.spec;
    let target = plan.target;
    let app = plan.app();
    let program = app.process.as_ref().map(|p| &p.program);
    let server = match program {
        Some(Program::Server) => {
            let bin = find_server()?;
            let version = probed(&bin).map_or_else(|| probe(&bin), Ok)?;
            Some((bin, version))
        }
        // Another backend needs the server's Python only to create the virtualenv.
        Some(Program::Path(_) | Program::Nginx | Program::Apache) | None
            if deployctl_common::venv::python(&spec.app.venv).exists() =>
        {
            None
        }
        Some(Program::Path(_) | Program::Nginx | Program::Apache) | None => {
            find_server().ok().and_then(|b| probe(&b).ok().map(|v| (b, v)))
        }
    };
    let apache_program = plan
        .tier(Tier::Apache)
        .and_then(|t| t.process.as_ref())
        .map(|p| &p.program);
    let apache_bin = match apache_program {
        Some(Program::Apache) => Some(crate::validate::apache::find().map_err(|_| {
            hinted(
                format!("Apache httpd is not installed (target `{target}` needs it)"),
                crate::validate::apache::HINT,
            )
        })?),
        Some(Program::Path(p)) => Some(p.clone()),
        Some(Program::Server | Program::Nginx) | None => None,
    };
    let backend_bin = match (program, &server, &apache_bin) {
        (Some(Program::Server), Some((bin, _)), _) => bin.clone(),
        (Some(Program::Path(p)), _, _) => p.clone(),
        // mod_wsgi: the app runs inside Apache.
        (None, _, Some(apache)) if app.tier.role() == crate::plan::Role::InProcessApp => apache.clone(),
        (Some(Program::Server | Program::Nginx | Program::Apache), _, _) | (None, _, _) => {
            anyhow::bail!("`deployctl up` cannot run `{target}` yet")
        }
    };
    if app.tier == Tier::Uwsgi && spec.backend.uwsgi_build == crate::spec::UwsgiBuild::Debian && !backend_bin.exists() {
        return Err(hinted(
            format!(
                "{} is not installed (target `{target}` needs it)",
                backend_bin.display()
            ),
            "install it (`apt-get install uwsgi uwsgi-plugin-python3`), or set `[backend] uwsgi_build = \"pip\"` \
             to have `up` install uWSGI into the virtualenv, or run `--target nginx+embedded`",
        ));
    }
    let front = plan
        .tier(Tier::Nginx)
        .and_then(|t| t.process.as_ref())
        .map(|p| &p.program);
    let nginx_bin = match front {
        Some(Program::Nginx) => Some(which::which("nginx").map_err(|_| {
            hinted(
                format!("nginx is not installed (target `{target}` needs it)"),
                "install it with `apt-get install nginx`, or run without a front: `--target embedded`",
            )
        })?),
        Some(Program::Path(p)) => Some(p.clone()),
        Some(Program::Server | Program::Apache) | None => None,
    };
    Ok(Tools {
        backend_bin,
        nginx_bin,
        apache_bin,
        server,
    })
}

/// The virtualenv, made ready for the target (its Python, the requirements, the backend's
/// package) before any validator or process needs it.
fn venv(args: &UpArgs, plan: &Plan, tools: &Tools, printer: &Printer) -> anyhow::Result<()> {
    let (spec, target) = (&plan.spec, plan.target);
    let server = tools.server.as_ref().map(|(b, v)| (b.as_path(), v.as_str()));
    let needs = crate::orchestrate::venv::needs(plan, server);
    let root = run_root(spec.dir(), args.run_dir.dir.as_deref());
    crate::orchestrate::venv::ensure(spec, target, &needs, &root, printer)?;
    if let (Tier::Embedded, Some((_, built_for))) = (plan.app().tier, &tools.server) {
        check_venv_version(&spec.app.venv, built_for)?;
    }
    if !tools.backend_bin.exists() {
        anyhow::bail!(
            "{} does not exist after the virtualenv was prepared (target `{target}` runs it)",
            tools.backend_bin.display()
        );
    }
    Ok(())
}

/// `<project>/.deployctl/<target>/`, or `DIR/<target>/` with `--run-dir DIR`.
fn run_dir(args: &UpArgs, spec: &Spec, target: Target) -> PathBuf {
    RunFiles::of(&run_root(spec.dir(), args.run_dir.dir.as_deref()), target).dir
}

/// The local-run plan of `target`: its files in the run directory, rendered for `conf`, the
/// name under which the files in use are found (each generation is written into `conf-N/`
/// and `conf` links to it): the same text on every start, so the validators' cache applies.
fn local_plan(args: &UpArgs, spec: &Spec, target: Target) -> Plan {
    let dir = run_dir(args, spec, target);
    let files = RunFiles { dir: dir.clone() };
    super::probed(Plan::resolve(
        spec,
        target,
        Environment::Local {
            conf_dir: files.conf_link(),
            socket_dir: dir,
        },
    ))
}

/// Creates the run directory, with an error that names the project and says what to do when
/// it cannot be written (a read-only project needs `--run-dir`).
fn make_run_dir(args: &UpArgs, spec: &Spec, target: Target) -> anyhow::Result<PathBuf> {
    let dir = run_dir(args, spec, target);
    let Err(e) = std::fs::create_dir_all(&dir) else {
        return Ok(dir);
    };
    let message = format!("cannot create the run directory {}", dir.display());
    let unwritable = matches!(
        e.kind(),
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
    );
    if args.run_dir.dir.is_some() || !unwritable {
        return Err(anyhow::Error::new(e).context(message));
    }
    let example = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("deployctl").join(&spec.app.name),
        None => std::env::temp_dir().join(format!("deployctl-{}", spec.app.name)),
    };
    Err(anyhow::Error::new(e).context(crate::printer::Hinted {
        message: format!("{message}: the project {} cannot be written", spec.dir().display()),
        hint: format!(
            "run it with its configs, sockets, logs and state elsewhere: `--run-dir {}` (or set \
                 DEPLOYCTL_RUN_DIR); pass the same to `status`, `logs` and `down`",
            super::shell_word(&example.display().to_string())
        ),
    }))
}

/// Refuses to start `target` over a stack of it that still runs: supervised (by another
/// `up`), or orphaned (its supervisor was killed; its state file is what `down` stops it by).
/// A state file whose processes are all gone is removed.
fn refuse_over_running(args: &UpArgs, spec: &Spec, target: Target, printer: &Printer) -> anyhow::Result<()> {
    let dir = run_dir(args, spec, target);
    let project = spec.dir().display();
    let down = down_command(
        &args.spec.config,
        Some(&target.to_string()),
        args.run_dir.dir.as_deref(),
    );
    match State::read(&dir) {
        None => Ok(()),
        Some(Found::Unverifiable { pids, why }) => {
            printer.warn(&format!(
                "{}: {why}; replaced without signalling the processes it names ({})",
                display_path(&dir.join(crate::orchestrate::state::FILE)),
                pids.iter()
                    .map(|(n, p)| format!("{n} {p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            State::remove(&dir);
            Ok(())
        }
        Some(Found::State(st)) => {
            let live = st.inspect();
            match live.condition() {
                Condition::Supervised => Err(hinted(
                    format!(
                        "`{target}` of {project} is already running ({}, supervisor {})",
                        st.url, st.supervisor.pid
                    ),
                    format!("stop it with `{down}`, or start another target"),
                )),
                Condition::Orphaned => {
                    let pids = |ps: &[ProcId]| ps.iter().map(|p| p.pid.to_string()).collect::<Vec<_>>().join(" ");
                    let mut left: Vec<String> = st
                        .components
                        .iter()
                        .zip(&live.components)
                        .filter(|(_, l)| !l.members.is_empty())
                        .map(|(c, l)| format!("{} ({})", c.name, pids(&l.members)))
                        .collect();
                    if !live.unrecorded.is_empty() {
                        left.push(format!("processes of its session ({})", pids(&live.unrecorded)));
                    }
                    Err(hinted(
                        format!(
                            "`{target}` of {project} is still running at {} without its supervisor ({} is \
                             gone): {} are left",
                            st.url,
                            st.supervisor.pid,
                            left.join(", ")
                        ),
                        format!("stop them with `{down}`, then start again"),
                    ))
                }
                Condition::Stale => {
                    State::remove(&dir);
                    Ok(())
                }
            }
        }
    }
}

/// What `prepare` made ready.
struct Prepared {
    plan: Plan,
    tree: FileTree,
    tools: Tools,
    /// What `[tls]` leaves to do once the front serves (ACME).
    pending: crate::orchestrate::tls::Pending,
}

/// Load and validate `deploy.toml`, resolve the local-run plan, find the tools, make the
/// virtualenv ready, render the plan and put it through the validation gate (which may need
/// the virtualenv). Used at start and on SIGHUP; nothing is written (but the virtualenv) or
/// signalled unless it succeeds.
fn prepare(args: &UpArgs, printer: &Printer) -> anyhow::Result<Prepared> {
    let (mut spec, templates) = load(&args.spec)?;
    let target = parse_target(&spec, args.target.as_deref())?;
    if let Some(l) = &args.listen {
        spec.server.listen = listen_arg(l)?;
    }
    if let Some(l) = &args.tls_listen {
        let tls = spec.tls.as_mut().ok_or_else(|| {
            crate::printer::usage(
                "--tls-listen needs a [tls] table in deploy.toml",
                Some("add `[tls]` (a local run without certificates gets a self-signed pair)".into()),
            )
        })?;
        tls.listen = super::tls_listen_arg(l)?;
    }
    let plan = local_plan(args, &spec, target);
    let tools = tools(&plan)?;
    venv(args, &plan, &tools, printer)?;
    let files = plan.run_files().context("a local-run plan has a run directory")?;
    make_run_dir(args, &spec, target)?;
    if plan.apache.is_some() {
        // Apache's runtime directory holds its error log, which `apache2 -t` wants to exist.
        let dir = files.apache_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", display_path(&dir)))?;
    }
    let tree = render::render_plan(&plan, &templates)?;
    let report = validate::gate(&plan, &tree, Policy::from_env(), Some(&files.validated_cache()))?;
    interrupt::check()?;
    if !report.is_ok() {
        anyhow::bail!(report.failure_message());
    }
    report.print(printer, false);
    printer.status("validated", &report.summary());
    // The certificate pair the front will read, checked or made before anything uses it.
    let pending = crate::orchestrate::tls::prepare(&plan, printer)?;
    Ok(Prepared {
        plan,
        tree,
        tools,
        pending,
    })
}

/// SIGHUP: re-render and validate; only if that succeeds, let the new configuration take over
/// component by component once it proves ready and healthy ([`Running::reload`]). On any
/// error the previous processes keep serving from their own rendered files, and the error is
/// shown. The outcome is recorded for `deployctl reload`.
fn reload(args: &UpArgs, printer: &Printer, plan: &RunPlan<'_>, running: &mut Running) {
    let run_dir = &plan.files.dir;
    let started = crate::commands::reload::now_ms();
    printer.status("reloading", "re-rendering and validating");
    let result = (|| -> anyhow::Result<()> {
        let Prepared {
            plan: new, tree, tools, ..
        } = prepare(args, printer)?;
        let spec = &new.spec;
        if new.target != plan.target
            || spec.server.listen != plan.spec.server.listen
            || spec.app.name != plan.spec.app.name
            || new.tls.as_ref().map(|t| &t.listen) != plan.plan.tls.as_ref().map(|t| &t.listen)
        {
            anyhow::bail!(
                "the target, a listen address ([server] or [tls], or [tls] itself) or the app name changed: that needs \
                 a restart, not a reload"
            );
        }
        let (app, front) = running.generations();
        let generation = app.max(front) + 1;
        let next = RunPlan::new(&new, plan.listen, tools.backend_bin, tools.nginx_bin)?.with_apache(tools.apache_bin);
        tree.write_atomic(&next.conf_dir(generation))?;
        let result = running.reload(&next, generation, printer);
        // Keep the rendered files of every generation a process runs from; `conf` names the
        // newest of them.
        let (app, front) = running.generations();
        for g in [app, front, generation] {
            if g != app && g != front {
                let _ = std::fs::remove_dir_all(next.conf_dir(g));
            }
        }
        for e in std::fs::read_dir(run_dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(g) = name.strip_prefix("conf-").and_then(|g| g.parse::<u32>().ok())
                && g != app
                && g != front
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        link_conf(&plan.files, app.max(front))?;
        result
    })();
    let outcome = match &result {
        Ok(()) => {
            printer.status("reloaded", "the new configuration serves");
            crate::commands::reload::Outcome {
                started_ms: started,
                ok: true,
                message: "the new configuration serves".into(),
            }
        }
        Err(e) if interrupt::is_interrupted(e) => crate::commands::reload::Outcome {
            started_ms: started,
            ok: false,
            message: "interrupted: the stack is stopping".into(),
        },
        Err(e) => {
            let e = anyhow::anyhow!("{e:#}").context("reload failed; still serving the previous configuration");
            printer.error(&e);
            crate::commands::reload::Outcome {
                started_ms: started,
                ok: false,
                message: format!("{e:#}"),
            }
        }
    };
    outcome.write(run_dir);
}

/// With `[tls]`: the URL is HTTPS's; with ACME, the certificate is obtained now that the front
/// serves the challenge path, and nginx reloaded onto it. A failure leaves the stack serving
/// on what it started with, and says why.
fn tls_after_start(
    run: &RunPlan<'_>,
    running: &mut stack::Running,
    pending: &crate::orchestrate::tls::Pending,
    printer: &Printer,
) {
    if run.plan.tls.is_none() {
        return;
    }
    if let Some(url) = crate::orchestrate::tls::https_url(run.plan) {
        running.url = url;
    }
    let crate::orchestrate::tls::Pending::Acme(why) = pending else {
        return;
    };
    let progress = printer.progress(&format!("obtaining a certificate ({why})"));
    let result = crate::orchestrate::tls::obtain(run.plan).and_then(|cert| {
        running.reload_front_certificates(run, printer)?;
        Ok(cert)
    });
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    match result {
        Ok(cert) => printer.status(
            "certificate",
            &format!(
                "issued for {}, {} reloaded onto it",
                cert.names.join(", "),
                run.plan.tls_front_name()
            ),
        ),
        Err(e) => printer.warn(&format!(
            "{:#}\nHTTPS keeps serving the certificate it started with (a self-signed placeholder when there was none); \
             `deployctl cert` tries again",
            e.context("cannot obtain a certificate")
        )),
    }
}

/// `[server].listen`, or `--listen`.
fn public_address(args: &UpArgs, spec: &Spec) -> anyhow::Result<SocketAddr> {
    let listen = match &args.listen {
        Some(l) => listen_arg(l)?,
        None => spec.server.listen.clone(),
    };
    resolve(&listen.to_string())
}

fn resolve(listen: &str) -> anyhow::Result<SocketAddr> {
    let host_port = listen.replace("localhost:", "127.0.0.1:");
    host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| anyhow::anyhow!("cannot resolve the listen address {listen}"))
}

/// A privileged port without the right to bind it, or a port in use: clear errors before
/// anything starts.
fn check_port(addr: SocketAddr) -> anyhow::Result<()> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(hinted(
            format!("cannot listen on {addr}: ports below 1024 need root or CAP_NET_BIND_SERVICE"),
            "run locally on a high port: `deployctl up --listen 127.0.0.1:8000`",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(hinted(
            format!("cannot listen on {addr}: the address is already in use by another process"),
            "stop it, or pick another address with `--listen HOST:PORT`",
        )),
        Err(e) => Err(anyhow::anyhow!("cannot listen on {addr}: {e}")),
    }
}
