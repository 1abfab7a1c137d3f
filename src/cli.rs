//! Command-line definitions. Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "deployctl",
    version,
    about = "Deploy Python WSGI apps: one deploy.toml, every config rendered and validated."
)]
pub struct Cli {
    /// Print only errors and data.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented deploy.toml for an existing app, detecting what it can.
    Init(InitArgs),
    /// Render every config file of a target, validated by the real tools before writing.
    Render(RenderArgs),
    /// Validate deploy.toml and run every validator that applies to the target.
    Check(CheckArgs),
    /// Run the app on the embedded WSGI server (Rust HTTP/1.1, CPython embedded).
    Serve(Box<crate::settings::ServeArgs>),
    /// Run a target locally: render into .deployctl/, start backend then front, health-check,
    /// supervise until Ctrl-C.
    Up(UpArgs),
    /// Show the stacks `up --detach` left running: components, PIDs, health, orphans.
    Status(StatusArgs),
    /// Print the log of a detached stack.
    Logs(LogsArgs),
    /// Stop a detached stack (gracefully, in reverse order), or what is left of one whose
    /// supervisor was killed.
    Down(RunArgs),
    /// Reload a detached stack: re-render and validate, then let the new configuration take
    /// over only once it is ready and healthy; exit 1 (the previous one keeps serving) if not.
    Reload(RunArgs),
    /// Obtain or renew the TLS certificate with ACME (`[tls].acme`), then reload the front: a
    /// running `up` stack's nginx, or the server's (`systemctl reload nginx`).
    Cert(CertArgs),
    /// Place a target's files where the host's packages expect them (nginx or Apache site and
    /// link, Apache's modules enabled, systemd units, configs under /etc/deployctl/NAME),
    /// check the host's configuration with them in place, record what was placed, then reload
    /// systemd, enable the app's socket, reload the front and check the app through it (where
    /// systemd runs; with --root the steps are printed); any failure puts every file back.
    Install(InstallArgs),
    /// Stop the app's units and remove exactly what `install` placed for it (Apache modules
    /// another app still needs stay); files changed by hand since are kept.
    Uninstall(UninstallArgs),
    /// Show the apps `install` placed under a root, and whether their files are as placed.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The root they were installed under.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Print JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// The chain to install (nginx+embedded, nginx+uwsgi, nginx+gunicorn, apache+embedded,
    /// apache+uwsgi, apache+gunicorn, apache+mod_wsgi, nginx+apache+mod_wsgi). Default:
    /// [frontend] + [backend] of deploy.toml.
    #[arg(long, short)]
    pub target: Option<String>,
    /// Install under this directory instead of `/` (a staged root for an image or a test, or
    /// `/` for the files only): no service is touched; the steps are printed.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print the changes as a diff against what is installed; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace files install did not place, or that were changed since.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// The app to remove (default: [app].name of deploy.toml).
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,
    /// The root it was installed under: no service is touched, the steps are printed.
    /// Without it, `/`, where systemd stops the app's units first.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CertArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// The target whose front serves the certificate. Default: [frontend] + [backend] of
    /// deploy.toml.
    #[arg(long, short)]
    pub target: Option<String>,
    /// Obtain a new certificate even when the current one has 30 days or more left.
    #[arg(long)]
    pub force: bool,
    /// Do not reload the front afterwards (the renewal unit reloads nginx itself).
    #[arg(long)]
    pub no_reload: bool,
    #[command(flatten)]
    pub run_dir: RunDirArg,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// The chain to run, e.g. `nginx+embedded`. Default: [frontend] + [backend] of deploy.toml.
    #[arg(long, short)]
    pub target: Option<String>,
    /// The public address instead of `[server].listen`, e.g. `127.0.0.1:8000`.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// The HTTPS address instead of `[tls].listen`, e.g. `127.0.0.1:8443`.
    #[arg(long, value_name = "HOST:PORT")]
    pub tls_listen: Option<String>,
    /// Return once the stack is healthy and leave it running in the background
    /// (`deployctl status`, `logs`, `down`).
    #[arg(long)]
    pub detach: bool,
    #[command(flatten)]
    pub run_dir: RunDirArg,
}

