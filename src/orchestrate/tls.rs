//! `up` with `[tls]`: the certificate pair the front starts with, and ACME's issuance once the
//! front serves the webroot.
//!
//! Owns: checking the user's pair before anything starts (the key — PKCS#8, SEC1 or PKCS#1 —
//! belongs to the certificate, the certificate has not expired: errors naming the file), the self-signed pair of a local
//! run without certificates, the placeholder the front starts on with ACME, asking the ACME
//! server once the front answers the challenge path, the health check of a TLS front (the
//! HTTP listener's 301, `[health]` over HTTPS) and the URL `up` prints for it. Does not own:
//! paths (the plan's `TlsPlan`), the ACME exchange (`acme`), or reloading the front
//! (`stack::Running`).

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use crate::acme::{self, Renewal};
use crate::plan::{Plan, TlsPlan};
use crate::printer::{Printer, hinted};
use crate::spec::{CertificateSource, display_path};

/// Renew ACME's certificate when fewer days than this are left (as `deployctl cert`).
pub const RENEW_MARGIN: Duration = Duration::from_secs(30 * 86_400);
/// How long the self-signed pair of a local run is valid.
const SELF_SIGNED_DAYS: u32 = 365;
/// How long ACME's placeholder is valid: until the first issuance, which `up` asks for at once.
const PLACEHOLDER_DAYS: u32 = 7;
/// How long the ACME server gets to validate and issue.
pub const ACME_TIMEOUT: Duration = Duration::from_secs(crate::plan::ACME_TIMEOUT_SECS);

/// The front's health with `[tls]`: its HTTP listener sends `[health].path` to HTTPS (a 301
/// whose `Location` is `https://…`), and `[health]` asked over HTTPS, with the name of the
/// URL `up` prints ([`https_url`]).
pub fn health_check(listen: std::net::SocketAddr, plan: &Plan, printer: &Printer) -> anyhow::Result<()> {
    let Some(tls) = &plan.tls else {
        return Ok(());
    };
    let spec = &plan.spec;
    let t = Duration::from_secs(spec.health.timeout.0);
    // The lone embedded server serves HTTPS only: no HTTP listener to ask.
    let location = if plan.edge().tier == crate::plan::Tier::Embedded {
        None
    } else {
        let host = spec.server.listen.browser_authority();
        let r = super::health::get(listen, &host, &spec.health.path, t)
            .with_context(|| format!("health check GET {} on {listen}", spec.health.path))?;
        let location = r.header("location").unwrap_or_default().to_string();
        if r.status != 301 || !location.starts_with("https://") {
            anyhow::bail!(
                "health check GET {} on {listen} answered {} (Location {location:?}), not a 301 to https://",
                spec.health.path,
                r.status
            );
        }
        Some(location)
    };
    let https = probe_addr(&tls.listen)?;
    let (name, authority) = https_authority(plan, tls);
    let r = super::health::get_tls(https, &name, &authority, &spec.health.path, t)
        .with_context(|| format!("health check GET {} over HTTPS on {https}", spec.health.path))?;
    if !spec.health.accepts(r.status) {
        return Err(hinted(
            format!(
                "health check GET {} over HTTPS answered {}, expected {} ([health] in {})",
                spec.health.path,
                r.status,
                spec.health.wanted(),
                display_path(&spec.path)
            ),
            "the app's log lines above show why",
        ));
    }
    let http = match location {
        Some(location) => format!("; HTTP answers 301 {location}"),
        None => String::new(),
    };
    printer.status(
        "health",
        &format!("GET {} → {} over HTTPS{http}", spec.health.path, r.status),
    );
    Ok(())
}

/// The name a browser on this machine asks HTTPS for, and the authority of the URL: the
/// listen host when it is a name the front serves, else `localhost` (every local run serves
/// it; a URL with an IP address sends no name, and the front refuses such a handshake).
fn https_authority(plan: &Plan, tls: &TlsPlan) -> (String, String) {
    let host = tls.listen.browser_host();
    let name = if host.parse::<std::net::IpAddr>().is_err()
        && !host.starts_with('[')
        && plan.spec.server.names.contains(&host)
    {
        host
    } else {
        "localhost".to_string()
    };
    let authority = match tls.listen.port {
        443 => name.clone(),
        port => format!("{name}:{port}"),
    };
    (name, authority)
}

