//! The master: binds (or inherits) the listening sockets, starts workers by re-executing this
//! binary with the sockets inherited, supervises them, and turns signals into Gunicorn's
//! operations. It starts with the settings `run` resolved (or `deployctl serve` handed over)
//! and resolves its flags again on each HUP. It never initialises Python.
//!
//! Why re-exec and not fork: forking a process that has started CPython (or any thread) copies
//! locks in whatever state other threads left them; a fresh `exec` starts every worker clean,
//! and lets a reload pick up new code.
//!
//! Worker protocol: the listeners are fds 3..3+L, fd 3+L is a pipe to the master, fd 4+L the
//! worker's scoreboard (`scoreboard.rs`), and `DEPLOYCTL_WORKER=L,3+L,4+L` says so. The
//! settings come resolved in `$DEPLOYCTL_WORKER_SETTINGS` (JSON): workers never read
//! `deploy.toml` or the flags, so every worker of a generation runs with what the master
//! resolved for it, whatever happened to the file since. Over the pipe a worker sends `R\0`
//! once its app is loaded, or `F<message>\0` when loading failed (then it exits).
//!
//! Supervision: only a failure before the first generation is ready stops the master (exit
//! 4, with the worker's message): the app cannot start, and retrying will not help. After
//! that, the master runs until it is told to stop: a worker that dies is replaced and one
//! that fails to boot is retried, both after a backoff (0.1 s, doubling up to 2 s; back to
//! 0.1 s once 10 s pass without a failure), so a request that kills its worker (a segfault in
//! a C extension, `os._exit`, the OOM killer) costs that request and a restart, never the
//! server. The requests a dead worker was serving are logged from its scoreboard.
//!
//! Signals (Gunicorn's table): TERM graceful stop, INT/QUIT fast stop, HUP reload, TTIN/TTOU
//! one worker more/less, USR1 reopen logs. A reload resolves the settings again (a changed
//! `deploy.toml` takes effect) and starts a whole new generation; the old one stops only
//! once every new worker is ready. A new worker that fails to boot cancels the reload: the
//! other new workers stop, the old generation serves on untouched, and a later HUP can retry.
//! Recycling and TTIN start their worker next to the ones serving, so a replacement that
//! fails to boot never costs a healthy worker either.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use deployctl_common::settings::{ServeArgs, ServeSettings};

use crate::net::Listener;
use crate::scoreboard::{self, Scoreboard};
use crate::{log, systemd};
use deployctl_common::signals;

pub const WORKER_ENV: &str = "DEPLOYCTL_WORKER";
/// The settings the master resolved, as JSON, for the worker it starts.
pub const SETTINGS_ENV: &str = "DEPLOYCTL_WORKER_SETTINGS";
/// Exit status of the master when the first workers cannot boot (the app fails to import);
/// the worker's own message is in the error.
pub const EXIT_WORKER_FAILED: i32 = 4;
/// Wait before the first restart after a failure (a death or a failed boot) ...
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// ... doubled for each further failure, up to this ...
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// ... and back to the first once this long passes without a failure.
const BACKOFF_RESET: Duration = Duration::from_secs(10);

struct Worker {
    pid: i32,
    board: Scoreboard,
    started: Instant,
    /// `--max-requests` plus this worker's jitter (0: never).
    max_requests: u64,
    /// Marked for replacement (max requests, lifetime, RSS): it keeps serving until its
    /// replacement is ready, then retires.
    recycle: bool,
    /// Killed for `--timeout`: SIGKILL at this instant (after the traceback dump).
    killing: Option<Instant>,
    /// Retired for `--timeout` with threads: SIGTERM at this instant (after the dump), so its
    /// other requests finish within `--graceful-timeout` before the kill.
    retire_at: Option<Instant>,
    status: File,
    inbox: Vec<u8>,
    ready: bool,
    /// Which generation started it (a reload starts a new one).
    generation: u64,
    /// Asked to stop (reload, TTOU, shutdown): its exit is expected.
    retiring: bool,
    failure: Option<String>,
}

impl Worker {
    /// Take what the worker sent: `R` (ready) or `F<message>` (failed to boot).
    fn read_messages(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.status.read(&mut buf) {
            if n == 0 {
                break;
            }
            self.inbox.extend_from_slice(&buf[..n]);
        }
        while let Some(end) = self.inbox.iter().position(|&b| b == 0) {
            let msg: Vec<u8> = self.inbox.drain(..=end).collect();
            match msg.first() {
                Some(b'R') => {
                    self.ready = true;
                    log::info(&format!("worker {} ready", self.pid));
                }
                Some(b'F') => self.failure = Some(String::from_utf8_lossy(&msg[1..msg.len() - 1]).into_owned()),
                _ => {}
            }
        }
    }
}

