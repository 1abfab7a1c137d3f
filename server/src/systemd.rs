//! systemd integration: sockets passed by socket activation (`LISTEN_FDS`/`LISTEN_PID`) and
//! readiness notifications (`sd_notify`), without linking libsystemd.

use std::os::fd::{FromRawFd, OwnedFd};

/// First fd systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: i32 = 3;

/// The sockets systemd passed to *this* process, if any. The variables are removed so they do
/// not leak into children (which would wrongly believe the sockets are theirs).
pub fn listen_fds() -> Vec<OwnedFd> {
    let pid_matches = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: called at start-up, before any thread exists.
        unsafe { std::env::remove_var(var) };
    }
    if !pid_matches {
        return Vec::new();
    }
    (0..count)
        .map(|i| {
            let fd = LISTEN_FDS_START + i;
            // SAFETY: systemd hands these fds to us; nothing else in the process owns them.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .collect()
}

/// Send `state` (e.g. `READY=1`) to `$NOTIFY_SOCKET`; nothing when it is unset.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket: '@' stands for the leading NUL byte.
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name).and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        crate::log::warning(&format!("sd_notify to {}: {e}", path.to_string_lossy()));
    }
}
