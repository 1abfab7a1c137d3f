//! The resolved plan's types: what a deployment is, every derived fact a field.

use std::path::{Path, PathBuf};

use super::chain::{Chain, Protocol, Tier};
use crate::spec::{Listen, Spec};
use crate::target::Target;

/// Where the plan runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Environment {
    /// A server under systemd (`render`, `check`): configs installed in `out`, the sockets
    /// between tiers under `/run`, created by systemd socket units.
    Production { out: PathBuf },
    /// `deployctl up`: configs rendered for `conf_dir`, sockets in `socket_dir` (the run
    /// directory), created and handed over by `up`; no systemd.
    Local { conf_dir: PathBuf, socket_dir: PathBuf },
    /// A container image: no systemd, no host paths (the project is at [`CONTAINER_APP`]),
    /// tiers linked over TCP on loopback, the edge on an unprivileged port.
    Container,
}

/// What a host assigns an app that deploy.toml does not say, decided where the host's other
/// apps are known (`deployctl install` reads their records). `None` keeps the environment's
/// choice; the plan stays a function of its arguments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Assigned {
    /// The loopback port of a web server behind another (`nginx+apache+*`'s Apache): one per
    /// app on a host, where every app would otherwise get [`crate::plan::INNER_WEB_PORT`].
    pub inner_web_port: Option<u16>,
}

/// Where a container image holds the project (deploy.toml's directory).
pub const CONTAINER_APP: &str = "/app";
/// Where a container image holds the rendered configs.
pub const CONTAINER_CONF: &str = "/etc/deployctl";
/// The `deployctl` binary in a container image.
pub const CONTAINER_DEPLOYCTL: &str = "/usr/local/bin/deployctl";
/// The first loopback port of the tiers behind the edge in a container (one per link).
pub const CONTAINER_FIRST_PORT: u16 = 8001;
/// The edge's port in a container when deploy.toml's is privileged (a restricted pod cannot
/// bind below 1024).
pub const CONTAINER_EDGE_PORT: u16 = 8080;

impl Environment {
    pub fn name(&self) -> &'static str {
        match self {
            Environment::Production { .. } => "production",
            Environment::Local { .. } => "local run",
            Environment::Container => "container",
        }
    }
}

/// A resolved deployment: (spec, target, environment) → everything the views, the
/// validators and `up` need, each computed once.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The spec as this environment serves it: a local run also answers `localhost` and its
    /// listen host; a container's paths are inside the image.
    pub spec: Spec,
    pub target: Target,
    pub chain: Chain,
    pub environment: Environment,
    /// `[app].name`: unit, socket, site and log names.
    pub name: String,
    /// Edge first; `tiers[i].next` links it to `tiers[i + 1]`.
    pub tiers: Vec<TierPlan>,
    /// The directory the configs are read from where they run.
    pub conf_dir: PathBuf,
    /// The app server's systemd units (production and local runs render them; a container
    /// has none).
    pub units: Option<Units>,
    /// Apache httpd's files, when the chain has it.
    pub apache: Option<ApacheFiles>,
    /// `[tls]` at the front, when the spec has it and the edge terminates TLS (`plan::tls`).
    pub tls: Option<super::tls::TlsPlan>,
    /// Every rendered file, with its validators. Empty when this build renders nothing for
    /// the chain in this environment.
    pub outputs: Vec<Output>,
    /// The facts of a cluster target (`kubernetes`, `compose`; `super::cluster`).
    pub cluster: Option<super::cluster::ClusterPlan>,
}

