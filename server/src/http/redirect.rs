//! The plain HTTP listener beside TLS (`--redirect-bind`): what the nginx site's port-80
//! server does — `/.well-known/acme-challenge/` answered from the ACME webroot, and a `301` to
//! `https://HOST[:PORT]/path?query` for everything else, HOST from the request's Host checked
//! against `--server-name` (another is answered 421, Misdirected Request), PORT the TLS
//! listener's when it is not 443.
//!
//! Owned here: the answer to a request on such a listener. Not owned: which listener is
//! plain (the event loop knows by index) or writing the answer (`Response`, which adds no
//! HSTS and no security headers on this listener, as the nginx site's port-80 server adds
//! none).

use crate::http::parse::Head;
use crate::http::statics::{Answer, Body, Statics};

pub struct Redirect {
    acme: Option<Statics>,
    names: Vec<String>,
    /// `:PORT` of the TLS listener, or empty for 443.
    port: String,
}

impl Redirect {
    pub fn new(webroot: Option<&std::path::Path>, names: &[String], tls_port: Option<u16>) -> Redirect {
        Redirect {
            acme: webroot.map(Statics::acme),
            names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
            port: match tls_port {
                Some(443) | None => String::new(),
                Some(p) => format!(":{p}"),
            },
        }
    }

    pub fn answer(&mut self, buf: &[u8], head: &Head) -> Answer {
        if let Some(a) = self.acme.as_mut().and_then(|s| s.answer(buf, head)) {
            return a;
        }
        let host = head
            .headers
            .iter()
            .find(|(n, _)| buf[n.clone()].eq_ignore_ascii_case(b"host"))
            .map(|(_, v)| &buf[v.clone()])
            .map(host_only)
            .map(|h| String::from_utf8_lossy(h).to_ascii_lowercase());
        let host = match host {
            Some(h) if !h.is_empty() => h,
            // HTTP/1.0 without Host: the first name, as nginx's $host falls back to server_name.
            _ => match self.names.first() {
                Some(n) if !n.starts_with('*') => n.clone(),
                _ => return text(400, "a Host is needed to redirect to https"),
            },
        };
        if !self.names.is_empty() && !self.names.iter().any(|n| name_matches(n, &host)) {
            return text(421, "this server does not serve that host");
        }
        let target = &buf[head.target.clone()];
        // Origin form as is; an absolute form's path and query.
        let path: &[u8] = if target.starts_with(b"/") {
            target
        } else {
            target
                .windows(3)
                .position(|w| w == b"://")
                .and_then(|i| {
                    target[i + 3..]
                        .iter()
                        .position(|b| *b == b'/')
                        .map(|j| &target[i + 3 + j..])
                })
                .unwrap_or(b"/")
        };
        let location = format!("https://{host}{}{}", self.port, String::from_utf8_lossy(path));
        let mut a = text(301, "moved to https");
        a.fields
            .extend_from_slice(format!("Location: {location}\r\n").as_bytes());
        a
    }
}

/// `host[:port]` or `[v6]:port` → the host part (brackets kept for IPv6).
fn host_only(h: &[u8]) -> &[u8] {
    if h.starts_with(b"[") {
        return match h.iter().position(|b| *b == b']') {
            Some(i) => &h[..=i],
            None => h,
        };
    }
    match h.iter().rposition(|b| *b == b':') {
        Some(i) => &h[..i],
        None => h,
    }
}

/// nginx's `server_name` forms: exact, `*.example.com`, `.example.com` (both and itself).
fn name_matches(name: &str, host: &str) -> bool {
    if let Some(suffix) = name.strip_prefix("*.") {
        return host.len() > suffix.len() + 1
            && host.ends_with(suffix)
            && host[..host.len() - suffix.len()].ends_with('.');
    }
    if let Some(suffix) = name.strip_prefix('.') {
        return host == suffix || host.ends_with(name);
    }
    name == host
}

fn text(status: u16, message: &str) -> Answer {
    Answer {
        status,
        fields: b"Content-Type: text/plain; charset=utf-8\r\n".to_vec(),
        body: Body::Text(format!(
            "{status} {}: {message}\n",
            crate::http::response::reason(status)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_hosts() {
        assert_eq!(host_only(b"example.com:8080"), b"example.com");
        assert_eq!(host_only(b"[::1]:8443"), b"[::1]");
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "aexample.com"));
        assert!(name_matches(".example.com", "example.com"));
        assert!(name_matches("example.com", "example.com"));
        assert!(!name_matches("example.com", "evil.com"));
    }
}
