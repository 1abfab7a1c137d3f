//! Start-up order. The master: logs, signals, sockets (bound, or inherited from systemd), pid
//! file, workers. A worker (started by the master with `$DEPLOYCTL_WORKER`): inherited
//! sockets, signals, Python, the app, "ready" to the master, then the loop.
//!
//! Sockets are bound before any Python starts, so a port in use fails fast and without
//! importing the app; signals are blocked before any thread exists, so every thread (the
//! app's too) leaves them to the signalfd.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use anyhow::Context;
use deployctl::serve::ServeSettings;
use pyo3::prelude::*;

use crate::event_loop::Loop;
use crate::master::{self, Master};
use crate::python::{app, init};
use crate::{log, net, scoreboard, systemd};
use deployctl::signals;

/// Exit status when the app cannot be imported (Gunicorn uses 4 too); the master of the next
/// issue tells a crash loop from a crash by it.
pub const EXIT_APP_LOAD: i32 = 4;

/// Handled by the master and by every worker (the master also takes CHLD, TTIN, TTOU).
const SIGNALS: &[libc::c_int] = &[libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGUSR1];

pub fn run(settings: ServeSettings) -> anyhow::Result<i32> {
    log::init(
        settings.error_log.as_deref(),
        settings.access_log.as_deref(),
        settings.access_log_format,
        settings.log_level,
    )?;
    match std::env::var(master::WORKER_ENV) {
        Ok(spec) => worker(settings, &spec),
        Err(_) => run_master(settings),
    }
}

/// The master: sockets, pid file, workers. No Python here.
fn run_master(settings: ServeSettings) -> anyhow::Result<i32> {
    // Checked here too (workers check again) so a wrong virtualenv fails before any socket
    // or worker exists, with the hint.
    if let Some(v) = &settings.venv {
        deployctl::serve::check_venv_version(v, init::BUILT_FOR)?;
    }
    let signals = signals::block(&[SIGNALS, &[libc::SIGCHLD, libc::SIGTTIN, libc::SIGTTOU]].concat())
        .context("blocking signals")?;
    let inherited = systemd::listen_fds();
    let listeners = if inherited.is_empty() {
        settings
            .binds
            .iter()
            .map(|b| net::bind(b, settings.uds_mode))
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        inherited
            .into_iter()
            .map(net::listener_from_fd)
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let pid_file = settings.pid_file.clone();
    if let Some(p) = &pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing the pid file {}", p.display()))?;
    }
    for l in &listeners {
        log::info(&format!(
            "listening on {} ({} worker(s), {} thread(s) each)",
            l.bind, settings.workers, settings.threads
        ));
    }
    let result = Master::new(settings, listeners, signals).run();
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    result
}

/// A worker: sockets from the master, Python, the app, then the loop.
fn worker(settings: ServeSettings, spec: &str) -> anyhow::Result<i32> {
    let parts: Vec<i32> = spec.split(',').filter_map(|p| p.parse().ok()).collect();
    let [count, status_fd, board_fd] = parts[..] else {
        anyhow::bail!("${}={spec:?} is malformed", master::WORKER_ENV);
    };
    // SAFETY: the master placed the scoreboard memfd there.
    let board_fd = unsafe { OwnedFd::from_raw_fd(board_fd) };
    scoreboard::install(scoreboard::Scoreboard::map(&board_fd).context("mapping the scoreboard")?);
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
    let lp = Loop::new(listeners, signals, &app.settings)?;
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
