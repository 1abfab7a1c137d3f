//! `deployctl up` end to end with the real embedded server and nginx, on loopback: the Flask
//! example served (page, static CSS from the front, JSON, form POST), then a clean stop with
//! no process left; a port in use refused before anything starts.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::repo;
use common::up::{
    DownOnDrop, Up, example_copy, free_port, get, groups_of_dir, left_in, request, stop, up_with, wait_for,
};

fn up(target: &str, port: u16) -> (Up, String) {
    let example = repo().join("examples/flask-hello");
    let (child, url, _) = up_with(&example.join("deploy.toml"), target, port);
    (child, url)
}

/// The example through the stack on `port`: the page, the stylesheet (served by the front, or
/// uWSGI or the embedded server alone, with one `Cache-Control` from `expires`), the form POST, and the JSON route,
/// which shows what the app received: the Host as the client sent it (port included), the
/// scheme, and the client's address.
fn serves_the_example(port: u16, target: &str) {
    let host = format!("localhost:{port}");
    let page = get(port, &host, "/", &[]);
    assert_eq!(page.status, 200, "{target}");
    assert!(String::from_utf8_lossy(&page.body).contains("<h1>Hello from flask-hello</h1>"));
    let css = get(port, &host, "/static/style.css", &[]);
    assert_eq!(css.status, 200, "{target}");
    assert!(!css.body.is_empty());
    assert_eq!(css.one("content-type").split(';').next(), Some("text/css"), "{target}");
    if target.starts_with("nginx+") || target == "uwsgi" || target == "embedded" {
        assert_eq!(
            css.one("cache-control"),
            "max-age=604800",
            "{target}: not from the static location"
        );
    }
    let seen = get(port, &host, "/json", &[]).json();
    assert_eq!(seen["app"], "flask-hello");
    assert_eq!(seen["host"], host.as_str(), "{target}: the Host with its port");
    assert_eq!(seen["scheme"], "http", "{target}");
    assert_eq!(seen["remote_addr"], "127.0.0.1", "{target}: the client's address");
    if target.starts_with("nginx+") {
        // What the client claims is replaced by what nginx saw; a Host that is not
        // `name[:port]` reaches the app as the name alone.
        let spoofed = get(
            port,
            "localhost:@evil.example",
            "/json",
            &[
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-Host", "evil.example"),
                ("X-Forwarded-Proto", "https"),
            ],
        )
        .json();
        assert_eq!(seen["app"], "flask-hello");
        assert_eq!(spoofed["host"], "localhost", "{target}");
        assert_eq!(spoofed["scheme"], "http", "{target}");
        assert_eq!(spoofed["remote_addr"], "127.0.0.1", "{target}");
    }
    let form = "name=up";
    let (status, _, body) = request(
        port,
        &format!(
            "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    assert_eq!(status, 200);
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["hello"], "up");
}

#[test]
fn up_nginx_embedded_serves_the_example_and_stops_clean() {
    let port = free_port();
    let (child, url) = up("nginx+embedded", port);
    assert_eq!(url, format!("http://127.0.0.1:{port}/"));
    serves_the_example(port, "nginx+embedded");
    // Created by deployctl, 0660, and handed to the server by socket activation.
    let sock = repo().join("examples/flask-hello/.deployctl/nginx+embedded/flask-hello.sock");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o660);
    stop(child, "nginx+embedded");
}

#[test]
fn up_embedded_serves_the_example_and_stops_clean() {
    let port = free_port();
    let (child, url) = up("embedded", port);
    assert_eq!(url, format!("http://127.0.0.1:{port}/"));
    serves_the_example(port, "embedded");
    stop(child, "embedded");
}

#[test]
fn up_refuses_a_port_in_use_before_starting_anything() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let run = common::Cli::new(&repo().join("examples/flask-hello"))
        .args(["up", "--target", "embedded", "--listen", &format!("127.0.0.1:{port}")])
        .run()
        .failure();
    assert!(run.stderr.contains("already in use"), "{}", run.stderr);
    assert!(run.stderr.contains("hint:"));
    assert!(
        !run.stderr.contains("starting app"),
        "something was started:\n{}",
        run.stderr
    );
}

