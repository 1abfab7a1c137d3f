//! HTTPS in the plan: the front's TLS listener (nginx's, or Apache's with mod_ssl and the
//! modules it needs, [`apache_edge`]), where its certificate and key are read from,
//! the ACME webroot it serves, the profile resolved for the OpenSSL the front runs with, the
//! HSTS header, and (production with ACME) the renewal units. For the lone embedded server,
//! which terminates TLS itself: its listener on `[tls].listen`, its plain listener on
//! `[server].listen` (the challenge and the redirect) and its flags ([`embedded_edge`]); how a
//! front is reloaded onto a renewed certificate ([`front_reload`]).
//!
//! Owns: every TLS path and name — `/var/lib/deployctl/NAME/tls/` (ACME's certificate
//! directory, `live/` the pair in use) and `/var/lib/deployctl/NAME/acme/` (the webroot) on a
//! server, `tls/` and `acme/` in `up`'s run directory, `NAME-cert.service` and `.timer`.
//! Does not own: probing the front's OpenSSL (`crate::tls::probe_nginx`; the result comes in
//! through [`Plan::with_tls_capabilities`], so a plan stays a function of its inputs and the
//! snapshots pin a version), obtaining certificates (`acme`), or running anything.

use std::path::{Path, PathBuf};

use super::chain::Tier;
use super::model::*;
use crate::spec::{CertificateSource, Listen, Seconds};
use crate::tls::{Capabilities, Settings};

/// Where deployctl keeps a site's state on a server: `/var/lib/deployctl/NAME/`.
pub const STATE_ROOT: &str = "/var/lib/deployctl";

/// How long the ACME server gets to validate and to issue (`up`, `deployctl cert`).
pub const ACME_TIMEOUT_SECS: u64 = 90;

/// How a server's nginx is reloaded onto a renewed certificate (Debian's unit).
pub const RELOAD_NGINX: [&str; 3] = ["/usr/bin/systemctl", "reload", "nginx.service"];
/// How a server's Apache is reloaded (a graceful restart) onto a renewed certificate.
pub const RELOAD_APACHE: [&str; 3] = ["/usr/bin/systemctl", "reload", "apache2.service"];

/// The modules Apache needs to terminate TLS (`a2enmod` names, after the site's own): mod_ssl,
/// its session cache, and mod_rewrite for the HTTP listener's redirect.
const APACHE_TLS_MODULES: [&str; 3] = ["ssl", "socache_shmcb", "rewrite"];
/// HTTP/2 over TLS (`Protocols h2 http/1.1`), when the module is installed.
const APACHE_HTTP2_MODULE: &str = "http2";

/// `[tls]` resolved for one environment.
#[derive(Debug, Clone)]
pub struct TlsPlan {
    /// The front's HTTPS address (`[tls].listen`, or `up --tls-listen`).
    pub listen: Listen,
    /// What the front reads: the user's files, or `live/` of [`TlsPlan::cert_dir`].
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub source: CertificateSource,
    /// The certificate directory deployctl manages (account, `cert-N/`, `live`) when it
    /// makes the certificate itself (ACME, or the self-signed pair of a local run).
    pub cert_dir: Option<PathBuf>,
    /// Served at `/.well-known/acme-challenge/` by the HTTP listener; ACME's answers go here.
    pub webroot: PathBuf,
    /// The host names the certificate is for: `[server].names` as written that are exact DNS
    /// names.
    pub cert_names: Vec<String>,
    /// What the front's TLS library offers (probed, or [`Capabilities::BASELINE`]).
    pub capabilities: Capabilities,
    /// The profile resolved for [`TlsPlan::capabilities`].
    pub settings: Settings,
    /// The `Strict-Transport-Security` value; `None` when off.
    pub hsts: Option<String>,
    /// The units that renew the certificate on a server (ACME in production).
    pub cert_units: Option<CertUnits>,
    /// The lone embedded server's plain listener (`[server].listen`, `--redirect-bind`):
    /// the ACME challenge and the 301 to https. `None` for a front (its site has its own).
    pub embedded_http: Option<Listen>,
}

