//! The request body: Content-Length or chunked framing, decoded incrementally from the
//! connection's buffer and socket through bounded reads.
//!
//! Split in two so that callers holding the GIL never wait: `take` only looks at bytes already
//! buffered (and says `NeedMore`), `fill` does the socket wait and is called with the GIL
//! released. `100 Continue` goes out on the first `fill`, i.e. only once the app reads, and
//! only to a client that is really waiting for it (no body bytes arrived yet).
//!
//! The event loop reads bodies up to `--body-buffer` ahead of the app (`read_available` +
//! `prefetch`, never waiting), so that a client sending slowly costs a buffer and not the
//! worker's only thread; the app then reads from memory. Larger bodies are read by the app
//! through `fill`, under the transfer's `Pace` (an idle timeout and a minimum rate).
//!
//! Chunked framing is held to RFC 9112 §7.1 exactly (chunk-size line, extensions, trailer
//! section): whatever a proxy in front could read differently is refused, never guessed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::http::parse::{Framing, is_tchar, is_value_byte};
use crate::net::{Pace, Stream};

/// Bytes asked from the socket per read.
pub const READ_CHUNK: usize = 64 * 1024;
/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Fields refused in a request's trailer section (RFC 9110 §6.5.1: fields needed before the
/// content is processed cannot be trailers; RFC 7230 §4.1.2 named them). A recipient that
/// merged one into the header section (some proxies do) would let a client change framing,
/// routing or authorization after the fact, so their presence is treated as an attack and
/// answered with 400 rather than silently dropped. Response-only control data (Age, Expires,
/// Location, Vary, ...) is left out: it means nothing in a request.
const PROHIBITED_TRAILERS: &[&str] = &[
    // message framing and connection management (hop-by-hop)
    "content-length",
    "transfer-encoding",
    "trailer",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    // routing, including the proxy fields this server acts on (`--forwarded-allow-ips`)
    "host",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-prefix",
    "max-forwards",
    // request modifiers: controls and conditionals
    "cache-control",
    "expect",
    "pragma",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    // authentication
    "authorization",
    "proxy-authorization",
    "cookie",
    // how to process the content
    "content-type",
    "content-encoding",
    "content-range",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over `--max-body` (chunked bodies only; a declared length is checked up front).
    TooLarge,
    Malformed(&'static str),
    TimedOut,
    /// The client closed the connection before the body ended.
    Incomplete,
    Io,
    /// The request is over: a reference to `wsgi.input` kept past it.
    Finished,
}

impl BodyError {
    pub fn message(self) -> &'static str {
        match self {
            BodyError::TooLarge => "request body larger than --max-body",
            BodyError::Malformed(m) => m,
            BodyError::TimedOut => "timed out reading the request body",
            BodyError::Incomplete => "client closed the connection before the request body ended",
            BodyError::Io => "error reading the request body",
            BodyError::Finished => "the request this wsgi.input belongs to is over",
        }
    }

    /// The status to answer with when no response was started yet.
    pub fn status(self) -> u16 {
        match self {
            BodyError::TooLarge => 413,
            BodyError::TimedOut => 408,
            _ => 400,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    Done,
}

/// What `take` could do without I/O.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Appended this many bytes (0 only at the end of the body).
    Got(usize),
    /// Nothing buffered: call `fill` (without the GIL), then `take` again.
    NeedMore,
}

pub struct Body {
    stream: Arc<Stream>,
    /// The connection's read buffer; bytes `[pos..]` are unread. Returned by `finish`.
    buf: Vec<u8>,
    pos: usize,
    state: State,
    received: u64,
    max: u64,
    /// The client sent `Expect: 100-continue` and is waiting: no body byte arrived and no
    /// `100 Continue` went out. Shared with the response (`Response::awaiting_continue`),
    /// which clears it when the final head goes out first (no 1xx may follow it).
    /// `None` without `Expect: 100-continue` (most requests: no allocation for them).
    continue_pending: Option<Arc<AtomicBool>>,
    pace: Pace,
    error: Option<BodyError>,
    /// Body bytes decoded ahead by `prefetch` (chunked framing), served before the rest.
    ahead: Vec<u8>,
    ahead_pos: usize,
}

/// What `prefetch` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefetched {
    /// The whole body is buffered: the app can read it without any socket wait.
    Complete,
    /// More is on its way and fits the bound.
    Partial,
    /// Larger than the bound: the app reads the rest from the socket itself.
    Large,
}

