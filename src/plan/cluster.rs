//! The cluster targets, `kubernetes` and `compose`: the container environment of the plan
//! (TCP, no units, the project at `/app`) with the facts a cluster engine needs — resource
//! names and labels, the image and how it is built, the container's command, port, probes,
//! writable directories, the environment and the secrets it names, the Ingress's hosts and
//! annotations, `[tls]` (the Ingress's Secret and cert-manager's Issuer; Compose's nginx with
//! the user's pair mounted, and what neither can render), and for Compose the nginx container
//! in front.
//!
//! Owns: every derived fact of the manifests, the Compose file and the Containerfile.
//! Does not own: `[cluster]`'s keys and defaults (`spec`), YAML or Containerfile syntax
//! (`render`), running the validators (`validate`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::chain::Tier;
use super::model::*;
use super::policy;
use crate::spec::{CertificateSource, Listen, Spec};
use crate::target::{Backend, Frontend, Target};
use crate::tls::Capabilities;

/// A target rendered for a cluster engine rather than one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterKind {
    /// Kubernetes manifests: the app's pods behind an ingress-nginx Ingress.
    Kubernetes,
    /// A Compose file: the app's container behind an nginx container.
    Compose,
}

impl ClusterKind {
    pub const ALL: [ClusterKind; 2] = [ClusterKind::Kubernetes, ClusterKind::Compose];

    pub fn name(self) -> &'static str {
        match self {
            ClusterKind::Kubernetes => "kubernetes",
            ClusterKind::Compose => "compose",
        }
    }

    /// `--target NAME`, when it names a cluster target.
    pub fn parse(name: &str) -> Option<ClusterKind> {
        ClusterKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The chain run inside: the embedded server alone in a pod (the Ingress is the front);
    /// nginx in front of it in Compose.
    fn target(self) -> Target {
        match self {
            ClusterKind::Kubernetes => Target::new(Frontend::None, Backend::Embedded),
            ClusterKind::Compose => Target::new(Frontend::Nginx, Backend::Embedded),
        }
    }
}

/// The uid and gid the app runs as in its image: numeric, so that `runAsNonRoot` can be
/// verified by the kubelet (a user name cannot be).
pub const APP_UID: u32 = 10001;
/// Where Compose's static-files volume is mounted (one subdirectory per `[[static]]`).
pub const STATIC_VOLUME_DIR: &str = "/srv/static";
/// The directories the server may write on a read-only root filesystem: Python's and the
/// server's temporary files (`TMPDIR`).
pub const WRITABLE_DIRS: [&str; 1] = ["/tmp"];
/// The image the Containerfile builds on and runs from: the CPython the server is compiled
/// against is the one the app runs on.
pub const PYTHON_IMAGE: &str = "python:3.11-slim-bookworm";
/// The Rust toolchain of the build stage (the same Debian release as the Python image).
pub const RUST_IMAGE: &str = "rust:1-slim-bookworm";
/// The nginx image of the Compose file.
pub const NGINX_IMAGE: &str = "nginx:1.26-bookworm";
/// What [`NGINX_IMAGE`]'s nginx offers for `[tls]`: nginx 1.26, built with
/// `--with-http_v2_module` against Debian 12's OpenSSL 3.0, so HTTP/2 is turned on by
/// `http2 on;` (the listen parameter is deprecated there). The plan's input for Compose, in
/// place of the host's nginx, which does not run the site.
pub const NGINX_IMAGE_CAPABILITIES: Capabilities = Capabilities {
    openssl: crate::tls::OpensslVersion(3, 0, 0),
    http2: true,
    http2_directive: true,
};
/// Where Compose mounts the rendered site in nginx's container: in place of the image's
/// default server.
pub const NGINX_SITE_IN_CONTAINER: &str = "/etc/nginx/conf.d/default.conf";
/// Where nginx writes on a read-only root filesystem: its temp paths, its pid file (the
/// image's `/var/run` is a link to `/run`).
pub const NGINX_WRITABLE: [&str; 3] = ["/var/cache/nginx", "/run", "/tmp"];
/// The build context (`--build-context deployctl=DIR`) holding deployctl's source tree.
pub const SOURCE_CONTEXT: &str = "deployctl";