/// `NAME-cert.service` (oneshot: `deployctl cert`) and the daily `NAME-cert.timer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertUnits {
    pub service: String,
    pub timer: String,
    /// The command line of the service, program first.
    pub exec: Vec<String>,
    /// What reloads the front onto a new certificate, program first: nginx's unit, or the
    /// lone embedded server's own (a HUP: new workers read the pair).
    pub reload: Vec<String>,
}

/// The command that reloads a server's front onto a renewed certificate: `systemctl reload`
/// of nginx's or Apache's unit, or of the lone embedded server's own.
pub fn front_reload(plan: &Plan) -> Vec<String> {
    match (plan.edge().tier, &plan.units) {
        (Tier::Embedded, Some(units)) => vec![RELOAD_NGINX[0].to_string(), "reload".to_string(), units.service.clone()],
        (Tier::Apache, _) => RELOAD_APACHE.map(String::from).to_vec(),
        _ => RELOAD_NGINX.map(String::from).to_vec(),
    }
}

/// The `Strict-Transport-Security` header's value.
pub fn hsts_value(max_age: Seconds, preload: bool) -> String {
    let mut v = format!("max-age={}; includeSubDomains", max_age.0);
    if preload {
        v.push_str("; preload");
    }
    v
}

/// `[tls]` for this plan: `None` without the table, or when the edge is not a tier that
/// terminates TLS (nginx, Apache with mod_ssl, and the lone embedded server with rustls; a
/// lone app server has none, and `render` refuses the combination).
pub(super) fn resolve(plan: &Plan, names_written: &[String]) -> Option<TlsPlan> {
    let tls = plan.spec.tls.as_ref()?;
    match plan.edge().tier {
        Tier::Nginx | Tier::Apache => {}
        Tier::Embedded if plan.tiers.len() == 1 => {}
        _ => return None,
    }
    let name = &plan.name;
    let (cert_dir, webroot) = match &plan.environment {
        Environment::Production { .. } | Environment::Container => {
            let state = Path::new(STATE_ROOT).join(name);
            (state.join("tls"), state.join("acme"))
        }
        Environment::Local { socket_dir, .. } => {
            let files = RunFiles {
                dir: socket_dir.clone(),
            };
            (files.tls_dir(), files.acme_webroot())
        }
    };
    let live = cert_dir.join(crate::acme::LIVE);
    let (certificate, key, cert_dir) = match &tls.source {
        CertificateSource::Files { certificate, key } => (certificate.clone(), key.clone(), None),
        CertificateSource::Acme { .. } | CertificateSource::SelfSigned {} => (
            live.join(crate::acme::FULLCHAIN),
            live.join(crate::acme::PRIVKEY),
            Some(cert_dir),
        ),
    };
    // `[server].names` as written: a local run also answers `localhost` and its address, which
    // no public ACME server issues for (the self-signed pair adds `localhost` itself).
    let cert_names: Vec<String> = names_written.iter().filter(|n| is_dns_name(n)).cloned().collect();
    let cert_units = match (&plan.environment, &tls.source) {
        (Environment::Production { .. }, CertificateSource::Acme { .. }) => Some(CertUnits {
            service: format!("{name}-cert.service"),
            timer: format!("{name}-cert.timer"),
            exec: vec![
                plan.spec.systemd.deployctl.display().to_string(),
                "cert".into(),
                "--config".into(),
                plan.spec.path.display().to_string(),
                "--target".into(),
                plan.target.to_string(),
                // The unit reloads the front itself, with the privileges its sandbox lacks.
                "--no-reload".into(),
            ],
            reload: front_reload(plan),
        }),
        _ => None,
    };
    let capabilities = Capabilities::BASELINE;
    Some(TlsPlan {
        listen: tls.listen.clone(),
        certificate,
        key,
        source: tls.source.clone(),
        cert_dir,
        webroot,
        cert_names,
        capabilities,
        settings: crate::tls::resolve(tls.profile, capabilities.openssl),
        hsts: tls.hsts.map(|h| hsts_value(h, tls.hsts_preload)),
        cert_units,
        embedded_http: None,
    })
}

