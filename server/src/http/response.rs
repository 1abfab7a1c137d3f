//! The response side of one connection: the status and headers the app gave, when the head
//! goes out, how the body is framed, and writing it.
//!
//! Owned by the connection and shared with the request's `start_response`/`write()` objects
//! through an `Arc<Mutex<_>>` (reused across requests; a generation number makes a
//! `start_response` kept from an earlier request harmless). Nothing here touches Python:
//! every method that writes is called with the GIL released.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::http::parse::Version;
use crate::net::Stream;

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
    pub timeout: Duration,
    /// Set by `start_response`: the status code and line (`200 OK`).
    pub status: Option<(u16, Vec<u8>)>,
    /// `Name: value\r\n` lines exactly as the app gave them (validated).
    pub fields: Vec<u8>,
    /// The app's own Content-Length, if it sent one.
    pub content_length: Option<u64>,
    pub headers_sent: bool,
    pub chunked: bool,
    /// Body bytes sent (without chunk framing).
    pub body_sent: u64,
    /// The client went away or a write timed out: stop producing.
    pub broken: bool,
    out: Vec<u8>,
    /// Deferred output (see `defer`).
    pending: Vec<u8>,
    /// Hold small writes until the event loop flushes them after the current batch of
    /// ready connections (inline mode). Sending each response the moment it is ready wakes
    /// the client's CPU once per response; a burst at the end of the batch wakes it once.
    /// Measured with Flask on two cores: the per-response wake-ups took 12 % of the
    /// server's CPU (bjoern, which writes from its loop, 4 %).
    pub defer: bool,
}

/// Most bytes held back by `defer` before they are written anyway.
const DEFER_MAX: usize = 64 * 1024;

