//! The response side of one connection: the status and headers the app gave, when the head
//! goes out, how the body is framed, and the queue of bytes to write (`Outbox`).
//!
//! Owned by the connection and shared with the request's `start_response`/`write()` objects,
//! which hold only a weak reference (so a `start_response` an app keeps cannot keep the
//! socket open), and with a generation number that makes one kept from an earlier request
//! harmless. Framing only queues bytes; writing is `flush` (never waits: the event loop's
//! thread) or `flush_blocking` (waits under the response's `Pace`: a pool thread, or the
//! legacy `write()` past its buffer). Nothing here touches Python; every method that waits is
//! called with the GIL released.
//!
//! Every answer's head is made by one function (`push_head`): the app's, a static file's, and
//! the server's own (`push_simple`: refusals, timeouts, the app's failure, the watchdog's 504).
//! It adds what the connection's `Added` says — HSTS over TLS, the security headers — so no
//! kind of answer can leave them out.

use std::cell::RefCell;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use pyo3::pybacked::PyBackedBytes;

use crate::http::outbox::{COPY_MAX, Flushed, Outbox};
use crate::http::parse::Version;
use crate::net::{Pace, Stream};

pub struct Response {
    pub stream: Arc<Stream>,
    /// Which request this state belongs to; bumped by `reset`.
    pub generation: u64,
    pub version: Version,
    pub head_request: bool,
    /// The connection may carry another request after this one.
    pub keep_alive: bool,
    /// The request body's "client waits for `100 Continue`" flag (`Body::continue_flag`).
    /// If the head goes out while it is set, the client may or may not send the body later
    /// (RFC 9110 §10.1.1), so the connection cannot carry another request: the head says
    /// `Connection: close` (the SHOULD of §10.1.1), and the flag is cleared so that no
    /// `100 Continue` follows the final response.
    pub awaiting_continue: Option<Arc<AtomicBool>>,
    /// Set by `start_response`: the status code, and its line (`200 OK`) in `status_line`.
    pub status: Option<u16>,
    /// Reused from request to request (as `fields`): no allocation per response.
    pub status_line: Vec<u8>,
    /// `Name: value\r\n` lines exactly as the app gave them (validated).
    pub fields: Vec<u8>,
    /// The app's own Content-Length, if it sent one.
    pub content_length: Option<u64>,
    /// The app sent a Date field (the server then adds none).
    pub app_date: bool,
    /// The head is committed to the queue: the status can no longer change.
    pub headers_sent: bool,
    pub chunked: bool,
    /// Body bytes queued (without chunk framing).
    pub body_sent: u64,
    /// The client went away or stopped reading: stop producing.
    pub broken: bool,
    pub out: Outbox,
    /// What the server adds to every answer on this connection.
    added: Added,
    pace: Pace,
    idle: Duration,
    min_rate: u64,
    scratch: Vec<u8>,
}

/// Body data handed to `send`: copied when small, kept as the app's object when large.
pub enum Data<'a> {
    Slice(&'a [u8]),
    Shared(PyBackedBytes),
}

impl Data<'_> {
    fn len(&self) -> usize {
        match self {
            Data::Slice(s) => s.len(),
            Data::Shared(b) => b.len(),
        }
    }
}

/// Statuses after which no body may be sent.
pub fn bodyless(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// The fields the server adds to every answer on a connection — the app's, a static file's
/// and its own errors alike, as the nginx site's `add_header … always` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Added {
    /// `--hsts`: only on a TLS connection. Over plain HTTP it is never sent (RFC 6797 §7.2:
    /// a host must not include it there, and §8.1: a browser ignores it).
    pub hsts: bool,
    /// `--security-headers`: deployctl's security headers, each unless the answer has its own.
    pub security_headers: bool,
}

impl Added {
    /// For a connection accepted on a TLS listener or a plain one, the latter an app listener
    /// or `--redirect-bind`'s (which adds nothing: the nginx site's port-80 server has no
    /// `add_header`). Reads `HSTS` and `SECURITY_HEADERS`, set at the worker's start.
    pub fn for_listener(tls: bool, redirect: bool) -> Added {
        Added {
            hsts: tls && HSTS.get().is_some(),
            security_headers: !redirect && SECURITY_HEADERS.load(Ordering::Relaxed),
        }
    }
}

