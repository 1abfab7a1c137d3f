//! TLS settings: Mozilla's server-side TLS guidelines 6.0, filtered by the OpenSSL the server
//! runs with.
//!
//! Owns: the two profiles (`intermediate`: TLS 1.2 and 1.3; `modern`: TLS 1.3 only) as data,
//! what each needs from OpenSSL (the `X25519MLKEM768` group needs 3.5), and reading the OpenSSL
//! version a server runs with and nginx's own version (how it turns HTTP/2 on) from its own
//! report (`nginx -V`). Source:
//! <https://ssl-config.mozilla.org/guidelines/6.0.json>.
//!
//! Does not own: certificates (`acme`), or how a config language spells these settings (the
//! templates and their views).

use std::fmt;

/// A Mozilla server-side TLS configuration: `[tls].profile` (`intermediate`: TLS 1.2 and 1.3;
/// `modern`: TLS 1.3 only).
pub use crate::spec::TlsProfile as Profile;

/// An OpenSSL version, as `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpensslVersion(pub u32, pub u32, pub u32);

impl OpensslVersion {
    /// From text holding `OpenSSL X.Y.Z` (the first such mention).
    pub fn find_in(text: &str) -> Option<OpensslVersion> {
        let at = text.find("OpenSSL ")?;
        let rest = &text[at + "OpenSSL ".len()..];
        let word: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        let mut parts = word.split('.').map(|p| p.parse::<u32>());
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Some(OpensslVersion(a, b, c)),
            (Some(Ok(a)), Some(Ok(b)), None) => Some(OpensslVersion(a, b, 0)),
            _ => None,
        }
    }

    /// The OpenSSL nginx runs with, from `nginx -V`: "running with OpenSSL …" when nginx says
    /// it differs from the one it was built with (the library loaded decides), else "built
    /// with OpenSSL …".
    pub fn of_nginx(nginx_v: &str) -> Option<OpensslVersion> {
        nginx_v
            .find("running with OpenSSL ")
            .and_then(|at| OpensslVersion::find_in(&nginx_v[at..]))
            .or_else(|| {
                nginx_v
                    .find("built with OpenSSL ")
                    .and_then(|at| OpensslVersion::find_in(&nginx_v[at..]))
            })
    }
}

impl OpensslVersion {
    /// The library's version from `openssl version` ("OpenSSL 3.0.19 27 Jan 2026 (Library:
    /// OpenSSL 3.0.19 …)"): the library's when the report names it, the tool's otherwise.
    pub fn of_openssl_version(report: &str) -> Option<OpensslVersion> {
        report
            .find("Library: ")
            .and_then(|at| OpensslVersion::find_in(&report[at..]))
            .or_else(|| OpensslVersion::find_in(report))
    }
}

impl fmt::Display for OpensslVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// What a front's TLS stack offers, as its own report says (`nginx -V`): the OpenSSL it runs
/// with, whether it has HTTP/2 and how nginx turns it on. An input of the plan
/// (`Plan::with_tls_capabilities`), so rendering stays a function of its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub openssl: OpensslVersion,
    pub http2: bool,
    /// nginx turns HTTP/2 on with the `http2 on;` directive (1.25.1 and later, which deprecate
    /// `listen … http2`), not with `listen`'s parameter (before 1.25.1, which have no such
    /// directive: Debian 12's 1.22). Not used for Apache.
    pub http2_directive: bool,
}

/// The first nginx whose `http2` directive replaces `listen … http2`.
pub const NGINX_HTTP2_DIRECTIVE_SINCE: NginxVersion = NginxVersion(1, 25, 1);

/// An nginx version, as `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NginxVersion(pub u32, pub u32, pub u32);

impl NginxVersion {
    /// From `nginx -V`'s first line, `nginx version: nginx/1.22.1` (a vendor suffix such as
    /// `(Ubuntu)` after it is ignored).
    pub fn of_nginx(nginx_v: &str) -> Option<NginxVersion> {
        let at = nginx_v.find("nginx version: nginx/")?;
        let rest = &nginx_v[at + "nginx version: nginx/".len()..];
        let word: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        let mut parts = word.split('.').map(|p| p.parse::<u32>());
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Some(NginxVersion(a, b, c)),
            _ => None,
        }
    }
}

impl Capabilities {
    /// What the plan assumes until a probe says otherwise (`render` on a machine without
    /// nginx): Debian 12's nginx 1.22 with OpenSSL 3.0 and HTTP/2 — the groups that need a
    /// newer OpenSSL are left out, so the configuration loads on any OpenSSL 3.
    pub const BASELINE: Capabilities = Capabilities {
        openssl: OpensslVersion(3, 0, 0),
        http2: true,
        http2_directive: false,
    };