/// What the image's build copies of deployctl's source tree: the workspace's manifests and
/// the crates' sources (the templates are embedded at build time, the bench target is
/// declared in the manifest); not `target/`, the tests and their virtualenvs, the examples.
pub const SOURCE_PATHS: [&str; 9] = [
    "Cargo.toml",
    "Cargo.lock",
    "src",
    "templates",
    "bench/render.rs",
    "common",
    "server/Cargo.toml",
    "server/build.rs",
    "server/src",
];

/// A probe of `[health]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub period_secs: u64,
    pub timeout_secs: u64,
    pub failure_threshold: u64,
}

/// The cluster facts of a plan.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    pub kind: ClusterKind,
    /// `[tls]`: the Ingress's TLS (Kubernetes), nginx's HTTPS (Compose).
    pub tls: Option<ClusterTls>,
    /// Why this target cannot render deploy.toml's `[tls]`, when it cannot.
    pub tls_refusal: Option<String>,
    /// The resources' name: `[app].name` as an RFC 1035 label.
    pub name: String,
    pub namespace: Option<String>,
    /// On every resource; the first two select the pods.
    pub labels: Vec<(String, String)>,
    pub image: String,
    /// The app container's port, and what it binds.
    pub port: u16,
    /// What Compose publishes: deploy.toml's listen address (its port; its host unless that
    /// is every address).
    pub public: Listen,
    /// The app container's command line, program first: `deployctl serve …`.
    pub command: Vec<String>,
    /// `[app].env`, from a ConfigMap (Kubernetes) or written in the file (Compose).
    pub env: BTreeMap<String, String>,
    pub config_map: String,
    /// `[app].secret_env`: keys of the Secret `secret` (Kubernetes), variables of the
    /// environment `docker-compose` runs in (Compose).
    pub secret_env: Vec<String>,
    pub secret: String,
    pub health_path: String,
    pub startup: Probe,
    pub readiness: Probe,
    pub liveness: Probe,
    /// The image's `HEALTHCHECK` and Compose's healthcheck of the app: the same request as
    /// the probes, made by the image's Python.
    pub health_command: Vec<String>,
    /// The `preStop` pause that lets endpoints drain before TERM.
    pub drain_secs: u64,
    /// The pause, the graceful timeout and the server's stop slack.
    pub termination_grace_secs: u64,
    pub workers: u32,
    pub writable_dirs: Vec<PathBuf>,
    /// Ingress hosts (`[server].names` Kubernetes can match); empty: every host.
    pub ingress_hosts: Vec<String>,
    /// ingress-nginx's annotations: the nginx target's settings.
    pub ingress_annotations: Vec<(String, String)>,
    /// `[[static]]` in the image (the source) and where Compose's nginx serves it from.
    pub statics: Vec<(PathBuf, PathBuf)>,
    /// Compose's one-shot copy of `[[static]]` from the image to the volume nginx serves it
    /// from (none without `[[static]]`).
    pub static_copy: Option<Vec<String>>,
    /// Compose's health check of nginx: a request with the first exact server name (nginx
    /// answers only its names); none when every name is a wildcard.
    pub nginx_health_command: Option<Vec<String>>,
    pub build: ImageBuild,
}

/// What the Containerfile needs.
#[derive(Debug, Clone)]
pub struct ImageBuild {
    pub python_image: &'static str,
    pub rust_image: &'static str,
    /// The project inside the image (deploy.toml's directory).
    pub app_dir: PathBuf,
    pub venv: PathBuf,
    /// The requirements file relative to the build context (the project), when it is in it.
    pub requirements: Option<String>,
    pub deployctl: PathBuf,
    pub source_context: &'static str,
    /// What it copies of that context ([`SOURCE_PATHS`]).
    pub source_paths: &'static [&'static str],
    /// What the build context (the project) leaves out: [`IGNORE_PATTERNS`], and these
    /// paths relative to it (the local virtualenv, the rendered files).
    pub ignore_paths: Vec<String>,
}

