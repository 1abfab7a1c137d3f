//! The request body: Content-Length or chunked framing, decoded incrementally from the
//! connection's buffer and socket through bounded reads.
//!
//! Split in two so that callers holding the GIL never wait: `take` only looks at bytes already
//! buffered (and says `NeedMore`), `fill` does the socket wait and is called with the GIL
//! released. `100 Continue` goes out on the first `fill`, i.e. only once the app reads.
//!
//! The event loop reads bodies up to `--body-buffer` ahead of the app (`read_available` +
//! `prefetch`, never waiting), so that a client sending slowly costs a buffer and not the
//! worker's only thread; the app then reads from memory. Larger bodies are read by the app
//! through `fill`, under the transfer's `Pace` (an idle timeout and a minimum rate).

use std::sync::Arc;

use crate::http::parse::Framing;
use crate::net::{Pace, Stream};

/// Bytes asked from the socket per read.
pub const READ_CHUNK: usize = 64 * 1024;
/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

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
    continue_pending: bool,
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
        let state = match framing {
            Framing::None => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
        };
        Body {
            stream,
            buf,
            pos,
            state,
            received: 0,
            max,
            continue_pending: expect_continue,
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

    /// Until when the client may take to send the rest.
    pub fn deadline(&self) -> std::time::Instant {
        self.pace.deadline()
    }

    /// The client was told it may send the body (the loop does so when it reads the body
    /// ahead of the app).
    pub fn continue_queued(&mut self) {
        self.continue_pending = false;
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

    /// The client was told to send the body (or did not ask to be told).
    pub fn continue_sent(&self) -> bool {
        !self.continue_pending
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
                    let size = parse_chunk_size(&self.buf[l.clone()])?;
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
                    } else if !self.buf[l].contains(&b':') {
                        return Err(BodyError::Malformed("malformed trailer field"));
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

    /// The next CRLF-terminated line in the buffer (range without the CRLF).
    fn line(&self) -> Result<Option<std::ops::Range<usize>>, BodyError> {
        let avail = &self.buf[self.pos..];
        match avail.iter().take(MAX_CHUNK_LINE + 1).position(|&b| b == b'\n') {
            Some(i) if i > 0 && avail[i - 1] == b'\r' => Ok(Some(self.pos..self.pos + i - 1)),
            Some(_) => Err(BodyError::Malformed("bare LF in chunked framing")),
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
        if self.continue_pending {
            self.continue_pending = false;
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
        if self.continue_pending {
            // The client is waiting for our go-ahead and will not send the body: the only safe
            // thing is to close (RFC 9110 §10.1.1).
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

fn parse_chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let (size, ext) = match line.iter().position(|&b| b == b';') {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, &line[line.len()..]),
    };
    // Whitespace before the `;` (BWS) is allowed by RFC 9112 but not around the digits.
    let size = size.trim_ascii_end();
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(BodyError::Malformed("malformed chunk size"));
    }
    if !ext
        .iter()
        .all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80)
    {
        return Err(BodyError::Malformed("malformed chunk extension"));
    }
    // Checked above: 1..=15 hex digits fit in a u64.
    Ok(size
        .iter()
        .fold(0u64, |a, &d| a * 16 + u64::from((d as char).to_digit(16).unwrap_or(0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a"), Ok(26));
        assert_eq!(parse_chunk_size(b"1a;name=value"), Ok(26));
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"-1").is_err());
        assert!(parse_chunk_size(b"0x1").is_err());
        assert!(parse_chunk_size(b" 1").is_err());
        assert!(parse_chunk_size(b"ffffffffffffffffff").is_err());
    }
}