/// The lone embedded server terminates TLS itself: it listens on `[tls].listen` (its socket
/// unit's first `ListenStream=`, the first socket `up` hands it) instead of `[server].listen`,
/// and its command lines (`up`'s and the unit's) get `--certfile`, `--keyfile` and
/// `--tls-profile`. `[server].listen` becomes its plain listener (`--redirect-bind`: the
/// second `ListenStream=`, the second socket), which answers the ACME challenge from the
/// webroot (`--acme-webroot`) and 301s the rest to https for `[server].names`
/// (`--server-name`), as the nginx front's port-80 server does; `--hsts` is the front's value.
pub(super) fn embedded_edge(plan: &mut Plan) {
    let Some(tls) = &plan.tls else { return };
    if plan.tiers.len() != 1 || plan.edge().tier != Tier::Embedded {
        return;
    }
    let profile = plan.spec.tls.as_ref().map_or("intermediate", |t| t.profile.name());
    let bind = tls.listen.to_string();
    let http = match &plan.tiers[0].listen {
        Some(Address::Tcp(l)) => Some(l.clone()),
        Some(Address::Unix(_)) | None => None,
    };
    let mut flags = vec![
        "--certfile".to_string(),
        tls.certificate.display().to_string(),
        "--keyfile".to_string(),
        tls.key.display().to_string(),
        "--tls-profile".to_string(),
        profile.to_string(),
    ];
    if let Some(h) = &http {
        flags.extend(["--redirect-bind".to_string(), h.to_string()]);
        flags.extend(["--acme-webroot".to_string(), tls.webroot.display().to_string()]);
        for n in &plan.spec.server.names {
            flags.extend(["--server-name".to_string(), n.clone()]);
        }
    }
    if let Some(h) = &tls.hsts {
        flags.extend(["--hsts".to_string(), h.clone()]);
    }
    let patch = |args: &mut Vec<String>| {
        if let Some(at) = args.iter().position(|a| a == "--bind")
            && let Some(value) = args.get_mut(at + 1)
        {
            *value = bind.clone();
        }
        args.extend(flags.iter().cloned());
    };
    let listen = tls.listen.clone();
    if let Some(t) = plan.tls.as_mut() {
        t.embedded_http = http;
    }
    let edge = &mut plan.tiers[0];
    edge.listen = Some(Address::Tcp(listen));
    if let Some(p) = edge.process.as_mut() {
        patch(&mut p.args);
    }
    if let Some(exec) = edge.unit_exec.as_mut() {
        patch(exec);
    }
}

/// Apache at the edge with `[tls]`: the modules mod_ssl's virtual hosts need, added to the
/// site's (`LoadModule` lines of the self-contained configuration, `a2enmod` in production),
/// `http2` as the capabilities say ([`Plan::with_tls_capabilities`] calls this again).
pub(super) fn apache_edge(plan: &mut Plan) {
    let http2 = match &plan.tls {
        Some(tls) if plan.edge().tier == Tier::Apache => tls.capabilities.http2,
        _ => return,
    };
    let Some(apache) = plan.apache.as_mut() else { return };
    for m in APACHE_TLS_MODULES {
        if !apache.modules.contains(&m) {
            apache.modules.push(m);
        }
    }
    apache.modules.retain(|m| *m != APACHE_HTTP2_MODULE);
    if http2 {
        apache.modules.push(APACHE_HTTP2_MODULE);
    }
}