#[derive(Debug, Args)]
pub struct RunDirArg {
    /// Write everything `up` writes (rendered configs, sockets, pid files, logs, state) under
    /// DIR/<target>/ instead of `<project>/.deployctl/`: for a read-only project. `status`,
    /// `logs` and `down` must be given the same DIR.
    #[arg(long = "run-dir", value_name = "DIR", env = "DEPLOYCTL_RUN_DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Only this target's stack. Default: every stack of the project.
    #[arg(long, short)]
    pub target: Option<String>,
    #[command(flatten)]
    pub run_dir: RunDirArg,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Print the status as one JSON object on stdout (messages stay on stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Keep printing new lines until interrupted.
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The project description.
    #[arg(long, short = 'c', value_name = "FILE", default_value = "deploy.toml")]
    pub config: PathBuf,

    /// A directory whose files replace the built-in templates of the same relative name.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The project directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The WSGI callable, `module:attr` or `module:factory()`.
    #[arg(long)]
    pub entry: Option<String>,
    /// The app's name (units, sockets, logs). Default: the directory's name.
    #[arg(long)]
    pub name: Option<String>,
    /// The import directory of the entry, relative to DIR (e.g. `src`).
    #[arg(long)]
    pub root: Option<String>,
    /// The virtualenv, relative to DIR.
    #[arg(long)]
    pub venv: Option<String>,
    /// The requirements file, relative to DIR (`pyproject.toml`: its [project].dependencies).
    #[arg(long)]
    pub requirements: Option<String>,
    /// A static mount `URL=DIR`, e.g. `/static/=static` (repeatable).
    #[arg(long = "static", value_name = "URL=DIR")]
    pub statics: Vec<String>,
    /// The backend: embedded, uwsgi or gunicorn.
    #[arg(long)]
    pub backend: Option<String>,
    /// The frontend: nginx or none.
    #[arg(long)]
    pub frontend: Option<String>,
    /// Overwrite an existing deploy.toml.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// The chain to render, e.g. `nginx+uwsgi`, or `kubernetes` (manifests) or `compose` (a
    /// Compose file), each with a Containerfile. Default: [frontend] + [backend] of deploy.toml.
    #[arg(long, short)]
    pub target: Option<String>,
    /// Write here instead of `<[render].out>/<target>/`.
    #[arg(long, value_name = "DIR", conflicts_with = "stdout")]
    pub out: Option<PathBuf>,
    /// Print the files instead of writing them.
    #[arg(long)]
    pub stdout: bool,
    /// Write nothing; exit 1 with a unified diff when the files on disk differ.
    #[arg(long, conflicts_with = "stdout")]
    pub check: bool,
    /// Do not run the validators before writing.
    #[arg(long)]
    pub no_validate: bool,
    /// Replace rendered files that were edited since the last render (render never replaces
    /// files it did not write, nor the project directory).
    #[arg(long, conflicts_with_all = ["stdout", "check"])]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// The chains to check (repeatable), or `kubernetes` or `compose`. Default: [frontend] +
    /// [backend] of deploy.toml.
    #[arg(long, short)]
    pub target: Vec<String>,
    /// Check every implemented target, `kubernetes` and `compose` included.
    #[arg(long, conflicts_with = "target")]
    pub all_targets: bool,
    /// Print the resolved description, every default filled in, and stop.
    #[arg(long)]
    pub show: bool,
    /// A missing validator is a failure, not a warning.
    #[arg(long, env = "DEPLOYCTL_REQUIRE_VALIDATORS", value_parser = clap::builder::BoolishValueParser::new())]
    pub require_validators: bool,
    /// Print the verdicts as one JSON object on stdout (messages stay on stderr).
    #[arg(long, conflicts_with = "show")]
    pub json: bool,
}
