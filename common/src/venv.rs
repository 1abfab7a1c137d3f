//! A virtualenv's layout: where its interpreter, its scripts and its `pyvenv.cfg` are, and the
//! Python version it was made for.
//!
//! Owns: every path inside a virtualenv that deployctl names (the one place `bin/python3` is
//! spelled), shared by the CLI and the embedded server.
//! Does not own: creating or filling one (`orchestrate::venv` in the CLI), or where the
//! project's virtualenv is (`[app].venv`, resolved by `spec`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::error::hinted;
use crate::spec::display_path;

/// The file `python -m venv` (and virtualenv) write at the top of every virtualenv.
pub const PYVENV_CFG: &str = "pyvenv.cfg";

/// The virtualenv's interpreter.
pub fn python(venv: &Path) -> PathBuf {
    bin(venv, "python3")
}

/// A script or program installed into the virtualenv (`gunicorn`, `uwsgi`, `pip`).
pub fn bin(venv: &Path, name: &str) -> PathBuf {
    venv.join("bin").join(name)
}

/// The `X.Y` Python version of a virtualenv, from its `pyvenv.cfg` (venv writes `version`,
/// virtualenv `version_info`) or, for a plain prefix, its `lib/pythonX.Y` directory.
pub fn venv_python_version(venv: &Path) -> anyhow::Result<String> {
    let cfg = venv.join(PYVENV_CFG);
    if let Ok(text) = std::fs::read_to_string(&cfg) {
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=')
                && matches!(k.trim(), "version" | "version_info")
            {
                let mut parts = v.trim().split('.');
                if let (Some(a), Some(b)) = (parts.next(), parts.next()) {
                    return Ok(format!("{a}.{b}"));
                }
            }
        }
        bail!("{}: no `version` line", display_path(&cfg));
    }
    let lib = venv.join("lib");
    let entries = std::fs::read_dir(&lib)
        .with_context(|| format!("{} is not a virtualenv (no pyvenv.cfg, no lib/)", display_path(venv)))?;
    for e in entries.flatten() {
        if let Some(v) = e.file_name().to_str().and_then(|n| n.strip_prefix("python"))
            && v.split('.').count() == 2
        {
            return Ok(v.to_string());
        }
    }
    bail!(
        "{} is not a virtualenv (no pyvenv.cfg, no lib/pythonX.Y)",
        display_path(venv)
    )
}

/// The `home` a `pyvenv.cfg` names: the directory of the interpreter that made the virtualenv.
pub fn venv_home(venv: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(venv.join(PYVENV_CFG)).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == "home").then(|| PathBuf::from(v.trim()))
    })
}

/// The error for a virtualenv whose Python differs from the one the server links.
pub fn check_venv_version(venv: &Path, built_for: &str) -> anyhow::Result<()> {
    let found = venv_python_version(venv)?;
    if found != built_for {
        return Err(hinted(
            format!(
                "the virtualenv {} is Python {found}, but the embedded server was built for Python {built_for}",
                display_path(venv)
            ),
            format!(
                "rebuild deployctl-server against it (`PYO3_PYTHON={}/bin/python3 cargo build --release -p deployctl-server`), \
                 recreate the virtualenv with Python {built_for}, or use `[backend] kind = \"gunicorn\"`",
                display_path(venv)
            ),
        ));
    }
    Ok(())
}