fn max_age(port: u16) -> Option<String> {
    let (status, head, _) = request(
        port,
        "GET /static/style.css HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    (status == 200).then(|| {
        head.lines()
            .find_map(|l| l.strip_prefix("cache-control: ").map(str::to_string))
    })?
}

fn stable_max_age(port: u16, want: &'static str) -> impl FnMut() -> bool {
    move || (0..3).all(|_| max_age(port).as_deref() == Some(want))
}

#[test]
fn sighup_reloads_a_changed_config_with_zero_failed_requests_and_rejects_a_broken_one() {
    let project = example_copy();
    let config = project.path().join("deploy.toml");
    let port = free_port();
    let (child, _, log) = up_with(&config, "nginx+embedded", port);
    assert_eq!(max_age(port).as_deref(), Some("max-age=604800"));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let loader = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
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
                failed += 1
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (ok, failed)
    });

    // A changed config: nginx and the app reload, the new value is served.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("expires = \"7d\"", "expires = \"1d\"")).unwrap();
    child.signal(libc::SIGHUP);
    assert!(
        wait_for(20, stable_max_age(port, "max-age=86400")),
        "the new config was not served:\n{}",
        log.lock().unwrap()
    );

    // A broken config: rejected, the previous one keeps serving.
    std::fs::write(&config, "[app\nname = ").unwrap();
    child.signal(libc::SIGHUP);
    assert!(
        wait_for(20, || log
            .lock()
            .unwrap()
            .contains("reload failed; still serving the previous configuration")),
        "{}",
        log.lock().unwrap()
    );
    // nginx's old workers finish (and may still take a connection) after a reload, so
    // "served" means: three answers in a row with the value.
    assert!(
        wait_for(10, stable_max_age(port, "max-age=86400")),
        "the rejected reload changed what is served"
    );

    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = loader.join().unwrap();
    assert_eq!(
        failed,
        0,
        "failed requests during the reloads:\n{}",
        log.lock().unwrap()
    );
    assert!(ok > 50);
    let groups = groups_of_dir(project.path());
    let mut child = child;
    assert!(child.terminate().success());
    assert!(left_in(&groups).is_empty(), "left behind: {:?}", left_in(&groups));
}

