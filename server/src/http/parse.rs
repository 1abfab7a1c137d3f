//! The request head parser: strict RFC 9112 syntax, limits, and the framing decision.
//!
//! It owns *whether* a head is acceptable and how its body is delimited; it does not own
//! reading (the connection does) or the body bytes (`body.rs`). Everything ambiguous that a
//! proxy in front might read differently (request smuggling) is refused, not guessed:
//! bare LF, obs-fold, whitespace before a colon, Content-Length with Transfer-Encoding,
//! duplicate Content-Length or Host, a Transfer-Encoding that does not end in `chunked`, a
//! Host that is not `host[:port]`, userinfo in an absolute-form target, `*` for anything but
//! OPTIONS.

use std::net::Ipv6Addr;
use std::ops::Range;

/// Limits on the head, from `--limit-request-*`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_line: usize,
    pub fields: usize,
    pub field_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A parsed head; ranges index the buffer it was parsed from.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: Range<usize>,
    pub target: Range<usize>,
    pub version: Version,
    /// (name, value) with the value trimmed of surrounding whitespace.
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    /// Bytes of the head including the final CRLF CRLF (and any leading empty lines).
    pub len: usize,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// A uwsgi packet: the front's variables, which are the environ (`headers` is empty).
    pub uwsgi_vars: Option<Vec<(Range<usize>, Range<usize>)>>,
}

/// Why a head was refused: the status to answer with (then close) and a reason for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

const fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// `tchar` of RFC 9110 §5.6.2.
pub fn is_tchar(b: u8) -> bool {
    CLASS[b as usize] & TCHAR != 0
}

/// A field-value byte: VCHAR, obs-text, SP or HTAB.
pub fn is_value_byte(b: u8) -> bool {
    CLASS[b as usize] & VALUE != 0
}

/// A request-target byte: VCHAR (RFC 9112 §3.2 allows no other).
fn is_target_byte(b: u8) -> bool {
    CLASS[b as usize] & TARGET != 0
}

const TCHAR: u8 = 1;
const VALUE: u8 = 2;
const TARGET: u8 = 4;

/// The byte classes the parser checks, one table lookup per byte (every byte of every head
/// goes through one of these checks, so a chain of comparisons there is measurable).
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let tchar = matches!(c,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z');
        let vchar = c >= 0x21 && c <= 0x7e;
        let value = c == b'\t' || c == b' ' || vchar || c >= 0x80;
        t[b] = if tchar { TCHAR } else { 0 } | if value { VALUE } else { 0 } | if vchar { TARGET } else { 0 };
        b += 1;
    }
    t
};

