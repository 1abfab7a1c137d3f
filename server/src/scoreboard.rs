//! Memory shared between the master and one worker (a memfd of a few pages): how many requests
//! the worker has served and, per Python thread, since when the current request has been
//! running and its request line (method and target, cut at [`LINE`] bytes).
//!
//! The master reads it to enforce `--timeout` and `--max-requests` without any per-request
//! message, and, when a worker dies, to log the requests it was serving (the request that
//! crashed it is among them). The worker's cost per request is a bounded copy of the request
//! line into ~26 relaxed atomic stores, two more stores and a vDSO clock read. Every access
//! is atomic, so a reader never races a writer in the Rust sense; a line read while its slot
//! is being rewritten can be torn, which only a log line would show. Times are
//! `CLOCK_MONOTONIC` milliseconds, the same clock in every process.
//!
//! Layout, in 64-bit words: 0 served; 1..=SLOTS each slot's start (0: idle); from
//! `LINES_AT`, per slot, the line's length then its bytes.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub const SIZE: usize = 16384;
/// Python threads tracked per worker (`--threads` above this share the last slot).
pub const SLOTS: usize = 64;
/// Bytes of a request line kept per slot; longer lines are cut.
pub const LINE: usize = 200;
const LINE_WORDS: usize = LINE / 8;
const SLOT_WORDS: usize = 1 + LINE_WORDS;
const LINES_AT: usize = 128;
const _: () = assert!(LINE % 8 == 0 && LINES_AT > SLOTS && (LINES_AT + (SLOTS + 1) * SLOT_WORDS) * 8 <= SIZE);

pub struct Scoreboard {
    base: *mut AtomicU64,
}

// SAFETY: the mapping lives as long as the process (workers) or the `Scoreboard` (master),
// and is only accessed through atomics.
unsafe impl Send for Scoreboard {}
unsafe impl Sync for Scoreboard {}

impl Scoreboard {
    /// A new zeroed shared mapping, backed by a memfd that a child can inherit (the master
    /// places it in the worker with `dup2`, which clears close-on-exec on the copy).
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

    /// Map the memfd. The mapping outlives the fd: the caller may close it right after.
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
        debug_assert!(i < SIZE / 8);
        // SAFETY: i < SIZE / 8, inside the mapping; AtomicU64 has the alignment of the page.
        unsafe { &*self.base.add(i) }
    }

    fn line_at(slot: usize) -> usize {
        LINES_AT + slot * SLOT_WORDS
    }

    pub fn served(&self) -> u64 {
        self.word(0).load(Ordering::Relaxed)
    }

    /// The oldest running request: its start and its request line.
    pub fn oldest_busy(&self) -> Option<(u64, String)> {
        self.busy().into_iter().min_by_key(|(t, _)| *t)
    }

    /// Every running request (one per busy thread): its start and its request line.
    pub fn busy(&self) -> Vec<(u64, String)> {
        (1..=SLOTS)
            .filter_map(|slot| {
                let t = self.word(slot).load(Ordering::Acquire);
                (t != 0).then(|| (t, self.line(slot)))
            })
            .collect()
    }

    /// Record `method SP target`, cut to `LINE` bytes.
    fn set_line(&self, slot: usize, method: &[u8], target: &[u8]) {
        let mut buf = [0u8; LINE];
        let m = method.len().min(LINE);
        buf[..m].copy_from_slice(&method[..m]);
        let mut len = m;
        if len < LINE {
            buf[len] = b' ';
            len += 1;
            let t = target.len().min(LINE - len);
            buf[len..len + t].copy_from_slice(&target[..t]);
            len += t;
        }
        let at = Scoreboard::line_at(slot);
        for (i, chunk) in buf[..len.div_ceil(8) * 8].chunks_exact(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.word(at + 1 + i).store(u64::from_ne_bytes(w), Ordering::Relaxed);
        }
        self.word(at).store(len as u64, Ordering::Relaxed);
    }

    /// The slot's request line, printable (other bytes escaped).
    fn line(&self, slot: usize) -> String {
        let at = Scoreboard::line_at(slot);
        let len = (self.word(at).load(Ordering::Relaxed) as usize).min(LINE);
        let mut bytes = Vec::with_capacity(LINE);
        for i in 0..len.div_ceil(8) {
            bytes.extend_from_slice(&self.word(at + 1 + i).load(Ordering::Relaxed).to_ne_bytes());
        }
        bytes.truncate(len);
        bytes.escape_ascii().to_string()
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

/// A request starts on this thread: its request line (method and target; for uwsgi the
/// `REQUEST_METHOD` and `REQUEST_URI` variables, which are not adjacent) and the time. The
/// line goes first, so a start the master sees comes with its line.
pub fn begin(method: &[u8], target: &[u8]) {
    if let Some(b) = BOARD.get() {
        let now = now_ms().max(1);
        SLOT.with(|s| {
            b.set_line(s.get(), method, target);
            b.word(s.get()).store(now, Ordering::Release);
        });
    }
}

/// The thread's request is suspended (a response waiting for its client): not running Python,
/// so not subject to `--timeout`, and not finished either.
pub fn pause() {
    if let Some(b) = BOARD.get() {
        SLOT.with(|s| b.word(s.get()).store(0, Ordering::Relaxed));
    }
}

/// Slots of this worker's board whose request started before `before_ms` (the watchdog's
/// view of requests past `--timeout`), with that start.
pub fn stuck(before_ms: u64) -> Vec<(usize, u64)> {
    let Some(b) = BOARD.get() else {
        return Vec::new();
    };
    (1..=SLOTS)
        .filter_map(|slot| {
            let t = b.word(slot).load(Ordering::Acquire);
            (t != 0 && t < before_ms).then_some((slot, t))
        })
        .collect()
}

/// This thread's slot.
pub fn slot() -> usize {
    SLOT.with(|s| s.get())
}

/// The request is over: not busy, one more served.
pub fn end() {
    if let Some(b) = BOARD.get() {
        SLOT.with(|s| b.word(s.get()).store(0, Ordering::Relaxed));
        b.word(0).fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_cut_and_escaped() {
        let (b, _fd) = Scoreboard::create().unwrap();
        b.set_line(3, b"GET", b"/crash?n=3");
        b.word(3).store(5, Ordering::Relaxed);
        b.set_line(SLOTS, b"POST", &[b'x'; 500]);
        b.word(SLOTS).store(7, Ordering::Relaxed);
        b.set_line(1, b"GET", b"/a\x01");
        b.word(1).store(9, Ordering::Relaxed);
        assert_eq!(b.oldest_busy(), Some((5, "GET /crash?n=3".to_string())));
        let busy = b.busy();
        assert_eq!(busy[0], (9, "GET /a\\x01".to_string()));
        assert_eq!(busy[2].1.len(), LINE);
        assert!(busy[2].1.starts_with("POST xxx"));
        // A shorter line after a longer one shows only itself.
        b.set_line(SLOTS, b"GET", b"/");
        assert_eq!(b.line(SLOTS), "GET /");
    }
}