/// A reload in progress: the generation serving meanwhile, to go back to if it fails.
struct Fallback {
    generation: u64,
    settings: ServeSettings,
    target: usize,
}

pub struct Master {
    /// The command line, resolved again on HUP.
    serve_args: ServeArgs,
    /// The settings of the current generation: what `spawn` hands to new workers.
    settings: ServeSettings,
    /// The arguments workers are started with (they only show in `ps` and `sys.argv`).
    args: Vec<OsString>,
    listeners: Vec<Listener>,
    workers: Vec<Worker>,
    target: usize,
    /// The current generation, and the last number given out.
    generation: u64,
    generations: u64,
    signals: OwnedFd,
    stopping: Option<Instant>,
    /// Set from HUP until the new generation is complete.
    reload: Option<Fallback>,
    /// The new generation is complete and the old one is stopping.
    finishing: bool,
    announced_ready: bool,
    /// The first generation was ready: from now on no failure stops the master.
    up: bool,
    /// STATUS= says something went wrong; say "serving" again once all workers are.
    status_stale: bool,
    backoff: Duration,
    last_failure: Option<Instant>,
    /// No worker is started before this (backoff after a failure).
    spawn_after: Instant,
}

/// Why the master gave up.
#[derive(Debug)]
pub struct WorkerFailed(pub String);

impl std::fmt::Display for WorkerFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WorkerFailed {}

impl Master {
    pub fn new(serve_args: ServeArgs, settings: ServeSettings, listeners: Vec<Listener>, signals: OwnedFd) -> Master {
        Master {
            target: settings.workers as usize,
            serve_args,
            settings,
            args: std::env::args_os().skip(1).collect(),
            listeners,
            workers: Vec::new(),
            generation: 0,
            generations: 0,
            signals,
            stopping: None,
            reload: None,
            finishing: false,
            announced_ready: false,
            up: false,
            status_stale: false,
            backoff: BACKOFF_FIRST,
            last_failure: None,
            spawn_after: Instant::now(),
        }
    }

