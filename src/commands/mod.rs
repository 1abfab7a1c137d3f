//! One file per subcommand; glue between the CLI and the modules that do the work.

mod cert;
mod check;
mod init;
mod install;
pub mod reload;
mod render;
pub mod serve;
mod stacks;
mod up;

use std::path::Path;

use crate::cli::{Cli, Command, SpecArgs};
use crate::printer::{Printer, hinted, usage};
use crate::render::Templates;
use crate::spec::{Spec, display_path};
use crate::target::Target;

/// What a command tells `main` about how it went, beyond errors.
pub enum Status {
    Success,
    /// The command ran and found a problem it already reported (drift, a failed validator).
    Failed,
}

pub fn run(cli: Cli, printer: &Printer) -> anyhow::Result<Status> {
    match cli.command {
        Command::Init(args) => init::run(&args, printer),
        Command::Render(args) => render::run(&args, printer),
        Command::Check(args) => check::run(&args, printer),
        Command::Serve(args) => serve::run(&args, printer),
        Command::Up(args) => up::run(&args, printer),
        Command::Status(args) => stacks::status(&args, printer),
        Command::Logs(args) => stacks::logs(&args, printer),
        Command::Down(args) => stacks::down(&args, printer),
        Command::Reload(args) => reload::run(&args, printer),
        Command::Cert(args) => cert::run(&args, printer),
        Command::Install(args) => install::install(&args, printer),
        Command::Uninstall(args) => install::uninstall(&args, printer),
        Command::List(args) => install::list(&args, printer),
    }
}

/// The spec named by `--config`, and the templates it and `--templates` select.
fn load(args: &SpecArgs) -> anyhow::Result<(Spec, Templates)> {
    if !args.config.exists() {
        return Err(hinted(
            format!("{} does not exist", display_path(&args.config)),
            "run `deployctl init` to write one, or pass `--config FILE`",
        ));
    }
    let spec = Spec::load(&args.config)?;
    let dir = args.templates.clone().or_else(|| spec.render.templates.clone());
    let templates = Templates::load(dir.as_deref())?;
    Ok((spec, templates))
}

/// The plan as the front on this machine would run it: with `[tls]`, the OpenSSL the front
/// runs with and its HTTP/2 (`nginx -V`; Apache's mod_ssl and mod_http2); the plan's baseline
/// when there is no front to ask.
fn probed(plan: crate::plan::Plan) -> crate::plan::Plan {
    if plan.tls.is_none() {
        return plan;
    }
    let probed = match plan.edge().tier {
        crate::plan::Tier::Apache => crate::tls::probe_apache(),
        _ => crate::tls::probe_nginx(),
    };
    match probed {
        Some(c) => plan.with_tls_capabilities(c),
        None => plan,
    }
}

/// A cluster target's plan with what it needs from files: the PEM of `[tls].acme.ca` (the
/// Issuer's `caBundle`).
fn cluster_plan(spec: &crate::spec::Spec, kind: crate::plan::ClusterKind) -> anyhow::Result<crate::plan::Plan> {
    use anyhow::Context;
    let plan = crate::plan::Plan::resolve_cluster(spec, kind);
    let ca = plan
        .cluster
        .as_ref()
        .and_then(|c| c.tls.as_ref())
        .and_then(|t| t.issuer.as_ref())
        .and_then(|i| i.ca.clone());
    match ca {
        Some(ca) => {
            let pem = std::fs::read_to_string(&ca)
                .with_context(|| format!("cannot read [tls].acme.ca {}", crate::spec::display_path(&ca)))?;
            Ok(plan.with_acme_ca(pem))
        }
        None => Ok(plan),
    }
}

/// What `render` and `check` are asked for: a chain, or a cluster target.
#[derive(Debug, Clone, Copy)]
enum Requested {
    Chain(Target),
    Cluster(crate::plan::ClusterKind),
}

impl Requested {
    /// As the user names it, and the directory `render` writes it to.
    fn name(self) -> String {
        match self {
            Requested::Chain(t) => t.to_string(),
            Requested::Cluster(k) => k.name().to_string(),
        }
    }
}

