//! What install and uninstall do to the host's services after (or, for uninstall, before)
//! the files, as data: `systemctl daemon-reload`, `enable --now` of the app's units, the
//! fronts' graceful reload, the health check through the front. Each step is run where
//! systemd is PID 1 and the root is `/`; with a staged root it is printed as what to run on
//! the host; on `/` without systemd (a container, a build machine) nothing runs and the steps
//! are named as what to run instead. Does not own: the unit and front names (the plan's and
//! the manifest's) or placing files (`apply`).

use std::path::Path;
use std::time::Duration;

use crate::plan::{Address, OutputKind, Plan};
use crate::render::quote::shell as shell_word;

use super::layout;
use super::manifest::Manifest;

/// One step on the host's services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `systemctl daemon-reload`: systemd reads the unit files again.
    DaemonReload,
    /// `systemctl enable --now UNIT…`.
    Enable(Vec<String>),
    /// `systemctl disable --now UNIT…`.
    Disable(Vec<String>),
    /// `systemctl try-reload-or-restart UNIT…`: a running app server reads its new
    /// configuration (gracefully where its unit has `ExecReload`); one not running stays so.
    Restart(Vec<String>),
    /// `systemctl start UNIT…`: a oneshot run now (the certificate service, once the front
    /// serves the site and its challenge path).
    Start(Vec<String>),
    /// `systemctl reload-or-restart SERVICE`: a front (`nginx`, `apache2`) reloaded
    /// gracefully, or started when it is not running.
    Reload(&'static str),
    /// `GET PATH` with `Host: HOST` on the front's address (over TLS, any certificate, when
    /// `tls`); healthy when `accepts` the status.
    Health {
        addr: std::net::SocketAddr,
        tls: bool,
        host: String,
        path: String,
        expect: Option<u16>,
        timeout: Duration,
    },
}

impl Step {
    /// The step as a shell command line.
    pub fn shell(&self) -> String {
        let units = |u: &[String]| u.iter().map(|x| shell_word(x)).collect::<Vec<_>>().join(" ");
        match self {
            Step::DaemonReload => "systemctl daemon-reload".into(),
            Step::Enable(u) => format!("systemctl enable --now {}", units(u)),
            Step::Disable(u) => format!("systemctl disable --now {}", units(u)),
            Step::Restart(u) => format!("systemctl try-reload-or-restart {}", units(u)),
            Step::Start(u) => format!("systemctl start {}", units(u)),
            Step::Reload(s) => format!("systemctl reload-or-restart {s}"),
            Step::Health {
                addr,
                tls: false,
                host,
                path,
                ..
            } => format!(
                "curl -fsS -o /dev/null -H {} {}",
                shell_word(&format!("Host: {host}")),
                shell_word(&format!("http://{addr}{path}"))
            ),
            Step::Health {
                addr,
                tls: true,
                host,
                path,
                ..
            } => format!(
                "curl -fsSk -o /dev/null --resolve {} {}",
                shell_word(&format!("{host}:{}:{}", addr.port(), addr.ip())),
                shell_word(&format!("https://{host}:{}{path}", addr.port()))
            ),
        }
    }