/// `[tls]` on a cluster target: terminated by ingress-nginx (Kubernetes, the pair in a Secret
/// of type `kubernetes.io/tls`) or by Compose's nginx (the user's files mounted read-only).
#[derive(Debug, Clone)]
pub struct ClusterTls {
    /// The Secret the Ingress reads the pair from: `NAME-tls` (cert-manager writes it with
    /// ACME; the user creates it from the files otherwise).
    pub secret: String,
    /// The Ingress's TLS hosts: with ACME the exact names (HTTP-01 issues no wildcard), else
    /// every Ingress host.
    pub hosts: Vec<String>,
    /// The user's certificate and key (`[tls].certificate`, `key`); none with ACME.
    pub files: Option<(PathBuf, PathBuf)>,
    /// cert-manager's Issuer, with `[tls].acme`.
    pub issuer: Option<AcmeIssuer>,
    /// `Strict-Transport-Security: max-age` in seconds and `preload`; `None`: off.
    pub hsts: Option<(u64, bool)>,
    pub profile: crate::spec::TlsProfile,
    /// Compose: where nginx's container reads the pair (the files mounted there).
    pub mounted: Option<(PathBuf, PathBuf)>,
    /// Compose: the HTTPS port published (`[tls].listen`'s), and the address it is on.
    pub public: Listen,
}

/// A namespaced cert-manager `Issuer` for ACME with the HTTP-01 solver through
/// ingress-nginx.
#[derive(Debug, Clone)]
pub struct AcmeIssuer {
    /// `NAME-acme`.
    pub name: String,
    /// `[tls].acme.directory`.
    pub server: String,
    pub email: Option<String>,
    /// The Secret cert-manager keeps the ACME account's key in: `NAME-acme-account`.
    pub account_secret: String,
    /// `[tls].acme.ca`: the extra root for the ACME server's HTTPS, whose PEM goes into
    /// `caBundle` ([`Plan::with_acme_ca`]: read by the command, not the plan).
    pub ca: Option<PathBuf>,
    pub ca_pem: Option<String>,
}

/// Where Compose's nginx reads the user's certificate and key (mounted read-only).
pub const NGINX_TLS_DIR: &str = "/etc/nginx/tls";

/// What an image's build context never needs: version control, `up`'s run directories,
/// Python's caches.
pub const IGNORE_PATTERNS: [&str; 3] = [".git", ".deployctl", "**/__pycache__"];