/// The URL `up` prints for a stack with `[tls]`: `https://localhost:PORT/`.
pub fn https_url(plan: &Plan) -> Option<String> {
    let tls = plan.tls.as_ref()?;
    Some(format!("https://{}/", https_authority(plan, tls).1))
}

/// Where to connect to reach `listen` from this machine (loopback for 0.0.0.0 and ::).
fn probe_addr(listen: &crate::spec::Listen) -> anyhow::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs as _;
    let text = format!("{}:{}", listen.browser_host(), listen.port);
    text.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| format!("cannot resolve {text}"))
}

/// What is left to do once the front serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    Nothing,
    /// Obtain a certificate from the ACME server (the front serves a placeholder or an old
    /// certificate meanwhile), for this reason.
    Acme(Renewal),
}

/// Before anything starts (and before a reload takes over): the pair the front will read is
/// there and usable. The user's files are checked; a local run without files gets a
/// self-signed pair; with ACME, the front starts on the live certificate, or a placeholder
/// when there is none yet or it has expired.
pub fn prepare(plan: &Plan, printer: &Printer) -> anyhow::Result<Pending> {
    let Some(tls) = &plan.tls else {
        return Ok(Pending::Nothing);
    };
    match &tls.source {
        CertificateSource::Files { certificate, key } => {
            check_pair(certificate, key)?;
            Ok(Pending::Nothing)
        }
        CertificateSource::SelfSigned {} => {
            let dir = cert_dir(tls)?;
            let names = &tls.cert_names;
            let renewal = acme::renewal(dir, names, Duration::from_secs(86_400), SystemTime::now())?;
            // Our own pair: renewed when a name is missing or it is about to end.
            if matches!(
                renewal,
                Renewal::Missing | Renewal::Names { .. } | Renewal::Expiring { .. }
            ) {
                // Also for the address `up` prints, when it is an IP address.
                let mut all = names.clone();
                let host = tls.listen.browser_host();
                let ip = host.trim_start_matches('[').trim_end_matches(']');
                if ip.parse::<std::net::IpAddr>().is_ok() {
                    all.push(ip.to_string());
                }
                acme::install_self_signed(dir, &all, SELF_SIGNED_DAYS)?;
            }
            printer.warn(&format!(
                "HTTPS on {} uses a self-signed certificate for {} (browsers warn about it): [tls] has neither \
                 `certificate` and `key` nor `acme`",
                tls.listen,
                names.join(", ")
            ));
            Ok(Pending::Nothing)
        }
        CertificateSource::Acme { .. } => {
            let dir = cert_dir(tls)?;
            let renewal = acme::renewal(dir, &tls.cert_names, RENEW_MARGIN, SystemTime::now())?;
            let usable = match &renewal {
                Renewal::Missing | Renewal::Names { .. } => false,
                Renewal::Expiring { days_left } => *days_left >= 0,
                Renewal::SelfSigned | Renewal::NotYet { .. } => true,
            };
            if !usable {
                acme::install_self_signed(dir, &tls.cert_names, PLACEHOLDER_DAYS)?;
            }
            Ok(if renewal.needed() {
                Pending::Acme(renewal)
            } else {
                Pending::Nothing
            })
        }
    }
}

/// Asks the ACME server for a certificate for the plan's names (the front must be serving
/// the webroot on `[server].listen`); it becomes the live one once [`check_pair`] accepts it
/// (before `live` is switched). The caller reloads the front.
pub fn obtain(plan: &Plan) -> anyhow::Result<acme::Certificate> {
    let tls = plan.tls.as_ref().context("the plan has no [tls]")?;
    let CertificateSource::Acme { acme: a } = &tls.source else {
        anyhow::bail!("[tls] has no `acme`");
    };
    let dir = cert_dir(tls)?;
    acme::obtain(
        &acme::Request {
            directory: &a.directory,
            email: a.email.as_deref(),
            ca: a.ca.as_deref(),
            names: &tls.cert_names,
            webroot: &tls.webroot,
            dir,
            timeout: ACME_TIMEOUT,
        },
        &check_pair,
    )
}

fn cert_dir(tls: &TlsPlan) -> anyhow::Result<&Path> {
    tls.cert_dir
        .as_deref()
        .context("the plan keeps no certificate directory for these files")
}