impl Body {
    pub fn new(
        stream: Arc<Stream>,
        buf: Vec<u8>,
        pos: usize,
        framing: Framing,
        max: u64,
        expect_continue: bool,
        pace: Pace,
    ) -> Body {
        let mut buf = buf;
        let state = match framing {
            Framing::None => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
        };
        // A client may send the body without waiting for `100 Continue` (RFC 9110 §10.1.1),
        // and may pipeline its next request right behind it. Bytes after the head of an
        // `Expect` request can only be its body: if any are here (or already in the socket,
        // one non-blocking read), the client is not waiting, no 100 is owed, and an unread
        // body is drained like any other so the pipelined request gets its answer.
        let mut waiting = expect_continue && state != State::Done;
        if waiting && pos == buf.len() {
            // WouldBlock (nothing yet), EOF or an error: the next `fill` meets them again.
            let _ = stream.read_some(&mut buf, READ_CHUNK);
        }
        waiting &= pos == buf.len();
        Body {
            stream,
            buf,
            pos,
            state,
            received: 0,
            max,
            continue_pending: expect_continue.then(|| Arc::new(AtomicBool::new(waiting))),
            pace,
            error: None,
            ahead: Vec::new(),
            ahead_pos: 0,
        }
    }

    /// The connection's buffer (the request head is at its start, as parsed).
    pub fn buffer(&self) -> &[u8] {
        &self.buf
    }

    /// Memory held: the buffer (head, body, anything pipelined) and what was decoded ahead.
    pub fn buffered(&self) -> usize {
        self.buf.capacity() + self.ahead.capacity()
    }

    /// Until when the client may take to send the rest.
    pub fn deadline(&self) -> std::time::Instant {
        self.pace.deadline()
    }

    /// The client was told it may send the body (the loop does so when it reads the body
    /// ahead of the app).
    pub fn continue_queued(&mut self) {
        if let Some(c) = &self.continue_pending {
            c.store(false, Ordering::SeqCst);
        }
    }

    /// Read what the socket has, without waiting (the event loop reading a body ahead of the
    /// app). `Ok(0)` is EOF; `WouldBlock` when nothing is there.
    pub fn read_available(&mut self) -> std::io::Result<usize> {
        let want = match self.state {
            State::Length(left) => (left as usize)
                .saturating_sub(self.buf.len() - self.pos)
                .clamp(1, READ_CHUNK),
            _ => READ_CHUNK,
        };
        let n = self.stream.read_some(&mut self.buf, want)?;
        self.pace.progress(n as u64);
        Ok(n)
    }

    /// Decode what is buffered ahead of the app, up to `bound` body bytes, and say whether the
    /// whole body is here. A declared length over the bound is `Large` at once.
    pub fn prefetch(&mut self, bound: u64) -> Result<Prefetched, BodyError> {
        if let State::Length(left) = self.state {
            return Ok(if left > bound {
                Prefetched::Large
            } else if (self.buf.len() - self.pos) as u64 >= left {
                Prefetched::Complete
            } else {
                Prefetched::Partial
            });
        }
        let mut ahead = std::mem::take(&mut self.ahead);
        let room = (bound as usize).saturating_sub(ahead.len() - self.ahead_pos) + 1;
        let r = self.take_raw(&mut ahead, room, false);
        self.ahead = ahead;
        match r? {
            Progress::Got(_) if self.state == State::Done => Ok(Prefetched::Complete),
            _ if (self.ahead.len() - self.ahead_pos) as u64 > bound => Ok(Prefetched::Large),
            _ => Ok(Prefetched::Partial),
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done && self.ahead_pos == self.ahead.len()
    }

    /// The client was told to send the body (or did not ask to be told, or sent it anyway).
    pub fn continue_sent(&self) -> bool {
        !self.waiting_for_continue()
    }

    fn waiting_for_continue(&self) -> bool {
        self.continue_pending.as_ref().is_some_and(|c| c.load(Ordering::SeqCst))
    }

    /// The flag the response clears if its head goes out while the client still waits for
    /// `100 Continue` (see `Response::awaiting_continue`).
    pub fn continue_flag(&self) -> Option<Arc<AtomicBool>> {
        self.continue_pending.clone()
    }

    pub fn error(&self) -> Option<BodyError> {
        self.error
    }

    /// Append up to `max` body bytes to `out` from what is buffered, stopping after a `\n` when
    /// `line` is set.
    pub fn take(&mut self, out: &mut Vec<u8>, max: usize, line: bool) -> Result<Progress, BodyError> {
        if self.ahead_pos < self.ahead.len() && self.error.is_none() {
            let avail = &self.ahead[self.ahead_pos..];
            let n = max.min(avail.len());
            let n = if line {
                avail[..n].iter().position(|&b| b == b'\n').map_or(n, |i| i + 1)
            } else {
                n
            };
            out.extend_from_slice(&avail[..n]);
            self.ahead_pos += n;
            if self.ahead_pos == self.ahead.len() {
                self.ahead = Vec::new();
                self.ahead_pos = 0;
            }
            return Ok(Progress::Got(n));
        }
        self.take_raw(out, max, line)
    }

    /// `take` from the framed bytes in the buffer (after what `prefetch` decoded).
    fn take_raw(&mut self, out: &mut Vec<u8>, max: usize, line: bool) -> Result<Progress, BodyError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let r = self.take_inner(out, max, line);
        if let Err(e) = r {
            self.error = Some(e);
        }
        r
    }

