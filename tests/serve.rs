//! `deployctl serve`: the launcher that checks the environment and `exec`s the embedded
//! server binary, and the linking rule that keeps the CLI free of libpython.
//!
//! Needs `deployctl-server` built next to `deployctl` (`cargo test` at the workspace root
//! builds both).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cli, repo};

fn cli_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_deployctl"))
}

fn server_bin() -> PathBuf {
    let p = cli_bin().with_file_name("deployctl-server");
    assert!(
        p.exists(),
        "{} is not built: run `cargo test` at the workspace root",
        p.display()
    );
    p
}

fn needed(bin: &Path) -> Vec<String> {
    let out = Command::new("readelf").arg("-d").arg(bin).output().expect("readelf");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1).map(|s| s.trim_end_matches(']').to_string()))
        .collect()
}

#[test]
fn the_cli_does_not_link_libpython_and_the_server_does() {
    let cli = needed(&cli_bin());
    assert!(!cli.is_empty(), "readelf found no NEEDED entries at all");
    assert!(
        !cli.iter().any(|l| l.starts_with("libpython")),
        "deployctl links {cli:?}"
    );
    let server = needed(&server_bin());
    assert!(
        server.iter().any(|l| l.starts_with("libpython")),
        "server links {server:?}"
    );
}

fn fixtures() -> PathBuf {
    repo().join("server/tests/fixtures")
}

/// A started `deployctl serve`, stopped (SIGTERM, then SIGKILL) when dropped, also when a
/// test fails half-way.
struct Running(std::process::Child);

impl Running {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: signalling the child we started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `deployctl ARGS` and wait for the server's "listening on" line.
#[allow(clippy::zombie_processes)]
fn start(args: &[&str], env: &[(&str, &str)]) -> (Running, String, String) {
    let mut cmd = Command::new(cli_bin());
    cmd.args(args)
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn deployctl serve");
    let mut reader = BufReader::new(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("read stderr");
        seen.push_str(&line);
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split(' ').next().unwrap_or_default().to_string();
            std::thread::spawn(move || {
                let mut sink = String::new();
                let _ = reader.read_to_string(&mut sink);
            });
            return (Running(child), addr, seen);
        }
        if n == 0 || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no listening line:\n{seen}");
        }
    }
}

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
}

#[test]
fn serve_execs_the_server_in_place() {
    let fx = fixtures();
    let (child, addr, log) = start(
        &[
            "serve",
            "apps:app",
            "--chdir",
            fx.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
        ],
        &[],
    );
    // exec, not spawn: the server logs under the PID we started (what Type=notify needs).
    assert!(log.contains(&format!("[{}]", child.id())), "{log}");
    assert_eq!(get(&addr, "/status?code=200").0, 200);
    drop(child);
}

#[test]
fn serve_takes_its_settings_from_deploy_toml() {
    let example = repo().join("examples/flask-hello");
    assert!(example.join(".venv/bin/python3").exists(), "run scripts/setup.sh first");
    let toml = example.join("deploy.toml");
    let (child, addr, _) = start(&["serve", "-c", toml.to_str().unwrap(), "--bind", "127.0.0.1:0"], &[]);
    let (status, body) = get(&addr, "/json");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["app"], "flask-hello");
    // [[static]] is served by the server itself, with its `expires`.
    let head = raw_head(&addr, "/static/style.css");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("\r\nCache-Control: max-age=604800\r\n"), "{head}");
    drop(child);
    // --no-static leaves them to the app (Flask serves its static/ folder its own way).
    let (child, addr, _) = start(
        &[
            "serve",
            "-c",
            toml.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--no-static",
        ],
        &[],
    );
    let head = raw_head(&addr, "/static/style.css");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.contains("max-age=604800"), "{head}");
    drop(child);
}

/// The status line and fields of `GET path`.
fn raw_head(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    text.split("\r\n\r\n").next().unwrap_or_default().to_string() + "\r\n"
}