impl Response {
    pub fn new(stream: Arc<Stream>, idle: Duration, min_rate: u64, added: Added) -> Response {
        Response {
            stream,
            generation: 0,
            version: Version::Http11,
            head_request: false,
            keep_alive: true,
            awaiting_continue: None,
            status: None,
            status_line: Vec::new(),
            fields: Vec::new(),
            content_length: None,
            app_date: false,
            headers_sent: false,
            chunked: false,
            body_sent: 0,
            broken: false,
            out: Outbox::default(),
            added,
            pace: Pace::new(idle, min_rate),
            idle,
            min_rate,
            scratch: Vec::new(),
        }
    }

    pub fn reset(&mut self, version: Version, head_request: bool, keep_alive: bool) {
        self.generation += 1;
        self.version = version;
        self.head_request = head_request;
        self.keep_alive = keep_alive;
        self.awaiting_continue = None;
        self.status = None;
        self.fields.clear();
        self.content_length = None;
        self.app_date = false;
        self.headers_sent = false;
        self.chunked = false;
        self.body_sent = 0;
        if self.out.is_empty() {
            self.pace = Pace::new(self.idle, self.min_rate);
        }
    }

    fn code(&self) -> u16 {
        self.status.unwrap_or(500)
    }

    /// Whether body bytes go on the wire at all.
    fn sends_body(&self) -> bool {
        !self.head_request && !bodyless(self.code())
    }

