//! One client connection: its socket, its read buffer, its response queue, and the state
//! machine of its life. The event loop (`event_loop.rs`) moves a connection from state to
//! state; this module owns what the states are and what each one waits for.
//!
//! ```text
//!            accept
//!              │
//!              ▼            bytes of a head
//!   ┌──────▶ Idle ─────────────────────────▶ Head
//!   │          │ ▲  (keep-alive deadline)      │ complete head (header deadline)
//!   │          │ └── EOF / hang-up: closed     ▼
//!   │          │                         body to read ahead? ──yes──▶ Body (pace deadline)
//!   │          │                               │ no                     │ complete, or larger
//!   │          │                               ▼                        ▼  than --body-buffer
//!   │          │                            the app is called (inline, or on a pool thread)
//!   │          │                               │
//!   │          │              iterator not exhausted, queue full ──▶ Streaming (pace deadline)
//!   │          │                               │                        │ resumed as the
//!   │          │                               ▼                        │ socket drains
//!   │          │                         response complete ◀────────────┘
//!   │          │                               │
//!   │   queue written ◀── Sending ◀── queued ──┤ keep-alive
//!   └──────────┘  (next pipelined request      │ close / refusal / error
//!                  is parsed at once)          ▼
//!                                           Closing ──queue written──▶ Lingering ──▶ closed
//!                                                    (half-close: FIN after the response,
//!                                                     input discarded until EOF, briefly)
//! ```
//!
//! Every state has a deadline (`deadline`), and every state but the app call itself waits on
//! epoll for one thing (readable or writable), so there is no state in which a connection is
//! neither served nor closed, and a hang-up is seen in every state (epoll always reports
//! `EPOLLHUP`/`EPOLLERR`). The socket is owned here: Python objects of a request hold only
//! weak references to its body and response, so dropping the connection closes the socket.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deployctl_common::settings::Protocol;
use pyo3::Py;
use pyo3::types::PyString;

use crate::http::body::Body;
use crate::http::parse::{self, Head, Limits, Refusal};
use crate::http::response::{Added, Response};
use crate::http::uwsgi;
use crate::net::{MIN_READ, Peer, Stream};
use crate::python::handler::Exchange;

pub struct Conn {
    pub stream: Arc<Stream>,
    pub peer: Peer,
    /// Index of the listener it came from.
    pub listener: usize,
    /// Bytes read and not yet consumed are `buf[pos..]` (outside the `Body` state, which
    /// holds the buffer while the body is read).
    pub buf: Vec<u8>,
    pub pos: usize,
    pub response: Arc<Mutex<Response>>,
    pub state: State,
    /// The deadline of the `Idle`, `Head` and `Lingering` states (the others take theirs
    /// from the transfer's pace).
    pub deadline: Instant,
    /// Requests answered on this connection.
    pub served: u64,
    /// The epoll events registered for it now (to skip redundant `epoll_ctl` calls).
    pub interest: u32,
    /// In the loop's list of connections to flush at the end of this round.
    pub flush_listed: bool,
    /// After the queue is written, reset the connection instead of a lingering close (an
    /// app error after the head went out: an aborted connection is the only honest signal).
    pub abort: bool,
    /// What the peer contributes to every environ, made on the first request: whether it is
    /// a trusted proxy, and `REMOTE_ADDR`/`REMOTE_PORT` as Python strings.
    pub peer_keys: Option<PeerKeys>,
    /// How far `parse` got with a head that has not all arrived.
    pub scan: Scan,
}

/// A head arriving in many pieces is not parsed again from its start on every piece: that is
/// quadratic (a client sending an 800 KiB head in 1 KiB packets would make the worker scan
/// 320 MB). After a parse found the head incomplete, the next full parse waits until the
/// head's end (CRLF CRLF) has arrived or the buffered head has doubled; each byte is searched
/// for the end once. Early refusals (a bad request line, a limit) still come within a doubling.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scan {
    /// Bytes of `buf[pos..]` searched for the end of the head.
    searched: usize,
    /// Bytes of `buf[pos..]` at the last full parse (0: none yet for this head).
    parsed: usize,
}

pub struct PeerKeys {
    pub trusted: bool,
    pub remote: Option<(Py<PyString>, Py<PyString>)>,
}

/// Where a connection is in its life (the diagram above).
pub enum State {
    Idle,
    Head,
    Body(Pending),
    /// On a pool thread (threads > 1): the loop does not watch it.
    Away,
    Streaming(Box<Exchange>),
    Sending,
    Closing,
    Lingering,
}

