//! `[tls]`: HTTPS at the front — its address, where the certificate comes from (files, ACME,
//! or a self-signed pair for a local run), Mozilla's profile, HSTS.
//!
//! Owns: the resolved table ([`Tls`]) and every rule on its keys (certificate and key go
//! together; ACME excludes them; ACME's HTTP-01 needs exact host names; preload needs HSTS
//! of a year or more). Does not own: the profile's ciphers (the CLI's `tls`), certificates
//! (`acme`), or where a certificate lives on a server (the plan).

use std::path::PathBuf;

use serde::{Serialize, Serializer};
use toml::Spanned;

use super::raw::{DurationOrInt, RawAcme, RawTls};
use super::resolve::{Resolver, parse_listen};
use super::units::{Seconds, parse_duration};
use super::{Listen, Server};
use crate::defaults;

/// A Mozilla server-side TLS configuration (guidelines 6.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsProfile {
    /// TLS 1.2 and 1.3, forward-secret AEAD ciphers only: general-purpose servers.
    Intermediate,
    /// TLS 1.3 only: clients from 2018 on.
    Modern,
}

impl TlsProfile {
    pub const ALL: [TlsProfile; 2] = [TlsProfile::Intermediate, TlsProfile::Modern];

    pub fn name(self) -> &'static str {
        match self {
            TlsProfile::Intermediate => "intermediate",
            TlsProfile::Modern => "modern",
        }
    }
}

impl std::fmt::Display for TlsProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for TlsProfile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for TlsProfile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TlsProfile, D::Error> {
        let name = String::deserialize(d)?;
        TlsProfile::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown TLS profile `{name}`")))
    }
}