#[test]
fn serve_reports_a_missing_libpython_clearly() {
    // A copy of the real server whose NEEDED entry names a libpython that does not exist:
    // the dynamic loader itself fails, as on a machine without the shared library.
    let lib = needed(&server_bin())
        .into_iter()
        .find(|l| l.starts_with("libpython"))
        .expect("libpython");
    let version = lib
        .trim_start_matches("libpython")
        .split(".so")
        .next()
        .unwrap()
        .to_string();
    let (major, minor) = version.split_once('.').unwrap();
    let fake = format!("{major}.{}", "9".repeat(minor.len()));
    let missing = lib.replace(&version, &fake);
    let mut bytes = std::fs::read(server_bin()).unwrap();
    let from = lib.as_bytes();
    let mut replaced = 0;
    for i in 0..bytes.len() - from.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(missing.as_bytes());
            replaced += 1;
        }
    }
    assert!(replaced > 0);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("deployctl-server");
    std::fs::write(&copy, &bytes).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let run = Cli::new(&fixtures())
        .args(["serve", "apps:app"])
        .env("DEPLOYCTL_SERVER", copy.to_str().unwrap())
        .run()
        .failure();
    assert!(
        run.stderr.contains(&format!("{missing} is not installed")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint:") && run.stderr.contains("gunicorn"),
        "{}",
        run.stderr
    );
}

#[test]
fn serve_refuses_a_virtualenv_of_another_python_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pyvenv.cfg"),
        "home = /usr/bin\nversion_info = 3.99.0.final.0\n",
    )
    .unwrap();
    let run = Cli::new(&fixtures())
        .args(["serve", "apps:app", "--venv", dir.path().to_str().unwrap()])
        .run()
        .failure();
    assert!(
        run.stderr
            .contains("is Python 3.99, but the embedded server was built for Python"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("hint:"), "{}", run.stderr);
}

#[test]
fn serve_names_the_missing_server_binary() {
    let run = Cli::new(&fixtures())
        .args(["serve", "apps:app"])
        .env("DEPLOYCTL_SERVER", "/nonexistent/deployctl-server")
        .run()
        .failure();
    assert!(run.stderr.contains("/nonexistent/deployctl-server"), "{}", run.stderr);
}

#[test]
fn serve_reports_bad_flags_before_starting_anything() {
    let run = Cli::new(&fixtures())
        .args(["serve", "apps:app", "--bind", "nowhere"])
        .run()
        .failure();
    assert!(run.stderr.contains("--bind \"nowhere\""), "{}", run.stderr);
    let run = Cli::new(&fixtures()).args(["serve", "not an entry"]).run().failure();
    assert!(run.stderr.contains("ENTRY"), "{}", run.stderr);
}

/// The rendered `embedded` unit, run the way systemd runs it: its `ExecStart` words, the
/// socket of its `.socket` unit passed as fd 3 with LISTEN_FDS/LISTEN_PID, NOTIFY_SOCKET
/// for Type=notify. Expect READY=1, then the example served, then a clean stop on SIGTERM.
#[test]
fn the_rendered_embedded_unit_starts_like_systemd_would() {
    let example = repo().join("examples/flask-hello");
    assert!(example.join(".venv/bin/python3").exists(), "run scripts/setup.sh first");
    let files = common::render(&example, "embedded");
    let service = files
        .iter()
        .find(|(name, _)| name.ends_with(".service"))
        .map(|(_, text)| text.clone())
        .expect("a .service file");
    assert!(service.lines().any(|l| l == "Type=notify"));
    let exec: Vec<String> = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(exec[0].ends_with("/deployctl") && exec[1] == "serve", "{exec:?}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
        .args(&exec)
        .current_dir(&example)
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("VIRTUAL_ENV")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    // SAFETY: only dup2/fcntl between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            // dup2(3, 3) would leave close-on-exec set.
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut buf = [0u8; 256];
    let got = notify.recv(&mut buf);
    let ready = got
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        .unwrap_or_default();
    let (status, body) = if ready.starts_with("READY=1") {
        get(&addr.to_string(), "/json")
    } else {
        (0, String::new())
    };
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(child.id() as i32, 15) };
    let exit = child.wait().unwrap();
    assert!(
        ready.starts_with("READY=1"),
        "no READY=1 from the rendered unit's command: {ready:?}"
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("flask-hello"));
    assert!(exit.success(), "{exit:?}");
}

