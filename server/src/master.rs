//! The master: binds (or inherits) the listening sockets, starts workers by re-executing this
//! binary with the sockets inherited, supervises them, and turns signals into Gunicorn's
//! operations. It never initialises Python.
//!
//! Why re-exec and not fork: forking a process that has started CPython (or any thread) copies
//! locks in whatever state other threads left them; a fresh `exec` starts every worker clean,
//! and lets a reload pick up new code and a new `deploy.toml`.
//!
//! Worker protocol: the listeners are fds 3..3+L, fd 3+L is a pipe to the master, fd 4+L the
//! worker's scoreboard (`scoreboard.rs`), and `DEPLOYCTL_WORKER=L,3+L,4+L` says so. Over the pipe a worker sends `R\0` once its app is
//! loaded, or `F<message>\0` when loading failed (then it exits).
//!
//! Signals (Gunicorn's table): TERM graceful stop, INT/QUIT fast stop, HUP rolling reload (new
//! workers ready before old ones stop), TTIN/TTOU one worker more/less, USR1 reopen logs.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use deployctl::serve::ServeSettings;

use crate::net::Listener;
use crate::scoreboard::{self, Scoreboard};
use crate::{log, systemd};
use deployctl::signals;

pub const WORKER_ENV: &str = "DEPLOYCTL_WORKER";
/// Exit status of the master when workers cannot boot (the app fails to import) or crash in
/// a loop; the worker's own message is in the error.
pub const EXIT_WORKER_FAILED: i32 = 4;
/// Deaths within `CRASH_WINDOW` that count as a crash loop.
const CRASH_LIMIT: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(10);

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
    status: File,
    inbox: Vec<u8>,
    ready: bool,
    /// Which reload generation started it.
    generation: u64,
    /// Asked to stop (reload, TTOU, shutdown): its exit is expected.
    retiring: bool,
    failure: Option<String>,
}

pub struct Master {
    settings: ServeSettings,
    args: Vec<OsString>,
    listeners: Vec<Listener>,
    workers: Vec<Worker>,
    target: usize,
    generation: u64,
    signals: OwnedFd,
    stopping: Option<Instant>,
    reloading: bool,
    announced_ready: bool,
    deaths: Vec<Instant>,
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
    pub fn new(settings: ServeSettings, listeners: Vec<Listener>, signals: OwnedFd) -> Master {
        Master {
            target: settings.workers as usize,
            settings,
            args: std::env::args_os().skip(1).collect(),
            listeners,
            workers: Vec::new(),
            generation: 0,
            signals,
            stopping: None,
            reloading: false,
            announced_ready: false,
            deaths: Vec::new(),
        }
    }

    /// Supervise until stopped; `Err(WorkerFailed)` when workers cannot stay up.
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
        let mut cmd = Command::new(exe);
        cmd.args(&self.args)
            .env(WORKER_ENV, format!("{},{status_fd},{}", fds.len(), status_fd + 1))
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES");
        // SAFETY: only async-signal-safe calls between fork and exec (fcntl, dup2, prctl,
        // sigprocmask), in a master that has no other threads.
        unsafe {
            cmd.pre_exec(move || {
                // Move every fd out of the way first, so placing them at 3.. cannot clobber one
                // not yet moved; the copies are close-on-exec, the dup2 targets are not.
                let mut high = Vec::with_capacity(fds.len() + 1);
                for fd in fds.iter().copied().chain([wfd, bfd]) {
                    let h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                    if h < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    high.push(h);
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
            status: File::from(read_end),
            inbox: Vec::new(),
            ready: false,
            generation: self.generation,
            retiring: false,
            failure: None,
        });
        Ok(())
    }

    /// Sleep until a signal or a worker message, at most 200 ms.
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
        // SAFETY: polling a valid array of pollfds.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 200) };
        self.read_signals();
        for w in &mut self.workers {
            let mut buf = [0u8; 4096];
            while let Ok(n) = w.status.read(&mut buf) {
                if n == 0 {
                    break;
                }
                w.inbox.extend_from_slice(&buf[..n]);
            }
            while let Some(end) = w.inbox.iter().position(|&b| b == 0) {
                let msg: Vec<u8> = w.inbox.drain(..=end).collect();
                match msg.first() {
                    Some(b'R') => {
                        w.ready = true;
                        log::info(&format!("worker {} ready", w.pid));
                    }
                    Some(b'F') => w.failure = Some(String::from_utf8_lossy(&msg[1..msg.len() - 1]).into_owned()),
                    _ => {}
                }
            }
        }
    }

