//! Apache httpd targets (`apache+gunicorn`, `apache+embedded`): the settings of
//! reference/deploy-configs.md §1 and §7 asserted on both shapes of the parsed output (the
//! Debian site and the self-contained `httpd.conf`), `apache2 -t` catching the faults it exists
//! for, and quoting read back by the real `apache2` serving a file from an awkward directory.
//! With DEPLOYCTL_REQUIRE_VALIDATORS=1 (as in CI) a missing `apache2` fails these tests.

mod common;

use common::up::free_port;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use common::parse::{self, Directive};
use common::{Cli, check_with, example, override_dir, project, render};

const APACHE_TARGETS: [&str; 3] = ["apache+gunicorn", "apache+embedded", "apache+uwsgi"];

const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
];

fn required() -> bool {
    std::env::var("DEPLOYCTL_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1")
}

/// Debian's `apache2`, when installed; a failure when CI requires it.
fn apache2() -> Option<PathBuf> {
    let found = which("apache2").or_else(|| {
        Path::new("/usr/sbin/apache2")
            .is_file()
            .then(|| "/usr/sbin/apache2".into())
    });
    assert!(
        found.is_some() || !required(),
        "apache2 is not installed (DEPLOYCTL_REQUIRE_VALIDATORS=1): run scripts/setup.sh"
    );
    found
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()))
}

/// Both shapes of `target`'s Apache configuration for `dir`, parsed: (site, httpd.conf, raw
/// site text).
fn both(dir: &Path, target: &str) -> (Directive, Directive, String) {
    let files = render(dir, target);
    let name = files
        .keys()
        .find_map(|k| k.strip_prefix("apache/").filter(|n| *n != "httpd.conf"))
        .expect("an Apache site")
        .to_string();
    let site_text = files[&format!("apache/{name}")].clone();
    (
        parse::apache(&site_text),
        parse::apache(&files["apache/httpd.conf"]),
        site_text,
    )
}

fn vhosts(main: &Directive) -> (Directive, Directive) {
    let v: Vec<&Directive> = main.all("VirtualHost").collect();
    assert_eq!(v.len(), 2, "a default virtual host and the site");
    (v[0].clone(), v[1].clone())
}

fn section<'a>(block: &'a Directive, name: &str, arg: &str) -> &'a Directive {
    block
        .all(name)
        .find(|d| d.args.first().map(String::as_str) == Some(arg))
        .unwrap_or_else(|| panic!("no <{name} {arg}>"))
}

fn with_args<'a>(block: &'a Directive, name: &str) -> Vec<&'a [String]> {
    block.all(name).map(|d| d.args.as_slice()).collect()
}

#[test]
fn banners_trace_and_unknown_hosts_are_off_in_both_shapes() {
    for target in APACHE_TARGETS {
        let (site, httpd, _) = both(&example("flask-hello"), target);
        for main in [&site, &httpd] {
            assert_eq!(main.arg("ServerTokens"), "Prod", "{target}");
            assert_eq!(main.arg("ServerSignature"), "Off");
            assert_eq!(main.arg("TraceEnable"), "Off");
            let (default, app) = vhosts(main);
            assert_eq!(default.args, ["*:80"]);
            assert_eq!(app.args, ["*:80"]);
            assert_eq!(default.arg("ServerName"), "default.invalid");
            assert_eq!(section(&default, "Location", "/").arg("Require"), "all denied");
            assert_eq!(app.arg("ServerName"), "localhost");
            assert_eq!(app.arg("ServerAlias"), "flask-hello.test");
            assert_eq!(app.arg("ServerSignature"), "Off");
            assert_eq!(app.arg("TraceEnable"), "Off");
        }
        // Debian's ports.conf listens on 80 already; the self-contained one listens itself.
        assert!(site.all("Listen").next().is_none());
        assert_eq!(httpd.arg("Listen"), "0.0.0.0:80");
    }
}

#[test]
fn wildcard_names_are_aliases_and_server_name_is_an_exact_one() {
    let dir = project(
        "[app]\nname = \"w\"\nentry = \"app:app\"\n[server]\nnames = [\"*.a.test\", \".b.test\", \"c.test\"]\n",
        &[],
    );
    let (site, _, _) = both(dir.path(), "apache+gunicorn");
    let (_, app) = vhosts(&site);
    assert_eq!(app.arg("ServerName"), "b.test");
    let aliases: Vec<String> = app.all("ServerAlias").map(|d| d.args.join(" ")).collect();
    assert_eq!(aliases, ["*.a.test", "*.b.test", "c.test"]);
    let dir = project(
        "[app]\nname = \"w\"\nentry = \"app:app\"\n[server]\nnames = [\"*.a.test\"]\n",
        &[],
    );
    let (site, _, _) = both(dir.path(), "apache+gunicorn");
    let (_, app) = vhosts(&site);
    assert_eq!(app.arg("ServerName"), "w.invalid");
    assert_eq!(app.arg("ServerAlias"), "*.a.test");
}