/// Apache httpd's two shapes of configuration and what the self-contained one names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApacheFiles {
    /// The site for Debian's `/etc/apache2/sites-available/` (the tier's config file).
    pub site: ConfigFile,
    /// The self-contained configuration (`apache2 -f FILE`): its own server root, pid file,
    /// mutexes, runtime directory, error log, MPM and modules; run unprivileged by `up` and
    /// by the validator.
    pub httpd_conf: ConfigFile,
    /// Where the self-contained configuration keeps its pid file, mutexes and runtime files
    /// (its `ServerRoot` and `DefaultRuntimeDir`; it names no relative path); the value of the `DEPLOYCTL_RUN` variable it defines unless
    /// `-C 'Define DEPLOYCTL_RUN DIR'` gave one (the validator does, with a scratch directory).
    pub run_dir: PathBuf,
    /// Its `ErrorLog`.
    pub error_log: PathBuf,
    /// Where Debian keeps the modules (`LoadModule NAME_module DIR/mod_NAME.so`).
    pub module_dir: PathBuf,
    /// The modules the site needs, as `a2enmod` names them, in load order (the MPM and the
    /// built-in `unixd` are not among them: Debian's configuration has one, `unixd` cannot
    /// be loaded).
    pub modules: Vec<&'static str>,
    /// The MPM of the self-contained configuration (`event`).
    pub mpm: &'static str,
    /// mod_wsgi's daemon mode, when the app runs inside Apache.
    pub wsgi: Option<ModWsgi>,
}

/// The app inside Apache: one mod_wsgi daemon process group (`WSGIDaemonProcess`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModWsgi {
    /// The process group's name (`WSGIProcessGroup`, `display-name=(wsgi:NAME)`).
    pub group: String,
    /// The script Apache maps `/` to (`WSGIScriptAlias`): it imports `[app].entry`.
    pub script: ConfigFile,
    pub processes: u32,
    pub threads: u32,
    /// `python-home`: the virtualenv.
    pub python_home: PathBuf,
    /// `python-path`: the project's import root.
    pub python_path: PathBuf,
    /// `request-timeout`: the app's own timeout (`[server].timeout`).
    pub request_timeout_secs: u64,
    /// `socket-timeout`: how long Apache's child and the daemon wait on each other (the
    /// link's timeout: the app's and one slack).
    pub socket_timeout_secs: u64,
    /// `graceful-timeout` and `shutdown-timeout`: `[backend].graceful_timeout`.
    pub graceful_timeout_secs: u64,
    /// The interpreter Debian's mod_wsgi is built against: the virtualenv is made with it.
    pub python: PathBuf,
    /// Debian's module (`libapache2-mod-wsgi-py3`).
    pub module: PathBuf,
}

/// One tier of the chain, resolved.
#[derive(Debug, Clone)]
pub struct TierPlan {
    pub tier: Tier,
    /// Where it accepts requests: the public address at the edge, the socket of the link in
    /// front otherwise; `None` in process (mod_wsgi).
    pub listen: Option<Address>,
    /// Who creates the socket it listens on.
    pub listen_by: SocketCreator,
    /// How it reaches the next tier inward; `None` for the tier running the app.
    pub next: Option<Link>,
    /// Its own process; `None` for mod_wsgi (Apache's) and a front run by the host's own
    /// service (nginx in production: the site is installed into it).
    pub process: Option<Process>,
    /// The config file it reads, when deployctl renders one.
    pub config: Option<ConfigFile>,
    /// Peers whose `X-Forwarded-*` headers it believes (none for a front: it sets them).
    pub trusted_proxies: Vec<String>,
    /// Its own request timeout (the app's) or how long it waits for the next tier (a front).
    pub timeout_secs: u64,
    /// Gunicorn's control socket (`gunicorn.ctl`), kept in the runtime directory.
    pub control_socket: Option<PathBuf>,
    /// The command line (program first) of its systemd service, when one is rendered: in
    /// production what runs it; in a local run what a server would run (the units are
    /// rendered and validated, `up` runs [`TierPlan::process`] instead).
    pub unit_exec: Option<Vec<String>>,
}

/// An address a tier listens on or connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(Listen),
    Unix(PathBuf),
}