    /// From `nginx -V`'s report: the OpenSSL it runs with, HTTP/2 when it was built with
    /// `--with-http_v2_module`, turned on by `http2 on;` from nginx 1.25.1 (a version it does
    /// not say is taken as older: `listen … http2` loads everywhere, with a warning on newer).
    pub fn of_nginx(nginx_v: &str) -> Option<Capabilities> {
        Some(Capabilities {
            openssl: OpensslVersion::of_nginx(nginx_v)?,
            http2: nginx_v.contains("--with-http_v2_module"),
            http2_directive: NginxVersion::of_nginx(nginx_v).is_some_and(|v| v >= NGINX_HTTP2_DIRECTIVE_SINCE),
        })
    }
}

/// The capabilities of the nginx on `PATH` (`nginx -V`, asked once per process); `None`
/// without nginx or when its report names no OpenSSL.
pub fn probe_nginx() -> Option<Capabilities> {
    let nginx = which::which("nginx").ok()?;
    let report = crate::validate::nginx::version_report(&nginx)?;
    Capabilities::of_nginx(&report)
}

/// The capabilities of Debian's Apache (`apache2 -v` answers, `mod_ssl` is installed; asked
/// once per process): the OpenSSL library mod_ssl loads (the system's `libssl`, as `openssl
/// version` reports it: Debian's mod_ssl links it dynamically) and HTTP/2 when `mod_http2` is
/// in the module directory. `None` without Apache, mod_ssl or an OpenSSL to ask.
pub fn probe_apache() -> Option<Capabilities> {
    static PROBED: std::sync::OnceLock<Option<Capabilities>> = std::sync::OnceLock::new();
    *PROBED.get_or_init(|| {
        let apache2 = crate::validate::apache::find().ok()?;
        let version = std::process::Command::new(&apache2).arg("-v").output().ok()?;
        if !version.status.success() {
            return None;
        }
        let modules = std::path::Path::new(crate::plan::APACHE_MODULE_DIR);
        if !modules.join("mod_ssl.so").is_file() {
            return None;
        }
        let openssl = std::process::Command::new(which::which("openssl").ok()?)
            .arg("version")
            .output()
            .ok()?;
        Some(Capabilities {
            openssl: OpensslVersion::of_openssl_version(&String::from_utf8_lossy(&openssl.stdout))?,
            http2: modules.join("mod_http2.so").is_file(),
            http2_directive: false,
        })
    })
}

/// A key-exchange group of the guidelines and the first OpenSSL that has it.
struct Group {
    name: &'static str,
    since: OpensslVersion,
}

/// Guidelines 6.0 `tls_curves`, in order (the same for both profiles).
const GROUPS: [Group; 4] = [
    // The hybrid post-quantum group: OpenSSL 3.5 (April 2025).
    Group {
        name: "X25519MLKEM768",
        since: OpensslVersion(3, 5, 0),
    },
    Group {
        name: "X25519",
        since: OpensslVersion(1, 1, 0),
    },
    Group {
        name: "prime256v1",
        since: OpensslVersion(1, 0, 0),
    },
    Group {
        name: "secp384r1",
        since: OpensslVersion(1, 0, 0),
    },
];

/// Guidelines 6.0 intermediate `ciphers.openssl` (TLS 1.2): the one list, shared with the
/// embedded server's rustls (`deployctl_common::tls_suites`).
fn intermediate_ciphers() -> Vec<&'static str> {
    deployctl_common::tls_suites::INTERMEDIATE_TLS12
        .iter()
        .map(|s| s.openssl)
        .collect()
}

/// Guidelines 6.0 `ciphersuites` (TLS 1.3), both profiles.
const CIPHERSUITES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Guidelines 6.0 `hsts_min_age`: two years.
pub const HSTS_MIN_AGE: u64 = 63_072_000;

/// A profile resolved for one OpenSSL: what a server's configuration says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub profile: Profile,
    /// In OpenSSL's spelling: `TLSv1.2`, `TLSv1.3`.
    pub protocols: Vec<&'static str>,
    /// TLS 1.2 ciphers, OpenSSL names; empty for `modern`.
    pub ciphers: Vec<&'static str>,
    /// TLS 1.3 cipher suites.
    pub ciphersuites: Vec<&'static str>,
    /// Key-exchange groups this OpenSSL has, in the guidelines' order.
    pub groups: Vec<&'static str>,
    /// Groups of the guidelines left out, and why (for the user's information).
    pub left_out: Vec<String>,
    /// The server's order of ciphers, with ChaCha20 first for a client that puts it first
    /// (OpenSSL's `PrioritizeChaCha`, see [`Settings::prioritize_chacha`]). The guidelines say
    /// "off" (every cipher here is strong), but testssl grades a server without an order HIGH
    /// ("NOT a cipher order configured"); with `PrioritizeChaCha` a client without AES-NI still
    /// gets ChaCha20-Poly1305, which is what "off" is for (gixy accepts the pair).
    pub prefer_server_ciphers: bool,
    /// `SSL_OP_PRIORITIZE_CHACHA` (nginx: `ssl_conf_command Options PrioritizeChaCha`).
    pub prioritize_chacha: bool,
    /// Session tickets off: with a ticket key that is never rotated they defeat forward
    /// secrecy, and nginx rotates none by itself.
    pub session_tickets: bool,
}