    /// Queue the head — of every answer, the server's own included. `known_length`: the whole
    /// body's length when the server knows it (a one-element list, a file), used when the app
    /// gave no Content-Length.
    fn push_head(&mut self, known_length: Option<u64>) {
        let code = self.code();
        let mut h = std::mem::take(&mut self.scratch);
        h.clear();
        h.extend_from_slice(b"HTTP/1.1 ");
        match self.status {
            Some(_) => h.extend_from_slice(&self.status_line),
            None => h.extend_from_slice(b"500 Internal Server Error"),
        }
        h.extend_from_slice(b"\r\n");
        match HSTS.get() {
            Some(hsts) if self.added.hsts && self.stream.is_tls() => push_replacing_hsts(&mut h, &self.fields, hsts),
            _ => h.extend_from_slice(&self.fields),
        }
        if self.added.security_headers {
            push_missing_security_headers(&mut h, &self.fields);
        }
        if !self.app_date {
            push_date(&mut h);
        }
        if self.content_length.is_none() && !bodyless(code) {
            match known_length {
                Some(n) => {
                    h.extend_from_slice(b"Content-Length: ");
                    push_decimal(&mut h, n);
                    h.extend_from_slice(b"\r\n");
                    self.content_length = Some(n);
                }
                None if self.head_request => {}
                None if self.version == Version::Http11 => {
                    h.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                    self.chunked = true;
                }
                // HTTP/1.0 without a length: the body ends when the connection closes.
                None => self.keep_alive = false,
            }
        }
        if self
            .awaiting_continue
            .as_ref()
            .is_some_and(|waiting| waiting.swap(false, Ordering::SeqCst))
        {
            self.keep_alive = false;
        }
        if !self.keep_alive {
            h.extend_from_slice(b"Connection: close\r\n");
        } else if self.version == Version::Http10 {
            h.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        h.extend_from_slice(b"\r\n");
        self.out.push(&h);
        self.scratch = h;
        self.headers_sent = true;
    }

    /// Queue a body chunk (the head first if not yet queued). Bytes beyond the app's
    /// Content-Length are dropped and reported as `Err(Overrun)`.
    pub fn send(&mut self, data: Data<'_>, known_length: Option<u64>) -> Result<(), SendError> {
        if self.broken {
            return Err(SendError::Closed);
        }
        if !self.headers_sent {
            self.push_head(known_length);
        }
        let mut len = data.len();
        let mut overrun = false;
        if let Some(cl) = self.content_length {
            let room = cl.saturating_sub(self.body_sent);
            if len as u64 > room {
                len = room as usize;
                overrun = true;
            }
        }
        if self.sends_body() && len > 0 {
            if self.chunked {
                let mut frame = [0u8; 18];
                let n = hex_len(&mut frame, len as u64);
                self.out.push(&frame[..n]);
            }
            match data {
                Data::Shared(b) if len > COPY_MAX => self.out.push_shared(b, 0..len),
                Data::Shared(b) => self.out.push(&b[..len]),
                Data::Slice(s) => self.out.push(&s[..len]),
            }
            if self.chunked {
                self.out.push(b"\r\n");
            }
        }
        self.body_sent += len as u64;
        if overrun {
            self.keep_alive = false;
            return Err(SendError::Overrun);
        }
        Ok(())
    }

    /// Queue the head and `len` bytes of a file (our duplicate of its descriptor), sent with
    /// `sendfile(2)`.
    pub fn send_file(&mut self, fd: std::os::fd::OwnedFd, offset: i64, len: u64) -> Result<(), SendError> {
        if self.broken {
            return Err(SendError::Closed);
        }
        if !self.headers_sent {
            self.push_head(Some(len));
        }
        let len = match self.content_length {
            Some(cl) => len.min(cl.saturating_sub(self.body_sent)),
            None => len,
        };
        if !self.sends_body() || len == 0 {
            return Ok(());
        }
        if self.chunked {
            let mut frame = [0u8; 18];
            let n = hex_len(&mut frame, len);
            self.out.push(&frame[..n]);
        }
        self.out.push_file(fd, offset, len);
        if self.chunked {
            self.out.push(b"\r\n");
        }
        self.body_sent += len;
        Ok(())
    }

    /// End the body: the last chunk for chunked framing, or the head for an empty body.
    /// `Err(Short)` when the app promised more bytes than it produced.
    pub fn finish(&mut self) -> Result<(), SendError> {
        if self.broken {
            return Err(SendError::Closed);
        }
        if !self.headers_sent {
            self.push_head(Some(0));
        } else if self.chunked {
            self.out.push(b"0\r\n\r\n");
        }
        if self.sends_body() && self.content_length.is_some_and(|cl| cl != self.body_sent) {
            self.keep_alive = false;
            return Err(SendError::Short);
        }
        Ok(())
    }

    /// Queue an answer the server makes itself (a refusal, a timeout, the app's failure) in
    /// place of the app's, through the same head as every answer (`push_head`): HSTS and the
    /// security headers as on any other. `text/plain`, no body for HEAD (Content-Length still
    /// says how long it would have been, RFC 9110 §9.3.2); the connection closes after it.
    pub fn push_simple(&mut self, status: u16, body: &str) {
        if self.out.is_empty() {
            self.pace = Pace::new(self.idle, self.min_rate);
        }
        self.status = Some(status);
        self.status_line.clear();
        let _ = write!(self.status_line, "{status} {}", reason(status));
        // Whatever the app had set (a start_response before it raised) is not this answer's.
        self.fields.clear();
        self.fields
            .extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
        self.content_length = None;
        self.app_date = false;
        self.chunked = false;
        self.body_sent = 0;
        self.headers_sent = false;
        self.keep_alive = false;
        let _ = self.send(Data::Slice(body.as_bytes()), Some(body.len() as u64));
        let _ = self.finish();
    }

    /// Write what the socket takes now. `Err` when the client is gone.
    pub fn flush(&mut self) -> Result<Flushed, SendError> {
        if self.broken {
            return Err(SendError::Closed);
        }
        if self.out.is_empty() && !self.stream.tls_pending() {
            return Ok(Flushed::All);
        }
        match self.stream.write_out(&mut self.out) {
            Ok((n, state)) => {
                self.pace.progress(n);
                Ok(state)
            }
            Err(_) => Err(self.fail(false)),
        }
    }

    /// Write everything queued, waiting for the socket until the pace's deadline.
    pub fn flush_blocking(&mut self) -> Result<(), SendError> {
        loop {
            if self.flush()? == Flushed::All {
                return Ok(());
            }
            let deadline = self.pace.deadline();
            match self.stream.wait(true, deadline) {
                Ok(true) => {}
                Ok(false) => return Err(self.fail(true)),
                Err(_) => return Err(self.fail(false)),
            }
        }
    }

    /// When the client must have taken the queued bytes by.
    pub fn deadline(&self) -> Instant {
        self.pace.deadline()
    }

    /// The client is gone (or too slow): drop what is queued, produce nothing more.
    pub fn fail(&mut self, timed_out: bool) -> SendError {
        self.broken = true;
        self.keep_alive = false;
        self.out.clear();
        if timed_out {
            SendError::TimedOut
        } else {
            SendError::Closed
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The client went away.
    Closed,
    TimedOut,
    /// The app sent more than its Content-Length.
    Overrun,
    /// The app sent less than its Content-Length.
    Short,
}

/// `{len:x}\r\n` into `buf`, returning its length; no allocation.
fn hex_len(buf: &mut [u8; 18], len: u64) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - len.max(1).leading_zeros()).div_ceil(4) as usize;
    for i in 0..digits {
        buf[digits - 1 - i] = HEX[((len >> (4 * i)) & 0xf) as usize];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    digits + 2
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `Strict-Transport-Security: VALUE\r\n` (`--hsts`), set once at a worker's start: added to
/// every answer over TLS (`Added::hsts`), never over plain HTTP.
pub static HSTS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// `--security-headers`, set once at a worker's start: deployctl's security headers are added
/// to every answer that has none of that name (`Added::security_headers`), but not on the
/// redirect listener.
pub static SECURITY_HEADERS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Each of deployctl's security headers the app's `fields` lack (an app's own, often stricter,
/// policy is neither duplicated nor overridden: the nginx front's `map` does the same).
fn push_missing_security_headers(h: &mut Vec<u8>, fields: &[u8]) {
    for (name, value) in deployctl_common::defaults::SECURITY_HEADERS {
        let has = fields.split(|b| *b == b'\n').any(|line| {
            line.len() > name.len()
                && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
                && line[name.len()] == b':'
        });
        if !has {
            h.extend_from_slice(name.as_bytes());
            h.extend_from_slice(b": ");
            h.extend_from_slice(value.as_bytes());
            h.extend_from_slice(b"\r\n");
        }
    }
}

/// The app's fields without its own Strict-Transport-Security, then ours (as the nginx front
/// hides the app's and adds its own: never two).
fn push_replacing_hsts(h: &mut Vec<u8>, fields: &[u8], hsts: &[u8]) {
    const NAME: &[u8] = b"strict-transport-security:";
    for line in fields.split_inclusive(|b| *b == b'\n') {
        if !(line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME)) {
            h.extend_from_slice(line);
        }
    }
    h.extend_from_slice(hsts);
}

/// The reason phrase of every status the server itself answers with.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

thread_local! {
    /// `Date: ...\r\n` for the current second, rebuilt when the second changes.
    static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            let ((y, mo, d), (h, mi, s)) = crate::log::civil(now);
            cache.1 = format!(
                "Date: {}, {d:02} {} {y:04} {h:02}:{mi:02}:{s:02} GMT\r\n",
                DAYS[(secs / 86_400 % 7) as usize],
                MONTHS[(mo - 1) as usize]
            )
            .into_bytes();
            cache.0 = secs;
        }
        out.extend_from_slice(&cache.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let mut b = [0u8; 18];
        for (n, text) in [
            (0u64, "0"),
            (1, "1"),
            (15, "f"),
            (16, "10"),
            (0xabcdef, "abcdef"),
            (u64::MAX, "ffffffffffffffff"),
        ] {
            let k = hex_len(&mut b, n);
            assert_eq!(&b[..k], format!("{text}\r\n").as_bytes());
        }
        let mut v = Vec::new();
        push_decimal(&mut v, 0);
        push_decimal(&mut v, 1234567890);
        assert_eq!(v, b"01234567890");
    }
}
