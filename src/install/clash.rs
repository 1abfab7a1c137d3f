//! What two apps on one host may not both claim, checked at install against every other
//! app's manifest: a server name on addresses that overlap, and a TCP port on addresses that
//! overlap unless both are the same shared front (two nginx sites share any port by name, two
//! Apache sites Debian's `:80`; on another port each Apache site declares its own `Listen`). Addresses overlap as nginx and the kernel see them: the same port, and the
//! same host or either one the wildcard — so `0.0.0.0:80` and `[::]:80` are two sockets to
//! nginx (`ipv6only=on`), but one name on both would send IPv4 and IPv6 clients to different
//! apps. Static URLs live inside one server block, so they can meet only where the names do,
//! which is refused first. Nor may two apps render one host-wide name (`declared`): a file,
//! an nginx upstream or variable, a mod_wsgi process group, a unit's directories, sockets or
//! syslog identifier. Does not own: the names and addresses (the plan's and the renderer's).

use std::path::Path;

use super::layout;
use crate::plan::{Address, Plan, Tier};

/// Debian's `ports.conf` listens on this port; an Apache site on another one carries its own
/// `Listen`, which two sites cannot both declare.
const APACHE_PORTS_CONF: u16 = 80;

/// `KIND ADDR` for every TCP listener of the plan: `nginx`, `apache` (the shared fronts),
/// `apache-listen` (an Apache site declaring its own `Listen`: its port is its own) or
/// `app:TIER` (a process of the app's own), with the TLS listener at the edge.
pub fn listeners(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for t in &plan.tiers {
        let Some(Address::Tcp(l)) = &t.listen else {
            continue;
        };
        let kind = match t.tier {
            Tier::Apache if l.port != APACHE_PORTS_CONF => "apache-listen".to_string(),
            tier => kind(tier),
        };
        out.push(format!("{kind} {l}"));
    }
    if let Some(tls) = &plan.tls {
        out.push(format!("{} {}", kind(plan.edge().tier), tls.listen));
    }
    out
}

fn kind(t: Tier) -> String {
    match t {
        Tier::Nginx => "nginx".into(),
        Tier::Apache => "apache".into(),
        Tier::Embedded | Tier::Uwsgi | Tier::Gunicorn | Tier::ModWsgi => format!("app:{}", t.name()),
    }
}

/// `HOST:PORT` (IPv6 in brackets) as (host, port).
fn split(addr: &str) -> Option<(&str, &str)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((host.trim_start_matches('[').trim_end_matches(']'), port))
}

/// Whether two `HOST:PORT` addresses can receive the same connection's request.
pub fn overlap(a: &str, b: &str) -> bool {
    let (Some((ha, pa)), Some((hb, pb))) = (split(a), split(b)) else {
        return a == b;
    };
    let wild = |h: &str| h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified()) || h == "*";
    pa == pb && (ha == hb || wild(ha) || wild(hb))
}

/// The first clash between app `name`'s `names` (`ADDR NAME`) and `listeners` (`KIND ADDR`)
/// and another app's, in words naming both apps.
pub fn find(
    name: &str,
    names: &[String],
    listeners: &[String],
    other: &str,
    other_names: &[String],
    other_listeners: &[String],
) -> Option<String> {
    for n in names {
        let Some((addr, server)) = n.split_once(' ') else {
            continue;
        };
        for m in other_names {
            let Some((oaddr, oserver)) = m.split_once(' ') else {
                continue;
            };
            if server.eq_ignore_ascii_case(oserver) && overlap(addr, oaddr) {
                return Some(format!(
                    "apps `{name}` and `{other}` both claim the server name {server} ({addr} and {oaddr})"
                ));
            }
        }
    }
    for l in listeners {
        let Some((kind, addr)) = l.split_once(' ') else {
            continue;
        };
        for m in other_listeners {
            let Some((okind, oaddr)) = m.split_once(' ') else {
                continue;
            };
            let shared_front = kind == okind && (kind == "nginx" || kind == "apache");
            if !shared_front && overlap(addr, oaddr) {
                return Some(format!(
                    "apps `{name}` and `{other}` both claim the port of {addr}: {} for `{name}`, {} for `{other}` at {oaddr}",
                    who(kind),
                    who(okind)
                ));
            }
        }
    }
    None
}