#[test]
fn one_body_size_and_timeout_flow_into_apache() {
    let dir = project(
        "[app]\nname = \"flow\"\nentry = \"app:app\"\n[server]\nmax_body = \"25M\"\ntimeout = \"2m\"\nlisten = \"127.0.0.1:8080\"\n",
        &[],
    );
    let bytes = (25u64 << 20).to_string();
    for target in APACHE_TARGETS {
        let (site, httpd, _) = both(dir.path(), target);
        for main in [&site, &httpd] {
            let (_, app) = vhosts(main);
            assert_eq!(app.arg("LimitRequestBody"), bytes, "{target}");
            // One slack per hop above the app's own timeout, as nginx waits.
            assert_eq!(app.arg("Timeout"), "125");
            assert_eq!(app.arg("ProxyTimeout"), "125");
            // LimitRequestBody skips proxied requests: the declared length is refused here.
            assert_eq!(
                app.arg("RewriteCond"),
                format!("expr %{{HTTP:Content-Length}} -gt {bytes}")
            );
            assert_eq!(app.arg("RewriteRule"), "^ - [R=413,L]");
            let pass = with_args(&app, "ProxyPass");
            let last = pass.last().expect("ProxyPass /");
            // uWSGI is spoken to in its own protocol (mod_proxy_uwsgi), the others in HTTP.
            let scheme = if target == "apache+uwsgi" { "uwsgi" } else { "http" };
            assert_eq!(
                last[..2],
                ["/".to_string(), format!("unix:/run/flow.sock|{scheme}://localhost/")]
            );
            assert!(last.contains(&"timeout=125".to_string()), "{last:?}");
            assert!(last.contains(&"connectiontimeout=5".to_string()), "{last:?}");
            assert_eq!(app.arg("ProxyPassReverse"), "/ http://localhost/");
            assert_eq!(app.arg("ProxyPreserveHost"), "On");
            assert_eq!(app.arg("ProxyRequests"), "Off");
        }
        assert_eq!(site.arg("Listen"), "127.0.0.1:8080");
        let (_, app) = vhosts(&site);
        assert_eq!(app.args, ["*:8080"]);
    }
    // The app server behind Apache has the same timeout and is told the body limit's front.
    let files = render(dir.path(), "apache+embedded");
    let unit = parse::ini(&files["systemd/flow.service"], &['#', ';']);
    let exec: Vec<&str> = parse::value(&unit, "Service", "ExecStart").split(' ').collect();
    let flag = |f: &str| exec[exec.iter().position(|w| *w == f).unwrap_or_else(|| panic!("no {f}")) + 1];
    assert_eq!(flag("--max-body"), bytes);
    assert_eq!(flag("--timeout"), "120");
}

#[test]
fn statics_dotfiles_and_security_headers() {
    let ex = example("flask-hello");
    let static_dir = format!("{}/", ex.join("static").display());
    for target in APACHE_TARGETS {
        let (site, httpd, _) = both(&ex, target);
        for main in [&site, &httpd] {
            let (_, app) = vhosts(main);
            assert_eq!(
                with_args(&app, "Alias"),
                [&["/static/".to_string(), static_dir.clone()][..]]
            );
            let d = section(&app, "Directory", &static_dir);
            assert_eq!(d.arg("Require"), "all granted", "{target}");
            assert_eq!(d.arg("ExpiresActive"), "On");
            assert_eq!(d.arg("ExpiresDefault"), format!("access plus {} seconds", 7 * 86400));
            assert_eq!(d.arg("Options"), "None");
            // Static files are not proxied.
            let pass = with_args(&app, "ProxyPass");
            assert_eq!(pass[0], ["/static/".to_string(), "!".into()]);
            let dot = section(&app, "LocationMatch", r"/\.(?!well-known/)");
            assert_eq!(dot.arg("Require"), "all denied");
            let headers: BTreeMap<String, (String, String)> = app
                .all("Header")
                .map(|h| {
                    assert_eq!(h.args[..2], ["always".to_string(), "set".into()], "{h:?}");
                    (h.args[2].clone(), (h.args[3].clone(), h.args[4].clone()))
                })
                .collect();
            for (name, value) in SECURITY_HEADERS {
                assert_eq!(
                    headers.get(name),
                    Some(&(value.to_string(), format!("expr=-z resp('{name}')"))),
                    "{target}: {name}"
                );
            }
            // The client's forwarding headers are dropped before mod_proxy adds its own.
            let unset: Vec<String> = app
                .all("RequestHeader")
                .filter(|h| h.args[0] == "unset" && h.args.get(2).map(String::as_str) == Some("early"))
                .map(|h| h.args[1].clone())
                .collect();
            assert_eq!(unset, ["X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Server"]);
            assert!(
                app.all("RequestHeader")
                    .any(|h| h.args == ["set", "X-Forwarded-Proto", "expr=%{REQUEST_SCHEME}"])
            );
        }
    }
}

