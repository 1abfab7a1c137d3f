//! The app's virtualenv for `up`: created with the Python the embedded server links when it is
//! missing, its requirements installed with progress shown, and the installed requirements
//! recorded so the next `up` skips the install when nothing changed.
//!
//! A virtualenv that exists without deployctl's record was made by someone else (a setup
//! script, the user): it is used as it is, never modified.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::printer::{Printer, hinted};
use crate::spec::{Spec, display_path};

/// The requirements as they were last installed by deployctl (the full text: comparing it is
/// exact, where a hash would only be nearly so).
const RECORD: &str = ".deployctl-requirements.txt";

pub fn ensure(spec: &Spec, python_version: &str, printer: &Printer) -> anyhow::Result<()> {
    let venv = &spec.app.venv;
    let record = venv.join(RECORD);
    let wanted = match &spec.app.requirements {
        Some(r) => Some(std::fs::read_to_string(r).with_context(|| format!("reading {}", display_path(r)))?),
        None => None,
    };
    if venv.join("bin/python3").exists() {
        if !record.exists() {
            return Ok(()); // not ours
        }
        let installed = std::fs::read_to_string(&record).unwrap_or_default();
        if wanted.as_deref().unwrap_or("") == installed {
            printer.status("venv", &format!("{} is up to date", display_path(venv)));
            return Ok(());
        }
        printer.status("venv", "requirements changed since the last install");
    } else {
        let python = find_python(python_version)?;
        let progress = printer.progress(&format!("creating {} with {}", display_path(venv), python.display()));
        let out = Command::new(&python)
            .args(["-m", "venv"])
            .arg(venv)
            .output()
            .with_context(|| format!("running {}", python.display()))?;
        if let Some(p) = progress {
            p.finish_and_clear();
        }
        if !out.status.success() {
            anyhow::bail!(
                "{} -m venv {} failed:\n{}",
                python.display(),
                display_path(venv),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        printer.status("venv", &format!("created {}", display_path(venv)));
    }
    let Some(requirements) = &spec.app.requirements else {
        std::fs::write(&record, "")?;
        return Ok(());
    };
    install(venv, requirements, printer)?;
    std::fs::write(&record, wanted.unwrap_or_default()).with_context(|| format!("writing {}", record.display()))?;
    Ok(())
}

fn install(venv: &Path, requirements: &Path, printer: &Printer) -> anyhow::Result<()> {
    let pip = venv.join("bin/pip");
    let progress = printer.progress(&format!("installing {}", display_path(requirements)));
    let out = Command::new(&pip)
        .args(["install", "--disable-pip-version-check", "-q", "-r"])
        .arg(requirements)
        .output()
        .with_context(|| format!("running {}", pip.display()))?;
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    if !out.status.success() {
        return Err(hinted(
            format!(
                "installing {} failed:\n{}",
                display_path(requirements),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            "fix the requirements (or the network) and run `deployctl up` again; nothing was started",
        ));
    }
    printer.status("venv", &format!("installed {}", display_path(requirements)));
    Ok(())
}

/// The `X.Y` version of a Python interpreter (a path or a name on PATH).
pub fn python_version(python: &Path) -> Option<String> {
    let out = Command::new(python)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

/// `pythonX.Y` on PATH, else `python3` if it is that version.
fn find_python(version: &str) -> anyhow::Result<PathBuf> {
    for name in [format!("python{version}"), "python3".to_string()] {
        if let Ok(p) = which::which(&name)
            && python_version(&p).as_deref() == Some(version)
        {
            return Ok(p);
        }
    }
    Err(hinted(
        format!("no Python {version} to create the virtualenv with (the embedded server links Python {version})"),
        format!("install python{version}, or create the virtualenv yourself"),
    ))
}
