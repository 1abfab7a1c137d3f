//! `deployctl up` end to end with the real embedded server and nginx, on loopback: the Flask
//! example served (page, static CSS from the front, JSON, form POST), then a clean stop with
//! no process left; a port in use refused before anything starts.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::repo;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// The process groups of the components of `target` (found by their run directory).
fn groups_of(target: &str) -> Vec<u32> {
    let needle = format!(".deployctl/{target}/");
    all_processes()
        .into_iter()
        .filter(|(_, _, c)| c.contains(&needle))
        .map(|(_, g, _)| g)
        .collect()
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

#[allow(clippy::zombie_processes)]
fn up(target: &str, port: u16) -> (Child, String) {
    let example = repo().join("examples/flask-hello");
    assert!(example.join(".venv/bin/python3").exists(), "run scripts/setup.sh first");
    let mut child = Command::new(env!("CARGO_BIN_EXE_deployctl"))
        .args(["up", "-c"])
        .arg(example.join("deploy.toml"))
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
    (child, url.trim().to_string())
}

fn stop(mut child: Child, target: &str) {
    let groups = groups_of(target);
    assert!(!groups.is_empty(), "no component of {target} found running");
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "up did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
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