/// What the file placed at `path` declares that a host has one of, as `WHAT NAME`: any file's
/// own path; nginx's upstreams and `map` variables (http-wide, whichever site declares them);
/// mod_wsgi's daemon process groups (server-wide); a unit's runtime, state and logs
/// directories, its unix sockets and its syslog identifier. Read from the rendered text, so
/// two app names the renderer maps to one (`a-b` and `a_b`: upstream `a_b_backend`) are
/// compared as the host would see them.
pub fn declared(path: &Path, text: &str) -> Vec<String> {
    let mut out = vec![format!("the file {}", path.display())];
    let first = |rest: &str| rest.split_whitespace().next().map(str::to_string);
    for line in text.lines().map(str::trim) {
        if path.starts_with(layout::NGINX_AVAILABLE) {
            if let Some(n) = line.strip_prefix("upstream ").and_then(first) {
                out.push(format!("the nginx upstream {n}"));
            } else if let Some(v) = line.strip_prefix("map ").and_then(|r| r.split_whitespace().nth(1)) {
                out.push(format!("the nginx variable {v}"));
            }
        } else if path.starts_with(layout::APACHE_AVAILABLE) {
            if let Some(n) = line.strip_prefix("WSGIDaemonProcess ").and_then(first) {
                out.push(format!("the mod_wsgi process group {n}"));
            }
        } else if path.starts_with(layout::SYSTEMD_UNITS) {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let base = match key.trim() {
                "RuntimeDirectory" => "/run/",
                "StateDirectory" => "/var/lib/",
                "LogsDirectory" => "/var/log/",
                "ListenStream" if value.starts_with('/') => "",
                "SyslogIdentifier" => {
                    out.push(format!("the syslog identifier {}", value.trim()));
                    continue;
                }
                _ => continue,
            };
            for v in value.split_whitespace() {
                let what = if base.is_empty() { "socket" } else { "directory" };
                out.push(format!("the {what} {base}{v}"));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The first of `ours` (`declared`) app `other` declares too, in words naming both apps.
pub fn find_declared(name: &str, ours: &[String], other: &str, theirs: &[String]) -> Option<String> {
    let what = ours.iter().find(|d| theirs.contains(d))?;
    Some(format!("apps `{name}` and `{other}` both render {what}"))
}

fn who(kind: &str) -> String {
    match kind {
        "nginx" => "nginx".into(),
        "apache" => "Apache".into(),
        "apache-listen" => "Apache (its site's own `Listen`)".into(),
        k => k.strip_prefix("app:").unwrap_or(k).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_overlap_as_nginx_sees_them() {
        assert!(overlap("0.0.0.0:80", "0.0.0.0:80"));
        assert!(overlap("0.0.0.0:80", "[::]:80"));
        assert!(overlap("0.0.0.0:80", "127.0.0.1:80"));
        assert!(overlap("[::]:80", "[::1]:80"));
        assert!(!overlap("127.0.0.1:80", "127.0.0.2:80"));
        assert!(!overlap("0.0.0.0:80", "0.0.0.0:8080"));
    }

    #[test]
    fn a_name_or_a_port_of_two_apps_is_refused_naming_both() {
        let names = ["0.0.0.0:80 a.test".to_string()];
        let v6 = ["[::]:80 A.test".to_string()];
        let clash = find("one", &names, &[], "two", &v6, &[]).unwrap_or_default();
        assert!(
            clash.contains("`one`") && clash.contains("`two`") && clash.contains("a.test"),
            "{clash}"
        );
        // Two nginx sites share :80; nginx and Apache cannot.
        let nginx = ["nginx 0.0.0.0:80".to_string()];
        assert_eq!(find("one", &[], &nginx, "two", &[], &nginx), None);
        let apache = ["apache [::]:80".to_string()];
        let clash = find("one", &[], &nginx, "two", &[], &apache).unwrap_or_default();
        assert!(
            clash.contains("nginx for `one`") && clash.contains("Apache for `two`"),
            "{clash}"
        );
        // An Apache site's own Listen, and an app server's own port, are their own.
        let listen = ["apache-listen 127.0.0.1:8081".to_string()];
        assert!(find("one", &[], &listen, "two", &[], &listen).is_some());
        let app = ["app:gunicorn 127.0.0.1:8000".to_string()];
        assert!(find("one", &[], &app, "two", &[], &app).is_some());
    }

    #[test]
    fn what_a_file_declares_once_per_host_is_read_as_rendered() {
        let site =
            "upstream a_b_backend {\n    server 127.0.0.1:8000;\n}\nmap $http_upgrade $deployctl_0_connection {\n}\n";
        let d = declared(Path::new("/etc/nginx/sites-available/a-b.conf"), site);
        assert!(d.contains(&"the nginx upstream a_b_backend".to_string()), "{d:?}");
        assert!(
            d.contains(&"the nginx variable $deployctl_0_connection".to_string()),
            "{d:?}"
        );
        let unit = "[Service]\nRuntimeDirectory=a-b\nLogsDirectory=a-b\n[Socket]\nListenStream=/run/a-b.sock\nListenStream=0.0.0.0:80\n";
        let u = declared(Path::new("/etc/systemd/system/a-b.service"), unit);
        for w in [
            "the directory /run/a-b",
            "the directory /var/log/a-b",
            "the socket /run/a-b.sock",
        ] {
            assert!(u.contains(&w.to_string()), "{u:?}");
        }
        assert!(!u.iter().any(|w| w.contains("0.0.0.0")), "{u:?}");
        // `a`'s certificate unit is the service of an app named `a-cert`.
        let cert = declared(Path::new("/etc/systemd/system/a-cert.service"), "");
        let clash = find_declared("a-cert", &cert, "a", &cert).unwrap_or_default();
        assert_eq!(
            clash,
            "apps `a-cert` and `a` both render the file /etc/systemd/system/a-cert.service"
        );
    }
}
