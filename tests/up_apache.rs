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

/// The example through the stack on `port` (Apache at the edge, or nginx in front of it).
fn serves_the_example(port: u16, target: &str) {
    let edge = if target.starts_with("nginx+") {
        "nginx"
    } else {
        "Apache"
    };
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
        "{target}: not from the edge's alias"
    );
    assert_eq!(css.one("server"), edge, "{target}: served by the edge itself");
    assert_eq!(css.one("x-content-type-options"), "nosniff", "{target}");
    let json = get(port, &host, "/json", &[("X-Forwarded-For", "6.6.6.6")]);
    no_version(&json, target);
    let seen = json.json();
    assert_eq!(seen["app"], "flask-hello");
    assert_eq!(seen["host"], host.as_str(), "{target}: the Host with its port");
    assert_eq!(seen["scheme"], "http", "{target}");
    assert_eq!(seen["remote_addr"], "127.0.0.1", "{target}: the client's address");
    // The edge's own answers: an unknown host (nginx closes without answering), a dotfile.
    let unknown = get(port, "evil.example", "/", &[]);
    assert_eq!(unknown.status, if edge == "nginx" { 0 } else { 403 }, "{target}");
    no_version(&unknown, target);
    let dotfile = get(port, &host, "/.env", &[]);
    assert_eq!(dotfile.status, 403, "{target}");
    no_version(&dotfile, target);
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
    for target in ["apache+gunicorn", "apache+embedded", "apache+uwsgi"] {
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

/// Waits until `up` of `target` in `project` is past its start-up (its state file is written
/// after it stops discarding the HUPs that came during the start-up), so a SIGHUP reloads.
fn wait_supervising(project: &Path, target: &str) {
    let state = project.join(".deployctl").join(target).join("state.json");
    assert!(wait_for(30, || state.is_file()), "no {}", state.display());
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
    wait_supervising(project.path(), "apache+embedded");
    child.signal(libc::SIGHUP);
    let stable = |want: &'static str| move || (0..3).all(|_| max_age(port).as_deref() == Some(want));
    assert!(
        wait_for(90, stable("max-age=86400")),
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

/// The processes of Apache's group whose command line mod_wsgi set to `display-name` (cut to
/// the length of Apache's own argv[0]: `(wsgi:flask-hello`).
fn daemons(apache_group: u32, name: &str) -> Vec<u32> {
    common::up::all_processes()
        .into_iter()
        .filter(|(_, g, c)| *g == apache_group && c.starts_with(name))
        .map(|(p, _, _)| p)
        .collect()
}

/// The component processes `up` started (each leads its group).
fn components(up: &common::up::Up) -> Vec<u32> {
    let pid = up.pid();
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn up_apache_mod_wsgi_serves_the_example_in_daemon_processes_reloads_and_stops_clean() {
    if !have_apache() {
        return;
    }
    // The example's virtualenv is made by another CPython 3.11 build (pyenv's) than Debian's
    // mod_wsgi (3.11.2): same minor version, it runs.
    let project = readable_copy();
    let config = project.path().join("deploy.toml");
    let port = free_port();
    let (child, _, log) = up_with(&config, "apache+mod_wsgi", port);
    serves_the_example(port, "apache+mod_wsgi");
    // No app process of its own: Apache alone, the app in its two daemon processes
    // (`workers = "auto"` is two for mod_wsgi).
    let parts = components(&child);
    assert_eq!(parts.len(), 1, "{parts:?}");
    let before = daemons(parts[0], "(wsgi:flask-hel");
    assert_eq!(before.len(), 2, "{}", log.lock().unwrap());

    // SIGHUP: Apache's graceful restart reloads the app (new daemon processes) and the
    // configuration (the new expiry).
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("expires = \"7d\"", "expires = \"1d\"")).unwrap();
    wait_supervising(project.path(), "apache+mod_wsgi");
    child.signal(libc::SIGHUP);
    assert!(
        wait_for(30, || (0..3).all(|_| max_age(port).as_deref() == Some("max-age=86400"))),
        "{}",
        log.lock().unwrap()
    );
    assert!(
        wait_for(20, || {
            let now = daemons(parts[0], "(wsgi:flask-hel");
            now.len() == 2 && now.iter().all(|p| !before.contains(p))
        }),
        "the daemon processes were not replaced: {before:?}"
    );
    assert_eq!(get(port, "localhost", "/json", &[]).json()["app"], "flask-hello");
    stop(child, "apache+mod_wsgi");
}

/// `pip` in `up` installs from the local wheelhouse only.
fn offline_pip(cmd: &mut std::process::Command) -> &mut std::process::Command {
    let wheels = repo().join("tests/.wheels");
    assert!(
        wheels.join(".complete").is_file(),
        "run scripts/setup.sh first (tests/.wheels)"
    );
    cmd.env("PIP_NO_INDEX", "1")
        .env("PIP_FIND_LINKS", &wheels)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
}

/// `django-admin startproject mysite` in `tmp`/mysite (0755, for Apache's children when run
/// as root) with a requirements file and a deploy.toml; no virtualenv (`up` makes it).
fn django_project(tmp: &Path, extra_toml: &str) -> PathBuf {
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.join("mysite");
    std::fs::create_dir(&dir).unwrap();
    let django_admin = repo().join("server/tests/.venv-apps/bin/django-admin");
    assert!(django_admin.exists(), "run scripts/setup.sh first");
    let made = std::process::Command::new(&django_admin)
        .args(["startproject", "mysite", "."])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    std::fs::write(dir.join("requirements.txt"), "Django>=5.2,<6\n").unwrap();
    std::fs::write(
        dir.join("deploy.toml"),
        format!(
            "[app]\nname = \"mysite\"\nentry = \"mysite.wsgi:application\"\nvenv = \".venv\"\n\
             requirements = \"requirements.txt\"\n\n[server]\nnames = [\"localhost\"]\n{extra_toml}"
        ),
    )
    .unwrap();
    dir
}

/// `deployctl up --target TARGET` in the project `dir` on 127.0.0.1:`port`, pip offline; the
/// URL it printed is checked.
fn up_django(dir: &Path, target: &str, port: u16) -> (common::up::Up, common::up::Log) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_deployctl"));
    cmd.args(["up", "--target", target, "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("VIRTUAL_ENV")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    spawn_up(offline_pip(&mut cmd), target, port)
}

/// `cmd` (a `deployctl up`) spawned, its URL read and checked, its stderr collected.
fn spawn_up(cmd: &mut std::process::Command, target: &str, port: u16) -> (common::up::Up, common::up::Log) {
    let mut child = common::up::Up(cmd.spawn().unwrap());
    let mut stdout = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut url = String::new();
    let _ = std::io::BufRead::read_line(&mut stdout, &mut url);
    let stderr = child.0.stderr.take().unwrap();
    let log: common::up::Log = Default::default();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    if url.is_empty() {
        // up failed: its error, read by the thread above, once it has exited.
        let _ = wait_for(10, || child.0.try_wait().is_ok_and(|s| s.is_some()));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        url.trim(),
        format!("http://127.0.0.1:{port}/"),
        "{target}: {}",
        log.lock().unwrap()
    );
    (child, log)
}

#[test]
fn a_django_project_runs_in_mod_wsgi_from_a_virtualenv_up_makes_with_debians_python() {
    if !have_apache() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = django_project(tmp.path(), "");
    let port = free_port();
    let (mut child, log) = up_django(&dir, "apache+mod_wsgi", port);
    // up made the virtualenv with the Python Debian's mod_wsgi runs.
    let cfg = std::fs::read_to_string(dir.join(".venv/pyvenv.cfg")).unwrap();
    assert!(cfg.lines().any(|l| l == "home = /usr/bin"), "{cfg}");
    let host = format!("localhost:{port}");
    let page = get(port, &host, "/admin/login/", &[]);
    assert_eq!(page.status, 200, "{}", log.lock().unwrap());
    assert!(String::from_utf8_lossy(&page.body).contains("csrfmiddlewaretoken"));
    no_version(&page, "django");
    let groups = components(&child);
    assert!(child.terminate().success());
    assert!(left_in(&groups).is_empty(), "left behind: {:?}", left_in(&groups));
}

/// The admin's login page of the Django project through `target` on `port`: 200, a CSRF
/// token in its form and the `csrftoken` cookie, each stylesheet it links served by the edge
/// from `STATIC_ROOT` as `text/css`, and no version in any `Server` header.
fn serves_the_django_admin(port: u16, target: &str, log: &common::up::Log) {
    let host = format!("localhost:{port}");
    let page = get(port, &host, "/admin/login/", &[]);
    let body = String::from_utf8_lossy(&page.body).into_owned();
    assert_eq!(page.status, 200, "{target}: {body}\n{}", log.lock().unwrap());
    no_version(&page, target);
    let token = body
        .split("name=\"csrfmiddlewaretoken\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("{target}: no csrfmiddlewaretoken in {body}"));
    assert!(!token.is_empty(), "{target}");
    assert!(
        page.all("set-cookie").iter().any(|c| c.starts_with("csrftoken=")),
        "{target}: no csrftoken cookie in {:?}",
        page.headers
    );
    let sheets: Vec<&str> = body
        .split("<link rel=\"stylesheet\" href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(!sheets.is_empty(), "{target}: no stylesheet in {body}");
    let edge = if target.starts_with("nginx+") {
        "nginx"
    } else {
        "Apache"
    };
    for sheet in &sheets {
        assert!(sheet.starts_with("/static/admin/"), "{target}: {sheet}");
        let css = get(port, &host, sheet, &[]);
        assert_eq!(css.status, 200, "{target}: {sheet}");
        assert!(!css.body.is_empty(), "{target}: {sheet}");
        assert_eq!(
            css.one("content-type").split(';').next(),
            Some("text/css"),
            "{target}: {sheet}"
        );
        assert_eq!(css.one("server"), edge, "{target}: {sheet} not served by the edge");
        assert!(css.one("cache-control").starts_with("max-age="), "{target}: {sheet}");
    }
}

/// Django's startproject project (with `STATIC_ROOT` collected) through every other Apache
/// target, one after the other, each stack stopped before the next: `up` gives the virtualenv
/// it made for the first target what each next one lacks (Gunicorn, uWSGI).
#[test]
fn a_django_project_serves_its_admin_login_and_css_through_every_apache_target() {
    if !have_apache() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = django_project(
        tmp.path(),
        "\n[[static]]\nurl = \"/static/\"\ndir = \"staticfiles\"\nexpires = \"7d\"\n",
    );
    let settings = dir.join("mysite/settings.py");
    let mut text = std::fs::read_to_string(&settings).unwrap();
    text.push_str(
        "\nSTATIC_ROOT = BASE_DIR / \"staticfiles\"\nDEBUG = False\nALLOWED_HOSTS = [\"localhost\", \"127.0.0.1\"]\n",
    );
    std::fs::write(&settings, text).unwrap();
    let collect = std::process::Command::new(repo().join("server/tests/.venv-apps/bin/python"))
        .args(["manage.py", "collectstatic", "--noinput"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(collect.status.success(), "{}", String::from_utf8_lossy(&collect.stderr));
    // The embedded server first: `up` makes the virtualenv with the Python it links, which
    // mod_wsgi (same minor version) also runs. (The other way round fails: a virtualenv of
    // Debian's Python under the embedded server built against another CPython finds
    // Debian's stdlib without its built-in modules — `No module named 'math'`.)
    for target in [
        "apache+embedded",
        "apache+gunicorn",
        "apache+uwsgi",
        "nginx+apache+mod_wsgi",
    ] {
        let port = free_port();
        let (child, log) = up_django(&dir, target, port);
        serves_the_django_admin(port, target, &log);
        stop(child, target);
    }
}

#[test]
fn check_and_up_refuse_a_virtualenv_of_another_python_for_mod_wsgi() {
    if !have_apache() {
        return;
    }
    let project = example_copy();
    let venv = project.path().join("old-env");
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    std::fs::write(venv.join("bin/python3"), "").unwrap();
    std::fs::write(venv.join("pyvenv.cfg"), "home = /opt/python3.9/bin\nversion = 3.9.18\n").unwrap();
    let config = project.path().join("deploy.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("venv = ") {
                "venv = \"old-env\""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, text).unwrap();

    let check = common::Cli::new(project.path())
        .args(["check", "-t", "apache+mod_wsgi"])
        .env("DEPLOYCTL_REQUIRE_VALIDATORS", "1")
        .run()
        .failure();
    // Shown relative to the directory deployctl runs in (the project's).
    let venv_shown = "old-env";
    assert!(
        check
            .stderr
            .contains("mod_wsgi python mod_wsgi/flask-hello.wsgi failed")
            && check.stderr.contains(&format!(
                "the virtualenv {venv_shown} is Python 3.9, but /usr/lib/apache2/modules/mod_wsgi.so runs Python 3."
            ))
            && check
                .stderr
                .contains(&format!("/usr/bin/python3 -m venv {}`", venv.display())),
        "{}",
        check.stderr
    );
    let up = common::Cli::new(project.path())
        .args([
            "up",
            "-t",
            "apache+mod_wsgi",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .run()
        .failure();
    assert!(
        up.stderr.contains(&format!(
            "the virtualenv {venv_shown} is Python 3.9, but target `apache+mod_wsgi` needs Python 3."
        )) && up.stderr.contains("Debian's mod_wsgi runs Python"),
        "{}",
        up.stderr
    );
    assert!(up.stderr.contains("hint: move "), "{}", up.stderr);
}

/// `GET /json` on 127.0.0.1:`port` from the loopback address `from` (127.0.0.2 is not the
/// address nginx connects from), with `extra` header lines: what the app saw.
fn json_from(from: [u8; 4], port: u16, host: &str, extra: &[(&str, &str)]) -> serde_json::Value {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let addr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let (local, remote) = (addr(from, 0), addr([127, 0, 0, 1], port));
    // SAFETY: a new socket, bound and connected with valid sockaddr_in values, then owned by
    // the TcpStream (closed once, when it drops).
    let mut s = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let s = std::net::TcpStream::from_raw_fd(fd);
        assert_eq!(libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len), 0);
        assert_eq!(libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len), 0);
        s
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("GET /json HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {raw}"))
}

#[test]
fn nginx_in_front_of_apache_mod_wsgi_passes_the_real_client_address_and_ignores_a_spoofed_one() {
    if !have_apache() {
        return;
    }
    let project = readable_copy();
    let config = project.path().join("deploy.toml");
    let port = free_port();
    let (child, _, log) = up_with(&config, "nginx+apache+mod_wsgi", port);
    serves_the_example(port, "nginx+apache+mod_wsgi");
    let host = format!("localhost:{port}");
    // A client at 127.0.0.2: the app sees that address (nginx's X-Forwarded-For, believed
    // by Apache from nginx's 127.0.0.1), never what the client claims, and the scheme nginx saw.
    let spoof = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-Proto", "https")];
    let seen = json_from([127, 0, 0, 2], port, &host, &spoof);
    assert_eq!(seen["remote_addr"], "127.0.0.2", "{seen}");
    assert_eq!(seen["scheme"], "http", "{seen}");
    assert_eq!(seen["host"], host.as_str(), "{seen}");
    // Apache on its loopback port (the public one's neighbour): X-Forwarded-For from a peer
    // other than nginx's address is ignored; from nginx's address, it and the scheme are
    // believed (what nginx sends when a client comes over TLS).
    let inner = port + 1;
    let direct = json_from([127, 0, 0, 2], inner, "localhost", &spoof);
    assert_eq!(direct["remote_addr"], "127.0.0.2", "{direct}");
    let from_nginx = json_from([127, 0, 0, 1], inner, "localhost", &spoof);
    assert_eq!(from_nginx["remote_addr"], "6.6.6.6", "{from_nginx}");
    assert_eq!(from_nginx["scheme"], "https", "{from_nginx}");

    // SIGHUP: Apache (which hosts the app) then nginx reload; the new expiry is nginx's.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("expires = \"7d\"", "expires = \"1d\"")).unwrap();
    wait_supervising(project.path(), "nginx+apache+mod_wsgi");
    child.signal(libc::SIGHUP);
    assert!(
        wait_for(30, || log
            .lock()
            .unwrap()
            .contains("reloaded the new configuration serves")),
        "{}",
        log.lock().unwrap()
    );
    let shown = log.lock().unwrap().clone();
    assert!(
        shown.contains("apache reloaded") && shown.contains("nginx reloaded"),
        "{shown}"
    );
    assert!(wait_for(10, || max_age(port).as_deref() == Some("max-age=86400")));
    // nginx and Apache, each leading its group; nothing left after the stop.
    assert_eq!(components(&child).len(), 2);
    stop(child, "nginx+apache+mod_wsgi");
}

#[test]
fn a_detached_apache_stack_shows_in_status_is_restarted_when_killed_and_stops_with_down() {
    if !have_apache() {
        return;
    }
    let project = readable_copy();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let cli = || common::Cli::new(project.path());
    let _cleanup = common::up::DownOnDrop(project.path().to_path_buf());
    cli()
        .args(["up", "--target", "apache+mod_wsgi", "--listen", &listen, "--detach"])
        .run()
        .success();
    let groups = groups_of_dir(project.path());
    let status = cli().args(["status"]).run().success();
    let apache_line = status
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("apache"))
        .unwrap_or_else(|| panic!("{}", status.stdout))
        .to_string();
    assert!(apache_line.ends_with("running"), "{apache_line}");
    assert!(status.stdout.contains("health GET / → 200"), "{}", status.stdout);
    // Apache's parent killed: the supervisor restarts it (its group goes first), and it serves.
    let first: i32 = apache_line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .expect("a pid on the apache line");
    // SAFETY: killing the Apache parent this test's stack started.
    unsafe { libc::kill(first, libc::SIGKILL) };
    let serving_again = wait_for(30, || {
        let s = cli().args(["status"]).run();
        s.code == 0
            && s.stdout.lines().any(|l| {
                // `apache  PID  running  (1 restarts)`
                l.trim_start().starts_with("apache ") && !l.contains(&first.to_string()) && l.contains(" running")
            })
            && get(port, "localhost", "/json", &[]).status == 200
    });
    let logs = cli().args(["logs"]).run().stdout;
    assert!(serving_again, "{logs}");
    assert!(logs.contains("apache exited"), "{logs}");
    cli().args(["down"]).run().success();
    let mut all = groups;
    all.extend(groups_of_dir(project.path()));
    assert!(left_in(&all).is_empty(), "left behind: {:?}", left_in(&all));
}

#[test]
fn behind_nginx_with_tls_the_app_in_apache_sees_scheme_https() {
    if !have_apache() {
        return;
    }
    let project = readable_copy();
    let config = project.path().join("deploy.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    // A self-signed pair made by `up` for the names and localhost.
    std::fs::write(&config, text + "\n[tls]\n").unwrap();
    let http = free_port();
    let https = loop {
        let p = free_port();
        if p != http {
            break p;
        }
    };
    let tls_listen = format!("127.0.0.1:{https}");
    let (child, url, log) = common::up::up_with_args(
        &config,
        "nginx+apache+mod_wsgi",
        http,
        &["--tls-listen".as_ref(), tls_listen.as_ref()],
    );
    assert_eq!(url, format!("https://localhost:{https}/"), "{}", log.lock().unwrap());
    let out = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "10"])
        .arg(format!("https://localhost:{https}/json"))
        .output()
        .expect("curl runs");
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    // nginx terminated TLS; Apache turned its X-Forwarded-Proto into HTTPS=on for mod_wsgi.
    assert_eq!(seen["scheme"], "https", "{seen}");
    assert_eq!(seen["host"], format!("localhost:{https}"), "{seen}");
    assert_eq!(seen["remote_addr"], "127.0.0.1", "{seen}");
    stop(child, "nginx+apache+mod_wsgi");
}

/// `up` as an unprivileged user (CI runs as root, where Apache's children drop to www-data):
/// the self-contained httpd.conf runs as `nobody` with Gunicorn, the virtualenv `up` makes
/// (the example's is of a Python under /root, which `nobody` cannot run), the page, the
/// static CSS from Apache, and a clean stop. In the C locale too (`env -i`).
#[test]
fn up_apache_gunicorn_as_an_unprivileged_user_serves_the_example_and_stops_clean() {
    // SAFETY: geteuid has no preconditions.
    if !have_apache() || unsafe { libc::geteuid() } != 0 {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("project");
    let example = repo().join("examples/flask-hello");
    std::fs::create_dir_all(dir.join("static")).unwrap();
    std::fs::create_dir(tmp.path().join("home")).unwrap();
    for f in ["app.py", "requirements.txt", "deploy.toml", "static/style.css"] {
        std::fs::copy(example.join(f), dir.join(f)).unwrap();
    }
    let chown = std::process::Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(&dir)
        .arg(tmp.path().join("home"))
        .status()
        .unwrap();
    assert!(chown.success());
    let wheels = repo().join("tests/.wheels");
    assert!(wheels.join(".complete").is_file(), "run scripts/setup.sh first");
    let target = "apache+gunicorn";
    let port = free_port();
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "env", "-i"])
        .arg("PATH=/usr/bin:/bin")
        .arg(format!("HOME={}", tmp.path().join("home").display()))
        .args(["NO_COLOR=1", "PIP_NO_INDEX=1", "PIP_DISABLE_PIP_VERSION_CHECK=1"])
        .arg(format!("PIP_FIND_LINKS={}", wheels.display()))
        .arg(env!("CARGO_BIN_EXE_deployctl"))
        .args(["up", "--target", target, "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let (child, log) = spawn_up(&mut cmd, target, port);
    serves_the_example(port, target);
    let shown = log.lock().unwrap().clone();
    assert!(
        shown.contains("apache ready (port answers)") && !shown.contains("children run as"),
        "{shown}"
    );
    // Every component and its children run as nobody.
    let nobody = std::process::Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .unwrap();
    let nobody = String::from_utf8_lossy(&nobody.stdout).trim().to_string();
    let groups = components(&child);
    assert_eq!(groups.len(), 2, "{groups:?}");
    for (pid, group, cmdline) in common::up::all_processes() {
        if groups.contains(&group) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap_or_default();
            assert!(uid.split_whitespace().all(|u| u == nobody), "{cmdline} runs as {uid}");
        }
    }
    stop(child, target);
}
