//! Signals as events: the handled signals are blocked in every thread and read from a
//! signalfd by whoever supervises (the server's loop and master, `deployctl up`), never
//! handled asynchronously. Children must unblock them for themselves (exec keeps the mask).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Block `signals` so they reach only the returned signalfd. Must run before any thread
/// starts (threads inherit the mask), including threads a Python app starts at import.
pub fn block(signals: &[libc::c_int]) -> io::Result<OwnedFd> {
    // SAFETY: building and installing a signal set; signalfd returns a new fd we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// The signals waiting on a (non-blocking) signalfd, in arrival order.
pub fn pending(fd: &OwnedFd) -> Vec<libc::c_int> {
    let mut out = Vec::new();
    // SAFETY: reading whole signalfd_siginfo records into a zeroed struct.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    while unsafe { libc::read(fd.as_raw_fd(), (&mut info as *mut libc::signalfd_siginfo).cast(), size) }
        == size as isize
    {
        out.push(info.ssi_signo as libc::c_int);
    }
    out
}