impl Plan {
    /// The plan of a cluster target: the container environment, with its cluster facts.
    pub fn resolve_cluster(spec: &Spec, kind: ClusterKind) -> Plan {
        let mut spec = spec.clone();
        // [tls] is terminated by the Ingress (Kubernetes: not a tier of the plan) or by
        // Compose's nginx (the nginx tier's TLS, with the container's paths).
        let spec_tls = match kind {
            ClusterKind::Kubernetes => spec.tls.take(),
            ClusterKind::Compose => spec.tls.clone(),
        };
        let tls_refusal = spec_tls
            .as_ref()
            .and_then(|t| cluster_tls_refusal(kind, t, &spec.server.names));
        if tls_refusal.is_some() {
            spec.tls = None;
        }
        let public = spec.server.listen.clone();
        let mut ignore_paths = Vec::new();
        for inside in [&spec.app.venv, &spec.render.out] {
            if let Ok(rel) = inside.strip_prefix(spec.dir())
                && !rel.as_os_str().is_empty()
            {
                ignore_paths.push(rel.display().to_string());
            }
        }
        // Probes and the Service reach the container on its own address, not loopback.
        spec.server.listen.host = "0.0.0.0".into();
        // One worker per requested core: a pod sees every core of its node, not its share.
        let workers = spec
            .backend
            .workers
            .unwrap_or_else(|| spec.cluster.cpu_milli.div_ceil(1000).max(1) as u32);
        spec.backend.workers = Some(workers);
        // The image's virtualenv is made by its build: where deploy.toml puts it inside the
        // project, else at the project's `.venv` (a path of this machine means nothing there).
        if !spec.app.venv.starts_with(spec.dir()) {
            spec.app.venv = spec.dir().join(deployctl_common::defaults::VENV);
        }
        if kind == ClusterKind::Compose {
            // nginx reaches the app from its own container: the app's port is on the
            // project's network only (not published), so the headers of whoever reaches it
            // are nginx's.
            spec.server.forwarded_allow_ips = vec!["*".into()];
        }
        // The app alone in its container: what the pod runs, and Compose's app container.
        // Without [tls]: the app serves HTTP on its own port whoever terminates TLS.
        let alone = Plan::resolve(
            &Spec {
                tls: None,
                ..spec.clone()
            },
            ClusterKind::Kubernetes.target(),
            Environment::Container,
        );
        let mut plan = match kind {
            ClusterKind::Kubernetes => alone.clone(),
            ClusterKind::Compose => {
                let mut p = Plan::resolve(&spec, kind.target(), Environment::Container);
                let app_listen = alone.app().listen.clone();
                if let (Some(Address::Tcp(l)), Some(link)) = (&app_listen, p.tiers[0].next.as_mut()) {
                    link.transport = Transport::Tcp(Listen {
                        host: "app".into(),
                        port: l.port,
                    });
                }
                if let Some(last) = p.tiers.last_mut() {
                    *last = alone.app().clone();
                }
                p
            }
        };
        let app = alone.app();
        let port = match &app.listen {
            Some(Address::Tcp(l)) => l.port,
            Some(Address::Unix(_)) | None => CONTAINER_EDGE_PORT,
        };
        let command = app
            .process
            .as_ref()
            .map(|p| {
                let mut argv = vec![p.program.path().map(|p| p.display().to_string()).unwrap_or_default()];
                argv.extend(p.args.iter().cloned());
                argv
            })
            .unwrap_or_default();
        let name = resource_name(&plan.name);
        let s = &plan.spec;
        let health_timeout = s.health.timeout.0;
        let graceful = s.backend.graceful_timeout.0;
        let statics: Vec<(PathBuf, PathBuf)> = s
            .statics
            .iter()
            .enumerate()
            .map(|(i, st)| (st.dir.clone(), Path::new(STATIC_VOLUME_DIR).join(i.to_string())))
            .collect();
        let requirements = s
            .app
            .requirements
            .as_ref()
            .and_then(|r| r.strip_prefix(CONTAINER_APP).ok())
            .map(|r| r.display().to_string());
        let tls = match (&spec_tls, &tls_refusal) {
            (Some(t), None) => Some(cluster_tls(kind, t, &name, &s.server.names)),
            _ => None,
        };
        let cluster = ClusterPlan {
            kind,
            ingress_annotations: ingress_annotations(&plan, tls.as_ref()),
            tls,
            tls_refusal,
            name: name.clone(),
            namespace: s.cluster.namespace.clone(),
            labels: vec![
                ("app.kubernetes.io/name".into(), name.clone()),
                ("app.kubernetes.io/component".into(), "app".into()),
                ("app.kubernetes.io/managed-by".into(), "deployctl".into()),
            ],
            image: s.cluster.image.clone(),
            port,
            public,
            command,
            env: s.app.env.clone(),
            config_map: format!("{name}-env"),
            secret_env: s.app.secret_env.clone(),
            secret: format!("{name}-secrets"),
            health_path: s.health.path.clone(),
            startup: Probe {
                period_secs: policy::STARTUP_PROBE_PERIOD_SECS,
                timeout_secs: health_timeout,
                failure_threshold: policy::STARTUP_BUDGET_SECS.div_ceil(policy::STARTUP_PROBE_PERIOD_SECS),
            },
            readiness: Probe {
                period_secs: policy::READINESS_PROBE_PERIOD_SECS,
                timeout_secs: health_timeout,
                failure_threshold: policy::READINESS_FAILURES,
            },
            liveness: Probe {
                period_secs: policy::LIVENESS_PROBE_PERIOD_SECS,
                timeout_secs: health_timeout,
                failure_threshold: policy::LIVENESS_FAILURES,
            },
            health_command: health_command(&s.app.venv, port, &s.health.path, s.health.expect, health_timeout),
            drain_secs: policy::DRAIN_SECS,
            termination_grace_secs: policy::DRAIN_SECS + graceful + policy::STOP_SLACK_SECS,
            workers,
            writable_dirs: WRITABLE_DIRS.iter().map(PathBuf::from).collect(),
            ingress_hosts: ingress_hosts(&s.server.names),
            static_copy: (kind == ClusterKind::Compose).then(|| static_copy(&statics)).flatten(),
            nginx_health_command: nginx_health_command(&plan, &s.health.path),
            statics: statics.clone(),
            build: ImageBuild {
                python_image: PYTHON_IMAGE,
                rust_image: RUST_IMAGE,
                app_dir: PathBuf::from(CONTAINER_APP),
                venv: s.app.venv.clone(),
                requirements,
                deployctl: PathBuf::from(CONTAINER_DEPLOYCTL),
                source_context: SOURCE_CONTEXT,
                source_paths: &SOURCE_PATHS,
                ignore_paths,
            },
        };
        if kind == ClusterKind::Compose {
            // Compose's nginx serves [[static]] from the volume the image's files are copied to.
            for (st, (_, served)) in plan.spec.statics.iter_mut().zip(&statics) {
                st.dir = served.clone();
            }
        }
        if let (Some(ct), Some(ptls)) = (&cluster.tls, plan.tls.as_mut()) {
            // Compose's nginx reads the pair where it is mounted and listens on every
            // address of its container, on [tls].listen's port (the one published, so the
            // redirect's port is the client's).
            if let Some((certificate, key)) = &ct.mounted {
                ptls.certificate = certificate.clone();
                ptls.key = key.clone();
            }
            ptls.listen.host = "0.0.0.0".into();
        }
        plan.cluster = Some(cluster);
        plan.outputs = outputs(&plan, kind);
        match kind {
            ClusterKind::Compose => plan.with_tls_capabilities(NGINX_IMAGE_CAPABILITIES),
            ClusterKind::Kubernetes => plan,
        }
    }

