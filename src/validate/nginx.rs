//! `nginx -t` on a site file, through a throwaway wrapper configuration; and that wrapper,
//! which `up` also runs nginx with ([`write_wrapper`]).
//!
//! A site file is meant for `sites-available/`, inside Debian's `http {}`. To check it
//! unprivileged and without touching /etc/nginx, it is included from a small `nginx.conf`
//! in a scratch prefix that also holds the pid file, logs and temp paths
//! (reference deploy-configs.md §2). `uwsgi_params` and `mime.types` are copied from the
//! installed nginx, so the site's `include uwsgi_params;` and `include mime.types;` resolve
//! exactly as they will on the server (in nginx's configuration directory).

use std::path::{Path, PathBuf};

use super::{Job, Outcome, Scratch, find_tool, run, verdict};

pub const HINT: &str = "install nginx: `apt-get install nginx`";

/// `nginx -t` on the site `rel`.
pub(super) fn job<'a>(s: &'a Scratch, rel: &str) -> Job<'a> {
    let tool = find_tool("nginx", HINT);
    let path = s.path(rel);
    let rel = rel.to_string();
    // nginx -t also reads the installed uwsgi_params and mime.types, which come with the
    // binary.
    let extra = tool.as_ref().ok().map(|t| super::tool_identity(t));
    let tls = s.plan.tls.as_ref().map(|t| (t.certificate.clone(), t.key.clone()));
    let placeholder = s.dir.join(".tls-placeholder");
    Job::new("nginx -t", &rel.clone(), vec![rel.clone()], extra, move || {
        let outcome = match tool {
            Ok(nginx) => match tls {
                None => test_site(&nginx, &path),
                Some(pair) => with_placeholder(&path, &pair, &placeholder).and_then(|site| test_site(&nginx, &site)),
            },
            Err(missing) => Ok(missing),
        };
        verdict("nginx -t", &rel, outcome)
    })
}

/// What a wrapper configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `nginx -t` and gixy: logs in the prefix.
    Check,
    /// `deployctl up`: in the foreground, one worker, errors to stderr and the access log to
    /// stdout (its log multiplexer reads both); as root, workers stay root (an unprivileged
    /// `nobody` could not reach the app's socket under the project).
    Run,
}

/// Writes the wrapper for `site` into a new prefix; returns the prefix and wrapper path.
pub fn wrapper(nginx: &Path, site: &Path) -> std::io::Result<(tempfile::TempDir, PathBuf)> {
    let prefix = tempfile::Builder::new().prefix("deployctl-nginx-").tempdir()?;
    let wrapper = write_wrapper(nginx, prefix.path(), site, Purpose::Check)?;
    Ok((prefix, wrapper))
}

/// The `http {}` around the rendered site file, with everything nginx writes kept under
/// `prefix`, so it runs unprivileged and without touching /etc/nginx: the one wrapper of
/// `check` and `up`. `uwsgi_params` and `mime.types` are copied from the installed nginx, so
/// the site's `include uwsgi_params;` and `include mime.types;` resolve in the prefix as they
/// will on the server. Returns the wrapper's path (`PREFIX/nginx.conf`).
pub fn write_wrapper(nginx: &Path, prefix: &Path, site: &Path, purpose: Purpose) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(prefix.join("temp"))?;
    if let Some(conf_dir) = conf_dir(nginx) {
        for name in ["uwsgi_params", "mime.types"] {
            let from = conf_dir.join(name);
            if from.is_file() {
                std::fs::copy(&from, prefix.join(name))?;
            }
        }
    }
    // The prefix may be anywhere ($TMPDIR, a project with spaces, quotes or `$` in its path):
    // every path is quoted for nginx.
    let d = |rel: &str| crate::render::quote::nginx_literal(&prefix.join(rel).display().to_string());
    let (head, events, error_log, access_log) = match purpose {
        Purpose::Check => (String::new(), String::new(), d("error.log"), d("access.log")),
        Purpose::Run => {
            // SAFETY: geteuid has no preconditions.
            let user = if unsafe { libc::geteuid() } == 0 {
                "user root;\n"
            } else {
                ""
            };
            (
                format!("{user}daemon off;\nworker_processes 1;\n"),
                format!(
                    " worker_connections {}; ",
                    crate::plan::policy::LOCAL_NGINX_WORKER_CONNECTIONS
                ),
                "stderr".to_string(),
                "/dev/stdout".to_string(),
            )
        }
    };
    let conf = format!(
        "{head}pid {pid};\nerror_log {error_log};\nevents {{{events}}}\nhttp {{\n    access_log {access_log};\n    \
         client_body_temp_path {body};\n    proxy_temp_path {proxy};\n    \
         fastcgi_temp_path {fastcgi};\n    uwsgi_temp_path {uwsgi};\n    scgi_temp_path {scgi};\n    \
         include {site};\n}}\n",
        pid = d("nginx.pid"),
        body = d("temp/body"),
        proxy = d("temp/proxy"),
        fastcgi = d("temp/fastcgi"),
        uwsgi = d("temp/uwsgi"),
        scgi = d("temp/scgi"),
        site = crate::render::quote::nginx_include(&site.display().to_string())
    );
    let wrapper = prefix.join("nginx.conf");
    std::fs::write(&wrapper, conf)?;
    Ok(wrapper)
}

