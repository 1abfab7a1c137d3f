//! `apache2 -t` on both shapes of Apache's configuration: the self-contained `httpd.conf`,
//! with its runtime directory moved to a scratch one (`-C 'Define DEPLOYCTL_RUN …'`: Apache
//! checks that `DefaultRuntimeDir` and the `Mutex` directory exist), and the Debian site,
//! copied into a scratch directory and included from a minimal self-contained wrapper that
//! loads the MPM and the modules the plan lists (what `a2enmod` enables on the server).
//!
//! With `[tls]`, both are checked on a copy that reads a self-signed placeholder pair made in
//! the scratch directory (mod_ssl loads the certificate and key named while it parses).
//!
//! Does not own: which modules a site needs (the plan's `ApacheFiles`) or the files' text.

use std::path::{Path, PathBuf};

use super::{Job, Outcome, Scratch, run, verdict};
use crate::plan::ApacheFiles;
use crate::render::quote;

pub const HINT: &str = "install Apache httpd: `apt-get install apache2 libapache2-mod-wsgi-py3`";

/// Debian installs `apache2` in /usr/sbin, which is not on every user's `PATH`.
const DEBIAN_APACHE2: &str = "/usr/sbin/apache2";

/// The `apache2` binary: on `PATH`, or Debian's.
pub fn find() -> Result<PathBuf, Outcome> {
    which::which("apache2")
        .ok()
        .or_else(|| {
            Path::new(DEBIAN_APACHE2)
                .is_file()
                .then(|| PathBuf::from(DEBIAN_APACHE2))
        })
        .ok_or_else(|| Outcome::Missing { hint: HINT.to_string() })
}

/// `apache2 -t` on the Apache output `rel` of the plan (the site or the self-contained one).
pub(super) fn job<'a>(s: &'a Scratch, rel: &str) -> Job<'a> {
    let tool = find();
    let path = s.path(rel);
    let rel = rel.to_string();
    let apache = s.plan.apache.clone();
    let self_contained = apache.as_ref().is_some_and(|a| a.httpd_conf.rel == rel);
    // The modules it loads come with the binary's package.
    let extra = tool.as_ref().ok().map(|t| super::tool_identity(t));
    let tls = s
        .plan
        .tls
        .as_ref()
        .filter(|_| s.plan.edge().tier == crate::plan::Tier::Apache)
        .map(|t| (t.certificate.clone(), t.key.clone()));
    // One per file: the two jobs run concurrently.
    let placeholder = s.dir.join(format!(".tls-placeholder-{}", rel.replace('/', "-")));
    Job::new("apache2 -t", &rel.clone(), vec![rel.clone()], extra, move || {
        let path = match &tls {
            None => Ok(path),
            Some(pair) => with_placeholder(&path, pair, &placeholder),
        };
        let outcome = match (tool, apache, path) {
            (Err(missing), _, _) => Ok(missing),
            (_, _, Err(e)) => Err(e),
            (Ok(_), None, _) => Ok(Outcome::Failed("the plan has no Apache tier".into())),
            (Ok(apache2), Some(_), Ok(path)) if self_contained => test_self_contained(&apache2, &path),
            (Ok(apache2), Some(a), Ok(path)) => test_site(&apache2, &a, &path),
        };
        verdict("apache2 -t", &rel, outcome)
    })
}

/// A copy of `conf` reading a self-signed placeholder pair made in `dir` instead of its
/// certificate and key (on the server, or made by `up` when it starts), so that `apache2 -t`,
/// which loads them, checks the configuration anywhere.
fn with_placeholder(conf: &Path, (certificate, key): &(PathBuf, PathBuf), dir: &Path) -> std::io::Result<PathBuf> {
    let text = std::fs::read_to_string(conf)?;
    let cert = crate::acme::install_self_signed(dir, &["localhost".to_string()], 1)
        .map_err(|e| std::io::Error::other(format!("making a placeholder certificate: {e:#}")))?;
    let q = |p: &Path| quote::apache(&p.to_string_lossy());
    let text = text
        .replace(
            &format!("SSLCertificateFile {}\n", q(certificate)),
            &format!("SSLCertificateFile {}\n", q(&cert.fullchain)),
        )
        .replace(
            &format!("SSLCertificateKeyFile {}\n", q(key)),
            &format!("SSLCertificateKeyFile {}\n", q(&cert.key)),
        );
    let copy = conf.with_extension("conf.with-placeholder");
    std::fs::write(&copy, text)?;
    Ok(copy)
}

/// `apache2 -t` on a self-contained configuration, its runtime directory a scratch one.
pub fn test_self_contained(apache2: &Path, conf: &Path) -> std::io::Result<Outcome> {
    let run_dir = tempfile::Builder::new().prefix("deployctl-apache-").tempdir()?;
    let define = format!(
        "Define DEPLOYCTL_RUN {}",
        quote::apache_variable(&run_dir.path().display().to_string())
    );
    let args = [
        "-t".as_ref(),
        "-C".as_ref(),
        define.as_ref(),
        "-f".as_ref(),
        conf.as_os_str(),
    ];
    let (ok, out) = run(apache2, &args, &[])?;
    Ok(verdict_of(ok, out))
}

/// The self-contained wrapper of a Debian site: everything Debian's apache2.conf gives a
/// site (an MPM, the modules `a2enmod` enabled, MIME types), kept under `dir`.
pub fn site_wrapper(a: &ApacheFiles, dir: &Path, site: &Path) -> String {
    let d = |p: &Path| quote::apache(&p.display().to_string());
    let mut conf = format!(
        "ServerRoot {root}\nDefaultRuntimeDir {root}\nPidFile {pid}\nMutex {mutex} default\nErrorLog {log}\n",
        root = d(dir),
        pid = d(&dir.join("httpd.pid")),
        mutex = quote::apache(&format!("file:{}", dir.display())),
        log = d(&dir.join("error.log")),
    );
    let mpm = std::iter::once(format!("mpm_{}", a.mpm));
    for m in mpm.chain(a.modules.iter().map(|m| m.to_string())) {
        conf.push_str(&format!(
            "LoadModule {m}_module {}\n",
            d(&a.module_dir.join(format!("mod_{m}.so")))
        ));
    }
    conf.push_str(&format!(
        "ServerName localhost\nTypesConfig \"/etc/mime.types\"\nInclude {}\n",
        d(site)
    ));
    conf
}

/// `apache2 -t` on a Debian site, included from [`site_wrapper`] in a scratch directory.
pub fn test_site(apache2: &Path, a: &ApacheFiles, site: &Path) -> std::io::Result<Outcome> {
    let dir = tempfile::Builder::new().prefix("deployctl-apache-").tempdir()?;
    // Included from a copy beside the wrapper: `Include` reads `*`, `?` and `[` in any part
    // of its path as wildcards (a project directory may be named with them), while Debian
    // includes the installed site from /etc/apache2/sites-enabled/.
    let copy = dir.path().join("site.conf");
    std::fs::copy(site, &copy)?;
    let wrapper = dir.path().join("httpd.conf");
    std::fs::write(&wrapper, site_wrapper(a, dir.path(), &copy))?;
    let args = ["-t".as_ref(), "-f".as_ref(), wrapper.as_os_str()];
    let (ok, out) = run(apache2, &args, &[])?;
    Ok(verdict_of(ok, out))
}

fn verdict_of(ok: bool, out: String) -> Outcome {
    if ok {
        Outcome::Ok("syntax ok".into())
    } else {
        Outcome::Failed(out)
    }
}
