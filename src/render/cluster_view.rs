//! Typed views of the cluster targets' templates: the Kubernetes manifests (one view feeds
//! every manifest, as `ApacheConf` feeds both Apache templates), the Compose file and the
//! Containerfile. Every string is quoted for its language here (`quote::yaml`,
//! `quote::compose`, `quote::containerfile_*`); every value is read from the plan's [`ClusterPlan`].

use serde::Serialize;

use super::quote;
use super::view::Header;
use crate::plan::{ClusterPlan, Plan, Probe, Tier, policy};

fn cluster(plan: &Plan) -> anyhow::Result<&ClusterPlan> {
    plan.cluster
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("target `{}` is not a cluster target", plan.target_name()))
}

fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

#[derive(Debug, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

fn pairs(list: &[(String, String)]) -> Vec<KeyValue> {
    list.iter()
        .map(|(k, v)| KeyValue {
            key: quote::yaml(k),
            value: quote::yaml(v),
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct ProbeView {
    pub period_secs: u64,
    pub timeout_secs: u64,
    pub failure_threshold: u64,
}

impl From<&Probe> for ProbeView {
    fn from(p: &Probe) -> ProbeView {
        ProbeView {
            period_secs: p.period_secs,
            timeout_secs: p.timeout_secs,
            failure_threshold: p.failure_threshold,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct VolumeView {
    pub name: String,
    pub path: String,
}

// ---------------------------------------------------------------------------------------------
// kubernetes/*.yaml.tera

#[derive(Debug, Serialize)]
pub struct KubeManifests {
    #[serde(flatten)]
    pub header: Header,
    pub resource: String,
    pub namespace: Option<String>,
    pub labels: Vec<KeyValue>,
    /// The labels that select the pods (the first two).
    pub selector: Vec<KeyValue>,
    pub image: String,
    /// The container's program, and its arguments. Kubernetes expands `$(VAR)` in both
    /// (`$$(` escapes it); the only spec values they hold are paths, which the spec refuses
    /// with `$(` in them (uWSGI's rule), the entry point and numbers.
    pub command: String,
    pub args: String,
    pub port: u16,
    pub config_map: String,
    pub env: Vec<KeyValue>,
    /// SHA-256 of the environment: a pod template annotation, so a changed ConfigMap rolls
    /// the pods (they read it only at start).
    pub env_checksum: String,
    pub secret: String,
    pub secret_env: Vec<String>,
    pub health_path: String,
    pub startup: ProbeView,
    pub readiness: ProbeView,
    pub liveness: ProbeView,
    pub drain_secs: u64,
    pub termination_grace_secs: u64,
    pub uid: u32,
    pub writable: Vec<VolumeView>,
    pub cpu: String,
    pub memory: String,
    /// The Deployment's count when no autoscaler manages it.
    pub replicas: Option<u32>,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub hpa_cpu_utilization: u32,
    pub max_surge: u32,
    pub ingress_hosts: Vec<String>,
    pub annotations: Vec<KeyValue>,
    /// The Service's port.
    pub service_port: u16,
    /// `spec.tls` of the Ingress, with `[tls]`.
    pub tls: Option<IngressTls>,
    /// cert-manager's Issuer, with `[tls].acme`.
    pub issuer: Option<IssuerView>,
}

#[derive(Debug, Serialize)]
pub struct IngressTls {
    pub secret: String,
    /// Empty: the pair is every host's (no host of `[server].names` fits an Ingress).
    pub hosts: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct IssuerView {
    pub name: String,
    pub server: String,
    pub email: Option<String>,
    pub account_secret: String,
    /// `caBundle`: the PEM of `[tls].acme.ca`, base64.
    pub ca_bundle: Option<String>,
}

/// RFC 4648 base64 with padding (a CRD's `format: byte`).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The port the Service exposes inside the cluster.
const SERVICE_PORT: u16 = 80;

impl KubeManifests {
    pub fn new(plan: &Plan) -> anyhow::Result<KubeManifests> {
        use sha2::{Digest, Sha256};
        let c = cluster(plan)?;
        let cl = &plan.spec.cluster;
        let labels = pairs(&c.labels);
        let selector = pairs(&c.labels[..2.min(c.labels.len())]);
        let mut h = Sha256::new();
        for (k, v) in &c.env {
            h.update((k.len() as u64).to_le_bytes());
            h.update(k.as_bytes());
            h.update((v.len() as u64).to_le_bytes());
            h.update(v.as_bytes());
        }
        let env_checksum: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(KubeManifests {
            header: Header::new(plan),
            resource: quote::yaml(&c.name),
            namespace: c.namespace.as_deref().map(quote::yaml),
            labels,
            selector,
            image: quote::yaml(&c.image),
            command: quote::yaml_list(&c.command[..1.min(c.command.len())]),
            args: quote::yaml_list(c.command.get(1..).unwrap_or_default()),
            port: c.port,
            config_map: quote::yaml(&c.config_map),
            env: c
                .env
                .iter()
                .map(|(k, v)| KeyValue {
                    key: quote::yaml(k),
                    value: quote::yaml(v),
                })
                .collect(),
            env_checksum: quote::yaml(&env_checksum),
            secret: quote::yaml(&c.secret),
            secret_env: c.secret_env.iter().map(|s| quote::yaml(s)).collect(),
            health_path: quote::yaml(&c.health_path),
            startup: (&c.startup).into(),
            readiness: (&c.readiness).into(),
            liveness: (&c.liveness).into(),
            drain_secs: c.drain_secs,
            termination_grace_secs: c.termination_grace_secs,
            uid: crate::plan::cluster::APP_UID,
            writable: c
                .writable_dirs
                .iter()
                .map(|d| VolumeView {
                    name: quote::yaml(&crate::plan::cluster::volume_name(d)),
                    path: quote::yaml(&path(d)),
                })
                .collect(),
            cpu: quote::yaml(&cl.cpu()),
            memory: quote::yaml(&cl.memory_quantity()),
            replicas: (!cl.autoscaled()).then_some(cl.min_replicas),
            min_replicas: cl.min_replicas,
            max_replicas: cl.max_replicas,
            hpa_cpu_utilization: policy::HPA_CPU_UTILIZATION,
            max_surge: policy::ROLLING_MAX_SURGE,
            ingress_hosts: c.ingress_hosts.iter().map(|h| quote::yaml(h)).collect(),
            annotations: pairs(&c.ingress_annotations),
            service_port: SERVICE_PORT,
            tls: c.tls.as_ref().map(|t| IngressTls {
                secret: quote::yaml(&t.secret),
                hosts: t.hosts.iter().map(|h| quote::yaml(h)).collect(),
            }),
            issuer: c.tls.as_ref().and_then(|t| t.issuer.as_ref()).map(|i| IssuerView {
                name: quote::yaml(&i.name),
                server: quote::yaml(&i.server),
                email: i.email.as_deref().map(quote::yaml),
                account_secret: quote::yaml(&i.account_secret),
                ca_bundle: i.ca_pem.as_deref().map(|pem| quote::yaml(&base64(pem.as_bytes()))),
            }),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// compose/compose.yaml.tera

#[derive(Debug, Serialize)]
pub struct ComposeView {
    #[serde(flatten)]
    pub header: Header,
    pub image: String,
    /// The app container's command line: the pod's.
    pub entrypoint: String,
    pub port: u16,
    /// `KEY=value` items, then secret names alone (their values come from the environment
    /// `docker-compose` runs in).
    pub environment: Vec<String>,
    pub healthcheck: String,
    pub health_interval_secs: u64,
    pub health_timeout_secs: u64,
    pub health_retries: u64,
    pub health_start_secs: u64,
    pub stop_grace_secs: u64,
    pub tmpfs: Vec<String>,
    /// The one-shot copy of `[[static]]` from the image to the volume nginx serves it from.
    pub static_copy: Option<String>,
    pub static_volume_dir: String,
    pub nginx_image: String,
    pub nginx_entrypoint: String,
    pub nginx_tmpfs: Vec<String>,
    /// `HOST_PORT:CONTAINER_PORT`.
    pub published: String,
    pub site: String,
    pub nginx_healthcheck: Option<String>,
    /// With `[tls]`: the HTTPS port published (`[tls].listen`'s, the same inside), and the
    /// user's certificate and key mounted read-only where the site reads them (each item
    /// `quote::compose_bind_mount_ro`: the long syntax for a path holding `:`).
    pub tls_published: Option<String>,
    pub tls_mounts: Vec<String>,
}

/// Compose's `ports` item: `PORT:CONTAINER_PORT`, with the host address first unless it is
/// every address (`127.0.0.1:8000:8080`, `[::1]:8000:8080`).
fn published(public: &crate::spec::Listen, container_port: u16) -> String {
    let every = public
        .host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    if every {
        format!("{}:{container_port}", public.port)
    } else {
        format!("{public}:{container_port}")
    }
}

impl ComposeView {
    pub fn new(plan: &Plan) -> anyhow::Result<ComposeView> {
        let c = cluster(plan)?;
        let nginx = plan
            .tier(Tier::Nginx)
            .ok_or_else(|| anyhow::anyhow!("the compose target has no nginx tier"))?;
        let nginx_port = match &nginx.listen {
            Some(crate::plan::Address::Tcp(l)) => l.port,
            _ => crate::plan::CONTAINER_EDGE_PORT,
        };
        let mut environment: Vec<String> = c.env.iter().map(|(k, v)| quote::compose(&format!("{k}={v}"))).collect();
        environment.extend(c.secret_env.iter().map(|s| quote::compose(s)));
        let mut health = vec!["CMD".to_string()];
        health.extend(c.health_command.iter().cloned());
        let static_copy = c.static_copy.as_deref().map(quote::compose_list);
        let nginx_entrypoint = nginx
            .process
            .as_ref()
            .map(|p| {
                let mut argv = vec![p.program.path().map(path).unwrap_or_default()];
                argv.extend(p.args.iter().cloned());
                quote::compose_list(&argv)
            })
            .unwrap_or_else(|| "[]".into());
        let site = nginx
            .config
            .as_ref()
            .map(|f| format!("./{}:{}:ro", f.rel, crate::plan::cluster::NGINX_SITE_IN_CONTAINER))
            .unwrap_or_default();
        let nginx_healthcheck = c.nginx_health_command.as_deref().map(|argv| {
            let mut test = vec!["CMD".to_string()];
            test.extend(argv.iter().cloned());
            quote::compose_list(&test)
        });
        Ok(ComposeView {
            header: Header::new(plan),
            image: quote::compose(&c.image),
            entrypoint: quote::compose_list(&c.command),
            port: c.port,
            environment,
            healthcheck: quote::compose_list(&health),
            health_interval_secs: c.liveness.period_secs,
            health_timeout_secs: c.liveness.timeout_secs,
            health_retries: c.liveness.failure_threshold,
            health_start_secs: policy::STARTUP_BUDGET_SECS,
            stop_grace_secs: c.termination_grace_secs - c.drain_secs,
            tmpfs: c.writable_dirs.iter().map(|d| quote::compose(&path(d))).collect(),
            static_copy,
            static_volume_dir: crate::plan::cluster::STATIC_VOLUME_DIR.to_string(),
            nginx_image: quote::compose(crate::plan::cluster::NGINX_IMAGE),
            nginx_entrypoint,
            nginx_tmpfs: crate::plan::cluster::NGINX_WRITABLE
                .iter()
                .map(|d| quote::compose(d))
                .collect(),
            published: quote::compose(&published(&c.public, nginx_port)),
            site: quote::compose(&site),
            nginx_healthcheck,
            tls_published: c
                .tls
                .as_ref()
                .map(|t| quote::compose(&published(&t.public, t.public.port))),
            tls_mounts: c
                .tls
                .as_ref()
                .and_then(|t| t.files.as_ref().zip(t.mounted.as_ref()))
                .map(|((cert, key), (in_cert, in_key))| {
                    [(cert, in_cert), (key, in_key)]
                        .iter()
                        .map(|(from, to)| quote::compose_bind_mount_ro(&path(from), &path(to)))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// container/Containerfile.tera and its ignore file

#[derive(Debug, Serialize)]
pub struct ContainerfileView {
    #[serde(flatten)]
    pub header: Header,
    pub python_image: String,
    pub rust_image: String,
    pub source_context: String,
    /// `COPY --from=CONTEXT` lines' sources and destinations, exec form.
    pub source_copies: Vec<String>,
    pub workdir: String,
    /// `RUN python3 -m venv DIR`: the directory as a shell word.
    pub venv_shell: String,
    pub venv_python: String,
    /// `COPY` sources and destinations, in exec (JSON) form.
    pub copy_binaries: String,
    pub copy_project: String,
    pub copy_venv: String,
    /// `COPY` source and destination of the requirements file, when the project has one.
    pub requirements: Option<(String, String)>,
    pub uid: u32,
    pub static_volume_dir: String,
    pub port: u16,
    pub entrypoint: String,
    pub healthcheck: String,
    pub health_interval_secs: u64,
    pub health_timeout_secs: u64,
    pub health_retries: u64,
    pub health_start_secs: u64,
    pub labels: Vec<(String, String)>,
    /// What the build context leaves out: the virtualenv, rendered files, run directories.
    pub ignore: Vec<String>,
}

impl ContainerfileView {
    pub fn new(plan: &Plan) -> anyhow::Result<ContainerfileView> {
        let c = cluster(plan)?;
        let b = &c.build;
        let cw = |s: &str| quote::containerfile_word(s);
        let venv = path(&b.venv);
        let deployctl_dir = b
            .deployctl
            .parent()
            .map(path)
            .unwrap_or_else(|| "/usr/local/bin".into());
        Ok(ContainerfileView {
            header: Header::new(plan),
            python_image: b.python_image.to_string(),
            rust_image: b.rust_image.to_string(),
            source_context: b.source_context.to_string(),
            source_copies: b
                .source_paths
                .iter()
                .map(|p| quote::containerfile_copy(&[p.to_string(), format!("/src/{p}")]))
                .collect(),
            workdir: path(&b.app_dir),
            venv_shell: quote::shell(&venv),
            copy_binaries: quote::containerfile_copy(&["/opt/deployctl/bin/".to_string(), format!("{deployctl_dir}/")]),
            copy_project: quote::containerfile_copy(&[".".to_string(), path(&b.app_dir)]),
            copy_venv: quote::containerfile_copy(&[venv.clone(), venv.clone()]),
            venv_python: quote::shell(&path(&deployctl_common::venv::python(&b.venv))),
            requirements: b.requirements.as_ref().map(|r| {
                (
                    quote::containerfile_copy(&[r.clone(), format!("{}/{r}", path(&b.app_dir))]),
                    quote::shell(&format!("{}/{r}", path(&b.app_dir))),
                )
            }),
            uid: crate::plan::cluster::APP_UID,
            static_volume_dir: quote::shell(crate::plan::cluster::STATIC_VOLUME_DIR),
            port: c.port,
            entrypoint: quote::containerfile_exec(&c.command),
            healthcheck: quote::containerfile_exec(&c.health_command),
            health_interval_secs: c.liveness.period_secs,
            health_timeout_secs: c.liveness.timeout_secs,
            health_retries: c.liveness.failure_threshold,
            health_start_secs: policy::STARTUP_BUDGET_SECS,
            labels: vec![
                ("org.opencontainers.image.title".into(), cw(&plan.name)),
                (
                    "org.opencontainers.image.description".into(),
                    cw(&format!("{} on deployctl's embedded server", plan.spec.app.entry)),
                ),
                ("io.deployctl.entry".into(), cw(&plan.spec.app.entry.to_string())),
                ("io.deployctl.version".into(), cw(env!("CARGO_PKG_VERSION"))),
            ],
            ignore: crate::plan::cluster::IGNORE_PATTERNS
                .iter()
                .map(|p| p.to_string())
                .chain(b.ignore_paths.iter().map(|p| quote::dockerignore_path(p)))
                .collect(),
        })
    }
}
