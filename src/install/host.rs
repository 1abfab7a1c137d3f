//! The host's configuration checked as it will run, with the new files in place: `nginx -t`
//! of the root's own `nginx.conf` (which includes every enabled site, so two apps meet
//! here) and `systemd-analyze verify` of the installed units (their programs looked up on this
//! machine). Does not own: the
//! per-file validators (`validate::gate`) or undoing an install (`apply`).

use std::path::{Path, PathBuf};

use super::layout::under;

/// What ran and what could not.
#[derive(Debug, Default)]
pub struct Checked {
    pub passed: Vec<String>,
    pub skipped: Vec<String>,
}

/// Runs `nginx -t` on `ROOT/etc/nginx/nginx.conf` and `systemd-analyze verify` on `units`
/// (host paths) under `root`. A tool that is missing, or an nginx.conf the root does not
/// have, is skipped (a missing tool is a failure when `require`); a failing check is an error with its output.
pub fn check(root: &Path, units: &[PathBuf], require: bool) -> anyhow::Result<Checked> {
    let mut done = Checked::default();
    let conf = under(root, Path::new("/etc/nginx/nginx.conf"));
    match which::which("nginx") {
        Err(_) => done.skipped.push("nginx -t: nginx is not installed".into()),
        Ok(_) if !conf.is_file() => done
            .skipped
            .push(format!("nginx -t: {} does not exist", conf.display())),
        Ok(nginx) => {
            let scratch = tempfile::tempdir()?;
            let out = std::process::Command::new(&nginx)
                .arg("-t")
                .arg("-q")
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(scratch.path().join("error.log"))
                .output()?;
            if !out.status.success() {
                anyhow::bail!(
                    "`nginx -t -c {}` failed:\n{}",
                    conf.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            done.passed.push(format!("nginx -t -c {}", conf.display()));
        }
    }
    match which::which("systemd-analyze") {
        Err(_) => done
            .skipped
            .push("systemd-analyze verify: systemd-analyze is not installed".into()),
        Ok(_) if units.is_empty() => {}
        Ok(sa) => {
            let mut cmd = std::process::Command::new(&sa);
            // On the staged files themselves, not `--root`: the programs the units run are
            // looked up on this machine (a staged root for an image does not hold them).
            cmd.arg("verify").arg("--recursive-errors=no");
            cmd.args(units.iter().map(|u| under(root, u)));
            let out = cmd.output()?;
            let text =
                String::from_utf8_lossy(&out.stderr).trim().to_string() + String::from_utf8_lossy(&out.stdout).trim();
            if !out.status.success() || !text.is_empty() {
                anyhow::bail!("`systemd-analyze verify` of the installed units failed:\n{text}");
            }
            done.passed.push("systemd-analyze verify".into());
        }
    }
    let missing: Vec<&String> = done
        .skipped
        .iter()
        .filter(|s| s.ends_with("is not installed"))
        .collect();
    if require && !missing.is_empty() {
        anyhow::bail!(
            "DEPLOYCTL_REQUIRE_VALIDATORS=1 and a check of the host could not run: {}",
            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
        );
    }
    Ok(done)
}