/// Parse a head from the start of `buf`. `Ok(None)`: incomplete so far, and nothing seen yet
/// breaks a rule or a limit (so the caller may read more).
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<Head>, Refusal> {
    // RFC 9112 §2.2: ignore at least one empty line before the request line.
    let mut pos = 0;
    while buf[pos..].starts_with(b"\r\n") {
        pos += 2;
        if pos > 8 {
            return Err(refuse(400, "empty lines before the request line"));
        }
    }
    let line_start = pos;
    let Some(line_end) = find_line(buf, pos, limits.request_line, 414, "request line too long")? else {
        return Ok(None);
    };
    let line = &buf[line_start..line_end];
    let sp1 = line
        .iter()
        .position(|&b| b == b' ')
        .ok_or(refuse(400, "malformed request line"))?;
    let method = line_start..line_start + sp1;
    if sp1 == 0 || !line[..sp1].iter().all(|&b| is_tchar(b)) {
        return Err(refuse(400, "malformed method"));
    }
    let rest = &line[sp1 + 1..];
    let sp2 = rest
        .iter()
        .position(|&b| b == b' ')
        .ok_or(refuse(400, "malformed request line"))?;
    let target = line_start + sp1 + 1..line_start + sp1 + 1 + sp2;
    let tgt = &rest[..sp2];
    if tgt.is_empty() || !tgt.iter().all(|&b| is_target_byte(b)) {
        return Err(refuse(400, "malformed request target"));
    }
    let version = match &rest[sp2 + 1..] {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        v if v.len() == 8
            && v.starts_with(b"HTTP/")
            && v[5].is_ascii_digit()
            && v[6] == b'.'
            && v[7].is_ascii_digit() =>
        {
            return Err(refuse(505, "HTTP version not supported"));
        }
        _ => return Err(refuse(400, "malformed HTTP version")),
    };
    if tgt == b"*" {
        // RFC 9112 §3.2.4: asterisk-form is only for a server-wide OPTIONS.
        if &line[..sp1] != b"OPTIONS" {
            return Err(refuse(400, "asterisk-form target for a method other than OPTIONS"));
        }
    } else if let Some(rest) = tgt.strip_prefix(b"http://").or_else(|| tgt.strip_prefix(b"https://")) {
        // RFC 9112 §3.2.2: the target's authority replaces Host (the environ uses it as
        // HTTP_HOST), so it gets the checks a Host gets, and userinfo is refused: RFC 9110
        // §4.2.4 forbids sending it and tells recipients to treat it as an error, and a
        // `user@` prefix is where host confusion between two parsers starts.
        let authority = &rest[..rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len())];
        if authority.contains(&b'@') {
            return Err(refuse(400, "userinfo in the request target"));
        }
        if !valid_host(authority) {
            return Err(refuse(400, "invalid authority in the request target"));
        }
    } else if tgt[0] != b'/' {
        return Err(refuse(400, "request target is not origin-form or absolute-form"));
    }

    let mut headers = Vec::new();
    let mut pos = line_end + 2;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Vec<Range<usize>> = Vec::new();
    let mut hosts = 0;
    let mut keep_alive = version == Version::Http11;
    let mut expect_continue = false;
    loop {
        if buf.len() < pos + 2 {
            if buf.len() > pos && buf[pos] != b'\r' && buf.len() - pos > limits.field_size {
                return Err(refuse(431, "header field too large"));
            }
            return Ok(None);
        }
        if buf[pos] == b'\r' {
            if buf[pos + 1] != b'\n' {
                return Err(refuse(400, "bare CR in the head"));
            }
            pos += 2;
            break;
        }
        if buf[pos] == b' ' || buf[pos] == b'\t' {
            return Err(refuse(400, "obsolete line folding"));
        }
        let Some(end) = find_line(buf, pos, limits.field_size, 431, "header field too large")? else {
            return Ok(None);
        };
        if headers.len() == limits.fields {
            return Err(refuse(431, "too many header fields"));
        }
        let field = &buf[pos..end];
        let colon = field
            .iter()
            .position(|&b| b == b':')
            .ok_or(refuse(400, "header field without a colon"))?;
        if colon == 0 || !field[..colon].iter().all(|&b| is_tchar(b)) {
            return Err(refuse(400, "invalid header field name"));
        }
        let mut vs = colon + 1;
        let mut ve = field.len();
        while vs < ve && matches!(field[vs], b' ' | b'\t') {
            vs += 1;
        }
        while ve > vs && matches!(field[ve - 1], b' ' | b'\t') {
            ve -= 1;
        }
        if !field[vs..ve].iter().all(|&b| is_value_byte(b)) {
            return Err(refuse(400, "invalid byte in a header value"));
        }
        let name = pos..pos + colon;
        let value = pos + vs..pos + ve;
        let n = &buf[name.clone()];
        let v = &buf[value.clone()];
        if n.eq_ignore_ascii_case(b"content-length") {
            if content_length.is_some() {
                return Err(refuse(400, "duplicate Content-Length"));
            }
            if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
                return Err(refuse(400, "malformed Content-Length"));
            }
            content_length = Some(v.iter().fold(0u64, |a, d| a * 10 + u64::from(d - b'0')));
        } else if n.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding.push(value.clone());
        } else if n.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if hosts > 1 {
                return Err(refuse(400, "duplicate Host"));
            }
            // RFC 9112 §3.2: a Host with an invalid value is a 400, even when an absolute-form
            // target's authority will be used instead of it.
            if !valid_host(v) {
                return Err(refuse(400, "invalid Host"));
            }
        } else if n.eq_ignore_ascii_case(b"connection") {
            for token in v.split(|&b| b == b',') {
                let t = token.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && version == Version::Http10 {
                    keep_alive = true;
                }
            }
        } else if n.eq_ignore_ascii_case(b"expect") {
            if v.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = version == Version::Http11;
            } else {
                return Err(refuse(417, "unsupported expectation"));
            }
        }
        headers.push((name, value));
        pos = end + 2;
    }
    // A Connection: close seen before a keep-alive token must still win.
    if headers.iter().any(|(n, v)| {
        buf[n.clone()].eq_ignore_ascii_case(b"connection")
            && buf[v.clone()]
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    }) {
        keep_alive = false;
    }
    if version == Version::Http11 && hosts == 0 {
        return Err(refuse(400, "HTTP/1.1 request without Host"));
    }
    let framing = if !transfer_encoding.is_empty() {
        if content_length.is_some() {
            return Err(refuse(400, "both Content-Length and Transfer-Encoding"));
        }
        if version == Version::Http10 {
            return Err(refuse(400, "Transfer-Encoding in an HTTP/1.0 request"));
        }
        let codings: Vec<&[u8]> = transfer_encoding
            .iter()
            .flat_map(|r| buf[r.clone()].split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .collect();
        match codings.as_slice() {
            [c] if c.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
            [first @ .., _] if first.iter().any(|c| c.eq_ignore_ascii_case(b"chunked")) => {
                return Err(refuse(400, "chunked applied more than once"));
            }
            [.., last] if last.eq_ignore_ascii_case(b"chunked") => {
                return Err(refuse(501, "transfer codings other than chunked are not implemented"));
            }
            _ => return Err(refuse(400, "Transfer-Encoding does not end in chunked")),
        }
    } else {
        match content_length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };
    Ok(Some(Head {
        method,
        target,
        version,
        headers,
        len: pos,
        framing,
        keep_alive,
        expect_continue: expect_continue && framing != Framing::None,
        uwsgi_vars: None,
    }))
}