#[test]
fn a_killed_backend_is_restarted_and_serves_again() {
    let project = example_copy();
    let port = free_port();
    let (up, _, log) = up_with(&project.path().join("deploy.toml"), "nginx+embedded", port);
    let pid_file = project.path().join(".deployctl/nginx+embedded/app.pid");
    let first: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // SAFETY: killing the app server master that this test's `up` started.
    unsafe { libc::kill(first, libc::SIGKILL) };
    let json = || {
        request(
            port,
            "GET /json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .0 == 200
    };
    let restarted = wait_for(20, || {
        let now = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        now.is_some_and(|p| p != first) && json()
    });
    assert!(restarted, "not serving again:\n{}", log.lock().unwrap());
    assert!(log.lock().unwrap().contains("app exited"), "{}", log.lock().unwrap());
    let groups = groups_of_dir(project.path());
    let mut up = up;
    assert!(up.terminate().success());
    assert!(left_in(&groups).is_empty(), "left behind: {:?}", left_in(&groups));
}

#[test]
fn detach_then_status_logs_and_down() {
    let project = example_copy();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let cli = || common::Cli::new(project.path());
    let _cleanup = DownOnDrop(project.path().to_path_buf());
    let run = cli()
        .args(["up", "--target", "nginx+embedded", "--listen", &listen, "--detach"])
        .run()
        .success();
    assert_eq!(run.stdout.trim(), format!("http://127.0.0.1:{port}/"));
    let groups = groups_of_dir(project.path());
    assert!(!groups.is_empty());
    assert_eq!(
        request(port, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").0,
        200
    );

    let status = cli().args(["status"]).run().success();
    assert!(
        status
            .stdout
            .contains(&format!("nginx+embedded  http://127.0.0.1:{port}/  health GET / → 200")),
        "{}",
        status.stdout
    );
    for name in ["supervisor", "app", "nginx"] {
        let line = status
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .expect(name);
        assert!(line.ends_with("running"), "{line}");
    }
    let logs = cli().args(["logs"]).run().success();
    assert!(
        logs.stdout.contains("app   | ") && logs.stdout.contains("nginx | "),
        "{}",
        logs.stdout
    );

    cli().args(["down"]).run().success();
    assert!(left_in(&groups).is_empty(), "left behind: {:?}", left_in(&groups));
    assert!(!project.path().join(".deployctl/nginx+embedded/state.json").exists());
    let after = cli().args(["status"]).run().failure();
    assert!(after.stderr.contains("no stack"), "{}", after.stderr);
}

#[test]
fn a_stale_state_file_is_detected_and_cleaned() {
    let project = example_copy();
    let dir = project.path().join(".deployctl/embedded");
    std::fs::create_dir_all(&dir).unwrap();
    // PIDs above the kernel's pid_max: certainly no such processes.
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let stale = serde_json::json!({
        "version": 2, "target": "embedded", "boot_id": boot.trim(),
        "supervisor": {"pid": 99999999u32, "start_time": 1}, "session": 99999999u32,
        "url": "http://localhost:1/", "health_path": "/", "health_expect": null,
        "components": [{"name": "app", "pid": 99999998u32, "start_time": 1, "pgid": 99999998u32,
                        "restarts": 0, "grace_secs": 35}]
    });
    std::fs::write(dir.join("state.json"), stale.to_string()).unwrap();
    let run = common::Cli::new(project.path()).args(["status"]).run().failure();
    assert!(run.stderr.contains("stale state file"), "{}", run.stderr);
    assert!(!dir.join("state.json").exists(), "the stale file was not removed");
}

#[test]
fn a_missing_virtualenv_is_created_and_the_install_skipped_when_nothing_changed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("app.py"),
        "def app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'raw']\n",
    )
    .unwrap();
    // No packages: the install runs pip for real without needing the network.
    std::fs::write(p.join("requirements.txt"), "# nothing yet\n").unwrap();
    let port = free_port();
    std::fs::write(
        p.join("deploy.toml"),
        format!(
            "[app]\nname = \"raw\"\nentry = \"app:app\"\nvenv = \".venv\"\nrequirements = \"requirements.txt\"\n\n\
             [server]\nnames = [\"localhost\"]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [backend]\nkind = \"embedded\"\nworkers = 1\n\n[frontend]\nkind = \"none\"\n"
        ),
    )
    .unwrap();
    let _cleanup = DownOnDrop(p.to_path_buf());
    let cli = || common::Cli::new(p);

    let first = cli().args(["up", "--detach"]).run().success();
    assert!(first.stderr.contains("created"), "{}", first.stderr);
    assert!(first.stderr.contains("installed requirements.txt"), "{}", first.stderr);
    assert!(p.join(".venv/bin/python3").exists());
    let (status, _, body) = request(port, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, "raw"));
    cli().args(["down"]).run().success();

    let second = cli().args(["up", "--detach"]).run().success();
    assert!(second.stderr.contains("is up to date"), "{}", second.stderr);
    assert!(!second.stderr.contains("installed"), "{}", second.stderr);
    cli().args(["down"]).run().success();

    std::fs::write(p.join("requirements.txt"), "# nothing yet\n# still nothing\n").unwrap();
    let third = cli().args(["up", "--detach"]).run().success();
    assert!(third.stderr.contains("requirements changed"), "{}", third.stderr);
    assert!(third.stderr.contains("installed requirements.txt"), "{}", third.stderr);
    cli().args(["down"]).run().success();
}