    fn take_inner(&mut self, out: &mut Vec<u8>, max: usize, line: bool) -> Result<Progress, BodyError> {
        let start = out.len();
        loop {
            if out.len() - start == max {
                return Ok(Progress::Got(max));
            }
            match self.state {
                State::Done => return Ok(Progress::Got(out.len() - start)),
                State::Length(0) => self.state = State::Done,
                State::Length(left) | State::ChunkData(left) => {
                    let avail = &self.buf[self.pos..];
                    if avail.is_empty() {
                        return self.partial(out.len() - start);
                    }
                    let want = (max - (out.len() - start))
                        .min(avail.len())
                        .min(left.min(usize::MAX as u64) as usize);
                    let want = if line {
                        avail[..want].iter().position(|&b| b == b'\n').map_or(want, |i| i + 1)
                    } else {
                        want
                    };
                    out.extend_from_slice(&avail[..want]);
                    self.pos += want;
                    let left = left - want as u64;
                    self.state = match self.state {
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkDataEnd,
                        _ => State::ChunkData(left),
                    };
                    if line && out.last() == Some(&b'\n') {
                        return Ok(Progress::Got(out.len() - start));
                    }
                }
                State::ChunkSize => {
                    let Some(l) = self.line()? else {
                        return self.partial(out.len() - start);
                    };
                    let size = parse_chunk_line(&self.buf[l.clone()])?;
                    self.pos = l.end + 2;
                    self.received += size;
                    if self.received > self.max {
                        return Err(BodyError::TooLarge);
                    }
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkDataEnd => {
                    if self.buf.len() - self.pos < 2 {
                        return self.partial(out.len() - start);
                    }
                    if &self.buf[self.pos..self.pos + 2] != b"\r\n" {
                        return Err(BodyError::Malformed("chunk data not followed by CRLF"));
                    }
                    self.pos += 2;
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let Some(l) = self.line()? else {
                        return self.partial(out.len() - start);
                    };
                    self.pos = l.end + 2;
                    if l.is_empty() {
                        self.state = State::Done;
                    } else {
                        // Trailers are read and dropped, but they count against --max-body:
                        // otherwise a client could send them forever.
                        self.received += l.len() as u64 + 2;
                        if self.received > self.max {
                            return Err(BodyError::TooLarge);
                        }
                        check_trailer(&self.buf[l])?;
                    }
                }
            }
        }
    }

    fn partial(&self, got: usize) -> Result<Progress, BodyError> {
        Ok(if got > 0 {
            Progress::Got(got)
        } else {
            Progress::NeedMore
        })
    }

    /// The next CRLF-terminated line in the buffer (range without the CRLF). A bare LF or a
    /// CR not followed by LF is refused as soon as it is seen: a line ends with CRLF and
    /// nothing else (RFC 9112 §7.1), whatever a lenient parser would make of it.
    fn line(&self) -> Result<Option<std::ops::Range<usize>>, BodyError> {
        let avail = &self.buf[self.pos..];
        match avail
            .iter()
            .take(MAX_CHUNK_LINE + 1)
            .position(|&b| b == b'\n' || b == b'\r')
        {
            Some(i) if avail[i] == b'\n' => Err(BodyError::Malformed("bare LF in chunked framing")),
            Some(i) => match avail.get(i + 1) {
                None => Ok(None),
                Some(b'\n') => Ok(Some(self.pos..self.pos + i)),
                Some(_) => Err(BodyError::Malformed("chunk line not ended by CRLF (bare CR)")),
            },
            None if avail.len() > MAX_CHUNK_LINE => Err(BodyError::Malformed("chunk line too long")),
            None => Ok(None),
        }
    }

    /// Read more from the socket (sending `100 Continue` first if it is due). Blocks up to the
    /// body timeout: call without the GIL.
    pub fn fill(&mut self) -> Result<(), BodyError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let r = self.fill_inner();
        if let Err(e) = r {
            self.error = Some(e);
        }
        r
    }

