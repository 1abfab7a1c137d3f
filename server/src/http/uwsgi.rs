//! The uwsgi wire protocol (what nginx's `uwsgi_pass` and Apache's mod_proxy_uwsgi speak):
//! a 4-byte header (modifier1, little-endian data size, modifier2), then the variables as
//! length-prefixed key/value pairs, then the body (`CONTENT_LENGTH` bytes). The answer is a
//! plain HTTP response; the connection carries one request.
//!
//! The variables are the environ, as uWSGI uses them: the front has already parsed the
//! request, decoded the path and chosen `REMOTE_ADDR`.

use std::ops::Range;

use crate::http::parse::{Framing, Head, Limits, Refusal, Version};

const HEADER: usize = 4;

fn refuse(reason: &'static str) -> Refusal {
    Refusal { status: 400, reason }
}

fn u16le(b: &[u8], at: usize) -> usize {
    usize::from(b[at]) | usize::from(b[at + 1]) << 8
}

/// Parse a packet from the start of `buf`; `Ok(None)` while incomplete.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<Head>, Refusal> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err(refuse("uwsgi packet with modifier1 other than 0 (WSGI)"));
    }
    let size = u16le(buf, 1);
    if buf.len() < HEADER + size {
        return Ok(None);
    }
    let mut vars: Vec<(Range<usize>, Range<usize>)> = Vec::new();
    let end = HEADER + size;
    let mut pos = HEADER;
    while pos < end {
        if pos + 2 > end {
            return Err(refuse("truncated uwsgi variable"));
        }
        let klen = u16le(buf, pos);
        let key = pos + 2..pos + 2 + klen;
        if key.end + 2 > end {
            return Err(refuse("truncated uwsgi variable"));
        }
        let vlen = u16le(buf, key.end);
        let value = key.end + 2..key.end + 2 + vlen;
        if value.end > end {
            return Err(refuse("truncated uwsgi variable"));
        }
        if klen == 0 || buf[key.clone()].contains(&0) || buf[value.clone()].contains(&0) {
            return Err(refuse("malformed uwsgi variable"));
        }
        vars.push((key, value.clone()));
        if vars.len() > limits.fields + 64 {
            return Err(Refusal {
                status: 431,
                reason: "too many uwsgi variables",
            });
        }
        pos = value.end;
    }
    let find = |name: &[u8]| {
        vars.iter()
            .find(|(k, _)| &buf[k.clone()] == name)
            .map(|(_, v)| v.clone())
    };
    let method = find(b"REQUEST_METHOD").ok_or(refuse("uwsgi packet without REQUEST_METHOD"))?;
    let target = find(b"REQUEST_URI")
        .or_else(|| find(b"PATH_INFO"))
        .ok_or(refuse("uwsgi packet without REQUEST_URI or PATH_INFO"))?;
    let version = match find(b"SERVER_PROTOCOL").map(|v| &buf[v]) {
        Some(b"HTTP/1.0") => Version::Http10,
        _ => Version::Http11,
    };
    let framing = match find(b"CONTENT_LENGTH").map(|v| &buf[v]) {
        None | Some(b"") | Some(b"0") => Framing::None,
        Some(n) if n.len() <= 18 && n.iter().all(u8::is_ascii_digit) => {
            Framing::Length(n.iter().fold(0u64, |a, d| a * 10 + u64::from(d - b'0')))
        }
        Some(_) => return Err(refuse("malformed CONTENT_LENGTH")),
    };
    Ok(Some(Head {
        method,
        target,
        version,
        headers: Vec::new(),
        len: end,
        framing,
        keep_alive: false,
        expect_continue: false,
        uwsgi_vars: Some(vars),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn packet(vars: &[(&str, &str)]) -> Vec<u8> {
        let mut data = Vec::new();
        for (k, v) in vars {
            data.extend_from_slice(&(k.len() as u16).to_le_bytes());
            data.extend_from_slice(k.as_bytes());
            data.extend_from_slice(&(v.len() as u16).to_le_bytes());
            data.extend_from_slice(v.as_bytes());
        }
        let mut out = vec![0];
        out.extend_from_slice(&(data.len() as u16).to_le_bytes());
        out.push(0);
        out.extend_from_slice(&data);
        out
    }

    const LIMITS: Limits = Limits {
        request_line: 100,
        fields: 10,
        field_size: 100,
    };

    #[test]
    fn parses_and_frames() {
        let p = packet(&[
            ("REQUEST_METHOD", "POST"),
            ("REQUEST_URI", "/a?b"),
            ("CONTENT_LENGTH", "5"),
        ]);
        for cut in 0..p.len() {
            assert!(parse(&p[..cut], &LIMITS).unwrap().is_none(), "cut {cut}");
        }
        let h = parse(&p, &LIMITS).unwrap().unwrap();
        assert_eq!(&p[h.method.clone()], b"POST");
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(h.len, p.len());
    }

    #[test]
    fn refuses_garbage() {
        let mut p = packet(&[("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/")]);
        p[0] = 5;
        assert!(parse(&p, &LIMITS).is_err());
        let mut p = packet(&[("REQUEST_METHOD", "GET")]);
        p[5] = 200; // key length beyond the packet
        assert!(parse(&p, &LIMITS).is_err());
        assert!(parse(&packet(&[("PATH_INFO", "/")]), &LIMITS).is_err());
    }
}