/// Regression: a virtualenv made by Debian's `/usr/bin/python3` (3.11, the same `X.Y` as the
/// server's) passed the version check, everything started, and the app's first `import math`
/// failed inside the server: Debian builds `math` into its interpreter, so the libpython the
/// server loads (another install's) found no `math` in that standard library.
#[test]
fn a_virtualenv_of_another_python_install_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let debian = std::path::Path::new("/usr/bin/python3");
    let libdir = |python: &std::path::Path| {
        let out = Command::new(python)
            .args(["-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"])
            .output()
            .unwrap();
        std::fs::canonicalize(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
    };
    // `deployctl` runs the server beside it.
    let server = std::path::Path::new(env!("CARGO_BIN_EXE_deployctl")).with_file_name("deployctl-server");
    let ldd = Command::new(&server)
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .output()
        .unwrap();
    let server_lib = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .find(|l| l.trim_start().starts_with("libpython"))
        .and_then(|l| l.split("=>").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .map(|lib| std::fs::canonicalize(std::path::Path::new(lib).parent().unwrap()).unwrap())
        .expect("deployctl-server links a shared libpython");
    assert_ne!(
        libdir(debian),
        server_lib,
        "this test needs deployctl-server built against a Python other than Debian's /usr/bin/python3"
    );
    std::fs::write(
        p.join("app.py"),
        "import math

def app(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [str(math.isqrt(49)).encode()]
",
    )
    .unwrap();
    let port = free_port();
    std::fs::write(
        p.join("deploy.toml"),
        format!(
            "[app]\nname = \"mathapp\"\nentry = \"app:app\"\nvenv = \".venv\"\n\n\
             [server]\nnames = [\"localhost\"]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [backend]\nkind = \"embedded\"\nworkers = 1\n\n[frontend]\nkind = \"none\"\n"
        ),
    )
    .unwrap();
    let made = Command::new(debian)
        .args(["-m", "venv"])
        .arg(p.join(".venv"))
        .status()
        .unwrap();
    assert!(made.success());
    let _cleanup = DownOnDrop(p.to_path_buf());
    let cli = || common::Cli::new(p);

    let refused = cli().args(["up", "--detach"]).run().failure();
    assert!(
        refused
            .stderr
            .contains("the virtualenv .venv was made by another Python 3.")
            && refused
                .stderr
                .contains(&format!("its libpython is in {}", server_lib.display()))
            && refused
                .stderr
                .contains(&format!("the virtualenv's in {}", libdir(debian).display())),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("hint: move .venv away"), "{}", refused.stderr);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something was started"
    );

    // What the hint says works: `up` makes the virtualenv with the server's own Python.
    std::fs::rename(p.join(".venv"), p.join("venv.debian")).unwrap();
    cli().args(["up", "--detach"]).run().success();
    let (status, _, body) = request(port, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, "7"));
    cli().args(["down"]).run().success();
}

/// The same-install check's pass is recorded with the virtualenv (`.deployctl-installed`),
/// keyed by its `pyvenv.cfg`, its interpreter and the server's libpython, so later starts do
/// not run its Python to ask again. A virtualenv swapped for one of another install after a
/// successful start is refused on the next, even carrying the recorded pass with it.
#[test]
fn a_virtualenv_swapped_for_another_installs_after_a_start_is_refused_on_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("app.py"),
        "import math

def app(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [str(math.isqrt(49)).encode()]
",
    )
    .unwrap();
    let port = free_port();
    std::fs::write(
        p.join("deploy.toml"),
        format!(
            "[app]\nname = \"swapped\"\nentry = \"app:app\"\nvenv = \".venv\"\n\n\
             [server]\nnames = [\"localhost\"]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [backend]\nkind = \"embedded\"\nworkers = 1\n\n[frontend]\nkind = \"none\"\n"
        ),
    )
    .unwrap();
    let _cleanup = DownOnDrop(p.to_path_buf());
    let cli = || common::Cli::new(p);
    let record = p.join(".venv/.deployctl-installed");
    let passed = |text: &str| text.lines().any(|l| l.starts_with("same-install sha256:"));

    // The first start makes the virtualenv with the server's Python; the second checks it
    // and records the pass; the third finds it recorded.
    for _ in 0..3 {
        cli().args(["up", "--detach"]).run().success();
        let (status, _, body) = request(port, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        assert_eq!((status, body.as_str()), (200, "7"));
        cli().args(["down"]).run().success();
    }
    let recorded = std::fs::read_to_string(&record).unwrap();
    assert!(passed(&recorded), "{recorded}");

    // Swapped for one made by Debian's /usr/bin/python3 (another install of the same X.Y),
    // the old record put back into it.
    std::fs::rename(p.join(".venv"), p.join("venv.server")).unwrap();
    let made = Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(p.join(".venv"))
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(&record, &recorded).unwrap();
    let refused = cli().args(["up", "--detach"]).run().failure();
    assert!(
        refused
            .stderr
            .contains("the virtualenv .venv was made by another Python 3."),
        "{}",
        refused.stderr
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something was started"
    );
    // Refused, nothing is recorded for it.
    assert_eq!(std::fs::read_to_string(&record).unwrap(), recorded);
}