/// `--target NAME` of `render` and `check`: `kubernetes` and `compose` besides the chains
/// (an unknown name's message lists both).
fn requested(spec: &Spec, name: Option<&str>) -> anyhow::Result<Requested> {
    let Some(name) = name else {
        return Ok(Requested::Chain(spec.default_target()));
    };
    if let Some(k) = crate::plan::ClusterKind::parse(name) {
        return Ok(Requested::Cluster(k));
    }
    let clusters: Vec<&str> = crate::plan::ClusterKind::ALL.iter().map(|k| k.name()).collect();
    chain_arg(name, &clusters).map(Requested::Chain)
}

fn parse_target(spec: &Spec, name: Option<&str>) -> anyhow::Result<Target> {
    match name {
        Some(n) => target_arg(n),
        None => Ok(spec.default_target()),
    }
}

/// `--target NAME`, read as a chain of tiers: an unknown, impossible or unbuilt target is a
/// usage error (exit 2) listing the valid ones.
fn target_arg(name: &str) -> anyhow::Result<Target> {
    if let Some(k) = crate::plan::ClusterKind::parse(name) {
        return Err(usage(
            format!("target `{name}` is rendered for a cluster engine, not run on this machine"),
            Some(format!(
                "`deployctl render --target {}` writes its files; `up` runs the chains: {}",
                k.name(),
                Target::implemented_list()
            )),
        ));
    }
    chain_arg(name, &[])
}

/// `--target NAME` as a chain; an error lists the valid chains, then `more`.
fn chain_arg(name: &str, more: &[&str]) -> anyhow::Result<Target> {
    crate::plan::chain::parse_target(name).map_err(|e: String| match e.split_once("; valid targets: ") {
        Some((message, list)) => {
            let list = [list]
                .into_iter()
                .chain(more.iter().copied())
                .collect::<Vec<_>>()
                .join(", ");
            usage(message, Some(format!("valid targets: {list}")))
        }
        None => usage(e, None),
    })
}

/// `--listen HOST:PORT`, a usage error (exit 2) when malformed.
fn listen_arg(value: &str) -> anyhow::Result<crate::spec::Listen> {
    crate::spec::parse_listen(value).map_err(|m| {
        usage(
            format!("--listen {value:?}: {m}"),
            Some("write `HOST:PORT`, e.g. `--listen 127.0.0.1:8000`".into()),
        )
    })
}

/// `--tls-listen HOST:PORT`, a usage error (exit 2) when malformed.
fn tls_listen_arg(value: &str) -> anyhow::Result<crate::spec::Listen> {
    crate::spec::parse_listen(value).map_err(|m| {
        usage(
            format!("--tls-listen {value:?}: {m}"),
            Some("write `HOST:PORT`, e.g. `--tls-listen 127.0.0.1:8443`".into()),
        )
    })
}

/// Where `up` writes and `status`, `logs` and `down` look: `--run-dir DIR` (absolute, from
/// the current directory), else `<project>/.deployctl`. Each target's stack runs in its own
/// directory under it.
fn run_root(project: &Path, run_dir: Option<&Path>) -> std::path::PathBuf {
    match run_dir {
        Some(d) => std::path::absolute(d).unwrap_or_else(|_| d.to_path_buf()),
        None => project.join(".deployctl"),
    }
}

/// The command that stops a stack, with the flags it was found by: what a hint tells.
fn down_command(config: &Path, target: Option<&str>, run_dir: Option<&Path>) -> String {
    let mut cmd = "deployctl down".to_string();
    if config != Path::new("deploy.toml") {
        cmd.push_str(&format!(" -c {}", shell_word(&config.display().to_string())));
    }
    if let Some(t) = target {
        cmd.push_str(&format!(" -t {t}"));
    }
    if let Some(d) = run_dir {
        cmd.push_str(&format!(" --run-dir {}", shell_word(&d.display().to_string())));
    }
    cmd
}

/// A word as a POSIX shell reads it back (`quote::shell`).
pub(crate) fn shell_word(s: &str) -> String {
    crate::render::quote::shell(s)
}

/// Where `render` writes a target by default: `<[render].out>/<target>`.
fn default_out(spec: &Spec, target: Target) -> std::path::PathBuf {
    spec.render.out.join(target.to_string())
}

fn shown(p: &Path) -> String {
    display_path(p)
}