impl Address {
    /// As Gunicorn's and the embedded server's `--bind` and nginx's `server` take it:
    /// `HOST:PORT` or `unix:PATH`.
    pub fn bind(&self) -> String {
        match self {
            Address::Tcp(l) => l.to_string(),
            Address::Unix(p) => format!("unix:{}", p.display()),
        }
    }

    /// As systemd's `ListenStream=` takes it: `HOST:PORT` or the path.
    pub fn listen_stream(&self) -> String {
        match self {
            Address::Tcp(l) => l.to_string(),
            Address::Unix(p) => p.display().to_string(),
        }
    }

    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Address::Unix(p) => Some(p),
            Address::Tcp(_) => None,
        }
    }
}

/// The hop from one tier to the next inward.
#[derive(Debug, Clone)]
pub struct Link {
    pub protocol: Protocol,
    pub transport: Transport,
    pub socket_by: SocketCreator,
    /// How long the outer tier waits for an answer: the inner tier's timeout plus one slack
    /// per hop ([`super::policy::HOP_TIMEOUT_SLACK_SECS`]).
    pub timeout_secs: u64,
    /// How long the outer tier waits to connect.
    pub connect_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Unix(PathBuf),
    Tcp(Listen),
    InProcess,
}

impl Transport {
    /// The address the outer tier connects to (`unix:PATH`, `HOST:PORT`); `None` in process.
    pub fn address(&self) -> Option<Address> {
        match self {
            Transport::Unix(p) => Some(Address::Unix(p.clone())),
            Transport::Tcp(l) => Some(Address::Tcp(l.clone())),
            Transport::InProcess => None,
        }
    }
}

/// Who creates the socket of a link (or the public one), before the tier behind it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketCreator {
    /// A systemd socket unit (`NAME.socket`) binds it and hands it over (LISTEN_FDS).
    SystemdUnit(String),
    /// `deployctl up` binds it and hands it over the same way.
    Up,
    /// The tier behind binds it itself (a container, where nothing sits above it).
    Tier,
    /// No socket: in process.
    Nobody,
}

/// The systemd units of the app server and the directories systemd makes for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Units {
    /// `NAME.service`.
    pub service: String,
    /// `NAME.socket`: creates the app server's socket before it starts.
    pub socket: String,
    /// `RuntimeDirectory=`, `StateDirectory=` and `LogsDirectory=`: `NAME`, i.e. `/run/NAME`,
    /// `/var/lib/NAME` and `/var/log/NAME`.
    pub directory: String,
    /// With `[app].secret_env` on a server: the service's `EnvironmentFile=`,
    /// [`SECRETS_DIR`]`/NAME/secrets.env`, the user's file of `KEY=value` lines (root, mode
    /// 0600), never rendered. A local run passes `up`'s own environment instead.
    pub secrets_file: Option<PathBuf>,
}

/// Where a server keeps each app's secrets file (`/etc/deployctl/NAME/secrets.env`), beside
/// the configuration `install` places.
pub const SECRETS_DIR: &str = "/etc/deployctl";

impl Plan {
    /// What the user does for `[app].secret_env` on a server (`render` prints it).
    /// `Err` when no unit of deployctl's reads the file: mod_wsgi runs the app inside
    /// Debian's `apache2.service` (a warning then).
    pub fn secrets_steps(&self) -> Option<Result<String, String>> {
        let file = self.units.as_ref()?.secrets_file.as_ref()?;
        if !self.outputs.iter().any(|o| o.kind == OutputKind::SystemdService) {
            return Some(Err(format!(
                "[app].secret_env ({}) is not passed to the app by target `{}`: mod_wsgi runs it inside Debian's \
                 apache2.service, which deployctl does not render; give Apache the file {} yourself \
                 (`systemctl edit apache2.service`: `[Service]` `EnvironmentFile={}`; mod_wsgi's daemon \
                 processes inherit Apache's environment)",
                self.spec.app.secret_env.join(", "),
                self.target,
                file.display(),
                file.display()
            )));
        }
        Some(Ok(format!(
            "write the values of [app].secret_env ({}) as KEY=value lines into {} (owned by root, mode 0600: \
             `install -D -m 600 /dev/null FILE`, then edit it); the service reads it when it starts and does not \
             start without it",
            self.spec.app.secret_env.join(", "),
            file.display()
        )))
    }
}

