//! The TLS part of nginx's view (`nginx/site.conf.tera`) and of Apache's (`apache/_vhosts.tera`,
//! mod_ssl): the HTTPS listener, the certificate pair, the profile's directives, HSTS, the ACME
//! webroot and the redirect; and the renewal units' view.
//!
//! Owns: how nginx and Apache spell the plan's TLS facts (`plan::TlsPlan`), quoted. Does not
//! own: the paths, the profile's values or the header's value (the plan's and `tls`'s).

use serde::Serialize;

use super::quote;
use crate::plan::Plan;

#[derive(Debug, Serialize)]
pub struct NginxTls {
    /// `intermediate` or `modern`.
    pub profile: &'static str,
    /// `listen` argument of the HTTPS servers.
    pub listen: String,
    /// The front has HTTP/2 (the install's catch-all puts it on its `listen`).
    pub http2: bool,
    /// `http2` on the site's HTTPS listener: nginx before 1.25.1 (Debian 12's 1.22, `listen …
    /// ssl http2`), which has no `http2` directive.
    pub http2_listen: bool,
    /// `http2 on;` in the site's HTTPS servers instead: nginx 1.25.1 and later, which deprecate
    /// the listen parameter (Compose's nginx image).
    pub http2_directive: bool,
    pub certificate: String,
    pub key: String,
    /// `ssl_protocols`: `TLSv1.2 TLSv1.3`.
    pub protocols: String,
    /// `ssl_ciphers` (TLS 1.2), colon-separated; `None` for TLS 1.3 only.
    pub ciphers: Option<String>,
    /// `ssl_conf_command Ciphersuites` (TLS 1.3), colon-separated.
    pub ciphersuites: String,
    /// `ssl_ecdh_curve`, colon-separated.
    pub groups: String,
    pub prefer_server_ciphers: &'static str,
    /// `ssl_conf_command Options PrioritizeChaCha`.
    pub prioritize_chacha: bool,
    pub session_tickets: &'static str,
    /// The `Strict-Transport-Security` value, quoted; `None` when off.
    pub hsts: Option<String>,
    /// The directory served at `/.well-known/acme-challenge/` on HTTP.
    pub webroot: String,
    /// `:PORT` in the redirect to HTTPS, empty on 443.
    pub redirect_port: String,
    /// Groups of the profile this OpenSSL lacks (a comment in the file).
    pub left_out: Vec<String>,
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

impl NginxTls {
    pub fn new(plan: &Plan) -> Option<NginxTls> {
        let tls = plan.tls.as_ref()?;
        let s = &tls.settings;
        let path = |p: &std::path::Path| quote::nginx_script(&p.to_string_lossy());
        Some(NginxTls {
            profile: s.profile.name(),
            listen: tls.listen.to_string(),
            http2: tls.capabilities.http2,
            http2_listen: tls.capabilities.http2 && !tls.capabilities.http2_directive,
            http2_directive: tls.capabilities.http2 && tls.capabilities.http2_directive,
            certificate: path(&tls.certificate),
            key: path(&tls.key),
            protocols: s.protocols.join(" "),
            ciphers: (!s.ciphers.is_empty()).then(|| s.ciphers.join(":")),
            ciphersuites: s.ciphersuites.join(":"),
            groups: s.groups.join(":"),
            prefer_server_ciphers: on_off(s.prefer_server_ciphers),
            prioritize_chacha: s.prioritize_chacha,
            session_tickets: on_off(s.session_tickets),
            hsts: tls.hsts.as_ref().map(|h| format!("\"{h}\"")),
            webroot: path(&tls.webroot),
            redirect_port: match tls.listen.port {
                443 => String::new(),
                port => format!(":{port}"),
            },
            left_out: s.left_out.clone(),
        })
    }