#[test]
fn the_self_contained_config_loads_exactly_the_modules_the_site_asks_a2enmod_for() {
    for target in APACHE_TARGETS {
        let (_, httpd, site_text) = both(&example("flask-hello"), target);
        let loaded: Vec<String> = httpd
            .all("LoadModule")
            .map(|d| {
                let id = d.args[0].trim_end_matches("_module").to_string();
                assert_eq!(d.args[1], format!("/usr/lib/apache2/modules/mod_{id}.so"));
                id
            })
            .collect();
        assert_eq!(loaded[0], "mpm_event", "the event MPM first");
        assert!(!loaded.contains(&"unixd".to_string()), "unixd is built in");
        let a2enmod: Vec<&str> = site_text
            .lines()
            .find_map(|l| l.trim_start_matches('#').trim().strip_prefix("a2enmod "))
            .expect("the a2enmod line")
            .split(' ')
            .collect();
        assert_eq!(loaded[1..], a2enmod, "{target}");
        assert_eq!(
            a2enmod,
            [
                "authz_core",
                "mime",
                "alias",
                "headers",
                "expires",
                "rewrite",
                "proxy",
                if target == "apache+uwsgi" {
                    "proxy_uwsgi"
                } else {
                    "proxy_http"
                }
            ]
        );
        for d in ["ServerRoot", "DefaultRuntimeDir"] {
            assert_eq!(httpd.arg(d), "${DEPLOYCTL_RUN}");
        }
        assert_eq!(httpd.arg("PidFile"), "${DEPLOYCTL_RUN}/httpd.pid");
        assert_eq!(httpd.arg("Mutex"), "file:${DEPLOYCTL_RUN} default");
        assert_eq!(httpd.arg("ErrorLog"), "/var/log/apache2/flask-hello-error.log");
        assert_eq!(httpd.arg("TypesConfig"), "/etc/mime.types");
        let define = section(&httpd, "IfDefine", "!DEPLOYCTL_RUN");
        assert_eq!(define.arg("Define"), "DEPLOYCTL_RUN /run/apache2-flask-hello");
        assert_eq!(section(&httpd, "Directory", "/").arg("Require"), "all denied");
    }
}

#[test]
fn apache2_t_rejects_an_unknown_directive_in_both_shapes() {
    if apache2().is_none() {
        return;
    }
    let t = override_dir("apache/_vhosts.tera", |s| {
        s.replace("    ProxyRequests Off", "    ProxyRequests Off\n    ProxyBogus On")
    });
    let run = check_with("apache+gunicorn", &t).failure();
    for file in ["apache/flask-hello.conf", "apache/httpd.conf"] {
        assert!(
            run.stderr.contains(&format!("apache2 -t {file} failed")),
            "{file}:\n{}",
            run.stderr
        );
    }
    assert!(run.stderr.contains("Invalid command 'ProxyBogus'"), "{}", run.stderr);
}

#[test]
fn apache2_t_catches_a_missing_load_module() {
    if apache2().is_none() {
        return;
    }
    let t = override_dir("apache/httpd.conf.tera", |s| {
        s.replace(
            "LoadModule {{ m.id }} {{ m.path }}",
            "{% if m.id != \"headers_module\" %}LoadModule {{ m.id }} {{ m.path }}{% endif %}",
        )
    });
    let run = check_with("apache+embedded", &t).failure();
    assert!(
        run.stderr.contains("apache2 -t apache/httpd.conf failed") && run.stderr.contains("Invalid command 'Header'"),
        "{}",
        run.stderr
    );
    // The site is checked with the plan's modules, so it still passes.
    assert!(
        run.stderr
            .lines()
            .any(|l| l.trim_start().starts_with("ok") && l.contains("apache2 -t apache/flask-hello.conf")),
        "{}",
        run.stderr
    );
}

