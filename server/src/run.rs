//! Start-up order: settings, logs, signals, sockets, Python, the app, then the loop.
//!
//! Sockets are bound before Python starts, so a port in use fails fast and without importing
//! the app; signals are blocked before any thread exists, so every thread (the app's too)
//! leaves them to the loop's signalfd.

use std::sync::Arc;

use anyhow::Context;
use deployctl::serve::ServeSettings;
use pyo3::prelude::*;

use crate::event_loop::{self, Loop};
use crate::python::{app, init};
use crate::{log, net};

/// Exit status when the app cannot be imported (Gunicorn uses 4 too); the master of the next
/// issue tells a crash loop from a crash by it.
pub const EXIT_APP_LOAD: i32 = 4;

pub fn run(settings: ServeSettings) -> anyhow::Result<i32> {
    log::init(
        settings.error_log.as_deref(),
        settings.access_log.as_deref(),
        settings.access_log_format,
    )?;
    if settings.workers > 1 {
        anyhow::bail!(
            "--workers {}: several worker processes are not built yet; use --threads, or run several \
             servers behind the front",
            settings.workers
        );
    }
    let signals = event_loop::block_signals().context("blocking signals")?;
    let listeners = settings
        .binds
        .iter()
        .map(|b| net::bind(b, settings.uds_mode))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (k, v) in &settings.env {
        // SAFETY: no other thread exists yet (Python is not started, the loop not running).
        unsafe { std::env::set_var(k, v) };
    }
    std::env::set_current_dir(&settings.chdir).with_context(|| format!("changing to {}", settings.chdir.display()))?;
    let argv: Vec<String> = std::env::args().collect();
    init::initialize(settings.venv.as_deref(), &argv)?;
    let loaded = Python::attach(|py| app::load(py, &settings, &listeners));
    let app = match loaded {
        Ok(a) => a,
        Err(e) => {
            log::error(&format!("failed to load the app: {e}"));
            return Ok(EXIT_APP_LOAD);
        }
    };
    for l in &listeners {
        log::info(&format!("listening on {} ({} thread(s))", l.bind, settings.threads));
    }
    let lp = Loop::new(listeners, signals, &app)?;
    if settings.threads == 1 {
        Python::attach(|py| lp.run_inline(py, &app));
    } else {
        lp.run_pool(Arc::new(app))?;
    }
    Python::attach(app::run_atexit);
    log::info("stopped");
    Ok(0)
}
