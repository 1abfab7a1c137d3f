//! The bytes waiting to go out on one connection, in order, and writing them without blocking.
//!
//! Small pieces (response heads, chunk framing, small bodies) are copied into owned buffers
//! and coalesced, so a typical response leaves in one `writev(2)`; large bodies stay in the
//! app's own `bytes` objects (no copy, the object kept alive until written); files are sent
//! with `sendfile(2)` from a duplicate of the app's file descriptor (the app's `close()` may
//! close its file before the queue is written). `write_some` never blocks: it writes
//! what the socket takes and says whether anything is left, so the event loop can wait for
//! `EPOLLOUT` while it serves other connections.
//!
//! Nothing here calls Python; the `bytes` objects held are only kept alive, and their data is
//! read without the GIL, which is sound because a `bytes` object is immutable.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use pyo3::pybacked::PyBackedBytes;

/// Data up to this size is copied into the owned buffer (one `writev` entry for a whole small
/// response); larger data is queued as the app's object.
pub const COPY_MAX: usize = 16 * 1024;
/// Most iovecs passed to one `writev`.
const IOV_MAX: usize = 16;

enum Seg {
    /// Copied bytes; `.1` bytes of it are already written.
    Owned(Vec<u8>, usize),
    /// The app's bytes, the range `.1` still to write.
    Shared(PyBackedBytes, std::ops::Range<usize>),
    /// A file to send with sendfile(2), through our own duplicate of its descriptor.
    File { fd: OwnedFd, offset: i64, left: u64 },
}

impl Seg {
    fn len(&self) -> u64 {
        match self {
            Seg::Owned(v, done) => (v.len() - done) as u64,
            Seg::Shared(_, r) => r.len() as u64,
            Seg::File { left, .. } => *left,
        }
    }
}

#[derive(Default)]
pub struct Outbox {
    segs: VecDeque<Seg>,
    queued: u64,
    /// A cleared buffer kept for the next response, so steady keep-alive traffic does not
    /// allocate one per response.
    spare: Vec<u8>,
}

/// What `write_some` achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued is written.
    All,
    /// The socket is full; wait for it to become writable.
    Blocked,
}

/// Largest buffer kept as `spare` between responses.
const SPARE_MAX: usize = 64 * 1024;

impl Outbox {
    /// Bytes queued and not yet written.
    pub fn queued(&self) -> u64 {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Copy `data` to the end of the queue.
    pub fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.queued += data.len() as u64;
        if let Some(Seg::Owned(v, _)) = self.segs.back_mut()
            && v.len() + data.len() <= v.capacity().max(COPY_MAX * 2)
        {
            v.extend_from_slice(data);
            return;
        }
        let mut v = std::mem::take(&mut self.spare);
        v.extend_from_slice(data);
        self.segs.push_back(Seg::Owned(v, 0));
    }

    /// Queue `range` of the app's bytes without copying.
    pub fn push_shared(&mut self, bytes: PyBackedBytes, range: std::ops::Range<usize>) {
        if range.is_empty() {
            return;
        }
        self.queued += range.len() as u64;
        self.segs.push_back(Seg::Shared(bytes, range));
    }

    /// Queue `len` bytes of `fd` from `offset`, sent with sendfile(2).
    pub fn push_file(&mut self, fd: OwnedFd, offset: i64, len: u64) {
        if len == 0 {
            return;
        }
        self.queued += len;
        self.segs.push_back(Seg::File { fd, offset, left: len });
    }

    /// Drop everything queued (the connection is going away).
    pub fn clear(&mut self) {
        self.segs.clear();
        self.queued = 0;
    }

