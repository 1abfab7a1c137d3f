//! Start-up order. The master: settings (resolved from the command line and `deploy.toml`, or
//! as `deployctl serve` resolved them and handed them over), logs, signals, sockets (bound, or
//! inherited from systemd), the open-file limit, pid file, workers. A worker (started by the
//! master with `$DEPLOYCTL_WORKER`): the settings the master resolved, inherited sockets made
//! close-on-exec, signals, Python, the app, "ready" to the master, then the loop.
//!
//! Sockets are bound before any Python starts, so a port in use fails fast and without
//! importing the app; signals are blocked before any thread exists, so every thread (the
//! app's too) leaves them to the signalfd.
//!
//! Descriptors: everything the server holds is close-on-exec, so a process the app starts
//! (`os.system("… &")`, `subprocess` with `close_fds=False`) never inherits a listening socket
//! (which would keep the port taken after the server stopped), the master's pipe or the
//! scoreboard. The master's own are created that way; a worker's inherited ones are marked
//! here, first thing.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use anyhow::Context;
use deployctl_common::error::hinted;
use deployctl_common::settings::{ServeArgs, ServeSettings};
use pyo3::prelude::*;

use crate::event_loop::Loop;
use crate::master::{self, Master};
use crate::python::{app, init};
use crate::{log, net, scoreboard, systemd};
use deployctl_common::signals;

/// Exit status of a worker whose app cannot be imported (Gunicorn uses 4 too); the master
/// tells a failed boot from a crash by the worker's `F` message and its missing `R`.
pub const EXIT_APP_LOAD: i32 = 4;

/// Handled by the master and by every worker (the master also takes CHLD, TTIN, TTOU).
const SIGNALS: &[libc::c_int] = &[libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGUSR1];

/// Open files the server needs besides its sockets and workers: stdio, the signalfd, a log
/// file or two, and what Python opens while a worker boots. Below this plus two per listening
/// socket and one per worker it refuses to start rather than fail somewhere obscure.
const MIN_NOFILE: u64 = 32;
/// Below this soft limit a warning says how to raise it: every connection is a descriptor.
const LOW_NOFILE: u64 = 1024;

/// `deployctl-server` with its command line: a worker when the master started it
/// (`$DEPLOYCTL_WORKER`), the master otherwise. Only the master resolves `args`, and only when
/// `resolved` (what `deployctl serve` resolved from them) is `None`; it keeps `args` to resolve
/// them again on HUP.
pub fn run(args: ServeArgs, resolved: Option<ServeSettings>) -> anyhow::Result<i32> {
    match std::env::var(master::WORKER_ENV) {
        Ok(spec) => {
            let settings = std::env::var(master::SETTINGS_ENV)
                .with_context(|| format!("${} is not set", master::SETTINGS_ENV))
                .and_then(|json| ServeSettings::from_json(&json))?;
            for var in [master::WORKER_ENV, master::SETTINGS_ENV] {
                // SAFETY: no other thread exists yet. The app and its children must not see
                // them (a `deployctl-server` it started would take itself for a worker).
                unsafe { std::env::remove_var(var) };
            }
            init_log(&settings)?;
            worker(settings, &spec)
        }
        Err(_) => {
            let settings = match resolved {
                Some(s) => s,
                None => args.resolve()?,
            };
            init_log(&settings)?;
            run_master(args, settings)
        }
    }
}

fn init_log(settings: &ServeSettings) -> anyhow::Result<()> {
    log::init(
        settings.error_log.as_deref(),
        settings.access_log.as_deref(),
        settings.access_log_format,
        settings.log_level,
    )
}

/// The master: sockets, pid file, workers. No Python here.
fn run_master(args: ServeArgs, settings: ServeSettings) -> anyhow::Result<i32> {
    // Checked here too (workers check again) so a wrong virtualenv fails before any socket
    // or worker exists, with the hint.
    if let Some(v) = &settings.venv {
        deployctl_common::settings::check_venv_version(v, init::BUILT_FOR)?;
    }
    let signals = signals::block(&[SIGNALS, &[libc::SIGCHLD, libc::SIGTTIN, libc::SIGTTOU]].concat())
        .context("blocking signals")?;
    let inherited = systemd::listen_fds();
    let listeners = if inherited.is_empty() {
        settings
            .binds
            .iter()
            .chain(&settings.redirect_binds)
            .map(|b| net::bind(b, settings.uds_mode))
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        inherited
            .into_iter()
            .map(net::listener_from_fd)
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    // A pair that cannot serve fails here, before any worker starts, with the file named.
    if let Some(files) = &settings.tls {
        crate::tls::config(files)?;
    }
    raise_nofile(listeners.len() as u64, u64::from(settings.workers))?;
    let pid_file = settings.pid_file.clone();
    if let Some(p) = &pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing the pid file {}", p.display()))?;
    }
    let plain_from = if settings.redirect_binds.is_empty() {
        usize::MAX
    } else {
        settings.binds.len()
    };
    if plain_from != usize::MAX && listeners.len() != settings.binds.len() + settings.redirect_binds.len() {
        anyhow::bail!(
            "{} sockets inherited, but --bind and --redirect-bind name {}",
            listeners.len(),
            settings.binds.len() + settings.redirect_binds.len()
        );
    }
    for (i, l) in listeners.iter().enumerate() {
        let what = if i >= plain_from { ", redirecting to https" } else { "" };
        log::info(&format!(
            "listening on {} ({} worker(s), {} thread(s) each{what})",
            l.bind, settings.workers, settings.threads
        ));
    }
    let result = Master::new(args, settings, listeners, signals).run();
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    result
}