    /// The plan with the PEM of `[tls].acme.ca` for the Issuer's `caBundle`, which the command
    /// reads (a plan reads no file).
    pub fn with_acme_ca(mut self, pem: String) -> Plan {
        if let Some(i) = self
            .cluster
            .as_mut()
            .and_then(|c| c.tls.as_mut())
            .and_then(|t| t.issuer.as_mut())
        {
            i.ca_pem = Some(pem);
        }
        self
    }

    /// The target's name as the user gives it: `kubernetes`, `compose`, `nginx+uwsgi`.
    pub fn target_name(&self) -> String {
        match &self.cluster {
            Some(c) => c.kind.name().to_string(),
            None => self.target.to_string(),
        }
    }
}

impl Plan {
    /// What `render` and `check` warn about for a cluster target: paths outside the image, a
    /// `[health].expect` the kubelet's probes cannot check (they pass on 200–399).
    /// (`[[static]]` is served by the pod's own server: `--static`.)
    pub fn cluster_warning(&self) -> Option<String> {
        let c = self.cluster.as_ref()?;
        let mut said = Vec::new();
        let outside = |p: &Path| !p.starts_with(CONTAINER_APP);
        let mut away: Vec<String> = Vec::new();
        if outside(&self.spec.app.root) {
            away.push(format!("[app].root ({})", self.spec.app.root.display()));
        }
        if c.kind == ClusterKind::Compose {
            // Copied from the image to the volume nginx serves.
            away.extend(
                c.statics
                    .iter()
                    .filter(|(from, _)| outside(from))
                    .map(|(from, _)| format!("the [[static]] directory {}", from.display())),
            );
        }
        if !away.is_empty() {
            said.push(format!(
                "{} outside the project: the image holds the project's directory only; move them into it",
                away.join(", ")
            ));
        }
        if self.spec.app.requirements.as_deref().is_some_and(outside) {
            said.push(
                "[app].requirements is outside the project: the image's build context cannot copy it, so \
                 the Containerfile installs no requirements; move it into the project"
                    .to_string(),
            );
        }
        if let Some(e) = self.spec.health.expect.filter(|e| !(200..400).contains(e)) {
            said.push(format!(
                "[health].expect = {e}: Kubernetes probes and health checks pass on 200 to 399 only; \
                 point [health].path at a URL that answers 2xx"
            ));
        }
        (!said.is_empty()).then(|| said.join("; "))
    }

    /// What the user does with a rendered cluster target in `out` (`render` prints it).
    pub fn cluster_steps(&self, out: &str) -> Option<String> {
        let c = self.cluster.as_ref()?;
        let build = format!(
            "build the image in the project's directory with `docker build --build-context {}=PATH/TO/deployctl -f {out}/Containerfile -t {} .`",
            SOURCE_CONTEXT, c.image
        );
        Some(match c.kind {
            ClusterKind::Kubernetes => {
                let secret = if c.secret_env.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", create the Secret `{}` with the keys {}",
                        c.secret,
                        c.secret_env.join(", ")
                    )
                };
                let namespace = c.namespace.as_deref().map(|n| format!(" -n {n}")).unwrap_or_default();
                let (tls, global) = match &c.tls {
                    Some(t) => {
                        let source = match (&t.files, &t.issuer) {
                            (Some((cert, key)), _) => format!(
                                ", create the TLS Secret from [tls]'s files with `kubectl create secret tls {}{namespace} --cert={} --key={}`",
                                t.secret,
                                crate::render::quote::shell(&cert.display().to_string()),
                                crate::render::quote::shell(&key.display().to_string()),
                            ),
                            (None, Some(i)) => format!(
                                ", have cert-manager installed (the Issuer `{}` obtains the Secret `{}`)",
                                i.name, t.secret
                            ),
                            (None, None) => String::new(),
                        };
                        (source, format!("; {}", ingress_global_tls(t)))
                    }
                    None => (String::new(), String::new()),
                };
                format!("{build} and push it{secret}{tls}, then `kubectl apply -f {out}`{global}")
            }
            ClusterKind::Compose => {
                let secret = if c.secret_env.is_empty() {
                    String::new()
                } else {
                    format!(", with {} set in the environment", c.secret_env.join(", "))
                };
                format!("{build}, then `docker-compose -f {out}/compose.yaml up -d`{secret}")
            }
        })
    }
}

