//! The host's configuration checked as it will run, with the new files in place: `nginx -t`
//! of the root's own `nginx.conf` (which includes every enabled site, so two apps meet
//! here), `apache2ctl -t` of the root's `/etc/apache2` (every enabled site and module) and `systemd-analyze verify` of the installed units (their programs looked up on this
//! machine). A staged root is read through a copy whose absolute paths name the root
//! ([`staged_view`]). Does not own: the
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
            let view = staged_view(root, Path::new("/etc/nginx"))?;
            let read = view.as_ref().map_or(conf.clone(), |v| v.dir.join("nginx.conf"));
            let out = std::process::Command::new(&nginx)
                .arg("-t")
                .arg("-q")
                .arg("-c")
                .arg(&read)
                .arg("-e")
                .arg(scratch.path().join("error.log"))
                .output()?;
            if !out.status.success() {
                let text = unmapped(
                    &String::from_utf8_lossy(&out.stderr),
                    view.as_ref(),
                    &under(root, Path::new("/etc/nginx")),
                );
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
            let view = staged_view(root, Path::new("/etc/apache2"))?;
            let out = std::process::Command::new(&ctl)
                .arg("-t")
                .env("APACHE_CONFDIR", view.as_ref().map_or(&apache_dir, |v| &v.dir))
                .output()?;
            if !out.status.success() {
                anyhow::bail!(
                    "`APACHE_CONFDIR={} apache2ctl -t` failed:\n{}",
                    apache_dir.display(),
                    unmapped(&String::from_utf8_lossy(&out.stderr), view.as_ref(), &apache_dir).trim()
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

/// A staged root's copy of a server's configuration directory (`/etc/nginx`, `/etc/apache2`)
/// as the server will read it once the root is the machine's `/`.
pub struct StagedView {
    _scratch: tempfile::TempDir,
    /// The copy of the directory.
    pub dir: PathBuf,
}

/// `text` (a server's message) naming the staged directory instead of its scratch copy.
fn unmapped(text: &str, view: Option<&StagedView>, staged: &Path) -> String {
    match view {
        Some(v) => text.replace(&v.dir.display().to_string(), &staged.display().to_string()),
        None => text.to_string(),
    }
}

/// The paths a server's configuration names absolutely that live in the root once installed:
/// its own directory (Debian's `nginx.conf` includes `/etc/nginx/sites-enabled/*`), the state
/// directories (certificates in `/var/lib/deployctl/NAME/tls/`) and deployctl's configuration
/// (`/etc/deployctl/NAME/`). Everything else (modules in `/usr`, logs) is the machine's.
const ROOTED: &[&str] = &["/var/lib/deployctl/", "/etc/deployctl/"];

/// For a root other than `/`: a scratch copy of `ROOT/DIR` whose files name the root's paths
/// instead of the machine's, so `nginx -t` and `apache2ctl -t` read the staged sites and
/// certificates, not the ones this machine happens to have (a staged `nginx.conf` still says
/// `include /etc/nginx/sites-enabled/*`). Links are kept as links (relative ones resolve in the
/// copy; Debian's absolute module links point into `/usr`). `None` for `/` itself.
pub fn staged_view(root: &Path, dir: &Path) -> anyhow::Result<Option<StagedView>> {
    if root == Path::new("/") {
        return Ok(None);
    }
    let scratch = tempfile::tempdir()?;
    let copy = scratch.path().join(dir.strip_prefix("/").unwrap_or(dir));
    let staged = under(root, dir);
    let mut map: Vec<(String, String)> = vec![
        // A root whose files already name it (a test's staged nginx.conf) reads the copy too.
        (format!("{}/", staged.display()), format!("{}/", copy.display())),
        (format!("{}/", dir.display()), format!("{}/", copy.display())),
    ];
    map.extend(
        ROOTED
            .iter()
            .map(|p| (p.to_string(), format!("{}/", under(root, Path::new(p)).display()))),
    );
    copy_mapped(&staged, &copy, &map)?;
    Ok(Some(StagedView {
        _scratch: scratch,
        dir: copy,
    }))
}

fn copy_mapped(from: &Path, to: &Path, map: &[(String, String)]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let kind = e.file_type()?;
        let dest = to.join(e.file_name());
        if kind.is_dir() {
            copy_mapped(&e.path(), &dest, map)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path())?, &dest)?;
        } else {
            let bytes = std::fs::read(e.path())?;
            let out = match String::from_utf8(bytes) {
                Ok(text) => map_paths(&text, map).into_bytes(),
                Err(e) => e.into_bytes(),
            };
            std::fs::write(&dest, out)?;
        }
    }
    Ok(())
}

/// `text` with each `from` prefix replaced by its `to` where it starts a path: at the start of
/// a word, after whitespace, a quote, `=` or `:` (`unix:`), so a path that merely ends in
/// `/etc/nginx/` (a root's own) is mapped by its full prefix, not its tail.
fn map_paths(text: &str, map: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    'outer: while i < text.len() {
        let at_start = i == 0 || text[..i].ends_with(|c: char| c.is_whitespace() || "\"'=:".contains(c));
        if at_start {
            for (from, to) in map {
                if text[i..].starts_with(from.as_str()) {
                    out.push_str(to);
                    i += from.len();
                    continue 'outer;
                }
            }
        }
        let c = text[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::map_paths;

    #[test]
    fn paths_are_mapped_where_they_start() {
        let map = vec![
            ("/r/etc/nginx/".to_string(), "/s/etc/nginx/".to_string()),
            ("/etc/nginx/".to_string(), "/s/etc/nginx/".to_string()),
            ("/var/lib/deployctl/".to_string(), "/r/var/lib/deployctl/".to_string()),
        ];
        let text = "include /etc/nginx/sites-enabled/*;\ninclude /r/etc/nginx/conf.d/*.conf;\n\
                    ssl_certificate \"/var/lib/deployctl/a/tls/live/fullchain.pem\";\nroot /srv/etc/nginx/x;\n";
        assert_eq!(
            map_paths(text, &map),
            "include /s/etc/nginx/sites-enabled/*;\ninclude /s/etc/nginx/conf.d/*.conf;\n\
             ssl_certificate \"/r/var/lib/deployctl/a/tls/live/fullchain.pem\";\nroot /srv/etc/nginx/x;\n"
        );
    }
}