/// Run `deployctl ARGS` (which must bind `addr`), get one page, stop it with TERM, and give
/// back its exit status and everything it wrote to stderr.
fn run_once(args: &[&str], addr: &str) -> (Option<i32>, String) {
    let mut child = Command::new(cli_bin())
        .args(args)
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deployctl");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        all
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(addr, "/status?code=200").0, 200);
    let running = Running(child);
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(running.id() as i32, libc::SIGTERM) };
    let mut running = running;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut code = None;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = running.0.try_wait() {
            code = status.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(running);
    (code, reader.join().unwrap_or_default())
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

#[test]
fn serve_quiet_flag_silences_info_lines_before_or_after_serve() {
    // What broke: `deployctl serve -q` exited 2 ("unexpected argument"), and the global `-q`
    // did not reach the server.
    let fx = fixtures();
    let fx = fx.to_str().unwrap();
    for quiet in [&["serve", "-q"][..], &["-q", "serve"][..], &["serve", "--quiet"][..]] {
        let addr = free_addr();
        let mut args = quiet.to_vec();
        args.extend(["apps:app", "--chdir", fx, "--workers", "1", "--bind", addr.as_str()]);
        let (code, log) = run_once(&args, &addr);
        assert_eq!(code, Some(0), "{args:?}:\n{log}");
        assert!(!log.contains("[INFO]"), "{args:?} still logs INFO:\n{log}");
    }
    // Without it the same run says what it does.
    let addr = free_addr();
    let (code, log) = run_once(
        &["serve", "apps:app", "--chdir", fx, "--workers", "1", "--bind", &addr],
        &addr,
    );
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("[INFO] listening on"), "{log}");
}

#[test]
fn serve_hands_the_server_what_it_resolved_and_a_hup_reads_deploy_toml_again() {
    // What broke: the launcher re-forwarded its raw command line, so a flag only the CLI takes
    // could be refused by the server, and the spec was parsed by the launcher and again by the
    // server. Now the server gets the resolved settings (and the flags, for reloads), never
    // the words: its command line is empty, `-q` still applies, and a HUP still picks up a
    // changed deploy.toml.
    let venv = repo().join("examples/flask-hello/.venv");
    assert!(venv.join("bin/python3").exists(), "run scripts/setup.sh first");
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("deploy.toml");
    let write = |value: &str| {
        std::fs::write(
            &toml,
            format!(
                "[app]\nentry = \"apps:raw\"\nroot = {:?}\nvenv = {:?}\nenv = {{ DEPLOYCTL_TEST_ENV = {value:?} }}\n",
                fixtures().display().to_string(),
                venv.display().to_string(),
            ),
        )
        .unwrap();
    };
    write("first");
    let addr = free_addr();
    let mut child = Command::new(cli_bin())
        .args([
            "serve",
            "-q",
            "-c",
            toml.to_str().unwrap(),
            "--workers",
            "1",
            "--bind",
            &addr,
        ])
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deployctl serve");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        all
    });
    let running = Running(child);
    let env_of = |addr: &str| -> Option<String> {
        let (status, body) = get(addr, "/sys");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200).then(|| v["env"].as_str().unwrap_or_default().to_string())
    };
    let wait_for = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = std::net::TcpStream::connect(&addr).ok().and_then(|_| env_of(&addr));
            if got.as_deref() == Some(want) {
                return;
            }
            assert!(Instant::now() < deadline, "never served {want:?}; last {got:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("first");
    // exec'd in place, with nothing on its command line: the settings came handed over.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", running.id())).unwrap();
    let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).filter(|w| !w.is_empty()).collect();
    assert_eq!(words.len(), 1, "{:?}", String::from_utf8_lossy(&cmdline));
    assert!(
        words[0].ends_with(b"deployctl-server"),
        "{:?}",
        String::from_utf8_lossy(&cmdline)
    );
    write("second");
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(running.id() as i32, libc::SIGHUP) };
    wait_for("second");
    // SAFETY: as above.
    unsafe { libc::kill(running.id() as i32, libc::SIGTERM) };
    let mut running = running;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut code = None;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = running.0.try_wait() {
            code = status.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(running);
    let log = reader.join().unwrap_or_default();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("[INFO]"), "-q did not reach the server:\n{log}");
}