/// `[app].name` as a Kubernetes resource name (an RFC 1035 label: lower case, digits and
/// `-`, starting with a letter, at most 63).
pub fn resource_name(app: &str) -> String {
    let mut s: String = app
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s.insert_str(0, "app-");
    }
    s.truncate(63);
    s.trim_end_matches('-').to_string()
}

/// The name of the `emptyDir` volume mounted at `dir`: its last component, as a label
/// (`/tmp` → `tmp`).
pub fn volume_name(dir: &Path) -> String {
    let last = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    resource_name(&last)
}

/// The hosts of `[server].names` an Ingress rule can hold: exact names and `*.` wildcards
/// (nginx's `.example.com` is both); not IP addresses, `localhost` or `example.*`. None left:
/// one rule for every host.
fn ingress_hosts(names: &[String]) -> Vec<String> {
    let mut hosts = Vec::new();
    for n in names {
        let forms: Vec<String> = match n.strip_prefix('.') {
            Some(base) => vec![base.to_string(), format!("*.{base}")],
            None => vec![n.clone()],
        };
        for h in forms {
            let ip = h.parse::<std::net::IpAddr>().is_ok();
            if ip || h == "localhost" || h.ends_with(".*") || !h.contains('.') || hosts.contains(&h) {
                continue;
            }
            hosts.push(h);
        }
    }
    hosts
}

/// ingress-nginx's annotations with the nginx target's values: the body limit, the timeouts
/// of its link to the app, buffering on (nginx's default, which the site keeps).
/// With `[tls]`: the redirect to HTTPS (ingress-nginx leaves ACME's challenge path on
/// HTTP), and cert-manager's annotation naming the Issuer with ACME.
fn ingress_annotations(plan: &Plan, tls: Option<&ClusterTls>) -> Vec<(String, String)> {
    let a = |k: &str, v: String| (format!("nginx.ingress.kubernetes.io/{k}"), v);
    // What nginx in front of the embedded server would wait: the app's timeout and one hop.
    let front = plan.spec.server.timeout.0 + policy::HOP_TIMEOUT_SLACK_SECS;
    let mut tls_annotations = Vec::new();
    if let Some(t) = tls {
        if let Some(issuer) = &t.issuer {
            tls_annotations.push(("cert-manager.io/issuer".to_string(), issuer.name.clone()));
        }
        tls_annotations.push(a("ssl-redirect", "true".into()));
    }
    let mut all = vec![
        a("proxy-body-size", plan.spec.server.max_body.to_string()),
        a("proxy-connect-timeout", policy::CONNECT_TIMEOUT_SECS.to_string()),
        a("proxy-read-timeout", front.to_string()),
        a("proxy-send-timeout", front.to_string()),
        a("proxy-buffering", "on".into()),
        a("proxy-request-buffering", "on".into()),
    ];
    all.extend(tls_annotations);
    all
}

