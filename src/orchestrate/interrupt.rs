//! Ctrl-C, SIGTERM and SIGHUP for `deployctl up`, from its first step on: the signals are
//! blocked and read from one signalfd, so every wait of the start-up (a `pip install`, a
//! validator, a backend's readiness, a health check) can ask whether a stop was asked for
//! and give up at once, and the supervisor loop reads the same fd.
//!
//! Every long-running step polls [`check`]; a child process is run by [`output`], in a
//! process group of its own (a Ctrl-C on the terminal reaches `deployctl` alone), and its
//! group is ended when a stop is asked for. Outside `up` nothing is installed and every
//! check answers "go on".

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

static FD: OnceLock<OwnedFd> = OnceLock::new();
/// The first INT or TERM received (0: none); sticky.
static STOP: AtomicI32 = AtomicI32::new(0);
/// A HUP received and not yet taken.
static HUP: AtomicBool = AtomicBool::new(false);

/// A stop was asked for (SIGINT or SIGTERM) while a step was running.
#[derive(Debug)]
pub struct Interrupted(pub i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", name(self.0))
    }
}

impl std::error::Error for Interrupted {}

pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT (Ctrl-C)",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// Block INT, TERM and HUP in this process (before any thread or child starts) and read
/// them from a signalfd from now on. Idempotent.
pub fn install() -> std::io::Result<()> {
    if FD.get().is_some() {
        return Ok(());
    }
    let fd = crate::signals::block(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])?;
    let _ = FD.set(fd);
    Ok(())
}

/// The signalfd, for a `poll` that also waits for signals.
pub fn fd() -> Option<RawFd> {
    FD.get().map(AsRawFd::as_raw_fd)
}

fn drain() {
    let Some(fd) = FD.get() else { return };
    for sig in crate::signals::pending(fd) {
        match sig {
            libc::SIGHUP => HUP.store(true, Ordering::SeqCst),
            s => {
                let _ = STOP.compare_exchange(0, s, Ordering::SeqCst, Ordering::SeqCst);
            }
        }
    }
}

/// The stop signal received so far, if any.
pub fn stop_requested() -> Option<i32> {
    drain();
    match STOP.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Whether a HUP came since the last call.
pub fn take_hup() -> bool {
    drain();
    HUP.swap(false, Ordering::SeqCst)
}

/// Whether a HUP came and was not taken yet (it stays pending).
pub fn hup_pending() -> bool {
    drain();
    HUP.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once a stop was asked for.
pub fn check() -> anyhow::Result<()> {
    match stop_requested() {
        Some(s) => Err(Interrupted(s).into()),
        None => Ok(()),
    }
}

/// Whether `err` is (or was caused by) an interruption.
pub fn is_interrupted(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<Interrupted>())
}

/// Sleep `d`, or less when a stop is asked for.
pub fn sleep(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// Children get an empty signal mask (exec keeps the blocked one, and a child must get its
/// signals). SAFETY of the hook: sigprocmask is async-signal-safe.
pub fn unblock_in_child(cmd: &mut Command) {
    unsafe {
        cmd.pre_exec(|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
}

/// What [`output`] collected.
pub struct Output {
    pub status: ExitStatus,
    /// stdout and stderr, in the order they were written (one pipe).
    pub text: String,
}

/// Run `cmd` to its end with stdout and stderr captured together (stdin empty), in a process
/// group of its own; when a stop is asked for meanwhile, the group gets SIGTERM (SIGKILL a
/// second later) and the result is `Err(Interrupted)`.
pub fn output(mut cmd: Command) -> anyhow::Result<Output> {
    check()?;
    let (reader, writer) = pipe()?;
    let mut reader = std::fs::File::from(reader);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(writer.try_clone()?))
        .stderr(Stdio::from(writer))
        .process_group(0);
    unblock_in_child(&mut cmd);
    let mut child = cmd.spawn()?;
    // The command holds the write ends: dropped here, so the reader sees EOF at the child's end.
    drop(cmd);
    let collector = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        buf
    });
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            let text = String::from_utf8_lossy(&collector.join().unwrap_or_default()).into_owned();
            return Ok(Output { status, text });
        }
        if let Some(sig) = stop_requested() {
            end_group(&mut child);
            return Err(Interrupted(sig).into());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A pipe, both ends close-on-exec (the child gets its copies through `Stdio`).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new descriptors that we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just created and are owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// SIGTERM to the child's process group, SIGKILL after a second, and reap it.
pub fn end_group(child: &mut std::process::Child) {
    let pgid = child.id() as i32;
    // SAFETY: the group was created for this child (`process_group(0)`).
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Whatever is left of the group (pip's own children included).
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
}