/// The renewal units, when the plan has them (and renders anything at all).
pub(super) fn outputs(plan: &Plan) -> Vec<Output> {
    let Some(units) = plan.tls.as_ref().and_then(|t| t.cert_units.as_ref()) else {
        return Vec::new();
    };
    if plan.outputs.is_empty() {
        return Vec::new();
    }
    let out = |kind, name: &str, validators: Vec<Validator>| Output {
        kind,
        path: format!("systemd/{name}"),
        mode: 0o644,
        validators,
    };
    vec![
        out(
            OutputKind::CertService,
            &units.service,
            vec![Validator::SystemdVerify, Validator::SystemdSecurity],
        ),
        out(OutputKind::CertTimer, &units.timer, vec![Validator::SystemdVerify]),
    ]
}

/// An exact DNS name (a certificate's subject alternative name): no pattern, no address.
fn is_dns_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with('.')
        && !n.ends_with('.')
        && !n.contains(['*', '~'])
        && n.parse::<std::net::IpAddr>().is_err()
}

impl Plan {
    /// The plan for a front whose TLS library offers `capabilities` (probed with
    /// `crate::tls::probe_nginx` or `probe_apache`): the profile's groups filtered by its
    /// OpenSSL, HTTP/2 when it has it (Apache: `mod_http2` loaded or not).
    pub fn with_tls_capabilities(mut self, capabilities: Capabilities) -> Plan {
        if let (Some(tls), Some(spec_tls)) = (self.tls.as_mut(), self.spec.tls.as_ref()) {
            tls.capabilities = capabilities;
            tls.settings = crate::tls::resolve(spec_tls.profile, capabilities.openssl);
        }
        apache_edge(&mut self);
        self
    }