    fn fill_inner(&mut self) -> Result<(), BodyError> {
        if self
            .continue_pending
            .as_ref()
            .is_some_and(|c| c.swap(false, Ordering::SeqCst))
        {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n", self.pace.deadline())
                .map_err(|_| BodyError::Io)?;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > READ_CHUNK {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        match self
            .stream
            .read_blocking(&mut self.buf, READ_CHUNK, self.pace.deadline())
        {
            Ok(0) => Err(BodyError::Incomplete),
            Ok(n) => {
                self.pace.progress(n as u64);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(BodyError::TimedOut),
            Err(_) => Err(BodyError::Io),
        }
    }

    /// Read and discard the rest of the body, up to `limit` bytes, so the connection can carry
    /// the next request. `false` if that was not possible (then the connection must close).
    /// Without `can_wait`, only what is already buffered is discarded (the event loop's
    /// thread must not wait on one client).
    pub fn drain(&mut self, limit: u64, can_wait: bool) -> bool {
        if self.waiting_for_continue() {
            // The client is waiting for our go-ahead and has not sent a byte of the body: it
            // may send it or not (RFC 9110 §10.1.1), so where the next request starts is
            // unknowable and the only safe thing is to close. A 100 cannot be sent now (it
            // would follow the final response). The response said `Connection: close`.
            return self.is_done();
        }
        let mut scratch = Vec::with_capacity(8192);
        let mut drained = 0u64;
        loop {
            scratch.clear();
            match self.take(&mut scratch, 8192, false) {
                Ok(Progress::Got(0)) => return true,
                Ok(Progress::Got(n)) => {
                    drained += n as u64;
                    if drained > limit {
                        return false;
                    }
                }
                Ok(Progress::NeedMore) => {
                    if !can_wait || self.fill().is_err() {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// End the request: give back the read buffer (with any pipelined bytes after the body)
    /// and make later reads through a kept `wsgi.input` fail cleanly.
    pub fn finish(&mut self) -> (Vec<u8>, usize) {
        self.error = Some(BodyError::Finished);
        (std::mem::take(&mut self.buf), self.pos)
    }
}

/// A chunk-size line without its CRLF (RFC 9112 §7.1, §7.1.1):
///
/// ```text
/// chunk-size [ chunk-ext ]
/// chunk-ext     = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
/// chunk-ext-val = token / quoted-string
/// ```
///
/// Whitespace is accepted exactly where the grammar has BWS: before and after `;` and `=`,
/// so `5 ;a=b` is a chunk of 5 (RFC 9112 added that BWS because senders produce it). It is
/// refused everywhere else: after the digits when no extension follows (`5 `), at the end of
/// the line (`5;a `), inside an unquoted value (`5;a=b c`). Those are the spots where lenient
/// parsers disagree (one stops at the space, another reads on), which is how a front and this
/// server could end up framing the same bytes differently. Extensions are checked and ignored.
fn parse_chunk_line(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(BodyError::Malformed("malformed chunk size"));
    }
    if digits > 15 {
        return Err(BodyError::Malformed("chunk size too large"));
    }
    let mut i = digits;
    while i < line.len() {
        // BWS ";" BWS chunk-ext-name
        let semi = skip_bws(line, i);
        match line.get(semi) {
            Some(b';') => {}
            None => return Err(BodyError::Malformed("whitespace at the end of a chunk-size line")),
            Some(_) => return Err(BodyError::Malformed("malformed chunk size or extension")),
        }
        let name = skip_bws(line, semi + 1);
        let name_end = skip_token(line, name);
        if name_end == name {
            return Err(BodyError::Malformed("empty chunk extension name"));
        }
        i = name_end;
        // [ BWS "=" BWS chunk-ext-val ]
        let eq = skip_bws(line, name_end);
        if line.get(eq) != Some(&b'=') {
            // Another extension (BWS ";") or the end of the line: the top of the loop decides,
            // from before the whitespace, so that trailing whitespace is still refused.
            continue;
        }
        let val = skip_bws(line, eq + 1);
        i = match line.get(val) {
            Some(b'"') => skip_quoted(line, val)?,
            _ => {
                let end = skip_token(line, val);
                if end == val {
                    return Err(BodyError::Malformed("empty chunk extension value"));
                }
                end
            }
        };
    }
    // Checked above: 1..=15 hex digits fit in a u64.
    Ok(line[..digits]
        .iter()
        .fold(0u64, |a, &d| a * 16 + u64::from((d as char).to_digit(16).unwrap_or(0))))
}

fn skip_bws(line: &[u8], mut i: usize) -> usize {
    while matches!(line.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

fn skip_token(line: &[u8], mut i: usize) -> usize {
    while line.get(i).is_some_and(|&b| is_tchar(b)) {
        i += 1;
    }
    i
}

/// `quoted-string` starting at the `"` at `start` (RFC 9110 §5.6.4); the index after the
/// closing quote.
fn skip_quoted(line: &[u8], start: usize) -> Result<usize, BodyError> {
    let mut i = start + 1;
    loop {
        match line.get(i) {
            None => return Err(BodyError::Malformed("unterminated quoted string in a chunk extension")),
            Some(b'"') => return Ok(i + 1),
            // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
            Some(b'\\') => match line.get(i + 1) {
                Some(&b) if b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80 => i += 2,
                _ => return Err(BodyError::Malformed("malformed quoted-pair in a chunk extension")),
            },
            // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
            Some(&b) if b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80 => i += 1,
            Some(_) => return Err(BodyError::Malformed("control character in a chunk extension")),
        }
    }
}

/// One trailer field line (RFC 9112 §7.1.2: `field-line` as in the head): a token name, a
/// colon with no whitespace before it, valid value bytes, no obs-fold, and not a field that
/// must be in the header section.
fn check_trailer(line: &[u8]) -> Result<(), BodyError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(BodyError::Malformed("obsolete line folding in the trailers"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(BodyError::Malformed("trailer field without a colon"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(BodyError::Malformed("invalid trailer field name"));
    }
    if !value.iter().all(|&b| is_value_byte(b)) {
        return Err(BodyError::Malformed("invalid byte in a trailer field value"));
    }
    if PROHIBITED_TRAILERS
        .iter()
        .any(|p| name.eq_ignore_ascii_case(p.as_bytes()))
    {
        return Err(BodyError::Malformed(
            "a field that must be in the header section (framing, routing, request modifier, \
             authentication or content) sent as a trailer",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    /// A body over one end of a socket pair, with `buf` already read from it.
    fn body(buf: &[u8], framing: Framing, expect_continue: bool) -> (Body, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        ours.set_nonblocking(true).expect("nonblocking");
        let stream = Arc::new(Stream::new(OwnedFd::from(ours)));
        let b = Body::new(
            stream,
            buf.to_vec(),
            0,
            framing,
            1 << 20,
            expect_continue,
            Pace::new(std::time::Duration::from_secs(1), 0),
        );
        (b, theirs)
    }

    /// Decode a whole chunked body from a buffer: the data, or the error.
    fn chunked(wire: &[u8]) -> Result<Vec<u8>, BodyError> {
        let (mut b, _peer) = body(wire, Framing::Chunked, false);
        let mut out = Vec::new();
        loop {
            match b.take(&mut out, 1 << 20, false)? {
                Progress::Got(0) => return Ok(out),
                Progress::Got(_) => {}
                Progress::NeedMore => panic!("incomplete: {:?}", String::from_utf8_lossy(wire)),
            }
        }
    }

    fn refused(wire: &[u8]) -> bool {
        matches!(chunked(wire), Err(BodyError::Malformed(_)))
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_line(b"1a"), Ok(26));
        assert_eq!(parse_chunk_line(b"1A"), Ok(26));
        assert_eq!(parse_chunk_line(b"000000000000001"), Ok(1));
        assert!(parse_chunk_line(b"").is_err());
        assert!(parse_chunk_line(b"-1").is_err());
        assert!(parse_chunk_line(b"+1").is_err());
        assert!(parse_chunk_line(b"0x1").is_err());
        assert!(parse_chunk_line(b" 1").is_err());
        assert!(parse_chunk_line(b"1g").is_err());
        assert!(parse_chunk_line(b"ffffffffffffffffff").is_err());
    }

    #[test]
    fn whitespace_only_where_the_grammar_has_bws() {
        // Accepted: BWS around ';' and '=' (RFC 9112 §7.1.1).
        assert_eq!(parse_chunk_line(b"5 ;a=b"), Ok(5));
        assert_eq!(parse_chunk_line(b"5\t;\ta\t=\tb"), Ok(5));
        assert_eq!(parse_chunk_line(b"5 ; a = b ; c"), Ok(5));
        // Refused: anywhere else.
        assert!(parse_chunk_line(b"5 ").is_err());
        assert!(parse_chunk_line(b"5\t").is_err());
        assert!(parse_chunk_line(b"5 5").is_err());
        assert!(parse_chunk_line(b"5;a ").is_err());
        assert!(parse_chunk_line(b"5;a=b ").is_err());
        assert!(parse_chunk_line(b"5;a=b c").is_err());
        assert!(parse_chunk_line(b"5;a b").is_err());
    }

    #[test]
    fn chunk_extensions_follow_the_grammar() {
        assert_eq!(parse_chunk_line(b"5;a"), Ok(5));
        assert_eq!(parse_chunk_line(b"5;a=b;c=d"), Ok(5));
        assert_eq!(parse_chunk_line(b"5;a=\"b c\""), Ok(5));
        assert_eq!(parse_chunk_line(b"5;a=\"say \\\"hi\\\"\""), Ok(5));
        assert_eq!(parse_chunk_line(b"5;a=\"\""), Ok(5));
        assert_eq!(parse_chunk_line(b"5;a=\"\\\\\";b"), Ok(5));
        assert_eq!(parse_chunk_line(b"5;!#$%&'*+-.^_`|~=x"), Ok(5));
        // A bare ';', an empty name, an empty value.
        assert!(parse_chunk_line(b"5;").is_err());
        assert!(parse_chunk_line(b"5; ").is_err());
        assert!(parse_chunk_line(b"5;;a").is_err());
        assert!(parse_chunk_line(b"5;=x").is_err());
        assert!(parse_chunk_line(b"5;a=").is_err());
        assert!(parse_chunk_line(b"5;a=;b").is_err());
        // Names and unquoted values are tokens.
        assert!(parse_chunk_line(b"5;a(b)=c").is_err());
        assert!(parse_chunk_line(b"5;a=b\"c\"").is_err());
        assert!(parse_chunk_line(b"5;a=b,c").is_err());
        assert!(parse_chunk_line(b"5;a==b").is_err());
        // Quoted strings: terminated, nothing glued after them, no control bytes.
        assert!(parse_chunk_line(b"5;a=\"b").is_err());
        assert!(parse_chunk_line(b"5;a=\"b\\\"").is_err());
        assert!(parse_chunk_line(b"5;a=\"b\\").is_err());
        assert!(parse_chunk_line(b"5;a=\"b\"c").is_err());
        assert!(parse_chunk_line(b"5;a=\"b\x01\"").is_err());
        assert!(parse_chunk_line(b"5;a=\"b\\\x7f\"").is_err());
        assert!(parse_chunk_line(b"5;a\x00").is_err());
    }

    #[test]
    fn chunk_lines_end_with_crlf_only() {
        assert_eq!(chunked(b"5\r\nhello\r\n0\r\n\r\n"), Ok(b"hello".to_vec()));
        assert_eq!(chunked(b"5 ;a=\"x\\\"y\"\r\nhello\r\n0\r\n\r\n"), Ok(b"hello".to_vec()));
        assert!(refused(b"5\nhello\r\n0\r\n\r\n"));
        assert!(refused(b"5\rhello\r\n0\r\n\r\n"));
        assert!(refused(b"5\r\r\nhello\r\n0\r\n\r\n"));
        assert!(refused(b"5;a=b\rc\r\nhello\r\n0\r\n\r\n"));
        assert!(refused(b"5\r\nhello\n0\r\n\r\n"));
        assert!(refused(b"5\r\nhelloXX0\r\n\r\n"));
        assert!(refused(b"5\r\nhello\r\n0\r\n\n"));
        assert!(refused(b"5\r\nhello\r\n0\r\n\r\r\n"));
        assert!(refused(b"5 \r\nhello\r\n0\r\n\r\n"));
        // A bare CR is refused as soon as the byte after it is seen.
        let (mut b, _peer) = body(b"5\rX", Framing::Chunked, false);
        assert!(b.take(&mut Vec::new(), 10, false).is_err());
        let (mut b, _peer) = body(b"5\r", Framing::Chunked, false);
        assert_eq!(b.take(&mut Vec::new(), 10, false), Ok(Progress::NeedMore));
    }

    #[test]
    fn trailers_are_field_lines_that_may_be_trailers() {
        assert_eq!(
            chunked(b"1\r\na\r\n0\r\nX-Checksum: abc\r\nServer-Timing: db;dur=53\r\n\r\n"),
            Ok(b"a".to_vec())
        );
        assert_eq!(chunked(b"0\r\nX-Empty:\r\n\r\n"), Ok(Vec::new()));
        for bad in [
            "Content-Length: 5",
            "content-length: 5",
            "Transfer-Encoding: chunked",
            "Host: evil.example",
            "Trailer: X",
            "Content-Type: text/html",
            "Authorization: Basic eA==",
            "Cookie: a=b",
            "X-Forwarded-For: 10.0.0.1",
            "Connection: close",
            "Expect: 100-continue",
            "Range: bytes=0-1",
        ] {
            assert!(refused(format!("0\r\n{bad}\r\n\r\n").as_bytes()), "{bad}");
        }
        assert!(refused(b"0\r\nNo colon\r\n\r\n"));
        assert!(refused(b"0\r\nBad Name: x\r\n\r\n"));
        assert!(refused(b"0\r\nName : x\r\n\r\n"));
        assert!(refused(b"0\r\n: x\r\n\r\n"));
        assert!(refused(b"0\r\nX: a\x00b\r\n\r\n"));
        assert!(refused(b"0\r\nX: a\x01b\r\n\r\n"));
        assert!(refused(b"0\r\nX: a\r\n folded\r\n\r\n"));
        assert!(refused(b"0\r\n Content-Length: 5\r\n\r\n"));
    }

    #[test]
    fn trailers_count_against_max_body() {
        let line = format!("X-Pad: {}\r\n", "p".repeat(4000));
        let wire = format!("0\r\n{}\r\n", line.repeat(300));
        assert_eq!(chunked(wire.as_bytes()), Err(BodyError::TooLarge));
    }

    #[test]
    fn continue_is_owed_only_to_a_client_that_waits() {
        let length = Framing::Length(5);
        // Nothing of the body arrived: the client waits, and draining cannot work.
        let (mut b, _peer) = body(b"", length, true);
        assert!(!b.continue_sent());
        assert!(!b.drain(1024, true));
        // The body came with the head (a pipelined request behind it): no 100 owed, and the
        // unread body is drained, leaving the next request in the buffer.
        let (mut b, _peer) = body(b"helloGET / HTTP/1.1\r\n", length, true);
        assert!(b.continue_sent());
        assert!(b.drain(1024, true));
        let (buf, pos) = b.finish();
        assert_eq!(&buf[pos..], b"GET / HTTP/1.1\r\n");
        // The body is already in the socket, not yet read: same.
        let (ours, mut theirs) = UnixStream::pair().expect("socketpair");
        ours.set_nonblocking(true).expect("nonblocking");
        theirs.write_all(b"hello").expect("write");
        let mut b = Body::new(
            Arc::new(Stream::new(OwnedFd::from(ours))),
            Vec::new(),
            0,
            length,
            1024,
            true,
            Pace::new(std::time::Duration::from_secs(1), 0),
        );
        assert!(b.continue_sent());
        assert!(b.drain(1024, true));
        // The response's head went out first: the flag is cleared there and no 100 follows.
        let (mut b, mut peer) = body(b"", length, true);
        assert!(b.continue_flag().is_some_and(|c| c.swap(false, Ordering::SeqCst)));
        peer.write_all(b"hello").expect("write");
        let mut out = Vec::new();
        assert_eq!(b.take(&mut out, 10, false), Ok(Progress::NeedMore));
        b.fill().expect("fill");
        assert_eq!(b.take(&mut out, 10, false), Ok(Progress::Got(5)));
        assert_eq!(out, b"hello");
        peer.set_nonblocking(true).expect("nonblocking");
        let mut got = [0u8; 64];
        assert!(
            std::io::Read::read(&mut peer, &mut got).is_err(),
            "nothing (no 100 Continue) was written to the client"
        );
    }
}