#[test]
fn up_nginx_gunicorn_serves_the_example_and_stops_clean() {
    let port = free_port();
    let (child, _) = up("nginx+gunicorn", port);
    serves_the_example(port, "nginx+gunicorn");
    stop(child, "nginx+gunicorn");
}

#[test]
fn up_nginx_uwsgi_serves_the_example_through_an_activated_socket() {
    let port = free_port();
    let (child, _) = up("nginx+uwsgi", port);
    serves_the_example(port, "nginx+uwsgi");
    // The socket was created by deployctl (0660) and handed to uWSGI by socket activation.
    let sock = repo().join("examples/flask-hello/.deployctl/nginx+uwsgi/flask-hello.sock");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o660);
    stop(child, "nginx+uwsgi");
}

#[test]
fn up_lone_gunicorn_and_uwsgi_serve_the_example_and_stop_clean() {
    for target in ["gunicorn", "uwsgi"] {
        let port = free_port();
        let config = repo().join("examples/flask-hello/deploy.toml");
        let (child, _, log) = up_with(&config, target, port);
        serves_the_example(port, target);
        // Flask serves its static/ folder itself, but Gunicorn would not: up says so.
        let warned = log.lock().unwrap().lines().any(|l| {
            l.starts_with(&format!(
                "warning: target `{target}` does not serve [[static]] /static/ "
            ))
        });
        assert_eq!(warned, target == "gunicorn", "{target}:\n{}", log.lock().unwrap());
        stop(child, target);
    }
}

#[test]
fn a_crash_loop_stops_everything_with_the_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    // Serves, then kills its own server master 1.5 s after every start.
    std::fs::write(
        p.join("app.py"),
        "import os, signal, threading\n\
         threading.Timer(1.5, lambda: os.kill(os.getppid(), signal.SIGKILL)).start()\n\
         def app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'doomed']\n",
    )
    .unwrap();
    let port = free_port();
    let venv = repo().join("examples/flask-hello/.venv");
    std::fs::write(
        p.join("deploy.toml"),
        format!(
            "[app]\nname = \"doomed\"\nentry = \"app:app\"\nvenv = {:?}\n\n\
             [server]\nnames = [\"localhost\"]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [backend]\nkind = \"embedded\"\nworkers = 1\n\n[frontend]\nkind = \"none\"\n",
            venv.display().to_string()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let run = common::Cli::new(p).args(["up"]).run().failure();
    assert!(run.stderr.contains("restarting in"), "{}", run.stderr);
    assert!(run.stderr.contains("app is crashing in a loop"), "{}", run.stderr);
    assert!(
        run.stderr.contains("  app | "),
        "the error carries the app's last lines:\n{}",
        run.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something still listens after the crash loop"
    );
}

#[test]
fn a_privileged_port_without_the_right_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        p.join("deploy.toml"),
        format!(
            "[app]\nname = \"priv\"\nentry = \"app:app\"\nvenv = {:?}\n\n[server]\nlisten = \"127.0.0.1:80\"\n\n\
             [backend]\nkind = \"embedded\"\n\n[frontend]\nkind = \"none\"\n",
            repo().join("examples/flask-hello/.venv").display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(p.join("app.py"), "def app(e, s):\n    return []\n").unwrap();
    let deployctl = env!("CARGO_BIN_EXE_deployctl");
    // As root the bind would succeed: drop to nobody, as an unprivileged user runs it.
    // SAFETY: geteuid has no preconditions.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", deployctl]);
        c
    } else {
        Command::new(deployctl)
    };
    let out = cmd
        .args(["up", "-c"])
        .arg(p.join("deploy.toml"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot listen on 127.0.0.1:80: ports below 1024 need root"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: run locally on a high port"), "{stderr}");
    assert!(!p.join(".deployctl").exists(), "something was written before the check");
}

