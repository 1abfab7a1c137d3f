//! Trusted-proxy headers: `Forwarded` (RFC 7239) and `X-Forwarded-For/-Proto/-Host/-Prefix`.
//!
//! Applied only when the peer is trusted (`--forwarded-allow-ips`, or a unix socket, which
//! only a local front can reach). The client address is the right-most address in the chain
//! that is not itself a trusted proxy: everything left of it was written by the client and
//! could be forged. When `Forwarded` is present it wins over the `X-Forwarded-*` family.

use std::net::IpAddr;

use deployctl_common::settings::AllowIp;

/// The raw header values seen on a request from a trusted peer.
#[derive(Default)]
pub struct Forwarded {
    forwarded: Option<String>,
    x_for: Option<String>,
    x_proto: Option<String>,
    x_host: Option<String>,
    x_prefix: Option<String>,
}

/// What the headers change in the environ.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub remote_addr: Option<IpAddr>,
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub prefix: Option<String>,
}

impl Forwarded {
    pub fn note(&mut self, name: &[u8], value: &[u8]) {
        let slot = if name.eq_ignore_ascii_case(b"forwarded") {
            &mut self.forwarded
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            &mut self.x_for
        } else if name.eq_ignore_ascii_case(b"x-forwarded-proto") {
            &mut self.x_proto
        } else if name.eq_ignore_ascii_case(b"x-forwarded-host") {
            &mut self.x_host
        } else if name.eq_ignore_ascii_case(b"x-forwarded-prefix") {
            &mut self.x_prefix
        } else {
            return;
        };
        *slot = Some(String::from_utf8_lossy(value).into_owned());
    }

    pub fn resolve(&self, allow: &[AllowIp]) -> Resolved {
        let trusted = |ip: IpAddr| allow.iter().any(|a| a.contains(ip));
        let mut r = Resolved::default();
        if let Some(f) = &self.forwarded {
            // Elements are comma-separated, each `k=v;k=v`; the last one was added by the
            // proxy next to us.
            let elements: Vec<Vec<(String, String)>> = f
                .split(',')
                .map(|el| {
                    el.split(';')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string()))
                        .collect()
                })
                .collect();
            let fors: Vec<String> = elements
                .iter()
                .filter_map(|el| el.iter().find(|(k, _)| k == "for").map(|(_, v)| v.clone()))
                .collect();
            r.remote_addr = client(fors.iter().map(String::as_str), &trusted);
            if let Some(last) = elements.last() {
                for (k, v) in last {
                    match k.as_str() {
                        "proto" => r.scheme = scheme(v),
                        "host" => r.host = host(v),
                        _ => {}
                    }
                }
            }
        } else {
            if let Some(x) = &self.x_for {
                r.remote_addr = client(x.split(','), &trusted);
            }
            if let Some(p) = &self.x_proto {
                r.scheme = p.rsplit(',').next().and_then(|p| scheme(p.trim()));
            }
            if let Some(h) = &self.x_host {
                r.host = h.rsplit(',').next().and_then(|h| host(h.trim()));
            }
        }
        if let Some(p) = &self.x_prefix {
            let p = p.trim().trim_end_matches('/');
            if p.starts_with('/') && !p.contains(['?', '#']) {
                r.prefix = Some(p.to_string());
            }
        }
        r
    }
}

/// Walk the chain right to left, skipping trusted proxies.
fn client<'a>(chain: impl DoubleEndedIterator<Item = &'a str>, trusted: &dyn Fn(IpAddr) -> bool) -> Option<IpAddr> {
    let addrs: Vec<IpAddr> = chain.map(str::trim).filter_map(parse_node).collect();
    addrs.iter().rev().find(|ip| !trusted(**ip)).or(addrs.first()).copied()
}

/// `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80`, `::1`.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim_matches('"');
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.rsplit_once(':').and_then(|(h, _)| h.parse().ok())
}

fn scheme(s: &str) -> Option<String> {
    let s = s.to_ascii_lowercase();
    matches!(s.as_str(), "http" | "https").then_some(s)
}

fn host(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> Vec<AllowIp> {
        vec![deployctl_common::settings::parse_allow_ip("127.0.0.1").unwrap()]
    }

    #[test]
    fn rightmost_untrusted_client() {
        let mut f = Forwarded::default();
        f.note(b"X-Forwarded-For", b"6.6.6.6, 1.2.3.4, 127.0.0.1");
        f.note(b"X-Forwarded-Proto", b"https");
        let r = f.resolve(&loopback());
        assert_eq!(r.remote_addr, Some("1.2.3.4".parse().unwrap()));
        assert_eq!(r.scheme.as_deref(), Some("https"));
    }

    #[test]
    fn forwarded_header_wins() {
        let mut f = Forwarded::default();
        f.note(b"Forwarded", b"for=\"[2001:db8::1]:4711\";proto=https;host=example.com");
        f.note(b"X-Forwarded-For", b"9.9.9.9");
        let r = f.resolve(&loopback());
        assert_eq!(r.remote_addr, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(r.host.as_deref(), Some("example.com"));
        assert_eq!(r.scheme.as_deref(), Some("https"));
    }

    #[test]
    fn bad_values_ignored() {
        let mut f = Forwarded::default();
        f.note(b"X-Forwarded-Proto", b"javascript");
        f.note(b"X-Forwarded-Host", b"evil.com/path");
        f.note(b"X-Forwarded-Prefix", b"app/");
        assert_eq!(f.resolve(&loopback()), Resolved::default());
    }
}
