//! `deployctl up` end to end with the real embedded server and nginx, on loopback: the Flask
//! example served (page, static CSS from the front, JSON, form POST), then a clean stop with
//! no process left; a port in use refused before anything starts.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::repo;

/// A free port whose number does not contain "443": gixy's TLS checks (run by `up` on the
/// rendered nginx config) take such a `listen` for an HTTPS server and ask for TLS settings.
fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !port.to_string().contains("443") {
            return port;
        }
    }
}

/// (pid, process group, command line) of every process.
fn all_processes() -> Vec<(u32, u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let (Ok(cmd), Ok(stat)) = (
            std::fs::read(e.path().join("cmdline")),
            std::fs::read_to_string(e.path().join("stat")),
        ) else {
            continue;
        };
        // The fields after the parenthesised name: state, ppid, pgrp, ...
        let pgrp = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(2))
            .and_then(|g| g.parse().ok());
        if let Some(pgrp) = pgrp {
            found.push((pid, pgrp, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    found
}

/// Every process still in one of `groups` (nginx workers and server workers included).
fn left_in(groups: &[u32]) -> Vec<String> {
    all_processes()
        .into_iter()
        .filter(|(_, g, _)| groups.contains(g))
        .map(|(p, _, c)| format!("{p}: {c}"))
        .collect()
}

fn request(port: u16, req: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}

type Log = std::sync::Arc<std::sync::Mutex<String>>;

/// A running `deployctl up`; dropped (also when a test fails) it is stopped by SIGTERM, then
/// SIGKILL after 30 s, so no stack outlives its test.
struct Up(Child);

impl Up {
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling the child we started.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// SIGTERM and the exit status (bounded).
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.0.kill();
                panic!("up did not stop on SIGTERM within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.terminate()));
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn up(target: &str, port: u16) -> (Up, String) {
    let example = repo().join("examples/flask-hello");
    let (child, url, _) = up_with(&example.join("deploy.toml"), target, port);
    (child, url)
}

#[allow(clippy::zombie_processes)]
fn up_with(config: &std::path::Path, target: &str, port: u16) -> (Up, String, Log) {
    let example = repo().join("examples/flask-hello");
    assert!(example.join(".venv/bin/python3").exists(), "run scripts/setup.sh first");
    let mut child = Command::new(env!("CARGO_BIN_EXE_deployctl"))
        .args(["up", "-c"])
        .arg(config)
        .args(["--target", target, "--listen", &format!("127.0.0.1:{port}")])
        .env("NO_COLOR", "1")
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut url = String::new();
    let read = stdout.read_line(&mut url);
    assert!(read.is_ok_and(|n| n > 0), "up printed no URL:\n{}", log.lock().unwrap());
    (Up(child), url.trim().to_string(), log)
}

/// Stop `up` and check that nothing is left in its components' process groups (each
/// component is a child of `up` leading its own group; uWSGI renames its processes, so
/// command lines cannot be relied on).
fn stop(mut up: Up, target: &str) {
    let pid = up.pid();
    let groups: Vec<u32> = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(!groups.is_empty(), "no component of {target} found running");
    assert!(
        groups
            .iter()
            .all(|g| all_processes().iter().any(|(p, pg, _)| p == g && pg == g)),
        "components lead their groups"
    );
    let status = up.terminate();
    assert!(status.success(), "{status}");
    assert!(left_in(&groups).is_empty(), "left behind: {:?}", left_in(&groups));
}

fn serves_the_example(port: u16, static_from_front: bool) {
    let get = |path: &str| {
        request(
            port,
            &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        )
    };
    let (status, _, body) = get("/");
    assert_eq!(status, 200);
    assert!(body.contains("<h1>Hello from flask-hello</h1>"));
    let (status, head, body) = get("/static/style.css");
    assert_eq!(status, 200);
    assert!(!body.is_empty());
    if static_from_front {
        assert!(
            head.contains("cache-control: max-age=604800"),
            "not from nginx's static location:\n{head}"
        );
    }
    let (status, _, body) = get("/json");
    assert_eq!(status, 200);
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["app"], "flask-hello");
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
    assert_eq!(url, format!("http://localhost:{port}/"));
    serves_the_example(port, true);
    // Created by deployctl, 0660, and handed to the server by socket activation.
    let sock = repo().join("examples/flask-hello/.deployctl/nginx+embedded/flask-hello.sock");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o660);
    stop(child, "nginx+embedded");
}

#[test]
fn up_embedded_serves_the_example_and_stops_clean() {
    let port = free_port();
    let (child, _) = up("embedded", port);
    serves_the_example(port, false);
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

/// A copy of the example whose deploy.toml a test may change (the virtualenv stays shared).
fn example_copy() -> tempfile::TempDir {
    let example = repo().join("examples/flask-hello");
    let dir = tempfile::tempdir().unwrap();
    for f in ["app.py", "requirements.txt"] {
        std::fs::copy(example.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::create_dir(dir.path().join("static")).unwrap();
    for e in std::fs::read_dir(example.join("static")).unwrap().flatten() {
        std::fs::copy(e.path(), dir.path().join("static").join(e.file_name())).unwrap();
    }
    let toml = std::fs::read_to_string(example.join("deploy.toml")).unwrap().replace(
        "venv = \".venv\"",
        &format!("venv = {:?}", example.join(".venv").display().to_string()),
    );
    std::fs::write(dir.path().join("deploy.toml"), toml).unwrap();
    dir
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

fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
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
        wait_for(20, || log.lock().unwrap().contains("reload rejected")),
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

fn groups_of_dir(dir: &std::path::Path) -> Vec<u32> {
    let needle = dir.join(".deployctl").display().to_string();
    all_processes()
        .into_iter()
        .filter(|(_, _, c)| c.contains(&needle))
        .map(|(_, g, _)| g)
        .collect()
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

/// Runs `deployctl down` for a project when dropped, so a failing test does not leave a
/// detached stack running.
struct DownOnDrop(std::path::PathBuf);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if !crate::common::Cli::new(&self.0)
            .args(["status"])
            .run()
            .stdout
            .is_empty()
        {
            let _ = common::Cli::new(&self.0).args(["down"]).run();
        }
    }
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
    assert_eq!(run.stdout.trim(), format!("http://localhost:{port}/"));
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
            .contains(&format!("nginx+embedded  http://localhost:{port}/  health GET / → 200")),
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
    // A PID above the kernel's pid_max: certainly no such process.
    let stale = r#"{"target":"embedded","supervisor":99999999,"url":"http://localhost:1/","health_path":"/",
                   "components":[{"name":"app","pid":99999998}]}"#;
    std::fs::write(dir.join("state.json"), stale).unwrap();
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

#[test]
fn up_nginx_gunicorn_serves_the_example_and_stops_clean() {
    let port = free_port();
    let (child, _) = up("nginx+gunicorn", port);
    serves_the_example(port, true);
    stop(child, "nginx+gunicorn");
}

#[test]
fn up_nginx_uwsgi_serves_the_example_through_an_activated_socket() {
    let port = free_port();
    let (child, _) = up("nginx+uwsgi", port);
    serves_the_example(port, true);
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
        let (child, _) = up(target, port);
        serves_the_example(port, false);
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
