//! One client connection: its socket, its read buffer, and where it is in its life.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deployctl::serve::Protocol;

use crate::http::parse::{self, Head, Limits, Refusal};
use crate::http::response::{self, Response};
use crate::http::uwsgi;
use crate::net::{Peer, Stream};

pub struct Conn {
    pub stream: Arc<Stream>,
    pub peer: Peer,
    /// Index of the listener it came from.
    pub listener: usize,
    /// Bytes read and not yet consumed are `buf[pos..]`.
    pub buf: Vec<u8>,
    pub pos: usize,
    pub response: Arc<Mutex<Response>>,
    /// When the loop gives up on it: keep-alive idle, or the header timeout once a request
    /// has started arriving.
    pub deadline: Instant,
    /// Part of a request head is buffered (the header timeout applies, not keep-alive).
    pub reading: bool,
    /// Requests answered on this connection.
    pub served: u64,
}

/// What to do with a connection after serving what it had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// What is in the buffer.
pub enum Parsed {
    Request(Head),
    Incomplete,
    Refused(Refusal),
}

impl Conn {
    pub fn new(fd: OwnedFd, peer: Peer, listener: usize, write_timeout: Duration, keep_alive: Duration) -> Conn {
        let stream = Arc::new(Stream::new(fd));
        Conn {
            response: Arc::new(Mutex::new(Response::new(stream.clone(), write_timeout))),
            stream,
            peer,
            listener,
            buf: Vec::new(),
            pos: 0,
            deadline: Instant::now() + keep_alive,
            reading: false,
            served: 0,
        }
    }

    pub fn parse(&mut self, limits: &Limits, protocol: Protocol) -> Parsed {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            return Parsed::Incomplete;
        }
        let parsed = match protocol {
            Protocol::Http => parse::parse(&self.buf[self.pos..], limits),
            Protocol::Uwsgi => uwsgi::parse(&self.buf[self.pos..], limits),
        };
        match parsed {
            Ok(Some(h)) => Parsed::Request(h),
            Ok(None) => Parsed::Incomplete,
            Err(r) => Parsed::Refused(r),
        }
    }

    /// Answer with an error the server produced itself and close: write, then half-close and
    /// discard what the client already sent, so the kernel does not answer unread data with
    /// an RST that could destroy the response before the client reads it. The request it
    /// answers is the one at `buf[pos..]` (without a body if that is a HEAD request).
    pub fn refuse(&self, status: u16, message: &str, timeout: Duration) {
        let head = parse::is_head_request(self.buf.get(self.pos..).unwrap_or_default());
        self.refuse_as(status, message, head, timeout);
    }

    /// `refuse` when the request is no longer in `buf` (its handler took the buffer):
    /// `head` says whether it was a HEAD request.
    pub fn refuse_as(&self, status: u16, message: &str, head: bool, timeout: Duration) {
        self.flush();
        let body = format!("{} {}: {message}\n", status, response::reason(status));
        let _ = self
            .stream
            .write_all(&response::simple(status, false, &body, head), timeout);
        self.linger();
    }

    /// Write deferred responses (call without the GIL). `false` if the client is gone.
    pub fn flush(&self) -> bool {
        let mut r = crate::lock(&self.response);
        r.flush_pending().is_ok()
    }

    pub fn has_pending(&self) -> bool {
        crate::lock(&self.response).has_pending()
    }

    pub fn linger(&self) {
        // SAFETY: shutdown of our own fd.
        unsafe { libc::shutdown(self.stream.raw(), libc::SHUT_WR) };
        let mut scratch = [0u8; 8192];
        for _ in 0..16 {
            match self.stream.read(&mut scratch) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
}