#[test]
fn apache2_t_catches_mod_wsgi_not_loaded() {
    if apache2().is_none() {
        return;
    }
    let t = override_dir("apache/httpd.conf.tera", |s| {
        s.replace(
            "LoadModule {{ m.id }} {{ m.path }}",
            "{% if m.id != \"wsgi_module\" %}LoadModule {{ m.id }} {{ m.path }}{% endif %}",
        )
    });
    let run = check_with("apache+mod_wsgi", &t).failure();
    assert!(
        run.stderr.contains("apache2 -t apache/httpd.conf failed")
            && run.stderr.contains("Invalid command 'WSGISocketPrefix'"),
        "{}",
        run.stderr
    );
}

#[test]
fn apache2_t_catches_mod_remoteip_not_loaded_behind_nginx() {
    if apache2().is_none() {
        return;
    }
    let t = override_dir("apache/httpd.conf.tera", |s| {
        s.replace(
            "LoadModule {{ m.id }} {{ m.path }}",
            "{% if m.id != \"remoteip_module\" %}LoadModule {{ m.id }} {{ m.path }}{% endif %}",
        )
    });
    let run = check_with("nginx+apache+mod_wsgi", &t).failure();
    assert!(
        run.stderr.contains("apache2 -t apache/httpd.conf failed")
            && run.stderr.contains("Invalid command 'RemoteIPHeader'"),
        "{}",
        run.stderr
    );
}

/// mod_wsgi's daemon mode in both shapes: the spec's workers, threads and timeouts, the
/// virtualenv and project, one process group for the app in the main interpreter, the script
/// that imports `[app].entry`; no proxy, no unit of its own.
#[test]
fn mod_wsgi_daemon_mode_takes_the_spec_values_in_both_shapes() {
    let dir = project(
        "[app]\nname = \"w\"\nentry = \"pkg.web:make()\"\nvenv = \"env\"\nenv = { MODE = \"prod\" }\n\n\
         [server]\ntimeout = \"40s\"\n\n[backend]\nworkers = 3\nthreads = 4\ngraceful_timeout = \"12s\"\n",
        &["pkg"],
    );
    let files = render(dir.path(), "apache+mod_wsgi");
    assert!(!files.keys().any(|k| k.starts_with("systemd/")), "{:?}", files.keys());
    let root = dir.path().display().to_string();
    for text in [&files["apache/w.conf"], &files["apache/httpd.conf"]] {
        let conf = parse::apache(text);
        let (_, main) = vhosts(&conf);
        let daemon = with_args(&main, "WSGIDaemonProcess");
        assert_eq!(daemon.len(), 1);
        let d = daemon[0].join(" ");
        for want in [
            "w processes=3 threads=4 ".to_string(),
            // mod_wsgi reads `key=` and an Apache word: the value is quoted.
            format!("python-home=\"{root}/env\" "),
            format!("python-path=\"{root}\" "),
            "display-name=\"(wsgi:w)\" request-timeout=40 socket-timeout=45 graceful-timeout=12 shutdown-timeout=12"
                .to_string(),
        ] {
            assert!(d.contains(&want), "{want} in {d}");
        }
        assert_eq!(main.arg("WSGIProcessGroup"), "w");
        assert_eq!(main.arg("WSGIApplicationGroup"), "%{GLOBAL}");
        let alias = &with_args(&main, "WSGIScriptAlias")[0];
        assert_eq!(alias[0], "/");
        assert!(alias[1].ends_with("/mod_wsgi/w.wsgi"), "{alias:?}");
        assert!(with_args(&main, "ProxyPass").is_empty() && with_args(&main, "ProxyTimeout").is_empty());
    }
    let script = &files["mod_wsgi/w.wsgi"];
    assert!(script.contains("os.environ[\"MODE\"] = \"prod\""), "{script}");
    assert!(
        script.contains("application = getattr(importlib.import_module(\"pkg.web\"), \"make\")()"),
        "{script}"
    );
}

#[test]
fn a_value_apache_cannot_escape_is_refused() {
    let dir = project(
        "[app]\nname = \"d\"\nentry = \"app:app\"\n[[static]]\nurl = \"/s/\"\ndir = \"a${HOME}\"\n",
        &["a${HOME}"],
    );
    let run = Cli::new(dir.path())
        .args(["render", "--stdout", "-t", "apache+gunicorn"])
        .run()
        .failure();
    assert!(
        run.stderr.contains("holds `${`") && run.stderr.contains("cannot escape"),
        "{}",
        run.stderr
    );
}