    /// Whether a path here holds a `$` (the site then defines `quote::NGINX_DOLLAR_VAR`).
    pub fn needs_dollar(plan: &Plan) -> bool {
        plan.tls.as_ref().is_some_and(|t| {
            [&t.certificate, &t.key, &t.webroot]
                .iter()
                .any(|p| quote::nginx_needs_dollar(&p.to_string_lossy()))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// apache/_vhosts.tera and apache/httpd.conf.tera

/// mod_ssl's side of Apache's view: every value quoted for Apache.
#[derive(Debug, Serialize)]
pub struct ApacheTls {
    /// `intermediate` or `modern`.
    pub profile: &'static str,
    /// `Listen` argument: `HOST:PORT`.
    pub listen: String,
    /// `<VirtualHost *:PORT>` of the HTTPS virtual hosts.
    pub vhost: String,
    /// A `Listen` line for it in the Debian site (not on 443: Debian's `ports.conf` has it
    /// when mod_ssl is enabled).
    pub site_listen: bool,
    /// The profile's directives, repeated in the catch-all and the site's virtual host (the
    /// first virtual host of an address decides the protocols of every handshake on it).
    pub directives: Vec<String>,
    /// `Protocols h2 http/1.1` (mod_http2 loaded).
    pub http2: bool,
    /// The `Strict-Transport-Security` value, quoted; `None` when off.
    pub hsts: Option<String>,
    /// `Alias` of the ACME challenge path and its `<Directory>`: the webroot's
    /// `.well-known/acme-challenge/`, quoted.
    pub challenge_dir: String,
    /// The HTTP listener's redirect target (mod_rewrite), quoted.
    pub redirect: String,
    /// `SSLSessionCache` of the self-contained configuration, quoted (Debian's `ssl.conf` has
    /// its own).
    pub session_cache: String,
    /// Groups of the profile this OpenSSL lacks (a comment in the file).
    pub left_out: Vec<String>,
}

/// Debian's `ports.conf` listens on 443 when mod_ssl is enabled.
const APACHE_DEBIAN_TLS_PORT: u16 = 443;

impl ApacheTls {
    /// `None` without `[tls]` or when Apache is not the edge (behind nginx, nginx terminates).
    pub fn new(plan: &Plan) -> anyhow::Result<Option<ApacheTls>> {
        let Some(tls) = plan.tls.as_ref() else {
            return Ok(None);
        };
        if plan.edge().tier != crate::plan::Tier::Apache {
            return Ok(None);
        }
        let q = |s: &str| -> anyhow::Result<String> {
            match quote::apache_problem(s) {
                Some(problem) => anyhow::bail!("{problem}"),
                None => Ok(quote::apache(s)),
            }
        };
        let s = &tls.settings;
        let protocols: Vec<String> = s.protocols.iter().map(|p| format!("+{p}")).collect();
        let mut directives = vec![
            "SSLEngine on".to_string(),
            format!("SSLCertificateFile {}", q(&tls.certificate.to_string_lossy())?),
            format!("SSLCertificateKeyFile {}", q(&tls.key.to_string_lossy())?),
            format!("SSLProtocol -all {}", protocols.join(" ")),
        ];
        if !s.ciphers.is_empty() {
            directives.push(format!("SSLCipherSuite {}", s.ciphers.join(":")));
        }
        directives.push(format!("SSLCipherSuite TLSv1.3 {}", s.ciphersuites.join(":")));
        directives.push(format!("SSLOpenSSLConfCmd Curves {}", s.groups.join(":")));
        directives.push(format!("SSLHonorCipherOrder {}", on_off(s.prefer_server_ciphers)));
        if s.prioritize_chacha {
            directives.push("SSLOpenSSLConfCmd Options PrioritizeChaCha".into());
        }
        directives.push(format!("SSLSessionTickets {}", on_off(s.session_tickets)));
        let webroot = tls.webroot.to_string_lossy();
        let port = match tls.listen.port {
            443 => String::new(),
            port => format!(":{port}"),
        };
        Ok(Some(ApacheTls {
            profile: s.profile.name(),
            listen: tls.listen.to_string(),
            vhost: format!("*:{}", tls.listen.port),
            site_listen: tls.listen.port != APACHE_DEBIAN_TLS_PORT,
            directives,
            http2: tls.capabilities.http2,
            hsts: tls.hsts.as_ref().map(|h| quote::apache(h)),
            challenge_dir: q(&format!(
                "{}/{}/",
                webroot.trim_end_matches('/'),
                crate::acme::CHALLENGE_DIR
            ))?,
            redirect: quote::apache(&format!("https://%{{SERVER_NAME}}{port}%{{REQUEST_URI}}")),
            session_cache: quote::apache("shmcb:${DEPLOYCTL_RUN}/ssl_scache(512000)"),
            left_out: s.left_out.clone(),
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// systemd/cert.service.tera and systemd/cert.timer.tera

/// The renewal units (ACME on a server).
#[derive(Debug, Serialize)]
pub struct CertUnitsView {
    #[serde(flatten)]
    pub header: super::view::Header,
    pub cert: CertView,
}

#[derive(Debug, Serialize)]
pub struct CertView {
    pub description: String,
    pub service: String,
    pub user: String,
    pub group: String,
    /// `StateDirectory=`: `deployctl/NAME`, i.e. the plan's `/var/lib/deployctl/NAME`.
    pub state_directory: String,
    pub exec_start: String,
    /// `ExecStartPost=`: the front reloaded onto what was obtained, with full privileges (`+`).
    pub exec_reload_front: String,
    /// The front, as the comments name it (`nginx`, `Apache`), and its unit.
    pub front: &'static str,
    pub front_unit: String,
    pub timeout_secs: u64,
    /// The timer's `RandomizedDelaySec=`.
    pub randomized_delay: &'static str,
    pub hardening: super::view::Hardening,
}

impl CertUnitsView {
    pub fn new(plan: &Plan, header: super::view::Header) -> CertUnitsView {
        let units = plan.tls.as_ref().and_then(|t| t.cert_units.clone());
        let exec = units.as_ref().map(|u| u.exec.clone()).unwrap_or_default();
        let mut hardening = super::view::hardening(plan, exec.first().map(std::path::PathBuf::from));
        // It runs no Python: no JIT, no ctypes.
        hardening.memory_deny_write_execute = true;
        CertUnitsView {
            header,
            cert: CertView {
                description: quote::systemd_text(&format!(
                    "{}: obtain or renew the TLS certificate (ACME, rendered by deployctl)",
                    plan.name
                )),
                service: units.as_ref().map(|u| u.service.clone()).unwrap_or_default(),
                user: quote::systemd_text(&plan.spec.systemd.user),
                group: quote::systemd_text(&plan.spec.systemd.group),
                state_directory: format!("deployctl/{}", plan.name),
                exec_start: quote::systemd_exec(&exec),
                exec_reload_front: format!(
                    "+{}",
                    quote::systemd_exec(&units.as_ref().map(|u| u.reload.clone()).unwrap_or_default())
                ),
                front: plan.tls_front_name(),
                front_unit: match (plan.edge().tier, &plan.units) {
                    (crate::plan::Tier::Apache, _) => "apache2.service".to_string(),
                    (crate::plan::Tier::Embedded, Some(u)) => quote::systemd_text(&u.service),
                    _ => "nginx.service".to_string(),
                },
                timeout_secs: crate::plan::ACME_TIMEOUT_SECS * 2,
                randomized_delay: "1h",
                hardening,
            },
        }
    }
}