/// Why `[tls]` cannot be rendered for a cluster target: neither files nor ACME (the
/// self-signed pair is `up`'s), ACME for Compose (nothing there would obtain or renew it),
/// ACME on Kubernetes without a name cert-manager can issue for.
fn cluster_tls_refusal(kind: ClusterKind, tls: &crate::spec::Tls, names: &[String]) -> Option<String> {
    let target = kind.name();
    match (&tls.source, kind) {
        (CertificateSource::SelfSigned {}, _) => Some(format!(
            "[tls] for target `{target}` needs a certificate: set `certificate` and `key`{} (the self-signed \
             pair is for `deployctl up` only)",
            match kind {
                ClusterKind::Kubernetes => ", or `acme = { email = … }` (cert-manager then obtains it)",
                ClusterKind::Compose => "",
            }
        )),
        (CertificateSource::Acme { .. }, ClusterKind::Compose) => Some(
            "[tls].acme is not rendered for target `compose`: no container of it obtains or renews a certificate \
             and reloads nginx; obtain one with `deployctl cert` or certbot on the host and set `certificate` \
             and `key` to it (Compose mounts them read-only), or use target `kubernetes` (cert-manager) or \
             `nginx+embedded` on the host"
                .to_string(),
        ),
        (CertificateSource::Acme { .. }, ClusterKind::Kubernetes) if acme_hosts(names).is_empty() => Some(format!(
            "[tls].acme for target `{target}` needs an exact DNS name in [server].names for cert-manager to \
             obtain the certificate for (HTTP-01 issues no wildcard, no address, no `localhost`)"
        )),
        _ => None,
    }
}

/// The Ingress hosts an HTTP-01 certificate can be for: no wildcard.
fn acme_hosts(names: &[String]) -> Vec<String> {
    ingress_hosts(names)
        .into_iter()
        .filter(|h| !h.starts_with('*'))
        .collect()
}

fn cluster_tls(kind: ClusterKind, tls: &crate::spec::Tls, name: &str, names: &[String]) -> ClusterTls {
    let (files, issuer, hosts) = match &tls.source {
        CertificateSource::Files { certificate, key } => {
            (Some((certificate.clone(), key.clone())), None, ingress_hosts(names))
        }
        CertificateSource::Acme { acme } => (
            None,
            Some(AcmeIssuer {
                name: format!("{name}-acme"),
                server: acme.directory.clone(),
                email: acme.email.clone(),
                account_secret: format!("{name}-acme-account"),
                ca: acme.ca.clone(),
                ca_pem: None,
            }),
            acme_hosts(names),
        ),
        CertificateSource::SelfSigned {} => (None, None, ingress_hosts(names)),
    };
    let dir = Path::new(NGINX_TLS_DIR);
    let mounted = (kind == ClusterKind::Compose && files.is_some())
        .then(|| (dir.join(crate::acme::FULLCHAIN), dir.join(crate::acme::PRIVKEY)));
    ClusterTls {
        secret: format!("{name}-tls"),
        hosts,
        files,
        issuer,
        hsts: tls.hsts.map(|h| (h.0, tls.hsts_preload)),
        profile: tls.profile,
        mounted,
        public: tls.listen.clone(),
    }
}

/// What ingress-nginx sets only for every Ingress at once, in its controller's ConfigMap:
/// HSTS (on by default, `max-age=15724800; includeSubDomains`) and the TLS protocols
/// (`TLSv1.2 TLSv1.3`). Said, not rendered: an Ingress cannot carry them.
fn ingress_global_tls(t: &ClusterTls) -> String {
    let mut keys = match t.hsts {
        Some((age, preload)) => vec![
            "hsts: \"true\"".to_string(),
            format!("hsts-max-age: \"{age}\""),
            "hsts-include-subdomains: \"true\"".into(),
            format!("hsts-preload: \"{preload}\""),
        ],
        None => vec!["hsts: \"false\"".to_string()],
    };
    if t.profile == crate::spec::TlsProfile::Modern {
        keys.push("ssl-protocols: \"TLSv1.3\"".into());
    }
    format!(
        "ingress-nginx takes HSTS{} only from its controller's ConfigMap, for every Ingress, not from one: set {} \
         there for [tls] (its defaults: HSTS max-age 15724800 with includeSubDomains, TLSv1.2 and TLSv1.3)",
        if t.profile == crate::spec::TlsProfile::Modern {
            " and the TLS protocols"
        } else {
            ""
        },
        keys.join(", ")
    )
}

/// The health request made by the image's Python (the slim image has no curl): healthy when
/// the status is `[health].expect`, or below 500 without it.
fn health_command(venv: &Path, port: u16, path: &str, expect: Option<u16>, timeout: u64) -> Vec<String> {
    let test = match expect {
        Some(e) => format!("s == {e}"),
        None => "s < 500".into(),
    };
    let script = format!(
        "import sys, urllib.request, urllib.error\n\
         try:\n    s = urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout={timeout}).status\n\
         except urllib.error.HTTPError as e:\n    s = e.code\n\
         except Exception:\n    sys.exit(1)\n\
         sys.exit(0 if {test} else 1)\n"
    );
    vec![
        deployctl_common::venv::python(venv).display().to_string(),
        "-c".into(),
        script,
    ]
}

