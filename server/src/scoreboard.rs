//! A page of memory shared between the master and one worker: how many requests the worker
//! has served and, per Python thread, since when the current request has been running.
//!
//! The master reads it to enforce `--timeout` and `--max-requests` without any per-request
//! message: the worker's cost is two relaxed atomic stores and a vDSO clock read per request.
//! Times are `CLOCK_MONOTONIC` milliseconds, the same clock in every process.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub const SIZE: usize = 4096;
/// Python threads tracked per worker (`--threads` above this share the last slot).
pub const SLOTS: usize = 64;

pub struct Scoreboard {
    base: *mut AtomicU64,
}

// SAFETY: the mapping lives as long as the process (workers) or the `Scoreboard` (master),
// and is only accessed through atomics.
unsafe impl Send for Scoreboard {}
unsafe impl Sync for Scoreboard {}

impl Scoreboard {
    /// A new zeroed shared page, backed by a memfd that a child can inherit.
    pub fn create() -> std::io::Result<(Scoreboard, OwnedFd)> {
        // SAFETY: memfd_create with a static name; the fd is owned below.
        let fd = unsafe { libc::memfd_create(c"deployctl-scoreboard".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if unsafe { libc::ftruncate(fd.as_raw_fd(), SIZE as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((Scoreboard::map(&fd)?, fd))
    }

    pub fn map(fd: &OwnedFd) -> std::io::Result<Scoreboard> {
        // SAFETY: mapping a SIZE-byte shared memfd read-write.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Scoreboard { base: p.cast() })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        // SAFETY: i < SIZE / 8, inside the mapping; AtomicU64 has the alignment of the page.
        unsafe { &*self.base.add(i) }
    }

    pub fn served(&self) -> u64 {
        self.word(0).load(Ordering::Relaxed)
    }

    /// The oldest running request's start, if any.
    pub fn oldest_busy(&self) -> Option<u64> {
        (1..=SLOTS)
            .map(|i| self.word(i).load(Ordering::Relaxed))
            .filter(|&t| t != 0)
            .min()
    }
}

impl Drop for Scoreboard {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.base.cast(), SIZE) };
    }
}

pub fn now_ms() -> u64 {
    // SAFETY: clock_gettime into a zeroed timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// This worker's board (absent when running without a master, e.g. in unit tests).
static BOARD: OnceLock<Scoreboard> = OnceLock::new();

thread_local! {
    static SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(1) };
}

pub fn install(board: Scoreboard) {
    let _ = BOARD.set(board);
}

/// Which slot this Python thread writes (0-based thread number).
pub fn set_thread(n: usize) {
    SLOT.with(|s| s.set(1 + n.min(SLOTS - 1)));
}

pub fn begin() {
    if let Some(b) = BOARD.get() {
        let now = now_ms().max(1);
        SLOT.with(|s| b.word(s.get()).store(now, Ordering::Relaxed));
    }
}

pub fn end() {
    if let Some(b) = BOARD.get() {
        SLOT.with(|s| b.word(s.get()).store(0, Ordering::Relaxed));
        b.word(0).fetch_add(1, Ordering::Relaxed);
    }
}