    /// Runs the step on this host.
    pub fn run(&self) -> anyhow::Result<()> {
        let argv: Vec<String> = match self {
            Step::DaemonReload => vec!["daemon-reload".into()],
            Step::Enable(u) => ["enable", "--now"]
                .iter()
                .map(|s| s.to_string())
                .chain(u.clone())
                .collect(),
            Step::Disable(u) => ["disable", "--now"]
                .iter()
                .map(|s| s.to_string())
                .chain(u.clone())
                .collect(),
            Step::Restart(u) => std::iter::once("try-reload-or-restart".to_string())
                .chain(u.clone())
                .collect(),
            Step::Start(u) => std::iter::once("start".to_string()).chain(u.clone()).collect(),
            Step::Reload(s) => vec!["reload-or-restart".into(), s.to_string()],
            Step::Health {
                addr,
                tls,
                host,
                path,
                expect,
                timeout,
            } => {
                let reply = if *tls {
                    crate::orchestrate::health::get_tls(*addr, host, host, path, *timeout)?
                } else {
                    crate::orchestrate::health::get(*addr, host, path, *timeout)?
                };
                let ok = match expect {
                    Some(e) => reply.status == *e,
                    None => reply.status < 500,
                };
                anyhow::ensure!(ok, "the health check through the front answered {}", reply.status);
                return Ok(());
            }
        };
        let out = std::process::Command::new("systemctl").args(&argv).output()?;
        anyhow::ensure!(
            out.status.success(),
            "`{}` failed:\n{}",
            self.shell(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }
}

/// The fronts a plan's files go into, innermost first (Apache behind nginx is reloaded
/// before nginx sends it requests).
fn fronts(has_apache: bool, has_nginx: bool) -> Vec<&'static str> {
    let mut out = Vec::new();
    if has_apache {
        out.push("apache2");
    }
    if has_nginx {
        out.push("nginx");
    }
    out
}

/// The steps after install placed `plan`'s files.
pub fn after_install(plan: &Plan) -> Vec<Step> {
    let units: Vec<String> = plan
        .outputs
        .iter()
        .filter(|o| matches!(o.kind, OutputKind::SystemdSocket | OutputKind::CertTimer))
        .filter_map(|o| Path::new(&o.path).file_name().map(|f| f.to_string_lossy().into_owned()))
        .collect();
    let mut steps = vec![Step::DaemonReload];
    if !units.is_empty() {
        steps.push(Step::Enable(units));
    }
    let services = of_kind(plan, OutputKind::SystemdService);
    if !services.is_empty() {
        steps.push(Step::Restart(services));
    }
    let has_nginx = plan.output(OutputKind::NginxSite).is_some();
    let has_apache = plan.output(OutputKind::ApacheSite).is_some();
    steps.extend(fronts(has_apache, has_nginx).into_iter().map(Step::Reload));
    // ACME: the front serves the placeholder and the challenge path now; the certificate
    // service obtains the real one and reloads the front (its ExecStartPost).
    if let Some(units) = plan.tls.as_ref().and_then(|t| t.cert_units.as_ref()) {
        steps.push(Step::Start(vec![units.service.clone()]));
    }
    // Through the front, on HTTPS when it has [tls] (HTTP then only redirects).
    let listen = match (&plan.tls, plan.edge().listen.as_ref()) {
        (Some(t), _) => Some((t.listen.clone(), true)),
        (None, Some(Address::Tcp(l))) => Some((l.clone(), false)),
        (None, _) => None,
    };
    if let (Some((l, tls)), Some(host)) = (listen, plan.spec.server.names.first()) {
        let ip = l.browser_host();
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = ip.parse::<std::net::IpAddr>() {
            steps.push(Step::Health {
                addr: std::net::SocketAddr::new(ip, l.port),
                tls,
                host: host.clone(),
                path: plan.spec.health.path.clone(),
                expect: plan.spec.health.expect,
                timeout: Duration::from_secs(plan.spec.health.timeout.0),
            });
        }
    }
    steps
}

/// The file names of the plan's outputs of `kind`.
fn of_kind(plan: &Plan, kind: OutputKind) -> Vec<String> {
    plan.outputs
        .iter()
        .filter(|o| o.kind == kind)
        .filter_map(|o| Path::new(&o.path).file_name().map(|f| f.to_string_lossy().into_owned()))
        .collect()
}

/// The steps that put the services back after a failed install's files were restored: a
/// first install's units disabled and stopped, a reinstall's app server back on its old
/// configuration; systemd and the fronts read the files as they are again.
pub fn undo_install(steps: &[Step], first_install: bool) -> Vec<Step> {
    let mut out = Vec::new();
    for s in steps {
        match s {
            Step::Enable(u) if first_install => out.push(Step::Disable(u.clone())),
            _ => {}
        }
    }
    out.push(Step::DaemonReload);
    for s in steps {
        match s {
            Step::Restart(u) if !first_install => out.push(Step::Restart(u.clone())),
            Step::Reload(f) => out.push(Step::Reload(f)),
            _ => {}
        }
    }
    out
}

/// The steps before uninstall removes `m`'s files (its units stopped) and after (systemd and
/// the fronts read what is left).
pub fn around_uninstall(m: &Manifest) -> (Vec<Step>, Vec<Step>) {
    let units: Vec<String> = m
        .files
        .keys()
        .filter(|p| p.starts_with(layout::SYSTEMD_UNITS))
        .filter_map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .collect();
    let before = if units.is_empty() {
        Vec::new()
    } else {
        vec![Step::Disable(units)]
    };
    let has = |dir: &str| m.files.keys().any(|p| p.starts_with(dir));
    let mut after = vec![Step::DaemonReload];
    after.extend(
        fronts(has(layout::APACHE_AVAILABLE), has(layout::NGINX_AVAILABLE))
            .into_iter()
            .map(Step::Reload),
    );
    (before, after)
}

/// Where the steps go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No `--root` and systemd is PID 1: install on `/` and run them.
    Run,
    /// `--root` (a staged root, or `/` for the files only): no service is touched; they are
    /// printed as what to run on the host.
    Print,
    /// No `--root` and systemd is not PID 1: none can run; nothing is written and the command
    /// fails saying what to run instead.
    Unavailable,
}