/// A `Host` value or the authority of an absolute-form target: `uri-host [ ":" port ]`
/// (RFC 9112 §3.2, RFC 3986 §3.2.2-3), where uri-host is a reg-name (which covers IPv4
/// addresses) or an IPv6 address in brackets.
///
/// Stricter than RFC 3986 where a looser reading helps nobody but an attacker:
/// - empty is refused: RFC 9110 §7.2 keeps an empty Host for target URIs without an
///   authority, which an http(s) origin server never serves, and §4.2.1 requires rejecting
///   an http URI with an empty host (nginx refuses it too);
/// - a comma is refused although reg-name allows it: Host is a singleton, and a comma is
///   what an intermediary produces when it joins two Host lines into one;
/// - the port is 1 to 5 digits up to 65535 (RFC 3986 allows an empty or longer one: nothing
///   sends those, and SERVER_PORT would be meaningless);
/// - IPvFuture and IPv6 zone identifiers (RFC 6874) are refused: no HTTP client sends them.
pub fn valid_host(h: &[u8]) -> bool {
    let (host_ok, port) = if let Some(inner) = h.strip_prefix(b"[") {
        let Some(close) = inner.iter().position(|&b| b == b']') else {
            return false;
        };
        let v6 = std::str::from_utf8(&inner[..close])
            .ok()
            .is_some_and(|s| s.parse::<Ipv6Addr>().is_ok());
        match &inner[close + 1..] {
            [] => (v6, None),
            [b':', port @ ..] => (v6, Some(port)),
            _ => return false,
        }
    } else {
        let (name, port) = match h.iter().position(|&b| b == b':') {
            Some(i) => (&h[..i], Some(&h[i + 1..])),
            None => (h, None),
        };
        (valid_reg_name(name), port)
    };
    host_ok
        && port.is_none_or(|p| {
            !p.is_empty()
                && p.len() <= 5
                && p.iter().all(u8::is_ascii_digit)
                && p.iter().fold(0u32, |a, d| a * 10 + u32::from(d - b'0')) <= 65535
        })
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )`, non-empty and without `,`.
fn valid_reg_name(name: &[u8]) -> bool {
    if name.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'%' => {
                if !(name.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && name.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
                continue;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b';' | b'=' => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

/// Whether the request at the start of `buf` (complete or not, valid or not) is a HEAD
/// request: a response the server produces itself for it must not carry a body (RFC 9110
/// §9.3.2), or the client would read that body as the next response.
pub fn is_head_request(buf: &[u8]) -> bool {
    let mut b = buf;
    while let Some(rest) = b.strip_prefix(b"\r\n") {
        b = rest;
    }
    b.starts_with(b"HEAD ")
}

/// The end (index of CR) of the CRLF-terminated line starting at `start`; `None` if the line
/// is not complete yet. Bare LF and bare CR are refused; a line longer than `limit` gets
/// `status` as soon as that is known.
fn find_line(buf: &[u8], start: usize, limit: usize, status: u16, why: &'static str) -> Result<Option<usize>, Refusal> {
    let hay = &buf[start..];
    match hay.iter().position(|&b| b == b'\n' || b == b'\r' || b == 0) {
        Some(i) => {
            if i > limit {
                return Err(refuse(status, why));
            }
            match hay[i] {
                b'\n' => Err(refuse(400, "bare LF in the head")),
                0 => Err(refuse(400, "NUL in the head")),
                _ => match hay.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some(start + i)),
                    Some(_) => Err(refuse(400, "bare CR in the head")),
                },
            }
        }
        None if hay.len() > limit => Err(refuse(status, why)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        request_line: 100,
        fields: 4,
        field_size: 50,
    };

    fn status(req: &[u8]) -> u16 {
        match parse(req, &LIMITS) {
            Ok(Some(_)) => 200,
            Ok(None) => 0,
            Err(r) => r.status,
        }
    }

    #[test]
    fn complete_and_incomplete() {
        let h = parse(b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\nrest", &LIMITS)
            .unwrap()
            .unwrap();
        assert_eq!(h.len, 30);
        assert!(h.keep_alive);
        assert_eq!(h.framing, Framing::None);
        for cut in 0..30 {
            assert_eq!(
                status(&b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n"[..cut]),
                0,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(status(b"GET / HTTP/1.1\nHost: x\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n"), 400);
        assert_eq!(status(b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status(&[b"GET /".as_slice(), &[b'a'; 200]].concat()), 414);
        assert_eq!(
            status(&[b"GET / HTTP/1.1\r\nHost: x\r\nX: ".as_slice(), &[b'a'; 60]].concat()),
            431
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: x\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\n\r\n"),
            431
        );
    }

    #[test]
    fn asterisk_form_only_for_options() {
        assert_eq!(status(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(status(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status(b"POST * HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status(b"options * HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status(b"OPTIONS *x HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    }

    #[test]
    fn hosts() {
        for good in [
            "example.com",
            "example.com:8080",
            "EXAMPLE.com.",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::ff00:42:8329]:443",
            "[::ffff:192.0.2.1]",
            "my_host-1~x",
            "a%2Db",
            "h:65535",
            "h:0",
        ] {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            ":80",
            "example.com:",
            "example.com:8o",
            "example.com:65536",
            "example.com:123456",
            "example.com:80:80",
            "a b",
            "a,b",
            "a/b",
            "user@host",
            "user:pw@host",
            "a%2",
            "a%zz",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[::g]",
            "[fe80::1%25eth0]",
            "[v1.x]",
            "[]",
            "::1",
            "a\"b",
            "a\\b",
            "é",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.0\r\nHost: a,b\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.0\r\n\r\n"), 200);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"), 200);
    }

    #[test]
    fn absolute_form() {
        assert_eq!(status(b"GET http://example.com/a?b HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(status(b"GET https://example.com HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(status(b"GET http://example.com?q HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(status(b"GET http://[::1]:81/ HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(
            status(b"GET http://user:pw@example.com/ HTTP/1.1\r\nHost: x\r\n\r\n"),
            400
        );
        assert_eq!(status(b"GET http://user@example.com/ HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status(b"GET http://@example.com/ HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status(b"GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status(b"GET http://a,b/ HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status(b"GET http://a:x/ HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        // The Host line is still required and checked (RFC 9112 §3.2), then ignored.
        assert_eq!(status(b"GET http://example.com/ HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET http://example.com/ HTTP/1.1\r\nHost: a@b\r\n\r\n"), 400);
    }

    #[test]
    fn head_requests_are_recognised_in_raw_buffers() {
        assert!(is_head_request(b"HEAD / HTTP/1.1\r\n"));
        assert!(is_head_request(b"\r\n\r\nHEAD /"));
        assert!(!is_head_request(b"HEAD"));
        assert!(!is_head_request(b"GET / HTTP/1.1\r\n"));
        assert!(!is_head_request(b"HEADER / HTTP/1.1\r\n"));
        assert!(!is_head_request(b"head / HTTP/1.1\r\n"));
        assert!(!is_head_request(b""));
    }
}

#[cfg(test)]
mod class_tests {
    use super::*;

    #[test]
    fn byte_classes_are_the_rfc_ones() {
        for b in 0..=255u8 {
            let tchar = b"!#$%&'*+-.^_`|~".contains(&b) || b.is_ascii_alphanumeric();
            assert_eq!(is_tchar(b), tchar, "{b:#x}");
            let value = b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
            assert_eq!(is_value_byte(b), value, "{b:#x}");
            assert_eq!(is_target_byte(b), (0x21..=0x7e).contains(&b), "{b:#x}");
        }
    }
}