    /// Supervise until stopped; `Err(WorkerFailed)` when the first workers cannot boot.
    pub fn run(mut self) -> anyhow::Result<i32> {
        for _ in 0..self.target {
            self.spawn()?;
        }
        loop {
            self.wait_events();
            self.reap()?;
            if let Some(deadline) = self.stopping {
                if self.workers.is_empty() {
                    log::info("all workers stopped");
                    return Ok(0);
                }
                if Instant::now() >= deadline {
                    for w in &self.workers {
                        log::warning(&format!("worker {} did not stop in time; killing it", w.pid));
                        kill(w.pid, libc::SIGKILL);
                    }
                }
                continue;
            }
            self.check_workers();
            self.keep_target()?;
            self.progress_reload();
            self.announce();
        }
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("finding the server executable")?;
        let settings = self.settings.to_json()?;
        let mut pipe = [0; 2];
        // SAFETY: creating a pipe; both ends are owned below.
        if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error()).context("creating a worker pipe");
        }
        let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
        let (board, board_fd) = Scoreboard::create().context("creating a worker scoreboard")?;
        let fds: Vec<RawFd> = self.listeners.iter().map(|l| l.fd.as_raw_fd()).collect();
        let status_fd = 3 + fds.len() as RawFd;
        let wfd = write_end.as_raw_fd();
        let bfd = board_fd.as_raw_fd();
        // Allocated here: between fork and exec nothing may allocate.
        let n = fds.len() + 2;
        let mut high: Vec<RawFd> = vec![0; n];
        let mut cmd = Command::new(exe);
        cmd.args(&self.args)
            .env(WORKER_ENV, format!("{},{status_fd},{}", fds.len(), status_fd + 1))
            .env(SETTINGS_ENV, settings)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES");
        // SAFETY: only async-signal-safe calls between fork and exec (fcntl, dup2, prctl,
        // sigprocmask), in a master that has no other threads.
        unsafe {
            cmd.pre_exec(move || {
                // Move every fd out of the way first, so placing them at 3.. cannot clobber one
                // not yet moved: the copies go at or above 3+n, past every target (asking for a
                // fixed floor such as 100 fails with EINVAL when the fd limit is below it). The
                // copies are close-on-exec; the dup2 targets are not, which is how the worker
                // inherits them (it sets close-on-exec again itself, for its own children).
                for (i, fd) in fds.iter().copied().chain([wfd, bfd]).enumerate() {
                    let h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3 + n as RawFd);
                    if h < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    high[i] = h;
                }
                for (i, h) in high.iter().enumerate() {
                    if libc::dup2(*h, 3 + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // A worker whose master is gone (kill -9) stops instead of serving unsupervised.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                // The master blocks its signals for its signalfd; exec keeps the mask.
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting a worker")?;
        drop(write_end);
        drop(board_fd);
        // SAFETY: O_NONBLOCK on our pipe end.
        unsafe {
            let flags = libc::fcntl(read_end.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(read_end.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let pid = child.id() as i32;
        // The child is reaped with waitpid in `reap`, not through this handle.
        std::mem::forget(child);
        log::info(&format!("started worker {pid}"));
        let jitter = match self.settings.max_requests_jitter {
            0 => 0,
            j => {
                (u64::from(std::process::id())
                    ^ u64::from(pid as u32).wrapping_mul(2_654_435_761)
                    ^ scoreboard::now_ms())
                    % (j + 1)
            }
        };
        self.workers.push(Worker {
            pid,
            board,
            started: Instant::now(),
            max_requests: if self.settings.max_requests == 0 {
                0
            } else {
                self.settings.max_requests + jitter
            },
            recycle: false,
            killing: None,
            retire_at: None,
            status: File::from(read_end),
            inbox: Vec::new(),
            ready: false,
            generation: self.generation,
            retiring: false,
            failure: None,
        });
        Ok(())
    }

    /// Sleep until a signal or a worker message, at most 200 ms (less when a backoff ends
    /// sooner).
    fn wait_events(&mut self) {
        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(self.workers.len() + 1);
        pfds.push(libc::pollfd {
            fd: self.signals.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for w in &self.workers {
            pfds.push(libc::pollfd {
                fd: w.status.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let until_spawn = self.spawn_after.saturating_duration_since(Instant::now());
        let timeout = if until_spawn.is_zero() {
            200
        } else {
            until_spawn.as_millis().clamp(1, 200) as i32
        };
        // SAFETY: polling a valid array of pollfds.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        self.read_signals();
        for w in &mut self.workers {
            w.read_messages();
        }
    }

    fn read_signals(&mut self) {
        for signo in signals::pending(&self.signals) {
            match signo {
                libc::SIGTERM => self.stop(libc::SIGTERM, Duration::from_secs(self.settings.graceful_timeout + 1)),
                libc::SIGINT | libc::SIGQUIT => self.stop(libc::SIGQUIT, Duration::from_secs(2)),
                libc::SIGHUP if self.stopping.is_none() => self.reload(),
                libc::SIGTTIN => {
                    self.target += 1;
                    log::info(&format!("TTIN: {} workers", self.target));
                }
                libc::SIGTTOU if self.target > 1 => {
                    self.target -= 1;
                    log::info(&format!("TTOU: {} workers", self.target));
                }
                libc::SIGUSR1 => {
                    if let Err(e) = log::reopen() {
                        log::error(&format!("USR1: {e}"));
                    }
                    for w in &self.workers {
                        kill(w.pid, libc::SIGUSR1);
                    }
                }
                _ => {} // SIGCHLD: reaped below
            }
        }
    }

    fn stop(&mut self, sig: i32, grace: Duration) {
        if self.stopping.is_some() && sig == libc::SIGTERM {
            return;
        }
        log::info(if sig == libc::SIGTERM {
            "TERM: graceful stop"
        } else {
            "INT/QUIT: fast stop"
        });
        systemd::notify("STOPPING=1");
        self.stopping = Some(Instant::now() + grace);
        for w in &mut self.workers {
            w.retiring = true;
            kill(w.pid, sig);
        }
        // Close our copies: once the workers are gone, new connections are refused, not queued.
        self.listeners.clear();
    }

    /// HUP: resolve the command line again (a changed `deploy.toml` takes effect) and start a
    /// new generation with it. Settings that fail to resolve change nothing.
    fn reload(&mut self) {
        log::info("HUP: reloading");
        systemd::notify("RELOADING=1");
        let settings = match self.resolve_again() {
            Ok(s) => s,
            Err(e) => {
                let why = format!("{e:#}");
                log::error(&format!("HUP: reload failed, the current workers keep serving: {why}"));
                systemd::notify(&format!("READY=1\nSTATUS=reload failed: {}", one_line(&why)));
                return;
            }
        };
        // A reload still loading is abandoned for this one; the generation serving stays the
        // one to fall back to.
        let fallback = match self.reload.take() {
            Some(f) => {
                log::info("HUP: the reload in progress is abandoned for a new one");
                self.stop_generation(self.generation);
                f
            }
            None => Fallback {
                generation: self.generation,
                settings: self.settings.clone(),
                target: self.target,
            },
        };
        if settings.binds != fallback.settings.binds || settings.uds_mode != fallback.settings.uds_mode {
            log::warning("HUP: the listening addresses changed; they take effect on a restart, not a reload");
        }
        // The worker count follows the configuration when it changed there; otherwise TTIN and
        // TTOU adjustments are kept.
        if settings.workers != fallback.settings.workers {
            self.target = settings.workers as usize;
        }
        self.settings = settings;
        self.generations += 1;
        self.generation = self.generations;
        self.reload = Some(fallback);
        self.finishing = false;
        // The operator asked: the new generation starts now, whatever the backoff says.
        self.spawn_after = Instant::now();
    }

    fn resolve_again(&self) -> anyhow::Result<ServeSettings> {
        let settings = self.serve_args.resolve()?;
        if let Some(v) = &settings.venv {
            deployctl_common::settings::check_venv_version(v, crate::python::init::BUILT_FOR)?;
        }
        // A bad pair (a key that does not match, a file gone) leaves the serving generation.
        if let Some(files) = &settings.tls {
            crate::tls::config(files)?;
        }
        settings.to_json()?;
        Ok(settings)
    }

    /// A worker of the new generation failed to boot: stop the others, go back to the
    /// generation serving (its workers were never touched), and say so.
    fn cancel_reload(&mut self, why: &str) {
        let Some(back) = self.reload.take() else {
            return;
        };
        log::error(&format!(
            "reload cancelled, the previous workers keep serving: a new worker failed to boot: {why}"
        ));
        self.stop_generation(self.generation);
        self.generation = back.generation;
        self.settings = back.settings;
        self.target = back.target;
        // READY=1 takes systemd out of "reloading"; the STATUS stays until the next reload.
        self.announced_ready = true;
        self.status_stale = false;
        systemd::notify(&format!("READY=1\nSTATUS=reload failed: {}", one_line(why)));
    }

    /// Stop every worker of `generation`: gracefully if it may have accepted connections,
    /// at once if it never got to serve (it has accepted nothing).
    fn stop_generation(&mut self, generation: u64) {
        for w in &mut self.workers {
            if w.generation == generation && !w.retiring {
                // A worker says it is ready before it accepts anything: read that last word
                // first, so a worker that may hold connections gets TERM, not KILL (what is
                // left is the few microseconds between this read and the kill).
                w.read_messages();
                w.retiring = true;
                kill(w.pid, if w.ready { libc::SIGTERM } else { libc::SIGKILL });
            }
        }
    }

    /// Count a failure (a death or a failed boot) and hold new workers back for the backoff.
    fn backoff(&mut self) -> Duration {
        let now = Instant::now();
        self.backoff = match self.last_failure {
            Some(t) if now.duration_since(t) < BACKOFF_RESET => (self.backoff * 2).min(BACKOFF_MAX),
            _ => BACKOFF_FIRST,
        };
        self.last_failure = Some(now);
        self.spawn_after = self.spawn_after.max(now + self.backoff);
        self.backoff
    }

    /// Collect exited workers; decide whether that is expected, a crash, a failed boot, or
    /// (before the first generation is ready) fatal.
    fn reap(&mut self) -> anyhow::Result<()> {
        loop {
            let mut status = 0;
            // SAFETY: reaping our own children without blocking.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return Ok(());
            }
            let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let mut w = self.workers.remove(i);
            // A message written just before exit may still be in the pipe.
            let mut rest = Vec::new();
            let _ = w.status.read_to_end(&mut rest);
            w.inbox.extend_from_slice(&rest);
            if let Some(end) = w.inbox.iter().position(|&b| b == 0)
                && w.inbox.first() == Some(&b'F')
            {
                w.failure = Some(String::from_utf8_lossy(&w.inbox[1..end]).into_owned());
            }
            let how = describe(status);
            if w.retiring {
                log::info(&format!("worker {pid} {how}"));
                continue;
            }
            if self.stopping.is_some() {
                continue;
            }
            if w.killing.is_some() {
                let delay = self.backoff();
                log::warning(&format!(
                    "worker {pid} killed after --timeout; starting a replacement in {}",
                    secs(delay)
                ));
                continue;
            }
            if !w.ready {
                let why = w
                    .failure
                    .unwrap_or_else(|| format!("worker {pid} {how} before it was ready"));
                if !self.up {
                    // The first generation cannot boot: a respawn would die the same way.
                    self.stop(libc::SIGTERM, Duration::from_secs(self.settings.graceful_timeout + 1));
                    self.wait_all();
                    return Err(WorkerFailed(format!("a worker failed to boot: {why}")).into());
                }
                if self.reload.is_some() && w.generation == self.generation {
                    self.cancel_reload(&why);
                    continue;
                }
                // A replacement (crash, recycling, TTIN): the workers serving are untouched;
                // try again after the backoff (the cause may be fixed, e.g. by a reload).
                let delay = self.backoff();
                log::error(&format!(
                    "a worker failed to boot (the other workers keep serving; retrying in {}): {why}",
                    secs(delay)
                ));
                systemd::notify(&format!("STATUS=a worker failed to boot: {}", one_line(&why)));
                self.status_stale = true;
                continue;
            }
            let serving: Vec<String> = w
                .board
                .busy()
                .into_iter()
                .map(|(_, line)| format!("{line:?}"))
                .collect();
            let serving = if serving.is_empty() {
                String::new()
            } else {
                format!(" while serving {}", serving.join(", "))
            };
            let delay = self.backoff();
            log::warning(&format!(
                "worker {pid} {how}{serving}; starting a replacement in {}",
                secs(delay)
            ));
        }
    }

    /// After a fatal failure: wait (bounded) for the other workers to stop.
    fn wait_all(&mut self) {
        let deadline = self.stopping.unwrap_or_else(Instant::now);
        while !self.workers.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            let _ = self.reap();
        }
        for w in &self.workers {
            kill(w.pid, libc::SIGKILL);
        }
    }

    /// Start workers until `target` of them are current (this generation, not marked for
    /// recycling), unless a backoff holds them back; retire extras (TTOU).
    fn keep_target(&mut self) -> anyhow::Result<()> {
        let generation = self.generation;
        let current = move |w: &Worker| w.generation == generation && !w.retiring && !w.recycle;
        let live = self.workers.iter().filter(|w| current(w)).count();
        if Instant::now() >= self.spawn_after {
            for _ in live..self.target {
                if let Err(e) = self.spawn() {
                    // fork or a pipe failed (memory, process or file limits): fatal only
                    // while starting; afterwards the workers up keep serving and we retry.
                    if !self.up {
                        return Err(e);
                    }
                    let delay = self.backoff();
                    log::error(&format!(
                        "starting a worker failed (retrying in {}): {e:#}",
                        secs(delay)
                    ));
                    break;
                }
            }
        }
        // TTOU: the newest goes, preferably one still booting (it serves no one yet, and
        // may be a TTIN worker that cannot boot) rather than a healthy one.
        let extra = (0..self.workers.len())
            .rev()
            .filter(|&i| current(&self.workers[i]))
            .min_by_key(|&i| self.workers[i].ready);
        if live > self.target
            && let Some(i) = extra
        {
            self.workers[i].retiring = true;
            kill(self.workers[i].pid, libc::SIGTERM);
        }
        Ok(())
    }

    /// Retire old workers only once their replacements are ready. A reload: the whole old
    /// generation at once, when every worker of the new one is ready (until then a failing
    /// new worker can cancel the reload and leave the old generation whole). Recycling: each
    /// marked worker as soon as a ready current one covers it. Serving capacity never drops
    /// below the target on the way.
    fn progress_reload(&mut self) {
        let generation = self.generation;
        let ready_current = self
            .workers
            .iter()
            .filter(|w| w.generation == generation && !w.retiring && !w.recycle && w.ready)
            .count();
        if self.reload.is_some() && ready_current >= self.target {
            self.reload = None;
            self.finishing = true;
            for w in &mut self.workers {
                if w.generation != generation && !w.retiring {
                    w.retiring = true;
                    kill(w.pid, libc::SIGTERM);
                }
            }
        }
        let recycling: Vec<usize> = (0..self.workers.len())
            .filter(|&i| {
                let w = &self.workers[i];
                w.generation == generation && w.recycle && !w.retiring
            })
            .collect();
        let excess = (ready_current + recycling.len()).saturating_sub(self.target);
        for &i in recycling.iter().take(excess) {
            self.workers[i].retiring = true;
            kill(self.workers[i].pid, libc::SIGTERM);
        }
        if self.finishing && self.workers.iter().all(|w| w.generation == generation) {
            self.finishing = false;
            self.announced_ready = false;
            self.status_stale = false;
            log::info("reload complete");
        }
    }

    /// `--timeout` (dump tracebacks, then kill) and the recycling limits.
    fn check_workers(&mut self) {
        let now = Instant::now();
        let now_ms = scoreboard::now_ms();
        let s = &self.settings;
        for w in &mut self.workers {
            if let Some(at) = w.retire_at
                && now >= at
            {
                kill(w.pid, libc::SIGTERM);
                w.retire_at = None;
            }
            if let Some(at) = w.killing {
                if now >= at {
                    kill(w.pid, libc::SIGKILL);
                    w.killing = Some(now + Duration::from_secs(3600));
                }
                continue;
            }
            if !w.ready || w.retiring {
                continue;
            }
            if let Some((since, line)) = w.board.oldest_busy()
                && now_ms.saturating_sub(since) > s.timeout * 1000
            {
                // faulthandler (registered for SIGUSR2 in the worker) writes every thread's
                // stack from a C signal handler, even while Python code is stuck. The worker's
                // watchdog answers the stuck client (504) meanwhile.
                kill(w.pid, libc::SIGUSR2);
                if s.threads > 1 {
                    // Its other threads may be serving healthy requests: retire it the
                    // graceful way (a replacement starts now, since a retiring worker is not
                    // counted), and kill it only once they had their grace period.
                    log::error(&format!(
                        "worker {}: a request ({line:?}) has run for more than --timeout {} s; its Python stacks \
                         follow; the worker is retired (its other requests get --graceful-timeout {} s) and replaced",
                        w.pid, s.timeout, s.graceful_timeout
                    ));
                    w.retiring = true;
                    w.retire_at = Some(now + Duration::from_millis(500));
                    w.killing = Some(now + Duration::from_millis(500) + Duration::from_secs(s.graceful_timeout));
                } else {
                    log::error(&format!(
                        "worker {}: a request ({line:?}) has run for more than --timeout {} s; its Python stacks follow, then it is killed",
                        w.pid, s.timeout
                    ));
                    w.killing = Some(now + Duration::from_secs(1));
                }
                continue;
            }
            if w.recycle {
                continue;
            }
            let why = if w.max_requests > 0 && w.board.served() >= w.max_requests {
                Some(format!("served {} requests (--max-requests)", w.board.served()))
            } else if s.max_lifetime > 0 && now.duration_since(w.started) >= Duration::from_secs(s.max_lifetime) {
                Some(format!("is {} s old (--max-lifetime)", s.max_lifetime))
            } else {
                s.max_rss
                    .and_then(|max| rss_bytes(w.pid).filter(|rss| *rss > max).map(|rss| (max, rss)))
                    .map(|(max, rss)| format!("uses {} MiB (--max-rss {} MiB)", rss >> 20, max >> 20))
            };
            if let Some(why) = why {
                log::info(&format!("worker {} {why}: replacing it", w.pid));
                w.recycle = true;
            }
        }
    }

    fn announce(&mut self) {
        let ready = self.workers.iter().filter(|w| w.ready && !w.retiring).count();
        if self.reload.is_some() || self.finishing || ready < self.target {
            return;
        }
        if !self.announced_ready {
            self.announced_ready = true;
            self.up = true;
            self.status_stale = false;
            systemd::notify(&format!("READY=1\nSTATUS={ready} workers serving"));
        } else if self.status_stale {
            self.status_stale = false;
            systemd::notify(&format!("STATUS={ready} workers serving"));
        }
    }
}

/// A message as one `STATUS=` line (sd_notify separates assignments by newlines).
fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Resident set size from /proc (the master reads its workers').
fn rss_bytes(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(4096) as u64)
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, sig) };
}

fn describe(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("ended ({status})")
    }
}
