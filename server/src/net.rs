//! Sockets: binding listeners (TCP and unix), accepting, and blocking-with-timeout I/O on
//! non-blocking connections.
//!
//! Connections are always non-blocking, because the event loop watches them; code that wants
//! to block (a body read, a response write) waits with `poll(2)` and a deadline instead, always
//! with the GIL released by its caller. Every syscall retries on `EINTR`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Mutex;

use anyhow::Context;
use deployctl_common::settings::Bind;

use crate::http::outbox::{Flushed, Outbox};
use crate::tls::Tls;

/// A bound, listening, non-blocking socket.
pub struct Listener {
    pub fd: OwnedFd,
    pub bind: Bind,
    /// `SERVER_NAME`/`SERVER_PORT` for requests on this socket (unix sockets take them from Host).
    pub server_name: String,
    pub server_port: String,
    /// A unix socket we created and remove on exit.
    pub unlink: Option<PathBuf>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(p) = &self.unlink {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Ip(SocketAddr),
    Unix,
}

pub(crate) fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

fn retry<F: FnMut() -> libc::ssize_t>(mut f: F) -> io::Result<usize> {
    loop {
        let r = f();
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn set_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid fd and a pointer to a c_int of the size we pass.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Bind and listen. A unix socket path that exists is replaced only if nothing answers on it
/// (a stale socket from a crashed run); a live one is an error, like a TCP port in use.
pub fn bind(bind: &Bind, uds_mode: u32) -> anyhow::Result<Listener> {
    match bind {
        Bind::Tcp(addr) => {
            let std_listener = bind_tcp(*addr).map_err(|e| {
                let hint = match e.kind() {
                    io::ErrorKind::AddrInUse => ": the address is already in use by another process",
                    io::ErrorKind::PermissionDenied => ": ports below 1024 need root or CAP_NET_BIND_SERVICE",
                    _ => "",
                };
                anyhow::anyhow!("cannot listen on {addr}: {e}{hint}")
            })?;
            let local = std_listener.local_addr()?;
            Ok(Listener {
                fd: OwnedFd::from(std_listener),
                bind: Bind::Tcp(local),
                server_name: local.ip().to_string(),
                server_port: local.port().to_string(),
                unlink: None,
            })
        }
        Bind::Unix(path) => {
            if path.exists() {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    anyhow::bail!(
                        "cannot listen on unix:{}: another process is serving on it",
                        path.display()
                    );
                }
                std::fs::remove_file(path).with_context(|| format!("removing the stale socket {}", path.display()))?;
            }
            let l = std::os::unix::net::UnixListener::bind(path)
                .with_context(|| format!("cannot listen on unix:{}", path.display()))?;
            l.set_nonblocking(true)?;
            set_mode(path, uds_mode)?;
            Ok(Listener {
                fd: OwnedFd::from(l),
                bind: bind.clone(),
                server_name: "localhost".into(),
                server_port: "80".into(),
                unlink: Some(path.clone()),
            })
        }
    }
}

/// A listening socket inherited from the master or from systemd. Its address comes from the
/// socket itself, so the worker needs no flags to describe it.
pub fn listener_from_fd(fd: OwnedFd) -> anyhow::Result<Listener> {
    // SAFETY: sockaddr_storage is plain data, large enough for any address family.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    cvt(unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })
    .context("an inherited fd is not a socket")?;
    // SAFETY: setting O_NONBLOCK on a socket we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let bind = match i32::from(storage.ss_family) {
        libc::AF_INET | libc::AF_INET6 => {
            let l = std::net::TcpListener::from(fd.try_clone()?);
            Bind::Tcp(l.local_addr()?)
        }
        libc::AF_UNIX => {
            let l = std::os::unix::net::UnixListener::from(fd.try_clone()?);
            let path = l.local_addr()?.as_pathname().map(Path::to_path_buf).unwrap_or_default();
            Bind::Unix(path)
        }
        f => anyhow::bail!("an inherited socket has address family {f}, not TCP or unix"),
    };
    let (server_name, server_port) = match &bind {
        Bind::Tcp(a) => (a.ip().to_string(), a.port().to_string()),
        Bind::Unix(_) => ("localhost".into(), "80".into()),
    };
    Ok(Listener {
        fd,
        bind,
        server_name,
        server_port,
        unlink: None,
    })
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o} on {}", path.display()))
}

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    // std's TcpListener::bind sets SO_REUSEADDR and listens with a backlog of 128; we want a
    // deeper backlog (bursts are queued by the kernel while Python is busy), so build it here.
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket syscalls on an fd we own from here on.
    let fd = cvt(unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) })?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_opt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if addr.is_ipv6() {
        set_opt(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    let (storage, len) = sockaddr(addr);
    cvt(unsafe { libc::bind(fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len) })?;
    cvt(unsafe { libc::listen(fd.as_raw_fd(), 1024) })?;
    Ok(std::net::TcpListener::from(fd))
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Accept one connection, non-blocking and close-on-exec, with TCP_NODELAY set (responses are
/// written whole, so Nagle would only add latency). `Ok(None)` when the queue is empty.
pub fn accept(listener: &Listener) -> io::Result<Option<(OwnedFd, Peer)>> {
    // SAFETY: sockaddr_storage is plain data and large enough for any address family.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let fd = loop {
        let r = unsafe {
            libc::accept4(
                listener.fd.as_raw_fd(),
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if r >= 0 {
            break r;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            // The peer gave up while queued: not our error, try the next one.
            _ if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
            _ => return Err(e),
        }
    };
    // SAFETY: accept4 returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let peer = match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            let _ = set_opt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
            Peer::Ip(SocketAddr::from((
                sin.sin_addr.s_addr.to_ne_bytes(),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            let _ = set_opt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
            Peer::Ip(SocketAddr::new(ip, u16::from_be(sin6.sin6_port)))
        }
        _ => Peer::Unix,
    };
    Ok(Some((fd, peer)))
}

/// The soft limit on open descriptors (`ulimit -n`), for messages.
pub fn nofile_limit() -> u64 {
    // SAFETY: getrlimit into a zeroed struct.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    r.rlim_cur
}

/// First read size of a connection buffer; it grows only as a request needs.
pub const MIN_READ: usize = 4096;

/// A transfer's deadline (a request body, a response): it fails when no byte moved for
/// `idle`, or when it is slower on average than `min_rate` bytes/s after a first `idle`
/// period. The second rule is what stops a client that trickles a byte now and then, which a
/// per-read timeout never cuts; a client that took megabytes quickly and then stops reading
/// is cut by the first.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    start: Instant,
    last: Instant,
    done: u64,
    idle: Duration,
    min_rate: u64,
}

impl Pace {
    pub fn new(idle: Duration, min_rate: u64) -> Pace {
        let now = crate::clock::now();
        Pace {
            start: now,
            last: now,
            done: 0,
            idle,
            min_rate,
        }
    }

    /// `n` more bytes moved now.
    pub fn progress(&mut self, n: u64) {
        if n > 0 {
            self.done += n;
            self.last = crate::clock::now();
        }
    }

    pub fn deadline(&self) -> Instant {
        let idle = self.last + self.idle;
        if self.min_rate == 0 {
            return idle;
        }
        let total = self.start + self.idle + Duration::from_secs_f64(self.done as f64 / self.min_rate as f64);
        idle.min(total)
    }
}

/// A connected socket, owned by its connection. The request's `Body` and `Response` share
/// it (`Arc`), but Python objects only ever hold weak references to those, so the socket is
/// closed when the connection ends, whatever the app keeps (a reference cycle through the
/// environ would otherwise keep the descriptor open until Python's garbage collector runs).
///
/// With `--certfile`, a stream carries its TLS state: every read and write below goes through
/// it, so the rest of the server (bodies, responses, the loop's states) is the same over TLS.
pub struct Stream {
    fd: OwnedFd,
    tls: Option<Mutex<Tls>>,
}

impl Stream {
    pub fn new(fd: OwnedFd) -> Stream {
        Stream { fd, tls: None }
    }

    pub fn with_tls(fd: OwnedFd, tls: Tls) -> Stream {
        Stream {
            fd,
            tls: Some(Mutex::new(tls)),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Encrypted bytes wait for the socket to become writable.
    pub fn tls_pending(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| crate::lock(t).pending())
    }

    /// Write what `out` holds as far as the socket takes it now.
    pub fn write_out(&self, out: &mut Outbox) -> io::Result<(u64, Flushed)> {
        match &self.tls {
            None => out.write_some(self.raw()),
            Some(t) => out.write_tls(&mut crate::lock(t), self.raw()),
        }
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// One non-blocking read of the socket's own bytes (over TLS: records, not decrypted; for
    /// discarding what a client sends after a half-close). `WouldBlock` when nothing is there.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reading into a valid, writable slice of the given length.
        retry(|| unsafe { libc::read(self.raw(), buf.as_mut_ptr().cast(), buf.len()) })
    }

    /// Read into the spare capacity of `buf`, growing its length. The buffer grows only as a
    /// request needs: it starts at `MIN_READ` bytes and doubles while reads fill it, up to
    /// `want` bytes of room per read (a body of known length asks for what is left of it).
    pub fn read_some(&self, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
        if let Some(t) = &self.tls {
            return crate::lock(t).read_some(self.raw(), buf, want);
        }
        let spare = buf.capacity() - buf.len();
        if spare < MIN_READ.min(want) {
            buf.reserve(want.min(buf.len().max(MIN_READ)));
        }
        let spare = buf.spare_capacity_mut();
        let n = spare.len().min(want.max(1));
        // SAFETY: the kernel writes at most `n` bytes into spare capacity; we then extend the
        // length by exactly the number it reports.
        let got = retry(|| unsafe { libc::read(self.raw(), spare.as_mut_ptr().cast(), n) })?;
        unsafe { buf.set_len(buf.len() + got) };
        Ok(got)
    }

    /// Wait until readable (or writable); `false` at the deadline.
    pub fn wait(&self, writable: bool, deadline: Instant) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.raw(),
            events: if writable { libc::POLLOUT } else { libc::POLLIN },
            revents: 0,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r > 0 {
                return Ok(true);
            }
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }

    /// Read at least one byte, waiting until `deadline`. `Ok(0)` is EOF.
    pub fn read_blocking(&self, buf: &mut Vec<u8>, want: usize, deadline: Instant) -> io::Result<usize> {
        loop {
            match self.read_some(buf, want) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.wait(false, deadline)? {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
                r => return r,
            }
        }
    }

    /// Write all of `data`, waiting for the socket while it is full, until `deadline`.
    pub fn write_all(&self, mut data: &[u8], deadline: Instant) -> io::Result<()> {
        if let Some(t) = &self.tls {
            loop {
                let flushed = {
                    let mut t = crate::lock(t);
                    let n = t.write_plain(data)?;
                    data = &data[n..];
                    t.flush(self.raw())?
                };
                if flushed && data.is_empty() {
                    return Ok(());
                }
                if !flushed && !self.wait(true, deadline)? {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
        }
        while !data.is_empty() {
            // MSG_NOSIGNAL: a peer that went away is an EPIPE error, not a SIGPIPE.
            // SAFETY: sending from a valid slice.
            let r = retry(|| unsafe { libc::send(self.raw(), data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) });
            match r {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.wait(true, deadline)? {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Stop sending: the peer reads EOF after what was written (the first half of a lingering
    /// close).
    pub fn shutdown_write(&self) {
        if let Some(t) = &self.tls {
            crate::lock(t).close_notify(self.raw());
        }
        // SAFETY: shutdown on our fd; errors (already closed by the peer) do not matter.
        unsafe { libc::shutdown(self.raw(), libc::SHUT_WR) };
    }

    /// Stop sending and receiving; the fd itself is closed when the last owner drops it.
    pub fn shutdown(&self) {
        // SAFETY: shutdown on our fd; errors (already closed by the peer) do not matter.
        unsafe { libc::shutdown(self.raw(), libc::SHUT_RDWR) };
    }
}