/// `[tls]`, resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Tls {
    /// The front's HTTPS address; `[server].listen` then serves only ACME's challenges and
    /// a redirect. Default: [`crate::defaults::tls_listen`], `0.0.0.0:443`.
    pub listen: Listen,
    #[serde(flatten)]
    pub source: CertificateSource,
    /// Default: [`crate::defaults::TLS_PROFILE`].
    pub profile: TlsProfile,
    /// `Strict-Transport-Security: max-age=…`; `None`: "off". Default: [`crate::defaults::HSTS`].
    #[serde(serialize_with = "ser_hsts")]
    pub hsts: Option<Seconds>,
    /// `preload` in the header (hstspreload.org's list). Default: false.
    pub hsts_preload: bool,
}

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CertificateSource {
    /// `certificate` + `key`: the user's files (absolute).
    Files { certificate: PathBuf, key: PathBuf },
    /// `acme = {…}`: obtained and renewed by deployctl.
    Acme { acme: Acme },
    /// Neither: a self-signed pair for the names and `localhost` (a local run; `render`
    /// refuses it for a server).
    SelfSigned {},
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Acme {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The ACME directory URL. Default: [`crate::defaults::ACME_DIRECTORY`].
    pub directory: String,
    /// An extra root to trust for the ACME server's own HTTPS (Pebble, step-ca).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

fn ser_hsts<S: Serializer>(h: &Option<Seconds>, s: S) -> Result<S::Ok, S::Error> {
    match h {
        None => s.serialize_str("off"),
        Some(Seconds(n)) if *n % YEAR == 0 => s.serialize_str(&format!("{}y", n / YEAR)),
        Some(secs) => s.collect_str(secs),
    }
}

const YEAR: u64 = 365 * 86_400;
/// hstspreload.org refuses a `max-age` below one year.
const PRELOAD_MIN: u64 = YEAR;

/// A duration that may also be written in weeks or years (`"2y"`, HSTS's usual unit).
fn parse_long_duration(text: &str) -> Result<Seconds, String> {
    let t = text.trim();
    let scaled = |suffix: char, unit: u64| {
        t.strip_suffix(suffix)
            .and_then(|n| n.parse::<u64>().ok())
            .and_then(|n| n.checked_mul(unit))
    };
    if let Some(n) = scaled('y', YEAR).or_else(|| scaled('w', 7 * 86_400)) {
        return Ok(Seconds(n));
    }
    parse_duration(text).map_err(|e| format!("{e} (or y for years, w for weeks, or \"off\")"))
}

impl Resolver {
    pub(super) fn tls(&mut self, t: Option<Spanned<RawTls>>, server: &Server) -> Option<Tls> {
        let t = t?;
        let t = t.into_inner();
        let listen = match &t.listen {
            Some(l) => match parse_listen(l.get_ref()) {
                Ok(listen) => {
                    if listen.port == server.listen.port {
                        self.problem_hint(
                            l.span(),
                            "tls.listen",
                            format!("{listen} is on the port of [server].listen ({})", server.listen),
                            "HTTPS and HTTP need a port each, e.g. 443 and 80",
                        );
                    }
                    listen
                }
                Err(msg) => {
                    self.problem_hint(
                        l.span(),
                        "tls.listen",
                        msg,
                        "write `host:port`, e.g. \"0.0.0.0:443\" or \"[::]:8443\"",
                    );
                    defaults::tls_listen()
                }
            },
            None => defaults::tls_listen(),
        };
        let source = self.certificate_source(&t, server);
        let profile = match &t.profile {
            Some(p) => match p.get_ref().as_str() {
                "intermediate" => TlsProfile::Intermediate,
                "modern" => TlsProfile::Modern,
                other => {
                    self.problem(
                        p.span(),
                        "tls.profile",
                        format!("unknown profile {other:?}; expected \"intermediate\" or \"modern\""),
                    );
                    defaults::TLS_PROFILE
                }
            },
            None => defaults::TLS_PROFILE,
        };
        let hsts = match &t.hsts {
            Some(h) => {
                let parsed = match h.get_ref() {
                    DurationOrInt::Text(s) if s == "off" => Ok(None),
                    DurationOrInt::Text(s) => parse_long_duration(s).map(Some),
                    DurationOrInt::Int(n) => u64::try_from(*n)
                        .map(|n| Some(Seconds(n)))
                        .map_err(|_| format!("{n} is negative")),
                };
                match parsed {
                    Ok(Some(Seconds(0))) => {
                        self.problem_hint(
                            h.span(),
                            "tls.hsts",
                            "must be greater than zero",
                            "write \"off\" to send no Strict-Transport-Security header",
                        );
                        defaults_hsts()
                    }
                    Ok(v) => v,
                    Err(msg) => {
                        self.problem(h.span(), "tls.hsts", msg);
                        defaults_hsts()
                    }
                }
            }
            None => defaults_hsts(),
        };
        let hsts_preload = match &t.hsts_preload {
            Some(p) if *p.get_ref() => {
                match hsts {
                    None => self.problem(p.span(), "tls.hsts_preload", "needs HSTS: `hsts` is \"off\""),
                    Some(Seconds(n)) if n < PRELOAD_MIN => self.problem_hint(
                        p.span(),
                        "tls.hsts_preload",
                        format!("needs `hsts` of a year or more (it is {})", Seconds(n)),
                        "the preload list (hstspreload.org) refuses a shorter max-age: write hsts = \"2y\"",
                    ),
                    Some(_) => {}
                }
                true
            }
            Some(_) | None => false,
        };
        Some(Tls {
            listen,
            source,
            profile,
            hsts,
            hsts_preload,
        })
    }

    fn certificate_source(&mut self, t: &RawTls, server: &Server) -> CertificateSource {
        let file = |r: &mut Resolver, v: &Spanned<String>, key: &str| {
            let p = r.abs(v.get_ref());
            r.absolute_path(v.span(), key, &p);
            p
        };
        match (&t.certificate, &t.key, &t.acme) {
            (Some(c), Some(k), None) => CertificateSource::Files {
                certificate: file(self, c, "tls.certificate"),
                key: file(self, k, "tls.key"),
            },
            (Some(c), None, None) => {
                self.problem(
                    c.span(),
                    "tls.certificate",
                    "needs `key`, the certificate's private key",
                );
                CertificateSource::SelfSigned {}
            }
            (None, Some(k), None) => {
                self.problem(
                    k.span(),
                    "tls.key",
                    "needs `certificate`, the certificate it is the key of",
                );
                CertificateSource::SelfSigned {}
            }
            (c, k, Some(a)) => {
                if c.is_some() || k.is_some() {
                    self.problem_hint(
                        a.span(),
                        "tls.acme",
                        "cannot be used with `certificate` and `key`",
                        "either deployctl obtains the certificate (`acme`) or you give its files, not both",
                    );
                }
                CertificateSource::Acme {
                    acme: self.acme(a, server),
                }
            }
            (None, None, None) => CertificateSource::SelfSigned {},
        }
    }

    fn acme(&mut self, a: &Spanned<RawAcme>, server: &Server) -> Acme {
        let raw = a.get_ref();
        let email = raw.email.as_ref().map(|e| {
            let v = e.get_ref();
            let ok = v.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty() && host.contains('.') && !v.chars().any(|c| c.is_whitespace() || c.is_control())
            });
            if !ok {
                self.problem(e.span(), "tls.acme.email", format!("{v:?} is not an email address"));
            }
            v.clone()
        });
        let directory = match &raw.directory {
            Some(d) => {
                let v = d.get_ref();
                if !v.starts_with("https://") || v.len() <= "https://".len() || v.chars().any(char::is_whitespace) {
                    self.problem_hint(
                        d.span(),
                        "tls.acme.directory",
                        format!("{v:?} is not an https:// URL"),
                        "ACME servers are reached over HTTPS (RFC 8555 §6.1), e.g. \"https://acme-v02.api.letsencrypt.org/directory\"",
                    );
                }
                v.clone()
            }
            None => defaults::ACME_DIRECTORY.into(),
        };
        let ca = raw.ca.as_ref().map(|c| {
            let p = self.abs(c.get_ref());
            self.absolute_path(c.span(), "tls.acme.ca", &p);
            p
        });
        // HTTP-01 validates one exact host name at a time: no wildcard, no pattern.
        for n in &server.names {
            let exact = !n.is_empty()
                && !n.starts_with('.')
                && !n.ends_with('.')
                && !n.contains(['*', '~'])
                && n.parse::<std::net::IpAddr>().is_err();
            if !exact {
                self.problem_hint(
                    a.span(),
                    "tls.acme",
                    format!("cannot obtain a certificate for the server name {n:?} with HTTP-01"),
                    "ACME's HTTP-01 challenge validates exact host names: list those in [server].names, \
                     or give the certificate's files (`certificate`, `key`)",
                );
            }
        }
        Acme { email, directory, ca }
    }
}

fn defaults_hsts() -> Option<Seconds> {
    Some(defaults::HSTS)
}