/// Raise the soft open-file limit to the hard one (every connection is a descriptor, and the
/// usual soft default of 1024 is low for a server); the workers inherit it. Refuse to start
/// when even the hard limit cannot work; warn when it is low.
fn raise_nofile(listeners: u64, workers: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reading our own limit into a struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setting our own limit. It fails with EPERM under a seccomp filter such as
        // systemd's `SystemCallFilter=~@resources` (on in the rendered units, with
        // `SystemCallErrorNumber=EPERM`): the soft limit then stays what systemd gave.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    let needed = MIN_NOFILE + 2 * listeners + workers;
    let how = "raise it with `ulimit -n 65536` in the shell that starts the server, or `LimitNOFILE=65536` in its systemd unit";
    if lim.rlim_cur < needed {
        return Err(hinted(
            format!(
                "the open-file limit (RLIMIT_NOFILE) is {} (hard limit {}); the server needs at least {needed} \
                 ({MIN_NOFILE}, 2 per listening socket, 1 per worker)",
                lim.rlim_cur, lim.rlim_max
            ),
            how,
        ));
    }
    if lim.rlim_cur < LOW_NOFILE {
        log::warning(&format!(
            "the open-file limit (RLIMIT_NOFILE) is only {} (hard limit {}): each worker can hold fewer connections \
             than that; {how}",
            lim.rlim_cur, lim.rlim_max
        ));
    }
    Ok(())
}

/// Mark an inherited descriptor close-on-exec (`dup2` cleared the flag on the way in).
fn cloexec(fd: RawFd) -> anyhow::Result<()> {
    // SAFETY: F_SETFD on a descriptor number; a bad one is reported, nothing else changes.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("fd {fd} from the master (${} is wrong?)", master::WORKER_ENV));
    }
    Ok(())
}

/// A worker: sockets from the master, Python, the app, then the loop.
fn worker(settings: ServeSettings, spec: &str) -> anyhow::Result<i32> {
    let parts: Vec<i32> = spec.split(',').filter_map(|p| p.parse().ok()).collect();
    let [count, status_fd, board_fd] = parts[..] else {
        anyhow::bail!("${}={spec:?} is malformed", master::WORKER_ENV);
    };
    if count < 0 || status_fd != 3 + count || board_fd != status_fd + 1 {
        anyhow::bail!("${}={spec:?} is malformed", master::WORKER_ENV);
    }
    for fd in 3..=board_fd {
        cloexec(fd)?;
    }
    // SAFETY: the master placed the scoreboard memfd there. Closed once mapped: the mapping
    // stays, and nothing the app starts can reach the master's view of this worker.
    let board_fd = unsafe { OwnedFd::from_raw_fd(board_fd) };
    scoreboard::install(scoreboard::Scoreboard::map(&board_fd).context("mapping the scoreboard")?);
    drop(board_fd);
    // SAFETY: the master placed the listeners at 3.. and the status pipe after them.
    let mut status = unsafe { std::fs::File::from_raw_fd(status_fd) };
    let fds = (0..count).map(|i| unsafe { OwnedFd::from_raw_fd(3 + i) });
    let listeners = fds.map(net::listener_from_fd).collect::<anyhow::Result<Vec<_>>>()?;
    let signals = signals::block(SIGNALS).context("blocking signals")?;
    for (k, v) in &settings.env {
        // SAFETY: no other thread exists yet (Python is not started, the loop not running).
        unsafe { std::env::set_var(k, v) };
    }
    let fail = |status: &mut std::fs::File, msg: String| {
        let _ = status.write_all(format!("F{msg}\0").as_bytes());
    };
    if let Err(e) = std::env::set_current_dir(&settings.chdir) {
        fail(&mut status, format!("changing to {}: {e}", settings.chdir.display()));
        return Ok(EXIT_APP_LOAD);
    }
    // The pair is read by each worker as it starts: a HUP's new generation serves the files
    // as they are now (the master checked them before starting it).
    let tls = match settings.tls.as_ref().map(crate::tls::config).transpose() {
        Ok(t) => t,
        Err(e) => {
            fail(&mut status, format!("{e:#}"));
            return Ok(EXIT_APP_LOAD);
        }
    };
    let argv: Vec<String> = std::env::args().collect();
    if let Err(e) = init::initialize(settings.venv.as_deref(), &argv) {
        fail(&mut status, format!("{e:#}"));
        return Ok(EXIT_APP_LOAD);
    }
    let loaded = Python::attach(|py| app::load(py, &settings, &listeners));
    let app = match loaded {
        Ok(a) => a,
        Err(e) => {
            fail(&mut status, e.to_string());
            return Ok(EXIT_APP_LOAD);
        }
    };
    if app.settings.security_headers {
        crate::http::response::SECURITY_HEADERS.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(v) = &app.settings.hsts {
        let _ = crate::http::response::HSTS.set(format!("Strict-Transport-Security: {v}\r\n").into_bytes());
    }
    let lp = Loop::new(listeners, signals, &app.settings, tls)?;
    crate::watchdog::start(app.settings.timeout);
    // `--timeout` dumps the stacks of a stuck worker with SIGUSR2 before killing it.
    let faulthandler = c"import faulthandler, signal\nfaulthandler.register(signal.SIGUSR2, all_threads=True)";
    if let Err(e) = Python::attach(|py| py.run(faulthandler, None, None)) {
        log::warning(&format!(
            "faulthandler is unavailable; --timeout kills will not show stacks: {e}"
        ));
    }
    let _ = status.write_all(b"R\0");
    if settings.threads == 1 {
        Python::attach(|py| lp.run_inline(py, &app));
    } else {
        lp.run_pool(Arc::new(app))?;
    }
    Python::attach(app::run_atexit);
    Ok(0)
}