    fn read_signals(&mut self) {
        for signo in signals::pending(&self.signals) {
            match signo {
                libc::SIGTERM => self.stop(libc::SIGTERM, Duration::from_secs(self.settings.graceful_timeout + 1)),
                libc::SIGINT | libc::SIGQUIT => self.stop(libc::SIGQUIT, Duration::from_secs(2)),
                libc::SIGHUP => self.reload(),
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

    fn reload(&mut self) {
        log::info("HUP: rolling reload");
        systemd::notify("RELOADING=1");
        self.generation += 1;
        self.reloading = true;
    }

    /// Collect exited workers; decide whether that is expected, a crash, or fatal.
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
            if w.killing.is_some() {
                log::warning(&format!("worker {pid} killed after --timeout; starting a replacement"));
                continue;
            }
            if self.stopping.is_some() {
                continue;
            }
            if !w.ready {
                // Died while loading the app: a respawn would die the same way.
                let why = w
                    .failure
                    .unwrap_or_else(|| format!("worker {pid} {how} before it was ready"));
                self.stop(libc::SIGTERM, Duration::from_secs(self.settings.graceful_timeout + 1));
                self.wait_all();
                return Err(WorkerFailed(format!("a worker failed to boot: {why}")).into());
            }
            log::warning(&format!("worker {pid} {how}; starting a replacement"));
            let now = Instant::now();
            self.deaths.retain(|t| now.duration_since(*t) < CRASH_WINDOW);
            self.deaths.push(now);
            if self.deaths.len() >= CRASH_LIMIT {
                self.stop(libc::SIGTERM, Duration::from_secs(self.settings.graceful_timeout + 1));
                self.wait_all();
                return Err(WorkerFailed(format!(
                    "workers are crashing in a loop ({CRASH_LIMIT} deaths in {} s); the last {how}",
                    CRASH_WINDOW.as_secs()
                ))
                .into());
            }
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
    /// recycling); retire extras (TTOU).
    fn keep_target(&mut self) -> anyhow::Result<()> {
        let generation = self.generation;
        let current = move |w: &Worker| w.generation == generation && !w.retiring && !w.recycle;
        let live = self.workers.iter().filter(|w| current(w)).count();
        for _ in live..self.target {
            self.spawn()?;
        }
        if live > self.target
            && let Some(w) = self.workers.iter_mut().find(|w| current(w))
        {
            w.retiring = true;
            kill(w.pid, libc::SIGTERM);
        }
        Ok(())
    }

    /// Retire old workers (an earlier generation, or marked for recycling) only as far as
    /// ready current ones cover the target: serving capacity never drops below it during a
    /// reload or a recycle, and no old worker stops before its replacement can serve.
    fn progress_reload(&mut self) {
        let generation = self.generation;
        let old = move |w: &Worker| w.generation != generation || w.recycle;
        let ready_new = self
            .workers
            .iter()
            .filter(|w| !old(w) && !w.retiring && w.ready)
            .count();
        let old_live: Vec<usize> = (0..self.workers.len())
            .filter(|&i| old(&self.workers[i]) && !self.workers[i].retiring)
            .collect();
        let excess = (ready_new + old_live.len()).saturating_sub(self.target);
        for &i in old_live.iter().take(excess) {
            self.workers[i].retiring = true;
            kill(self.workers[i].pid, libc::SIGTERM);
        }
        if self.reloading && self.workers.iter().all(|w| w.generation == self.generation) {
            self.reloading = false;
            self.announced_ready = false;
            log::info("reload complete");
        }
    }

    /// `--timeout` (dump tracebacks, then kill) and the recycling limits.
    fn check_workers(&mut self) {
        let now = Instant::now();
        let now_ms = scoreboard::now_ms();
        let s = &self.settings;
        for w in &mut self.workers {
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
            if let Some(since) = w.board.oldest_busy()
                && now_ms.saturating_sub(since) > s.timeout * 1000
            {
                log::error(&format!(
                    "worker {}: a request has run for more than --timeout {} s; its Python stacks follow, then it is killed",
                    w.pid, s.timeout
                ));
                // faulthandler (registered for SIGUSR2 in the worker) writes every thread's
                // stack from a C signal handler, even while Python code is stuck.
                kill(w.pid, libc::SIGUSR2);
                w.killing = Some(now + Duration::from_millis(500));
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
        if !self.announced_ready && !self.reloading && ready >= self.target {
            self.announced_ready = true;
            systemd::notify(&format!("READY=1\nSTATUS={ready} workers serving"));
        }
    }
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
