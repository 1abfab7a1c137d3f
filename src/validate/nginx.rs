//! `nginx -t` on a site file, through a throwaway wrapper configuration.
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

pub fn jobs<'a>(s: &'a Scratch) -> Vec<Job<'a>> {
    let tool = find_tool("nginx", HINT);
    sites(s)
        .into_iter()
        .map(|(rel, path)| {
            let tool = tool.clone();
            // nginx -t also reads the installed uwsgi_params and mime.types, which come with
            // the binary.
            let extra = tool.as_ref().ok().map(|t| super::tool_identity(t));
            Job::new("nginx -t", &rel.clone(), vec![rel.clone()], extra, move || {
                let outcome = match tool {
                    Ok(nginx) => test_site(&nginx, &path),
                    Err(missing) => Ok(missing),
                };
                verdict("nginx -t", &rel, outcome)
            })
        })
        .collect()
}

/// The site files of the tree (`nginx/*.conf`) with their paths in the scratch directory.
pub(super) fn sites(s: &Scratch) -> Vec<(String, PathBuf)> {
    s.files_ending(".conf")
        .into_iter()
        .filter(|(rel, _)| rel.starts_with("nginx/"))
        .collect()
}

/// Writes the wrapper for `site` into a new prefix; returns the prefix and wrapper path.
pub fn wrapper(nginx: &Path, site: &Path) -> std::io::Result<(tempfile::TempDir, PathBuf)> {
    let prefix = tempfile::Builder::new().prefix("deployctl-nginx-").tempdir()?;
    let p = prefix.path();
    std::fs::create_dir_all(p.join("temp"))?;
    if let Some(conf_dir) = conf_dir(nginx) {
        for name in ["uwsgi_params", "mime.types"] {
            let from = conf_dir.join(name);
            if from.is_file() {
                std::fs::copy(&from, p.join(name))?;
            }
        }
    }
    // Temporary directories may be anywhere ($TMPDIR): every path is quoted for nginx.
    let d = |rel: &str| crate::render::quote::nginx_literal(&p.join(rel).display().to_string());
    let conf = format!(
        "pid {pid};\nerror_log {error};\nevents {{}}\nhttp {{\n    access_log {access};\n    \
         client_body_temp_path {body};\n    proxy_temp_path {proxy};\n    \
         fastcgi_temp_path {fastcgi};\n    uwsgi_temp_path {uwsgi};\n    scgi_temp_path {scgi};\n    \
         include {site};\n}}\n",
        pid = d("nginx.pid"),
        error = d("error.log"),
        access = d("access.log"),
        body = d("temp/body"),
        proxy = d("temp/proxy"),
        fastcgi = d("temp/fastcgi"),
        uwsgi = d("temp/uwsgi"),
        scgi = d("temp/scgi"),
        site = crate::render::quote::nginx_include(&site.display().to_string())
    );
    let wrapper = p.join("nginx.conf");
    std::fs::write(&wrapper, conf)?;
    Ok((prefix, wrapper))
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

/// nginx's configuration directory, from `--conf-path=` in `nginx -V` (asked once per
/// binary and process).
pub fn conf_dir(nginx: &Path) -> Option<PathBuf> {
    type Known = std::sync::Mutex<Vec<(PathBuf, Option<PathBuf>)>>;
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
    let found = (|| {
        let (_, out) = run(nginx, &["-V".as_ref()], &[]).ok()?;
        let path = out.split_whitespace().find_map(|w| w.strip_prefix("--conf-path="))?;
        Path::new(path).parent().map(Path::to_path_buf)
    })();
    known
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((nginx.to_path_buf(), found.clone()));
    found
}