    /// Write as much as `fd` takes without blocking. `Ok(n)` bytes written with the state
    /// after; errors other than `WouldBlock` are the connection's end.
    pub fn write_some(&mut self, fd: RawFd) -> io::Result<(u64, Flushed)> {
        let mut written = 0u64;
        loop {
            let single = self.segs.len() == 1;
            let Some(front) = self.segs.front_mut() else {
                return Ok((written, Flushed::All));
            };
            let n = if let Seg::File {
                fd: file, offset, left, ..
            } = front
            {
                let chunk = (*left).min(1 << 30) as usize;
                // SAFETY: valid descriptors and a pointer to our offset, which the kernel advances.
                let r = unsafe { libc::sendfile(fd, file.as_raw_fd(), offset, chunk) };
                if r == 0 {
                    // The file shrank under us: what is missing cannot be sent, and the
                    // framing promised it, so the connection cannot continue.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was sent",
                    ));
                }
                r
            } else if single {
                // The common case, a whole small response in one buffer: a plain send.
                let data: &[u8] = match front {
                    Seg::Owned(v, done) => &v[*done..],
                    Seg::Shared(b, r) => &b[r.clone()],
                    Seg::File { .. } => &[],
                };
                // SAFETY: sending from a valid slice; MSG_NOSIGNAL: a peer that went away is
                // EPIPE, not a SIGPIPE.
                unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) }
            } else {
                let mut iov: [libc::iovec; IOV_MAX] = [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; IOV_MAX];
                let mut count = 0;
                let mut file_follows = false;
                for seg in self.segs.iter() {
                    let data: &[u8] = match seg {
                        Seg::Owned(v, done) => &v[*done..],
                        Seg::Shared(b, r) => &b[r.clone()],
                        Seg::File { .. } => {
                            file_follows = true;
                            break;
                        }
                    };
                    iov[count] = libc::iovec {
                        iov_base: data.as_ptr() as *mut libc::c_void,
                        iov_len: data.len(),
                    };
                    count += 1;
                    if count == IOV_MAX {
                        break;
                    }
                }
                // SAFETY: `iov[..count]` points into buffers owned by `self.segs`, alive and
                // unchanged for the duration of the call. sendmsg rather than writev for
                // MSG_NOSIGNAL: a peer that went away is EPIPE, not a SIGPIPE.
                let msg = libc::msghdr {
                    msg_name: std::ptr::null_mut(),
                    msg_namelen: 0,
                    msg_iov: iov.as_mut_ptr(),
                    msg_iovlen: count,
                    msg_control: std::ptr::null_mut(),
                    msg_controllen: 0,
                    msg_flags: 0,
                };
                // A file follows (a head before `sendfile`): MSG_MORE holds these bytes back
                // so that the head and the start of the file leave in one segment, as nginx's
                // `tcp_nopush` does; the `sendfile` that follows pushes them.
                let more = if file_follows { libc::MSG_MORE } else { 0 };
                unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | more) }
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok((written, Flushed::Blocked)),
                    _ if e.raw_os_error() == Some(libc::ENOTSOCK) => return self.write_plain(fd, written),
                    _ => return Err(e),
                }
            }
            let n = n as u64;
            written += n;
            self.advance(n);
        }
    }

    /// Write as much as a TLS connection on `fd` takes without blocking: the queue is fed to
    /// rustls in pieces no larger than a record or two, each encrypted and sent before the
    /// next is given (rustls's own buffer stays small), files read with `pread(2)` (no
    /// `sendfile` through TLS). `Ok(n)` plaintext bytes taken; `All` only once rustls has
    /// nothing left for the socket either.
    pub fn write_tls(&mut self, tls: &mut crate::tls::Tls, fd: RawFd) -> io::Result<(u64, Flushed)> {
        const PIECE: usize = 32 * 1024;
        let mut written = 0u64;
        let mut scratch: Vec<u8> = Vec::new();
        loop {
            if !tls.flush(fd)? {
                return Ok((written, Flushed::Blocked));
            }
            let Some(front) = self.segs.front_mut() else {
                return Ok((written, Flushed::All));
            };
            let n = match front {
                Seg::Owned(v, done) => tls.write_plain(&v[*done..(*done + PIECE).min(v.len())])?,
                Seg::Shared(b, r) => tls.write_plain(&b[r.start..r.end.min(r.start + PIECE)])?,
                Seg::File { fd: file, offset, left } => {
                    let want = (*left).min(PIECE as u64) as usize;
                    scratch.resize(want, 0);
                    // SAFETY: reading into a valid, writable slice of the given length.
                    let r = unsafe { libc::pread(file.as_raw_fd(), scratch.as_mut_ptr().cast(), want, *offset) };
                    if r < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        return Err(e);
                    }
                    if r == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the file shrank while it was sent",
                        ));
                    }
                    let n = tls.write_plain(&scratch[..r as usize])?;
                    *offset += n as i64;
                    n
                }
            };
            if n == 0 {
                // rustls's buffer is full and the socket took all it could: wait.
                return Ok((written, Flushed::Blocked));
            }
            written += n as u64;
            self.advance(n as u64);
        }
    }

    /// `write(2)` for a descriptor that is not a socket (tests write to pipes).
    fn write_plain(&mut self, fd: RawFd, mut written: u64) -> io::Result<(u64, Flushed)> {
        while let Some(seg) = self.segs.front() {
            let data: &[u8] = match seg {
                Seg::Owned(v, done) => &v[*done..],
                Seg::Shared(b, r) => &b[r.clone()],
                Seg::File { .. } => return Err(io::Error::from_raw_os_error(libc::ENOTSOCK)),
            };
            // SAFETY: writing from a valid slice.
            let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok((written, Flushed::Blocked)),
                    _ => return Err(e),
                }
            }
            written += n as u64;
            self.advance(n as u64);
        }
        Ok((written, Flushed::All))
    }

    /// Drop `n` written bytes from the front.
    fn advance(&mut self, mut n: u64) {
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.segs.front_mut() else {
                return;
            };
            let len = front.len();
            if n < len {
                match front {
                    Seg::Owned(_, done) => *done += n as usize,
                    Seg::Shared(_, r) => r.start += n as usize,
                    // sendfile advanced `offset` itself.
                    Seg::File { left, .. } => *left -= n,
                }
                return;
            }
            n -= len;
            if let Some(Seg::Owned(mut v, _)) = self.segs.pop_front()
                && v.capacity() <= SPARE_MAX
                && self.spare.capacity() == 0
            {
                v.clear();
                self.spare = v;
            }
        }
        // Fully written segments of zero length (none are queued) need no cleanup.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: creating a non-blocking pipe.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) }, 0);
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn coalesces_and_writes_in_order() {
        let (r, w) = pipe();
        let mut o = Outbox::default();
        o.push(b"HTTP/1.1 200 OK\r\n\r\n");
        o.push(b"hello");
        assert_eq!(o.segs.len(), 1);
        assert_eq!(o.queued(), 24);
        assert_eq!(o.write_some(w.as_raw_fd()).unwrap(), (24, Flushed::All));
        assert!(o.is_empty());
        let mut buf = [0u8; 64];
        let n = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), 64) };
        assert_eq!(&buf[..n as usize], b"HTTP/1.1 200 OK\r\n\r\nhello");
        // The buffer is kept for the next response.
        assert!(o.spare.capacity() > 0);
    }

    #[test]
    fn a_full_pipe_blocks_and_resumes_where_it_stopped() {
        let (r, w) = pipe();
        let mut o = Outbox::default();
        let big = vec![7u8; 200_000];
        for chunk in big.chunks(10_000) {
            o.push(chunk);
        }
        let (n, state) = o.write_some(w.as_raw_fd()).unwrap();
        assert_eq!(state, Flushed::Blocked);
        assert_eq!(o.queued(), 200_000 - n);
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !o.is_empty() || got.len() < 200_000 {
            let k = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if k > 0 {
                got.extend_from_slice(&buf[..k as usize]);
            }
            o.write_some(w.as_raw_fd()).unwrap();
        }
        assert_eq!(got, big);
    }
}