impl Units {
    /// `/run/NAME`: exists while the service runs, writable by it.
    pub fn runtime_dir(&self) -> PathBuf {
        Path::new("/run").join(&self.directory)
    }
}

/// A process deployctl has started (by a unit, by `up`, by a container's entrypoint).
#[derive(Debug, Clone)]
pub struct Process {
    pub program: Program,
    /// Its arguments, as the process receives them (quoting is the view's).
    pub args: Vec<String>,
    /// Time between the graceful stop and the kill.
    pub stop_timeout_secs: u64,
    /// The systemd service running it (production).
    pub unit: Option<String>,
}

/// A program to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    Path(PathBuf),
    /// `deployctl-server`, found beside `deployctl` when `up` starts (a local run).
    Server,
    /// nginx, found on `PATH` when `up` starts (a local run).
    Nginx,
    /// Apache httpd (`apache2`), found on `PATH` or as Debian's `/usr/sbin/apache2` when `up`
    /// starts (a local run).
    Apache,
}

impl Program {
    pub fn path(&self) -> Option<&Path> {
        match self {
            Program::Path(p) => Some(p),
            Program::Server | Program::Nginx | Program::Apache => None,
        }
    }
}

/// A config file of a tier: its name in the rendered tree and where it is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// Relative to the output directory: `uwsgi/NAME.ini`.
    pub rel: String,
    /// Where the tier reads it: `<conf_dir>/<rel>`.
    pub path: PathBuf,
}

/// One rendered file.
#[derive(Debug, Clone)]
pub struct Output {
    pub kind: OutputKind,
    /// Relative to the output directory.
    pub path: String,
    pub mode: u32,
    /// The validators that apply to it, in the order they are reported.
    pub validators: Vec<Validator>,
}

/// What a rendered file is; each has one template and one typed view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OutputKind {
    NginxSite,
    UwsgiIni,
    GunicornConf,
    SystemdService,
    SystemdSocket,
    ApacheSite,
    ApacheHttpd,
    /// `NAME-cert.service`: `deployctl cert` (ACME on a server).
    CertService,
    /// `NAME-cert.timer`: runs it daily.
    CertTimer,
    Containerfile,
    ContainerIgnore,
    KubeConfigMap,
    KubeDeployment,
    KubeService,
    KubeIngress,
    KubePdb,
    KubeHpa,
    /// cert-manager's `Issuer` (`[tls].acme` on Kubernetes).
    KubeIssuer,
    Compose,
    WsgiScript,
}

impl OutputKind {
    /// The template's id (its path under `templates/`, and in a user's template directory).
    pub fn template(self) -> &'static str {
        match self {
            OutputKind::NginxSite => "nginx/site.conf.tera",
            OutputKind::UwsgiIni => "uwsgi/app.ini.tera",
            OutputKind::GunicornConf => "gunicorn/gunicorn.conf.py.tera",
            OutputKind::SystemdService => "systemd/app.service.tera",
            OutputKind::SystemdSocket => "systemd/app.socket.tera",
            OutputKind::ApacheSite => "apache/site.conf.tera",
            OutputKind::ApacheHttpd => "apache/httpd.conf.tera",
            OutputKind::CertService => "systemd/cert.service.tera",
            OutputKind::CertTimer => "systemd/cert.timer.tera",
            OutputKind::Containerfile => "container/Containerfile.tera",
            OutputKind::ContainerIgnore => "container/Containerfile.dockerignore.tera",
            OutputKind::KubeConfigMap => "kubernetes/configmap.yaml.tera",
            OutputKind::KubeDeployment => "kubernetes/deployment.yaml.tera",
            OutputKind::KubeService => "kubernetes/service.yaml.tera",
            OutputKind::KubeIngress => "kubernetes/ingress.yaml.tera",
            OutputKind::KubePdb => "kubernetes/pdb.yaml.tera",
            OutputKind::KubeHpa => "kubernetes/hpa.yaml.tera",
            OutputKind::KubeIssuer => "kubernetes/issuer.yaml.tera",
            OutputKind::Compose => "compose/compose.yaml.tera",
            OutputKind::WsgiScript => "mod_wsgi/app.wsgi.tera",
        }
    }
}

