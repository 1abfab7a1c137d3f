//! `deployctl up` running Apache httpd (the self-contained configuration, in the foreground)
//! with the real app servers, on loopback: the Flask example served through it (page, static
//! CSS from Apache as `text/css` with its expiry, JSON, form POST), no version in any `Server`
//! header, a graceful reload on SIGHUP with no failed request, a reload whose health check
//! through Apache fails rolled back, and a clean stop with nothing left in any process group.
//! With DEPLOYCTL_REQUIRE_VALIDATORS=1 (as in CI) a missing `apache2` fails these tests.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::repo;
use common::up::{Reply, example_copy, free_port, get, groups_of_dir, left_in, request, stop, up_with, wait_for};

/// Whether `apache2` is installed; a failure when CI requires every tool.
fn have_apache() -> bool {
    let found = ["/usr/sbin/apache2", "/usr/bin/apache2"]
        .iter()
        .any(|p| Path::new(p).is_file());
    assert!(
        found || std::env::var("DEPLOYCTL_REQUIRE_VALIDATORS").as_deref() != Ok("1"),
        "apache2 is not installed (DEPLOYCTL_REQUIRE_VALIDATORS=1): run scripts/setup.sh"
    );
    found
}

/// No `Server` header names a version (`Apache`, `gunicorn`, never `Apache/2.4…`).
#[track_caller]
fn no_version(r: &Reply, what: &str) {
    for v in r.all("server") {
        assert!(
            !v.contains('/') && !v.chars().any(|c| c.is_ascii_digit()),
            "{what}: Server: {v}"
        );
    }
}

/// The example through Apache on `port`.
fn serves_the_example(port: u16, target: &str) {
    let host = format!("localhost:{port}");
    let page = get(port, &host, "/", &[]);
    assert_eq!(page.status, 200, "{target}");
    assert!(String::from_utf8_lossy(&page.body).contains("<h1>Hello from flask-hello</h1>"));
    no_version(&page, target);
    let css = get(port, &host, "/static/style.css", &[]);
    assert_eq!(css.status, 200, "{target}");
    assert!(!css.body.is_empty());
    assert_eq!(css.one("content-type").split(';').next(), Some("text/css"), "{target}");
    assert_eq!(
        css.one("cache-control"),
        "max-age=604800",
        "{target}: not from Apache's alias"
    );
    assert_eq!(css.one("server"), "Apache", "{target}: served by Apache itself");
    assert_eq!(css.one("x-content-type-options"), "nosniff", "{target}");
    let json = get(port, &host, "/json", &[("X-Forwarded-For", "6.6.6.6")]);
    no_version(&json, target);
    let seen = json.json();
    assert_eq!(seen["app"], "flask-hello");
    assert_eq!(seen["host"], host.as_str(), "{target}: the Host with its port");
    assert_eq!(seen["scheme"], "http", "{target}");
    assert_eq!(seen["remote_addr"], "127.0.0.1", "{target}: the client's address");
    // Apache's own answers: an unknown host, a dotfile.
    for (h, path) in [("evil.example", "/"), (host.as_str(), "/.env")] {
        let r = get(port, h, path, &[]);
        assert_eq!(r.status, 403, "{target}: {h}{path}");
        no_version(&r, target);
    }
    let form = "name=up";
    let (status, head, body) = request(
        port,
        &format!(
            "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    assert_eq!(status, 200, "{target}: {head}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["hello"], "up");
}

#[test]
fn up_apache_gunicorn_and_apache_embedded_serve_the_example_and_stop_clean() {
    if !have_apache() {
        return;
    }
    for target in ["apache+gunicorn", "apache+embedded"] {
        let port = free_port();
        let config = repo().join("examples/flask-hello/deploy.toml");
        let (child, url, log) = up_with(&config, target, port);
        assert_eq!(url, format!("http://127.0.0.1:{port}/"));
        // The log is read from up's stderr by another thread: it may trail the URL.
        let said = |what: &str| wait_for(10, || log.lock().unwrap().contains(what));
        assert!(said("apache ready (port answers"), "{}", log.lock().unwrap());
        assert!(
            said("static GET /static/style.css → 200 from the front"),
            "{}",
            log.lock().unwrap()
        );
        serves_the_example(port, target);
        // Created by deployctl, 0660, and handed to the app server by socket activation.
        let sock = repo().join(format!("examples/flask-hello/.deployctl/{target}/flask-hello.sock"));
        assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o660);
        // Apache and its children, the app server and its workers: all gone after the stop.
        stop(child, target);
    }
}