/// `up --listen 127.0.0.1:PORT` answers that address and `localhost` as well as
/// `[server].names` (here without `localhost`), prints a URL that works, and still drops
/// unknown hosts; the production render keeps only the names of deploy.toml.
#[test]
fn up_answers_the_listen_address_and_localhost_and_prints_a_working_url() {
    let project = example_copy();
    let config = project.path().join("deploy.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let only_test_name = text.replace(
        "names = [\"localhost\", \"flask-hello.test\"]",
        "names = [\"flask-hello.test\"]",
    );
    assert_ne!(text, only_test_name);
    std::fs::write(&config, only_test_name).unwrap();
    let port = free_port();
    let (child, url, log) = up_with(&config, "nginx+embedded", port);

    assert_eq!(url, format!("http://127.0.0.1:{port}/"));
    let authority = url.strip_prefix("http://").unwrap().trim_end_matches('/');
    let printed = get(port, authority, "/", &[]);
    assert_eq!(printed.status, 200, "the printed URL:\n{}", log.lock().unwrap());
    for host in [
        format!("localhost:{port}"),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        format!("flask-hello.test:{port}"),
    ] {
        assert_eq!(get(port, &host, "/", &[]).status, 200, "Host: {host}");
        assert_eq!(get(port, &host, "/json", &[]).json()["host"], host.as_str());
    }
    assert_eq!(
        get(port, "unknown.example", "/", &[]).status,
        0,
        "unknown hosts get the default server's 444"
    );

    let rendered = common::render(project.path(), "nginx+embedded");
    let site = common::parse::nginx(&rendered["nginx/flask-hello.conf"]);
    let names: Vec<String> = site
        .all("server")
        .flat_map(|s| s.one("server_name").args.clone())
        .collect();
    assert_eq!(
        names,
        ["flask-hello.test"],
        "production answers deploy.toml's names only (its catch-all is the shared deployctl-default.conf)"
    );

    let groups = groups_of_dir(project.path());
    let mut child = child;
    assert!(child.terminate().success());
    assert!(left_in(&groups).is_empty(), "left behind: {:?}", left_in(&groups));
}

/// Alone, uWSGI serves `[[static]]` itself (a mount the app does not serve, so only uWSGI can
/// answer it): the file with its type, `Expires` and one `Cache-Control` from `expires`; a
/// missing file goes to the app (404, not cacheable); paths outside the directory are refused.
#[test]
fn lone_uwsgi_serves_static_files_with_their_cache_control() {
    let project = example_copy();
    let config = project.path().join("deploy.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("url = \"/static/\"", "url = \"/assets/\"")
            .replace("expires = \"7d\"", "expires = \"1d\""),
    )
    .unwrap();
    let port = free_port();
    let (child, _, log) = up_with(&config, "uwsgi", port);
    // stderr is read by another thread: the line may come just after the URL on stdout.
    assert!(
        wait_for(10, || log
            .lock()
            .unwrap()
            .contains("static GET /assets/style.css → 200 from uWSGI")),
        "{}",
        log.lock().unwrap()
    );
    let host = format!("127.0.0.1:{port}");
    let css = get(port, &host, "/assets/style.css", &[]);
    assert_eq!(css.status, 200);
    assert_eq!(
        css.body,
        std::fs::read(project.path().join("static/style.css")).unwrap()
    );
    assert_eq!(css.one("content-type"), "text/css");
    assert_eq!(css.one("cache-control"), "max-age=86400");
    assert!(css.one("expires").ends_with(" GMT"), "{:?}", css.headers);

    let missing = get(port, &host, "/assets/missing.css", &[]);
    assert_eq!(missing.status, 404);
    assert!(missing.all("cache-control").is_empty(), "{:?}", missing.headers);
    let outside = get(port, &host, "/assets/../app.py", &[]);
    assert_eq!(outside.status, 404, "served a file outside the static directory");
    assert!(!String::from_utf8_lossy(&outside.body).contains("Flask"));

    let groups = groups_of_dir(project.path());
    let mut child = child;
    assert!(child.terminate().success());
    assert!(left_in(&groups).is_empty(), "left behind: {:?}", left_in(&groups));
}