/// Statuses after which no body may be sent.
pub fn bodyless(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

impl Response {
    pub fn new(stream: Arc<Stream>, timeout: Duration) -> Response {
        Response {
            stream,
            generation: 0,
            version: Version::Http11,
            head_request: false,
            keep_alive: true,
            awaiting_continue: None,
            timeout,
            status: None,
            fields: Vec::new(),
            content_length: None,
            headers_sent: false,
            chunked: false,
            body_sent: 0,
            broken: false,
            out: Vec::with_capacity(1024),
            pending: Vec::new(),
            defer: false,
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
        self.headers_sent = false;
        self.chunked = false;
        self.body_sent = 0;
        self.broken = false;
    }

    fn code(&self) -> u16 {
        self.status.as_ref().map_or(500, |s| s.0)
    }

    /// Whether body bytes go on the wire at all.
    fn sends_body(&self) -> bool {
        !self.head_request && !bodyless(self.code())
    }

    /// Write the head into `out`. `known_length`: the whole body's length when the server
    /// knows it (a one-element list, a file), used when the app gave no Content-Length.
    fn push_head(&mut self, known_length: Option<u64>) {
        let code = self.code();
        self.out.extend_from_slice(b"HTTP/1.1 ");
        match &self.status {
            Some((_, line)) => self.out.extend_from_slice(line),
            None => self.out.extend_from_slice(b"500 Internal Server Error"),
        }
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(&self.fields);
        push_date(&mut self.out);
        if self.content_length.is_none() && !bodyless(code) {
            match known_length {
                Some(n) => {
                    let _ = write!(self.out, "Content-Length: {n}\r\n");
                    self.content_length = Some(n);
                }
                None if self.head_request => {}
                None if self.version == Version::Http11 => {
                    self.out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
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
            self.out.extend_from_slice(b"Connection: close\r\n");
        } else if self.version == Version::Http10 {
            self.out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        self.headers_sent = true;
    }

    /// Send a body chunk (the head first if not yet sent). Bytes beyond the app's
    /// Content-Length are dropped and reported as `Err(Overrun)`.
    pub fn send(&mut self, data: &[u8], known_length: Option<u64>) -> Result<(), SendError> {
        if self.broken {
            return Err(SendError::Closed);
        }
        self.out.clear();
        if !self.headers_sent {
            self.push_head(known_length);
        }
        let mut data = data;
        let mut overrun = false;
        if let Some(cl) = self.content_length {
            let room = cl.saturating_sub(self.body_sent);
            if data.len() as u64 > room {
                data = &data[..room as usize];
                overrun = true;
            }
        }
        if self.sends_body() && !data.is_empty() {
            if self.chunked {
                let _ = write!(self.out, "{:x}\r\n", data.len());
            }
            if data.len() <= 16 * 1024 || self.chunked {
                self.out.extend_from_slice(data);
                if self.chunked {
                    self.out.extend_from_slice(b"\r\n");
                }
                self.flush_out()?;
            } else {
                // Big chunk: the head (if any) and the data in two writes, no copy.
                self.flush_out()?;
                self.write(data)?;
            }
        } else {
            self.flush_out()?;
        }
        self.body_sent += data.len() as u64;
        if overrun {
            self.keep_alive = false;
            return Err(SendError::Overrun);
        }
        Ok(())
    }

    /// Send the head and `len` bytes of a file with `sendfile(2)`.
    pub fn send_file(&mut self, fd: i32, offset: i64, len: u64) -> Result<(), SendError> {
        self.out.clear();
        if !self.headers_sent {
            self.push_head(Some(len));
        }
        let len = match self.content_length {
            Some(cl) => len.min(cl.saturating_sub(self.body_sent)),
            None => len,
        };
        self.flush_out()?;
        if !self.sends_body() || len == 0 {
            return Ok(());
        }
        if self.chunked {
            let mut framing = Vec::with_capacity(18);
            let _ = write!(framing, "{len:x}\r\n");
            self.write(&framing)?;
        }
        self.flush_pending()?;
        let sent = match self.stream.sendfile(fd, offset, len, self.timeout) {
            Ok(n) => n,
            Err(e) => return Err(self.fail(e)),
        };
        self.body_sent += sent;
        if self.chunked {
            self.write(b"\r\n")?;
        }
        Ok(())
    }

    /// End the body: the last chunk for chunked framing, or the head for an empty body.
    /// `Err(Short)` when the app promised more bytes than it produced.
    pub fn finish(&mut self) -> Result<(), SendError> {
        if self.broken {
            return Err(SendError::Closed);
        }
        self.out.clear();
        if !self.headers_sent {
            self.push_head(Some(0));
        } else if self.chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        self.flush_out()?;
        if self.sends_body() && self.content_length.is_some_and(|cl| cl != self.body_sent) {
            self.keep_alive = false;
            return Err(SendError::Short);
        }
        Ok(())
    }

    fn flush_out(&mut self) -> Result<(), SendError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let r = self.write(&out);
        self.out = out;
        self.out.clear();
        r
    }

    fn write(&mut self, data: &[u8]) -> Result<(), SendError> {
        if self.defer && self.pending.len() + data.len() <= DEFER_MAX {
            self.pending.extend_from_slice(data);
            return Ok(());
        }
        self.flush_pending()?;
        self.stream.write_all(data, self.timeout).map_err(|e| self.fail(e))
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Write what `defer` held back. Call without the GIL.
    pub fn flush_pending(&mut self) -> Result<(), SendError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let r = self.stream.write_all(&self.pending, self.timeout);
        self.pending.clear();
        r.map_err(|e| self.fail(e))
    }

    fn fail(&mut self, e: io::Error) -> SendError {
        self.broken = true;
        self.keep_alive = false;
        if e.kind() == io::ErrorKind::TimedOut {
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

/// A complete response the server writes itself (errors, refusals), then closes or not.
/// `head`: it answers a HEAD request, so the body is left out (RFC 9110 §9.3.2) while
/// Content-Length still says how long it would have been.
pub fn simple(status: u16, keep_alive: bool, body: &str, head: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    push_date(&mut out);
    let _ = write!(
        out,
        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}",
        body.len()
    );
    out.extend_from_slice(if keep_alive {
        b"\r\n\r\n"
    } else {
        b"\r\nConnection: close\r\n\r\n"
    });
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
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
    fn simple_responses_to_head_have_no_body() {
        let get = simple(400, false, "400 Bad Request: x\n", false);
        let head = simple(400, false, "400 Bad Request: x\n", true);
        assert!(get.ends_with(b"\r\n\r\n400 Bad Request: x\n"));
        assert!(head.ends_with(b"Content-Length: 19\r\nConnection: close\r\n\r\n"));
        assert_eq!(get.len() - head.len(), 19);
    }
}