/// A request whose head is parsed and whose body the loop is reading ahead of the app.
pub struct Pending {
    pub head: Head,
    /// Where the head starts in the body's buffer.
    pub start: usize,
    pub body: Arc<Mutex<Body>>,
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

/// How long a half-closed connection is kept to read what the client still sends, so the
/// kernel does not answer unread data with a reset that destroys the response in flight.
pub const LINGER: Duration = Duration::from_secs(2);

impl Conn {
    /// `first`: how long the client has to start (keep-alive's idle time; over TLS the
    /// header timeout, which the handshake counts against). `added`: what every answer on it
    /// carries besides its own fields.
    pub fn new(
        stream: Stream,
        peer: Peer,
        listener: usize,
        idle: Duration,
        min_rate: u64,
        first: Duration,
        added: Added,
    ) -> Conn {
        let stream = Arc::new(stream);
        Conn {
            response: Arc::new(Mutex::new(Response::new(stream.clone(), idle, min_rate, added))),
            stream,
            peer,
            listener,
            buf: Vec::new(),
            pos: 0,
            state: State::Idle,
            deadline: Instant::now() + first,
            served: 0,
            interest: 0,
            flush_listed: false,
            abort: false,
            peer_keys: None,
            scan: Scan::default(),
        }
    }

    pub fn parse(&mut self, limits: &Limits, protocol: Protocol) -> Parsed {
        if self.pos == self.buf.len() {
            self.pos = 0;
            self.scan = Scan::default();
            // Give back what a large request grew the buffer to: idle connections should
            // cost little (the `MIN_READ` a request needs is allocated again on its read).
            if self.buf.capacity() > MIN_READ {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            return Parsed::Incomplete;
        }
        let avail = &self.buf[self.pos..];
        if protocol == Protocol::Http && self.scan.parsed > 0 && self.scan.parsed <= avail.len() {
            let from = self.scan.searched.saturating_sub(3);
            let ended = avail[from..].windows(4).any(|w| w == b"\r\n\r\n");
            self.scan.searched = avail.len();
            if !ended && avail.len() < 2 * self.scan.parsed {
                return Parsed::Incomplete;
            }
        }
        let parsed = match protocol {
            Protocol::Http => parse::parse(avail, limits),
            Protocol::Uwsgi => uwsgi::parse(avail, limits),
        };
        match parsed {
            Ok(Some(h)) => {
                self.scan = Scan::default();
                Parsed::Request(h)
            }
            Ok(None) => {
                self.scan = Scan {
                    searched: avail.len(),
                    parsed: avail.len(),
                };
                Parsed::Incomplete
            }
            Err(r) => {
                self.scan = Scan::default();
                Parsed::Refused(r)
            }
        }
    }

    /// Memory held for a request not yet given to the app: a head being received, or a body
    /// being read ahead (what the worker's memory cap counts; capacities, not lengths, since
    /// buffers grow by doubling).
    pub fn buffered(&self) -> usize {
        match &self.state {
            State::Head => self.buf.capacity(),
            State::Body(p) => crate::lock(&p.body).buffered(),
            _ => 0,
        }
    }

    /// Give up reading a pending request's body ahead: its buffer comes back, positioned at
    /// the request's head (so a refusal can see what it answers).
    pub fn abandon_body(&mut self) {
        if let State::Body(p) = std::mem::replace(&mut self.state, State::Idle) {
            let (buf, _) = crate::lock(&p.body).finish();
            self.buf = buf;
            self.pos = p.start;
        }
    }

    /// Whether the bytes at `buf[pos..]` begin a HEAD request (so an error answered to it
    /// carries no body).
    pub fn is_head_request(&self) -> bool {
        parse::is_head_request(self.buf.get(self.pos..).unwrap_or_default())
    }

    /// Queue an error the server produced itself (through the one head every answer has:
    /// `Response::push_simple`); the connection closes once it is written.
    pub fn refuse(&mut self, status: u16, message: &str) {
        let body = format!("{status} {}: {message}\n", crate::http::response::reason(status));
        let head = self.is_head_request();
        let mut r = crate::lock(&self.response);
        r.head_request = head;
        r.push_simple(status, &body);
        drop(r);
        self.closing();
    }

    /// Nothing more will be read from this connection: close once the queue is written. The
    /// read buffer goes now (a refused flood must not keep the heads it sent while its 503s
    /// drain).
    pub fn closing(&mut self) {
        self.state = State::Closing;
        self.buf = Vec::new();
        self.pos = 0;
    }

    /// When the current state gives up.
    pub fn deadline(&self) -> Instant {
        match &self.state {
            State::Body(p) => crate::lock(&p.body).deadline(),
            State::Streaming(_) | State::Sending | State::Closing => crate::lock(&self.response).deadline(),
            _ => self.deadline,
        }
    }

    /// Read and drop what the client sends after a half-close. `false` once it is done (EOF,
    /// an error, or more than a reasonable amount).
    pub fn discard(&self) -> bool {
        let mut scratch = [0u8; 8192];
        for _ in 0..8 {
            match self.stream.read(&mut scratch) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        false
    }
}