/// A real tool checking a rendered file. The order is the report's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Validator {
    NginxT,
    Gixy,
    ApacheT,
    ModWsgiPython,
    UwsgiStrict,
    GunicornCheckConfig,
    SystemdVerify,
    SystemdSecurity,
    KubernetesValidate,
    /// cert-manager's CRD schema, for its `Issuer` (kubernetes-validate has none).
    CertManagerSchema,
    ComposeConfig,
    /// hadolint on the Containerfile.
    Hadolint,
}

impl Validator {
    /// As the user would run it.
    pub fn name(self) -> &'static str {
        match self {
            Validator::NginxT => "nginx -t",
            Validator::Gixy => "gixy",
            Validator::ApacheT => "apache2 -t",
            Validator::ModWsgiPython => "mod_wsgi python",
            Validator::UwsgiStrict => "uwsgi --strict",
            Validator::GunicornCheckConfig => "gunicorn --check-config",
            Validator::SystemdVerify => "systemd-analyze verify",
            Validator::SystemdSecurity => "systemd-analyze security",
            Validator::KubernetesValidate => "kubernetes-validate --strict",
            Validator::CertManagerSchema => "cert-manager schema",
            Validator::ComposeConfig => "docker-compose config",
            Validator::Hadolint => "hadolint",
        }
    }
}

impl Plan {
    /// The tier running the app (the last one).
    pub fn app(&self) -> &TierPlan {
        self.tiers.last().expect("a chain has at least one tier")
    }

    /// The tier facing clients.
    pub fn edge(&self) -> &TierPlan {
        self.tiers.first().expect("a chain has at least one tier")
    }

    /// The tier of kind `tier`, when the chain has one.
    pub fn tier(&self, tier: Tier) -> Option<&TierPlan> {
        self.tiers.iter().find(|t| t.tier == tier)
    }

    /// The link into the app's tier, when something stands in front of it.
    pub fn app_link(&self) -> Option<&Link> {
        let n = self.tiers.len();
        (n >= 2).then(|| self.tiers[n - 2].next.as_ref()).flatten()
    }

    /// What the app's tier is spoken to in: the link's protocol behind a front, HTTP alone.
    pub fn app_protocol(&self) -> Protocol {
        self.app_link().map_or(Protocol::Http, |l| l.protocol)
    }

    /// Whether a front stands before the app.
    pub fn behind_front(&self) -> bool {
        self.tiers.len() > 1
    }

    /// The tier that serves `[[static]]` itself: the edge when it is a web server, uWSGI
    /// alone (its static map) or the embedded server alone (`--static`); none for Gunicorn.
    pub fn statics_served_by(&self) -> Option<Tier> {
        let edge = self.edge().tier;
        match edge {
            Tier::Nginx | Tier::Apache | Tier::Uwsgi | Tier::Embedded => Some(edge),
            Tier::Gunicorn | Tier::ModWsgi => None,
        }
    }

    /// Whether the nginx site carries its own catch-all servers for unknown host names. On a
    /// production host those are one file shared by every app (`deployctl-default.conf`,
    /// placed by `install`: the HTTP one answering 444, the HTTPS one refusing the handshake
    /// with `[tls]`), so that several sites can be enabled together; a local run and a
    /// container serve one app and keep their own.
    pub fn site_has_default_server(&self) -> bool {
        match self.environment {
            Environment::Production { .. } => false,
            Environment::Local { .. } | Environment::Container => true,
        }
    }

