//! The host's configuration checked as it will run, with the new files in place: `nginx -t`
//! of the root's own `nginx.conf` (which includes every enabled site, so two apps meet
//! here), `apache2ctl -t` of the root's `/etc/apache2` (every enabled site and module) and `systemd-analyze verify` of the installed units (their programs looked up on this
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

/// Runs `nginx -t` on `ROOT/etc/nginx/nginx.conf`, `apache2ctl -t` on `ROOT/etc/apache2`
/// and `systemd-analyze verify` on `units` (host paths) under `root`. A tool that is
/// missing, or a configuration the root does not have, is skipped — said when the app's
/// files went into it (`nginx`, `apache`) — and a missing tool is a failure when `require`;
/// a failing check is an error with its output.
pub fn check(root: &Path, units: &[PathBuf], nginx: bool, apache: bool, require: bool) -> anyhow::Result<Checked> {
    let mut done = Checked::default();
    let conf = under(root, Path::new("/etc/nginx/nginx.conf"));
    match which::which("nginx") {
        Err(_) if nginx || conf.is_file() => done.skipped.push("nginx -t: nginx is not installed".into()),
        Err(_) => {}
        Ok(_) if !conf.is_file() && !nginx => {}
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
                let text = String::from_utf8_lossy(&out.stderr);
                let msg = format!("`nginx -t -c {}` failed:\n{}", conf.display(), text.trim());
                if text.contains("duplicate default server") {
                    return Err(crate::printer::hinted(
                        msg,
                        "another site is the default server of this address (Debian's `default` site is: remove \
                         /etc/nginx/sites-enabled/default); deployctl-default.conf is the catch-all of every app install places",
                    ));
                }
                anyhow::bail!(msg);
            }
            done.passed.push(format!("nginx -t -c {}", conf.display()));
        }
    }
    let apache_dir = under(root, Path::new("/etc/apache2"));
    let apache_conf = apache_dir.join("apache2.conf");
    match which::which("apache2ctl") {
        Err(_) if apache || apache_conf.is_file() => {
            done.skipped.push("apache2ctl -t: apache2ctl is not installed".into())
        }
        Err(_) => {}
        Ok(_) if !apache_conf.is_file() && !apache => {}
        Ok(_) if !apache_conf.is_file() => done
            .skipped
            .push(format!("apache2ctl -t: {} does not exist", apache_conf.display())),
        Ok(ctl) => {
            // apache2ctl reads `envvars` from APACHE_CONFDIR and runs `apache2 -d` on it:
            // the root's own configuration, every enabled site and module in it.
            let out = std::process::Command::new(&ctl)
                .arg("-t")
                .env("APACHE_CONFDIR", &apache_dir)
                .output()?;
            if !out.status.success() {
                anyhow::bail!(
                    "`APACHE_CONFDIR={} apache2ctl -t` failed:\n{}",
                    apache_dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            done.passed
                .push(format!("APACHE_CONFDIR={} apache2ctl -t", apache_dir.display()));
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