/// A copy of the example Apache's children can read when `up` runs as root (they run as
/// www-data): a temporary directory is 0700.
fn readable_copy() -> tempfile::TempDir {
    let project = example_copy();
    std::fs::set_permissions(project.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    project
}

fn max_age(port: u16) -> Option<String> {
    let r = get(port, "localhost", "/static/style.css", &[]);
    (r.status == 200).then(|| r.all("cache-control").join(","))
}

/// A template directory holding Apache's shared virtual hosts as built in; a test edits it.
fn templates_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let vhosts = dir.path().join("apache/_vhosts.tera");
    std::fs::create_dir_all(vhosts.parent().unwrap()).unwrap();
    std::fs::copy(repo().join("templates/apache/_vhosts.tera"), &vhosts).unwrap();
    (dir, vhosts)
}

#[test]
fn sighup_restarts_apache_gracefully_and_rolls_back_a_config_whose_health_check_fails() {
    if !have_apache() {
        return;
    }
    let project = readable_copy();
    let config = project.path().join("deploy.toml");
    let (templates, vhosts) = templates_copy();
    let port = free_port();
    let (child, _, log) = common::up::up_with_args(
        &config,
        "apache+embedded",
        port,
        &["--templates".as_ref(), templates.path().as_os_str()],
    );
    assert_eq!(max_age(port).as_deref(), Some("max-age=604800"));
    let apache_pid = || {
        let pid = child.pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.contains("apache2")))
    };
    let first = apache_pid();
    assert!(first.is_some());

    let stop_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop_flag.clone();
    let loader = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(90);
        for i in 0..5000 {
            if flag.load(std::sync::atomic::Ordering::Relaxed) || Instant::now() > deadline {
                break;
            }
            let path = if i % 2 == 0 { "/json" } else { "/static/style.css" };
            let (status, _, _) = request(
                port,
                &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
            );
            if status == 200 {
                ok += 1
            } else {
                failed.push(status)
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (ok, failed)
    });

    // A changed config: the app and Apache reload (Apache's parent stays), the new expiry is
    // served.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("expires = \"7d\"", "expires = \"1d\"")).unwrap();
    child.signal(libc::SIGHUP);
    let stable = |want: &'static str| move || (0..3).all(|_| max_age(port).as_deref() == Some(want));
    assert!(
        wait_for(30, stable("max-age=86400")),
        "the new config was not served:\n{}",
        log.lock().unwrap()
    );
    assert!(
        wait_for(10, || log
            .lock()
            .unwrap()
            .contains("reloaded the new configuration serves")),
        "{}",
        log.lock().unwrap()
    );
    assert_eq!(apache_pid(), first, "a graceful restart keeps Apache's parent");

    // A config apache2 -t accepts but which refuses every request: the health check through
    // Apache fails, Apache goes back to the previous configuration.
    let mark = log.lock().unwrap().len();
    let vh = std::fs::read_to_string(&vhosts).unwrap();
    let denied = vh.replacen(
        "    ServerSignature Off",
        "    ServerSignature Off\n    <Location \"/\">\n        Require all denied\n    </Location>",
        2,
    );
    assert_ne!(vh, denied);
    std::fs::write(&vhosts, denied).unwrap();
    std::fs::write(&config, text.replace("expires = \"7d\"", "expires = \"2d\"")).unwrap();
    child.signal(libc::SIGHUP);
    assert!(
        wait_for(60, || log.lock().unwrap()[mark..]
            .contains("reload failed; still serving the previous configuration")),
        "{}",
        log.lock().unwrap()
    );
    let after = log.lock().unwrap()[mark..].to_string();
    assert!(
        after.contains("apache went back to the previous configuration"),
        "{after}"
    );
    assert!(wait_for(20, stable("max-age=86400")), "{after}");
    stop_flag.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = loader.join().unwrap();
    // The broken configuration answers 403 while it is tried (before the rollback); every
    // other answer is a 200.
    assert!(failed.iter().all(|s| *s == 403), "failed requests: {failed:?}");
    assert!(ok > 50);
    let groups = groups_of_dir(project.path());
    let mut child = child;
    assert!(child.terminate().success());
    assert!(left_in(&groups).is_empty(), "left behind: {:?}", left_in(&groups));
}