/// A copy of the site reading a self-signed placeholder pair made in `dir` instead of its
/// certificate and key (on the server, or made by `up` when it starts), so that `nginx -t`,
/// which loads them, checks the site anywhere.
fn with_placeholder(site: &Path, (certificate, key): &(PathBuf, PathBuf), dir: &Path) -> std::io::Result<PathBuf> {
    let text = std::fs::read_to_string(site)?;
    let cert = crate::acme::install_self_signed(dir, &["localhost".to_string()], 1)
        .map_err(|e| std::io::Error::other(format!("making a placeholder certificate: {e:#}")))?;
    let q = |p: &Path| crate::render::quote::nginx_script(&p.to_string_lossy());
    let text = text
        .replace(
            &format!("ssl_certificate {};", q(certificate)),
            &format!("ssl_certificate {};", q(&cert.fullchain)),
        )
        .replace(
            &format!("ssl_certificate_key {};", q(key)),
            &format!("ssl_certificate_key {};", q(&cert.key)),
        );
    let copy = site.with_extension("conf.with-placeholder");
    std::fs::write(&copy, text)?;
    Ok(copy)
}

fn test_site(nginx: &Path, site: &Path) -> std::io::Result<Outcome> {
    let (prefix, conf) = wrapper(nginx, site)?;
    let p = prefix.path();
    let error_log = p.join("error.log");
    let args = [
        "-t".as_ref(),
        "-q".as_ref(),
        "-p".as_ref(),
        p.as_os_str(),
        "-c".as_ref(),
        conf.as_os_str(),
        "-e".as_ref(),
        error_log.as_os_str(),
    ];
    let (ok, out) = run(nginx, &args, &[])?;
    Ok(if ok {
        Outcome::Ok("syntax ok".into())
    } else {
        Outcome::Failed(out)
    })
}

/// nginx's configuration directory, from `--conf-path=` in `nginx -V`.
pub fn conf_dir(nginx: &Path) -> Option<PathBuf> {
    let out = version_report(nginx)?;
    let path = out.split_whitespace().find_map(|w| w.strip_prefix("--conf-path="))?;
    Path::new(path).parent().map(Path::to_path_buf)
}

/// `nginx -V`'s report (version, OpenSSL, configure arguments), asked once per binary and
/// process.
pub fn version_report(nginx: &Path) -> Option<String> {
    type Known = std::sync::Mutex<Vec<(PathBuf, Option<String>)>>;
    static KNOWN: std::sync::OnceLock<Known> = std::sync::OnceLock::new();
    let known = KNOWN.get_or_init(Default::default);
    if let Some((_, d)) = known
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(n, _)| n == nginx)
    {
        return d.clone();
    }
    let found = run(nginx, &["-V".as_ref()], &[]).ok().map(|(_, out)| out);
    known
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((nginx.to_path_buf(), found.clone()));
    found
}
