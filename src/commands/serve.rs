//! `deployctl serve`: resolve the flags (and `deploy.toml`) once, check the environment, then
//! `exec` the embedded server with what was resolved.
//!
//! The server is a separate binary, `deployctl-server`, because it links libpython and the
//! CLI must not (design.md invariant 4). `exec` (not spawn) keeps the PID, so a systemd unit
//! with `Type=notify` running `deployctl serve` sees the server itself as its main process.
//! The flags are `deployctl_common::settings::ServeArgs`, the same definition the server
//! binary parses; the launcher hands the server the flags and the settings it resolved
//! (`Handoff`, in the environment), not its command line, so a flag only the CLI takes
//! (`-q` before or after `serve`) never reaches the server as a word, and the server does not
//! parse `deploy.toml` again to start (its master does on HUP, from the flags handed over).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::commands::Status;
use crate::printer::{Printer, hinted};
use crate::settings::{HANDOFF_ENV, Handoff, ServeArgs, check_venv_version};
use crate::spec::display_path;

/// Overrides where the server binary is looked up (tests, packagers).
pub const SERVER_ENV: &str = "DEPLOYCTL_SERVER";
pub const SERVER_BIN: &str = "deployctl-server";

pub fn run(args: &ServeArgs, printer: &Printer) -> anyhow::Result<Status> {
    let mut args = args.clone();
    if printer.quiet {
        // `deployctl -q serve` (or `serve -q`: the flag is global) means what the server's
        // own `--quiet` means; an explicit --log-level still wins.
        args.quiet();
    }
    let settings = args.resolve()?;
    let server = find_server()?;
    let built_for = probe(&server)?;
    if let Some(venv) = &settings.venv {
        check_venv_version(venv, &built_for)?;
    }
    let handoff = Handoff { args, settings }.to_json()?;
    let err = Command::new(&server).env(HANDOFF_ENV, handoff).exec();
    Err(err).with_context(|| format!("starting {}", display_path(&server)))
}

/// `$DEPLOYCTL_SERVER`, else `deployctl-server` next to this executable.
pub fn find_server() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(SERVER_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            anyhow::bail!("${SERVER_ENV} names {}, which does not exist", display_path(&p));
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("finding the deployctl executable")?;
    let next_to = exe.with_file_name(SERVER_BIN);
    if next_to.is_file() {
        return Ok(next_to);
    }
    Err(hinted(
        format!(
            "the embedded server `{SERVER_BIN}` is not installed next to {}",
            display_path(&exe)
        ),
        "build it with `cargo build --release` (the workspace builds both binaries), \
         or use another backend: `[backend] kind = \"gunicorn\"` or \"uwsgi\"",
    ))
}

/// Run `deployctl-server --probe`: it loads libpython without initialising it and prints the
/// `X.Y` version it was built for. A missing libpython shows up here as a loader error.
pub fn probe(server: &Path) -> anyhow::Result<String> {
    let out = Command::new(server)
        .arg("--probe")
        .output()
        .with_context(|| format!("running {}", display_path(server)))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("error while loading shared libraries") {
            let lib = stderr
                .split(':')
                .map(str::trim)
                .find(|s| s.starts_with("libpython"))
                .unwrap_or("libpython");
            return Err(hinted(
                format!("the embedded server cannot start: {lib} is not installed on this machine"),
                "install the Python the server was built for (it needs its shared library), rebuild \
                 `deployctl-server` against this machine's Python (`PYO3_PYTHON=python3 cargo build --release`), \
                 or use `[backend] kind = \"gunicorn\"`",
            ));
        }
        anyhow::bail!("{} --probe failed: {}", display_path(server), stderr.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