    /// The output of `kind`, when the plan has one.
    pub fn output(&self, kind: OutputKind) -> Option<&Output> {
        self.outputs.iter().find(|o| o.kind == kind)
    }

    /// The files of a local run's directory (`None` in other environments).
    pub fn run_files(&self) -> Option<RunFiles> {
        match &self.environment {
            Environment::Local { socket_dir, .. } => Some(RunFiles {
                dir: socket_dir.clone(),
            }),
            Environment::Production { .. } | Environment::Container => None,
        }
    }
}

/// The run directory of `deployctl up` (`.deployctl/<target>/`): every file it holds is
/// named here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFiles {
    pub dir: PathBuf,
}

impl RunFiles {
    /// The run directory of `target` under the run root (`<project>/.deployctl/`, or
    /// `--run-dir DIR`): `ROOT/<target>/`, one per target so that targets run side by side.
    pub fn of(root: &Path, target: Target) -> RunFiles {
        RunFiles {
            dir: root.join(target.to_string()),
        }
    }

    /// Where `up` renders for: the link to the generation in use.
    pub fn conf_link(&self) -> PathBuf {
        self.dir.join("conf")
    }

    /// The rendered files of generation `generation` (1 at start, one more per reload).
    pub fn conf_dir(&self, generation: u32) -> PathBuf {
        self.dir.join(format!("conf-{generation}"))
    }

    /// A config file of the plan as generation `generation` holds it.
    pub fn config_of(&self, generation: u32, config: &ConfigFile) -> PathBuf {
        self.conf_dir(generation).join(&config.rel)
    }

    /// nginx's prefix: its wrapper configuration, pid file and temp paths.
    pub fn nginx_prefix(&self) -> PathBuf {
        self.dir.join("nginx")
    }

    /// Apache's runtime directory in a local run: its pid file, mutexes and error log.
    pub fn apache_dir(&self) -> PathBuf {
        self.dir.join("apache")
    }

    /// The self-contained configuration Apache runs from (`apache2 -f`): a link to the
    /// `apache/httpd.conf` of the generation in use, switched before a graceful restart (Apache
    /// reads again the file it was started with).
    pub fn apache_conf(&self) -> PathBuf {
        self.apache_dir().join("httpd.conf")
    }

    /// The app's pid file (the embedded server writes it).
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("app.pid")
    }

    /// The readiness socket of the app instance tagged `tag` (`1`, `2-probe`).
    pub fn notify_socket(&self, tag: &str) -> PathBuf {
        self.dir.join(format!("notify-{tag}.sock"))
    }

    /// uWSGI's master FIFO of the instance tagged `tag`.
    pub fn uwsgi_fifo(&self, tag: &str) -> PathBuf {
        self.dir.join(format!("uwsgi-{tag}.fifo"))
    }

    /// Gunicorn's control socket of the instance tagged `tag` (the first instance uses the
    /// config's own).
    pub fn gunicorn_control(&self, tag: &str) -> PathBuf {
        self.dir.join(format!("gunicorn-{tag}.ctl"))
    }

    /// The private socket of the probe instance of generation `generation`.
    pub fn probe_socket(&self, generation: u32) -> PathBuf {
        self.dir.join(format!("probe-{generation}.sock"))
    }

    /// The private socket of a new app instance of generation `generation`.
    pub fn private_socket(&self, generation: u32) -> PathBuf {
        self.dir.join(format!("private-{generation}.sock"))
    }

    /// The certificate directory of a local run with `[tls]` (self-signed or ACME).
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    /// The webroot the front serves ACME's HTTP-01 answers from in a local run.
    pub fn acme_webroot(&self) -> PathBuf {
        self.dir.join("acme")
    }

    /// The validators' cache: keys of the checks that passed.
    pub fn validated_cache(&self) -> PathBuf {
        self.dir.join("validated.json")
    }
}