/// `profile` for a server running with `openssl`.
pub fn resolve(profile: Profile, openssl: OpensslVersion) -> Settings {
    let (protocols, ciphers) = match profile {
        Profile::Intermediate => (vec!["TLSv1.2", "TLSv1.3"], intermediate_ciphers()),
        Profile::Modern => (vec!["TLSv1.3"], Vec::new()),
    };
    let mut groups = Vec::new();
    let mut left_out = Vec::new();
    for g in &GROUPS {
        if openssl >= g.since {
            groups.push(g.name);
        } else {
            left_out.push(format!("{} (needs OpenSSL {}, this is {openssl})", g.name, g.since));
        }
    }
    Settings {
        profile,
        protocols,
        ciphers,
        ciphersuites: CIPHERSUITES.to_vec(),
        groups,
        left_out,
        prefer_server_ciphers: true,
        prioritize_chacha: true,
        session_tickets: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_from_nginx_v() {
        let v = "nginx version: nginx/1.22.1\nbuilt with OpenSSL 3.0.19 27 Jan 2026\nTLS SNI support enabled\n\
                 configure arguments: --with-http_ssl_module --with-http_v2_module";
        let c = Capabilities::of_nginx(v).expect("an OpenSSL");
        assert_eq!(c.openssl, OpensslVersion(3, 0, 19));
        assert!(c.http2);
        assert!(!c.http2_directive, "nginx 1.22 has no `http2` directive");
        let no_h2 = Capabilities::of_nginx("built with OpenSSL 3.5.0 8 Apr 2025").expect("an OpenSSL");
        assert!(!no_h2.http2);
        assert!(!no_h2.http2_directive, "no version said: `listen … http2`");
    }

    #[test]
    fn nginx_1_25_1_turns_http2_on_with_its_directive() {
        let report = |v: &str| {
            format!(
                "nginx version: nginx/{v}\nbuilt with OpenSSL 3.0.19 27 Jan 2026\nconfigure arguments: --with-http_v2_module"
            )
        };
        for (v, directive) in [
            ("1.22.1", false),
            ("1.25.0", false),
            ("1.25.1", true),
            ("1.26.3", true),
            ("1.27.4 (Ubuntu)", true),
            ("2.0.0", true),
        ] {
            let c = Capabilities::of_nginx(&report(v)).expect("an OpenSSL");
            assert_eq!(c.http2_directive, directive, "{v}");
        }
        assert_eq!(NginxVersion::of_nginx("nginx version: nginx/1.25"), None);
        assert_eq!(
            NginxVersion::of_nginx("nginx version: nginx/1.26.3\n"),
            Some(NginxVersion(1, 26, 3))
        );
    }

    #[test]
    fn the_openssl_nginx_runs_with_wins_over_the_one_it_was_built_with() {
        let v = "nginx version: nginx/1.22.1\nbuilt with OpenSSL 3.0.22 1 Jul 2026 (running with OpenSSL 3.0.19 27 Jan 2026)\nTLS SNI support enabled";
        assert_eq!(OpensslVersion::of_nginx(v), Some(OpensslVersion(3, 0, 19)));
        let v = "nginx version: nginx/1.26.0\nbuilt with OpenSSL 3.5.1 1 Jul 2025\nTLS SNI support enabled";
        assert_eq!(OpensslVersion::of_nginx(v), Some(OpensslVersion(3, 5, 1)));
        assert_eq!(OpensslVersion::of_nginx("nginx version: nginx/1.22.1"), None);
    }

    #[test]
    fn the_post_quantum_group_needs_openssl_3_5() {
        let old = resolve(Profile::Intermediate, OpensslVersion(3, 0, 19));
        assert_eq!(old.groups, ["X25519", "prime256v1", "secp384r1"]);
        assert_eq!(old.left_out.len(), 1);
        assert!(old.left_out[0].starts_with("X25519MLKEM768"), "{:?}", old.left_out);
        let new = resolve(Profile::Modern, OpensslVersion(3, 5, 0));
        assert_eq!(new.groups[0], "X25519MLKEM768");
        assert!(new.left_out.is_empty());
        assert!(new.ciphers.is_empty());
        assert_eq!(new.protocols, ["TLSv1.3"]);
    }
}