/// One HTTP/1.0 GET on loopback: the status line and headers, and the body.
fn get(port: u16, path: &str, host: &str) -> Option<(String, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.to_string(), body.to_string()))
}

/// The real `apache2` runs the self-contained configuration of a project whose static
/// directory is named with a space, a quote, a backslash, `$` and `%`: the file under it is
/// served with its content type, the Server header has no version, a dotfile and an unknown
/// host are refused.
#[test]
fn apache2_serves_statics_from_an_awkward_directory_with_the_self_contained_config() {
    let Some(apache2) = apache2() else {
        return;
    };
    let awkward = "st a\"t\\ic$x%y";
    let port = free_port();
    let dir = project(
        &format!(
            "[app]\nname = \"q\"\nentry = \"app:app\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [[static]]\nurl = \"/static/\"\ndir = {awkward:?}\n"
        ),
        &[awkward],
    );
    std::fs::write(dir.path().join(awkward).join("site.css"), "body { color: red }\n").unwrap();
    // Run as root without `User`, Apache's children are an unnamed unprivileged user: they
    // must be able to reach the files (a temporary directory is 0700).
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join(awkward).join(".env"), "SECRET=1\n").unwrap();
    let out = dir.path().join("out");
    let rendered = Cli::new(dir.path())
        .args(["render", "-t", "apache+embedded", "--out"])
        .args([&out])
        .env("DEPLOYCTL_REQUIRE_VALIDATORS", if required() { "1" } else { "0" })
        .run()
        .success();
    // What the user installs and enables is said with the files.
    for step in [
        "copy apache/q.conf to /etc/apache2/sites-available/q.conf",
        "`a2enmod authz_core mime alias headers expires rewrite proxy proxy_http`",
        "`a2ensite q`",
        "Debian's apache2.service",
        "`systemctl enable --now q.socket`",
    ] {
        assert!(rendered.stderr.contains(step), "{step}:\n{}", rendered.stderr);
    }
    let run_dir = tempfile::tempdir().unwrap();
    let define = format!("Define DEPLOYCTL_RUN \"{}\"", run_dir.path().display());
    let error_log = format!("ErrorLog \"{}\"", run_dir.path().join("error.log").display());
    let mut child = std::process::Command::new(&apache2)
        .args(["-C", &define, "-f"])
        .arg(out.join("apache/httpd.conf"))
        .args(["-c", &error_log, "-D", "FOREGROUND"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("apache2 starts");
    let mut answer = None;
    for _ in 0..100 {
        answer = get(port, "/static/site.css", "localhost");
        if answer.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let dotfile = get(port, "/static/.env", "localhost");
    let unknown = get(port, "/static/site.css", "evil.example");
    // SAFETY: kill has no memory preconditions; the PID is our child's, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("apache2 exits");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let log = std::fs::read_to_string(run_dir.path().join("error.log")).unwrap_or_default();
    let (head, body) = answer.unwrap_or_else(|| panic!("no answer from apache2\n{stderr}\n{log}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "body { color: red }\n");
    let header = |h: &str, name: &str| {
        h.lines().find_map(|l| {
            l.split_once(": ")
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_string())
        })
    };
    assert_eq!(header(&head, "Server").as_deref(), Some("Apache"), "{head}");
    assert_eq!(header(&head, "Content-Type").as_deref(), Some("text/css"), "{head}");
    assert_eq!(
        header(&head, "Cache-Control").as_deref(),
        Some("max-age=604800"),
        "{head}"
    );
    assert_eq!(
        header(&head, "X-Content-Type-Options").as_deref(),
        Some("nosniff"),
        "{head}"
    );
    let (dot_head, _) = dotfile.expect("an answer for the dotfile");
    assert!(dot_head.starts_with("HTTP/1.1 403"), "{dot_head}");
    assert_eq!(header(&dot_head, "Server").as_deref(), Some("Apache"), "{dot_head}");
    let (unknown_head, _) = unknown.expect("an answer for an unknown host");
    assert!(unknown_head.starts_with("HTTP/1.1 403"), "{unknown_head}");
    // Stopped cleanly by TERM (Apache exits 0 after a graceful stop of its children).
    assert!(status.success(), "{status:?}\n{stderr}\n{log}");
}