/// What to do with the steps given `--root` (or none) and whether systemd is PID 1.
pub fn mode(root: Option<&Path>, systemd: bool) -> Mode {
    match (root, systemd) {
        (Some(_), _) => Mode::Print,
        (None, true) => Mode::Run,
        (None, false) => Mode::Unavailable,
    }
}

/// Whether systemd is PID 1 here (`sd_booted`: `/run/systemd/system` exists).
pub fn systemd_is_pid1() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The steps as lines to run, one per line, indented.
pub fn as_lines(steps: &[Step]) -> String {
    steps.iter().map(|s| format!("  {}\n", s.shell())).collect()
}

/// Whether systemd has `unit` enabled and running (`systemctl is-enabled`, `is-active`), when
/// it can tell: systemd is PID 1 and the root is `/`.
pub fn unit_state(root: &Path, unit: &str) -> Option<(bool, bool)> {
    if root != Path::new("/") || !systemd_is_pid1() {
        return None;
    }
    let ask = |verb: &str| {
        std::process::Command::new("systemctl")
            .args([verb, "--quiet", unit])
            .status()
            .map(|s| s.success())
            .ok()
    };
    Some((ask("is-enabled")?, ask("is-active")?))
}

/// Runs `steps` in order; the first failure stops them.
pub fn run(steps: &[Step]) -> anyhow::Result<()> {
    steps.iter().try_for_each(Step::run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_follows_the_root_and_systemd() {
        assert_eq!(mode(Some(Path::new("/tmp/stage")), false), Mode::Print);
        assert_eq!(mode(Some(Path::new("/tmp/stage")), true), Mode::Print);
        // `--root /`: the files only, no service touched.
        assert_eq!(mode(Some(Path::new("/")), true), Mode::Print);
        assert_eq!(mode(None, true), Mode::Run);
        assert_eq!(mode(None, false), Mode::Unavailable);
    }

    #[test]
    fn a_failed_install_puts_the_services_back() {
        let steps = vec![
            Step::DaemonReload,
            Step::Enable(vec!["a.socket".into()]),
            Step::Restart(vec!["a.service".into()]),
            Step::Reload("nginx"),
        ];
        let shell = |s: Vec<Step>| s.iter().map(Step::shell).collect::<Vec<_>>();
        assert_eq!(
            shell(undo_install(&steps, true)),
            [
                "systemctl disable --now a.socket",
                "systemctl daemon-reload",
                "systemctl reload-or-restart nginx"
            ]
        );
        assert_eq!(
            shell(undo_install(&steps, false)),
            [
                "systemctl daemon-reload",
                "systemctl try-reload-or-restart a.service",
                "systemctl reload-or-restart nginx"
            ]
        );
    }
}