/// `sh -c` emptying the volume (files removed from the image must not stay served), then
/// copying each static directory into its subdirectory.
fn static_copy(statics: &[(PathBuf, PathBuf)]) -> Option<Vec<String>> {
    if statics.is_empty() {
        return None;
    }
    let shell = |p: &str| crate::render::quote::shell(p);
    let mut script = format!("find {} -mindepth 1 -delete", shell(STATIC_VOLUME_DIR));
    for (from, to) in statics {
        let (from, to) = (from.display().to_string(), to.display().to_string());
        script.push_str(&format!(
            " && mkdir -p {} && cp -R {} {}",
            shell(&to),
            shell(&format!("{}/.", from.trim_end_matches('/'))),
            shell(&format!("{to}/"))
        ));
    }
    Some(vec!["/bin/sh".into(), "-c".into(), script])
}

/// curl in nginx's image asking the edge's port for `[health].path` with the first exact
/// server name as `Host`.
fn nginx_health_command(plan: &Plan, path: &str) -> Option<Vec<String>> {
    let nginx = plan.tier(Tier::Nginx)?;
    let port = match &nginx.listen {
        Some(Address::Tcp(l)) => l.port,
        Some(Address::Unix(_)) | None => return None,
    };
    let host = plan
        .spec
        .server
        .names
        .iter()
        .find(|n| !n.starts_with('*') && !n.starts_with('.') && !n.ends_with(".*"))?;
    Some(vec![
        "curl".into(),
        "-fsS".into(),
        "-o".into(),
        "/dev/null".into(),
        "-H".into(),
        format!("Host: {host}"),
        format!("http://127.0.0.1:{port}{path}"),
    ])
}

fn outputs(plan: &Plan, kind: ClusterKind) -> Vec<Output> {
    let out = |kind, path: &str, validators: Vec<Validator>| Output {
        kind,
        path: path.to_string(),
        mode: 0o644,
        validators,
    };
    let k8s = || vec![Validator::KubernetesValidate];
    let mut files = vec![
        out(OutputKind::Containerfile, "Containerfile", vec![Validator::Hadolint]),
        out(OutputKind::ContainerIgnore, "Containerfile.dockerignore", vec![]),
    ];
    match kind {
        ClusterKind::Kubernetes => {
            files.push(out(OutputKind::KubeConfigMap, "configmap.yaml", k8s()));
            files.push(out(OutputKind::KubeDeployment, "deployment.yaml", k8s()));
            files.push(out(OutputKind::KubeService, "service.yaml", k8s()));
            files.push(out(OutputKind::KubeIngress, "ingress.yaml", k8s()));
            files.push(out(OutputKind::KubePdb, "pdb.yaml", k8s()));
            // kubernetes-validate knows no custom resource: it passes an Issuer with only a
            // warning that it has no schema for it: checked against cert-manager's own.
            if plan
                .cluster
                .as_ref()
                .and_then(|c| c.tls.as_ref())
                .is_some_and(|t| t.issuer.is_some())
            {
                files.push(out(
                    OutputKind::KubeIssuer,
                    "issuer.yaml",
                    vec![Validator::CertManagerSchema],
                ));
            }
            if plan.spec.cluster.autoscaled() {
                files.push(out(OutputKind::KubeHpa, "hpa.yaml", k8s()));
            }
        }
        ClusterKind::Compose => {
            files.push(out(OutputKind::Compose, "compose.yaml", vec![Validator::ComposeConfig]));
            // `nginx -t` resolves the upstream's host name, which exists on the Compose
            // network only: gixy reads the site without resolving it.
            if let Some(site) = plan.tier(Tier::Nginx).and_then(|t| t.config.as_ref()) {
                files.push(out(OutputKind::NginxSite, &site.rel, vec![Validator::Gixy]));
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_and_ingress_hosts() {
        assert_eq!(resource_name("flask-hello"), "flask-hello");
        assert_eq!(resource_name("My_App.v2"), "my-app-v2");
        assert_eq!(resource_name("1app"), "app-1app");
        let names: Vec<String> = [
            "localhost",
            "example.com",
            ".example.org",
            "10.0.0.1",
            "example.*",
            "intranet",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(ingress_hosts(&names), ["example.com", "example.org", "*.example.org"]);
    }
}