    /// The front that terminates TLS, as the user knows it (`nginx`, `Apache`, the lone
    /// embedded server).
    pub fn tls_front_name(&self) -> &'static str {
        match self.edge().tier {
            Tier::Apache => "Apache",
            Tier::Embedded => "the embedded server",
            _ => "nginx",
        }
    }

    /// What the user installs for HTTPS on a server (`render` prints it): the renewal units,
    /// enabled, and a first `deployctl cert`.
    pub fn tls_install_steps(&self) -> Option<String> {
        let units = self.tls.as_ref()?.cert_units.as_ref()?;
        Some(format!(
            "once the site is installed, run `deployctl cert` as root: it puts a self-signed placeholder where the \
             site reads its certificate, reloads {front}, obtains the certificate through port 80 and reloads \
             {front} onto it; then install systemd/{} and systemd/{} into /etc/systemd/system and \
             `systemctl enable --now {}` (daily renewal)",
            units.service,
            units.timer,
            units.timer,
            front = self.tls_front_name()
        ))
    }

    /// Why this plan cannot be rendered with `[tls]`, when it cannot: a front that does not
    /// terminate TLS yet, or a server without a certificate source.
    pub fn tls_refusal(&self) -> Option<String> {
        if let Some(c) = &self.cluster {
            return c.tls_refusal.clone();
        }
        let spec_tls = self.spec.tls.as_ref()?;
        let target = self.target;
        if self.tls.is_none() {
            return Some(format!(
                "[tls] needs a front to terminate TLS: target `{target}` has none (use `nginx+{}`)",
                self.app().tier.name()
            ));
        }
        match (&self.environment, &spec_tls.source) {
            (Environment::Production { .. }, CertificateSource::SelfSigned {}) => Some(
                "[tls] on a server needs a certificate: set `certificate` and `key`, or `acme = { email = … }` \
                 (the self-signed pair is for `deployctl up` only)"
                    .into(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;

    fn spec(dir: &Path, tls: &str) -> Spec {
        let source = format!(
            "[app]\nname = \"shop\"\nentry = \"app:app\"\n[server]\nnames = [\"shop.example\", \"*.shop.example\"]\n[tls]\n{tls}"
        );
        Spec::from_source(&dir.join("deploy.toml"), &source).expect("a valid spec")
    }

    #[test]
    fn paths_names_and_units_per_environment() {
        let dir = tempfile::tempdir().unwrap();
        let target = "nginx+gunicorn".parse().unwrap();
        let s = spec(dir.path(), "certificate = \"a.pem\"\nkey = \"a.key\"\n");
        let plan = Plan::resolve(
            &s,
            target,
            Environment::Production {
                out: dir.path().join("out"),
            },
        );
        let tls = plan.tls.as_ref().expect("nginx terminates TLS");
        // The user's files, made absolute against deploy.toml's directory; no renewal units.
        assert_eq!(tls.certificate, dir.path().join("a.pem"));
        assert_eq!(tls.cert_dir, None);
        assert_eq!(tls.cert_units, None);
        assert_eq!(tls.webroot, Path::new("/var/lib/deployctl/shop/acme"));
        // The wildcard is served, but no certificate of ours is for it.
        assert_eq!(tls.cert_names, ["shop.example"]);

        let dir2 = tempfile::tempdir().unwrap();
        let s = spec(dir2.path(), "");
        let run = dir2.path().join(".deployctl/nginx+gunicorn");
        let local = Plan::resolve(
            &s,
            target,
            Environment::Local {
                conf_dir: run.join("conf"),
                socket_dir: run.clone(),
            },
        );
        let tls = local.tls.as_ref().expect("nginx terminates TLS");
        assert_eq!(tls.certificate, run.join("tls/live/fullchain.pem"));
        assert_eq!(tls.webroot, run.join("acme"));
        // The names as written: not the `localhost` a local run adds to what nginx answers.
        assert!(local.spec.server.names.contains(&"localhost".to_string()));
        assert_eq!(tls.cert_names, ["shop.example"]);
        assert_eq!(tls.hsts.as_deref(), Some("max-age=63072000; includeSubDomains"));
        // A lone app server has no front to terminate TLS: render refuses it.
        let lone = Plan::resolve(&s, "gunicorn".parse().unwrap(), Environment::Production { out: run });
        assert!(lone.tls.is_none());
        assert!(lone.tls_refusal().is_some_and(|w| w.contains("needs a front")));
    }

    #[test]
    fn apache_at_the_edge_loads_mod_ssl_and_http2_as_probed() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), "certificate = \"a.pem\"\nkey = \"a.key\"\n");
        let resolve = |target: &str| {
            Plan::resolve(
                &s,
                target.parse().unwrap(),
                Environment::Production {
                    out: dir.path().join("out"),
                },
            )
        };
        let plan = resolve("apache+gunicorn");
        assert!(plan.tls.is_some() && plan.tls_refusal().is_none());
        let modules = |p: &Plan| p.apache.as_ref().map(|a| a.modules.clone()).unwrap_or_default();
        for m in ["ssl", "socache_shmcb", "rewrite", "http2"] {
            assert!(modules(&plan).contains(&m), "{m}: {:?}", modules(&plan));
        }
        // Without mod_http2 on the machine, no HTTP/2 (and rewrite listed once).
        let plain = plan.with_tls_capabilities(Capabilities {
            openssl: crate::tls::OpensslVersion(3, 0, 19),
            http2: false,
            http2_directive: false,
        });
        assert!(!modules(&plain).contains(&"http2"));
        assert_eq!(modules(&plain).iter().filter(|m| **m == "rewrite").count(), 1);
        // Behind nginx, nginx terminates: Apache loads no mod_ssl.
        let behind = resolve("nginx+apache+mod_wsgi");
        assert!(!modules(&behind).contains(&"ssl"));
        assert_eq!(
            behind
                .tls
                .as_ref()
                .and_then(|t| t.cert_units.as_ref())
                .map(|u| u.reload.clone()),
            None
        );
    }
}
