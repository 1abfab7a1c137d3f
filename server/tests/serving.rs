//! Serving beyond one request: bounded streaming (RSS), Python threads and backpressure,
//! trusted proxies, unix sockets, access logs, the interpreter's virtualenv, start-up errors,
//! and the Flask example.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{Server, server};

const GIB: u64 = 1 << 30;
/// The bound on RSS growth while streaming 1 GiB either way.
const RSS_BOUND_KIB: u64 = 64 * 1024;

fn warm(s: &Server) -> u64 {
    assert_eq!(s.get("/status?code=200").status, 200);
    s.peak_rss_kib()
}

#[test]
fn a_1_gib_download_keeps_rss_growth_under_64_mib() {
    let s = server("apps:app").start();
    let before = warm(&s);
    let mut conn = TcpStream::connect(&s.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // HTTP/1.0: close-delimited, so the client only counts bytes.
    conn.write_all(b"GET /stream?n=16384 HTTP/1.0\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 1 << 18];
    let mut total = 0u64;
    loop {
        let n = conn.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert!(total > GIB, "received {total} bytes");
    let growth = s.peak_rss_kib().saturating_sub(before);
    assert!(growth < RSS_BOUND_KIB, "peak RSS grew by {growth} KiB");
}

#[test]
fn a_1_gib_upload_keeps_rss_growth_under_64_mib() {
    let s = server("apps:app").args(&["--max-body", "2G"]).start();
    let before = warm(&s);
    let mut conn = TcpStream::connect(&s.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    conn.write_all(format!("POST /echo?mode=count HTTP/1.1\r\nHost: h\r\nContent-Length: {GIB}\r\n\r\n").as_bytes())
        .unwrap();
    let zeros = vec![0u8; 1 << 18];
    for _ in 0..(GIB / zeros.len() as u64) {
        conn.write_all(&zeros).unwrap();
    }
    let mut c = common::Client::from(conn);
    let r = c.response();
    assert_eq!(r.json()["total"], GIB);
    let growth = s.peak_rss_kib().saturating_sub(before);
    assert!(growth < RSS_BOUND_KIB, "peak RSS grew by {growth} KiB");
}

#[test]
fn threads_serve_requests_concurrently() {
    let s = server("apps:app").args(&["--threads", "4"]).start();
    assert_eq!(s.get("/environ").json()["wsgi.multithread"], true);
    let addr = s.addr.clone();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = common::Client::from(TcpStream::connect(addr).unwrap());
                c.send(b"GET /sleep?s=0.5 HTTP/1.1\r\nHost: h\r\n\r\n");
                c.response().json()
            })
        })
        .collect();
    let runs: Vec<serde_json::Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let latest_start = runs
        .iter()
        .map(|r| r["start"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let earliest_end = runs.iter().map(|r| r["end"].as_f64().unwrap()).fold(f64::MAX, f64::min);
    assert!(
        latest_start < earliest_end,
        "the four requests did not overlap: {runs:?}"
    );
    let threads: std::collections::HashSet<_> = runs.iter().map(|r| r["thread"].to_string()).collect();
    assert_eq!(threads.len(), 4);
}

#[test]
fn idle_keep_alive_connections_do_not_use_up_python_capacity() {
    // Design input §2.2: 50 idle pooled connections must not block a new request.
    let s = server("apps:app").args(&["--threads", "2"]).start();
    let mut idle = Vec::new();
    for _ in 0..50 {
        let mut c = s.connect();
        c.send(b"GET /status?code=200 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(c.response().status, 200);
        idle.push(c);
    }
    for _ in 0..5 {
        assert_eq!(s.get("/status?code=200").status, 200);
    }
    // And the idle ones still work.
    for c in idle.iter_mut().take(5) {
        c.send(b"GET /status?code=204 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(c.response().status, 204);
    }
}

#[test]
fn requests_beyond_the_thread_count_wait_and_all_succeed() {
    let s = server("apps:app").args(&["--threads", "2"]).start();
    let addr = s.addr.clone();
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = common::Client::from(TcpStream::connect(addr).unwrap());
                c.send(b"GET /sleep?s=0.2 HTTP/1.1\r\nHost: h\r\n\r\n");
                c.response().status
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
}

fn environ_with(s: &Server, headers: &str) -> serde_json::Value {
    let mut c = s.connect();
    c.send(format!("GET /environ HTTP/1.1\r\nHost: internal:8000\r\n{headers}\r\n").as_bytes());
    c.response().json()
}

#[test]
fn forwarded_headers_from_a_trusted_peer_change_the_environ() {
    let s = server("apps:app").start();
    let e = environ_with(
        &s,
        "X-Forwarded-For: 6.6.6.6, 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\
         X-Forwarded-Host: example.com\r\nX-Forwarded-Prefix: /app\r\n",
    );
    assert_eq!(e["REMOTE_ADDR"], "203.0.113.7", "right-most untrusted address");
    assert_eq!(e["wsgi.url_scheme"], "https");
    assert_eq!(e["HTTP_HOST"], "example.com");
    assert_eq!(e["SERVER_NAME"], "example.com");
    assert_eq!(e["SERVER_PORT"], "443");
    assert_eq!(e["SCRIPT_NAME"], "/app");
    let e = environ_with(&s, "Forwarded: for=198.51.100.1;proto=https;host=shop.example\r\n");
    assert_eq!(e["REMOTE_ADDR"], "198.51.100.1");
    assert_eq!(e["HTTP_HOST"], "shop.example");
}

#[test]
fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let s = server("apps:app")
        .args(&["--forwarded-allow-ips", "10.0.0.0/8"])
        .start();
    let e = environ_with(
        &s,
        "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n",
    );
    assert_eq!(e["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(e["wsgi.url_scheme"], "http");
    assert_eq!(e["HTTP_HOST"], "internal:8000");
    assert_eq!(e["SCRIPT_NAME"], "");
}

#[test]
fn a_client_cannot_spoof_a_proxy_header_with_underscores() {
    let s = server("apps:app")
        .args(&["--forwarded-allow-ips", "10.0.0.0/8"])
        .start();
    let e = environ_with(&s, "X_Forwarded_For: 203.0.113.7\r\n");
    assert!(e.get("HTTP_X_FORWARDED_FOR").is_none());
}

#[test]
fn unix_socket_with_mode_and_host_derived_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let s = server("apps:app")
        .args(&["--bind", &format!("unix:{}", sock.display()), "--uds-mode", "600"])
        .start();
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);
    let mut u = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    u.write_all(
        b"GET /environ HTTP/1.1\r\nHost: site.example:8080\r\nX-Forwarded-For: 192.0.2.9\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    u.read_to_string(&mut out).unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap();
    let e: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(e["SERVER_NAME"], "site.example");
    assert_eq!(e["SERVER_PORT"], "8080");
    assert_eq!(
        e["REMOTE_ADDR"], "192.0.2.9",
        "a unix-socket peer is a trusted local proxy"
    );
    drop(s);
    assert!(!sock.exists(), "the socket file is removed on exit");
}

#[test]
fn access_log_formats() {
    let dir = tempfile::tempdir().unwrap();
    let json_log = dir.path().join("access.json");
    let s = server("apps:app")
        .args(&[
            "--access-log",
            json_log.to_str().unwrap(),
            "--access-log-format",
            "json",
        ])
        .start();
    let mut c = s.connect();
    c.send(b"GET /status?code=200 HTTP/1.1\r\nHost: h\r\nUser-Agent: probe/1\r\nReferer: http://r/\r\n\r\n");
    assert_eq!(c.response().status, 200);
    drop(s);
    let line = std::fs::read_to_string(&json_log).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["uri"], "/status?code=200");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes"], 4);
    assert_eq!(v["user_agent"], "probe/1");
    assert_eq!(v["remote_addr"], "127.0.0.1");

    let s = server("apps:app")
        .args(&["--access-log", "-", "--access-log-format", "combined"])
        .start();
    let mut c = s.connect();
    c.send(b"GET /status?code=201 HTTP/1.1\r\nHost: h\r\nUser-Agent: probe/2\r\n\r\n");
    assert_eq!(c.response().status, 201);
    std::thread::sleep(Duration::from_millis(200));
    let out = s.stdout();
    let line = out.lines().next().expect("an access log line on stdout");
    let fields: Vec<&str> = line.split('"').collect();
    assert!(fields[0].starts_with("127.0.0.1 - - ["), "{line}");
    assert_eq!(fields[1], "GET /status?code=201 HTTP/1.1");
    assert_eq!(fields[2].trim(), "201 4");
    assert_eq!(fields[3], "-");
    assert_eq!(fields[5], "probe/2");
}

#[test]
fn the_app_runs_with_the_virtualenv_as_sys_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    let ok = std::process::Command::new(env!("DEPLOYCTL_TEST_PYTHON"))
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(ok.success());
    let s = server("apps:raw")
        .args(&["--venv", venv.to_str().unwrap(), "--env", "DEPLOYCTL_TEST_ENV=a=b c"])
        .start();
    let r = s.get("/sys").json();
    assert_eq!(r["env"], "a=b c", "--env K=V reaches os.environ (split at the first =)");
    assert_eq!(
        r["cwd"],
        common::fixtures().to_str().unwrap(),
        "--chdir is the working directory"
    );
    assert_eq!(r["prefix"], venv.to_str().unwrap());
    assert_eq!(r["executable"], venv.join("bin/python3").to_str().unwrap());
    assert_eq!(
        r["path0"],
        common::fixtures().to_str().unwrap(),
        "--chdir comes first on sys.path"
    );
}

#[test]
fn a_virtualenv_of_another_python_version_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bin")).unwrap();
    std::fs::write(dir.path().join("pyvenv.cfg"), "home = /usr/bin\nversion = 3.99.1\n").unwrap();
    let (code, err) = server("apps:app")
        .args(&["--venv", dir.path().to_str().unwrap()])
        .run_to_exit();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is Python 3.99"), "{err}");
    assert!(
        err.contains(&format!("built for Python {}", env!("DEPLOYCTL_TEST_PYTHON_VERSION"))),
        "{err}"
    );
    assert!(err.contains("gunicorn"), "the hint names the other way out: {err}");
}

#[test]
fn an_app_that_fails_to_import_exits_4_with_the_traceback() {
    let (code, err) = server("no_such_module:app").run_to_exit();
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("cannot import module \"no_such_module\""), "{err}");
    assert!(err.contains("ModuleNotFoundError"), "{err}");
    let (code, err) = server("apps:not_callable").run_to_exit();
    assert_eq!(code, 4);
    assert!(err.contains("is not callable"), "{err}");
    let (code, err) = server("apps:missing").run_to_exit();
    assert_eq!(code, 4);
    assert!(err.contains("has no attribute \"missing\""), "{err}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = server("apps:app").args(&["--bind", &addr]).run_to_exit();
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("cannot listen on {addr}")) && err.contains("already in use"),
        "{err}"
    );
}

#[test]
fn sigterm_stops_cleanly_with_status_0() {
    let s = server("apps:app").start();
    assert_eq!(s.get("/status?code=200").status, 200);
    assert_eq!(s.terminate(), 0);
}

#[test]
fn the_flask_example_is_served() {
    let root = common::repo_root().join("examples/flask-hello");
    let venv = root.join(".venv");
    assert!(
        Path::new(&venv).join("bin/python3").exists(),
        "{} is missing: run scripts/setup.sh",
        venv.display()
    );
    let s = server("app:app")
        .args(&["--chdir", root.to_str().unwrap(), "--venv", venv.to_str().unwrap()])
        .start();
    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(page.text().contains("<h1>Hello from flask-hello</h1>"));
    let css = s.get("/static/style.css");
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    let j = s.get("/json").json();
    assert_eq!(j["app"], "flask-hello");
    assert_eq!(j["remote_addr"], "127.0.0.1");
    let mut c = s.connect();
    let form = "name=d%C3%A9ploy";
    c.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        )
        .as_bytes(),
    );
    let r = c.response().json();
    assert_eq!(r["hello"], "d\u{e9}ploy");
    assert_eq!(r["length"], form.len());
}