/// The user's certificate and key: readable, the certificate valid now, the key its own.
pub fn check_pair(certificate: &Path, key: &Path) -> anyhow::Result<()> {
    let cert_pem = std::fs::read(certificate).with_context(|| format!("reading {}", display_path(certificate)))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&cert_pem).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a PEM certificate ({e}): [tls].certificate names the certificate chain, leaf first",
            display_path(certificate)
        )
    })?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("{}: not an X.509 certificate: {e}", display_path(certificate)))?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        return Err(hinted(
            format!(
                "{}: the certificate expired on {}",
                display_path(certificate),
                validity.not_after
            ),
            "renew it, or let deployctl obtain one: `acme = { email = … }` in [tls]",
        ));
    }
    if validity.not_before > now {
        anyhow::bail!(
            "{}: the certificate is not valid before {}",
            display_path(certificate),
            validity.not_before
        );
    }
    let key_pem = std::fs::read(key).with_context(|| format!("reading {}", display_path(key)))?;
    // The key's public half, in any of the forms nginx and Apache read: PKCS#8 (`PRIVATE
    // KEY`, certbot's and `openssl genpkey`'s), SEC1 (`EC PRIVATE KEY`) and PKCS#1 (`RSA
    // PRIVATE KEY`), through rustls's ring signer. A key it cannot read (encrypted, another
    // algorithm) is left to the front to judge.
    if let Some(public) = public_key_of(&key_pem)
        && public.as_slice() != cert.public_key().raw
    {
        return Err(hinted(
            format!(
                "{}: the key does not match the certificate {}",
                display_path(key),
                display_path(certificate)
            ),
            "[tls].key must be the private key of [tls].certificate's first certificate",
        ));
    }
    Ok(())
}

/// The SubjectPublicKeyInfo (DER) of the first private key in `pem`, whatever its form
/// (PKCS#8, SEC1, PKCS#1), or `None` when there is none that ring reads.
fn public_key_of(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject as _;
    let der = PrivateKeyDer::from_pem_slice(pem).ok()?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der).ok()?;
    signer.public_key().map(|spki| spki.as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A self-signed pair for localhost from `openssl req` (`newkey`: `ec`/`rsa:2048`), its
    /// key also written in the traditional form (`openssl ec`, `openssl rsa -traditional`: SEC1 or
    /// PKCS#1): (certificate, PKCS#8 key, traditional key).
    fn pair(dir: &Path, name: &str, newkey: &str) -> (PathBuf, PathBuf, PathBuf) {
        let (c, k, t) = (format!("{name}.crt"), format!("{name}.key"), format!("{name}.trad.key"));
        let mut args = vec!["req", "-x509", "-newkey", newkey];
        if newkey == "ec" {
            args.extend(["-pkeyopt", "ec_paramgen_curve:P-256"]);
        }
        args.extend([
            "-nodes",
            "-keyout",
            &k,
            "-out",
            &c,
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(dir, &args);
        // `openssl ec` writes SEC1; `openssl rsa` writes PKCS#8 unless told otherwise.
        match newkey {
            "ec" => openssl(dir, &["ec", "-in", &k, "-out", &t]),
            _ => openssl(dir, &["rsa", "-traditional", "-in", &k, "-out", &t]),
        }
        (dir.join(c), dir.join(k), dir.join(t))
    }

    /// SEC1 and PKCS#1 keys are compared as PKCS#8 ones are: their own certificate's passes,
    /// another's is refused naming the key file.
    #[test]
    fn keys_in_every_pem_form_are_compared_with_the_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for newkey in ["ec", "rsa:2048"] {
            let (cert, pkcs8, trad) = pair(dir, "a", newkey);
            let (_, other_pkcs8, other_trad) = pair(dir, "b", newkey);
            let header = if newkey == "ec" {
                "BEGIN EC PRIVATE KEY"
            } else {
                "BEGIN RSA PRIVATE KEY"
            };
            assert!(std::fs::read_to_string(&trad).unwrap().contains(header));
            super::check_pair(&cert, &pkcs8).unwrap();
            super::check_pair(&cert, &trad).unwrap();
            for other in [&other_pkcs8, &other_trad] {
                let err = format!("{:#}", super::check_pair(&cert, other).unwrap_err());
                assert!(
                    err.contains(&format!("{}: the key does not match the certificate", other.display())),
                    "{newkey}: {err}"
                );
            }
        }
    }
}
