//! Ctrl-C and SIGTERM during `up`'s start-up stop what was started and exit at once: while
//! the backend is slow to become ready (an app that sleeps at import), while the health check
//! waits for Gunicorn's workers, while `pip install` waits for an index that never answers,
//! and through `up --detach`. Each time: exit within a few seconds, nothing left in the
//! process groups `up` had started.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::repo;
use common::up::{all_processes, free_port, left_in, wait_for};

/// Every descendant of `pid` (by parent PID), with its process group.
fn descendants(pid: u32) -> Vec<(u32, u32)> {
    let mut parents: Vec<(u32, u32, u32)> = Vec::new();
    for (p, g, _) in all_processes() {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        if let Some(ppid) = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|x| x.parse().ok())
        {
            parents.push((p, ppid, g));
        }
    }
    let mut found = vec![pid];
    let mut out = Vec::new();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for &(p, ppid, g) in &parents {
            if ppid == parent && !found.contains(&p) {
                found.push(p);
                out.push((p, g));
            }
        }
        i += 1;
    }
    out
}

struct Started {
    child: Child,
    log: Arc<Mutex<String>>,
    /// The thread copying `up`'s stderr into `log`: done at end of file.
    reader: std::thread::JoinHandle<()>,
}

fn start(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Started {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deployctl"));
    cmd.current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    Started { child, log, reader }
}

/// Wait until the output says `when`, let what `up` started settle, send `sig`; `up` must be
/// gone within 5 s and every process group it had started empty. Returns its output.
fn interrupt_when(mut s: Started, when: &str, sig: i32, groups_of: impl Fn(u32) -> Vec<u32>) -> String {
    let pid = s.child.id();
    assert!(
        wait_for(120, || s.log.lock().unwrap().contains(when)),
        "never got to {when:?}:\n{}",
        s.log.lock().unwrap()
    );
    std::thread::sleep(Duration::from_millis(500));
    let groups = groups_of(pid);
    assert!(!groups.is_empty(), "nothing started:\n{}", s.log.lock().unwrap());
    let sent = Instant::now();
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(pid as i32, sig) };
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        if sent.elapsed() > Duration::from_secs(30) {
            let _ = s.child.kill();
            panic!("up did not exit within 30 s:\n{}", s.log.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = sent.elapsed();
    // `up` has exited, but its last lines may still be in the pipe: read to its end (bounded:
    // a process left holding the pipe fails the check below anyway).
    wait_for(5, || s.reader.is_finished());
    let log = s.log.lock().unwrap().clone();
    assert!(took < Duration::from_secs(5), "up took {took:?} to exit:\n{log}");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        wait_for(5, || left_in(&groups).is_empty()),
        "left behind: {:?}",
        left_in(&groups)
    );
    log
}

/// The process groups of `up`'s descendants other than its own.
fn started_groups(up: u32) -> Vec<u32> {
    // SAFETY: getpgid of a process we started.
    let own = unsafe { libc::getpgid(up as i32) } as u32;
    let mut g: Vec<u32> = descendants(up)
        .into_iter()
        .map(|(_, g)| g)
        .filter(|g| *g != own)
        .collect();
    g.sort();
    g.dedup();
    g
}

fn project(app: &str, backend: &str, frontend: &str, port: u16, venv: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("app.py"), app).unwrap();
    std::fs::write(
        p.join("deploy.toml"),
        format!(
            "[app]\nname = \"slow\"\nentry = \"app:app\"\nvenv = {venv:?}\n\n\
             [server]\nnames = [\"localhost\"]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [backend]\nkind = \"{backend}\"\nworkers = 1\n\n[frontend]\nkind = \"{frontend}\"\n"
        ),
    )
    .unwrap();
    dir
}

fn example_venv() -> String {
    repo().join("examples/flask-hello/.venv").display().to_string()
}

const SLOW_IMPORT: &str = "import time\ntime.sleep(120)\n\
                           def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'late']\n";

#[test]
fn sigterm_while_the_backend_is_not_ready_yet_stops_it_at_once() {
    let port = free_port();
    let dir = project(SLOW_IMPORT, "embedded", "none", port, &example_venv());
    let s = start(dir.path(), &["up"], &[]);
    let log = interrupt_when(s, "starting app", libc::SIGTERM, started_groups);
    assert!(log.contains("interrupted by SIGTERM during start-up"), "{log}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn ctrl_c_while_the_health_check_waits_for_gunicorn_workers_stops_everything() {
    // Gunicorn says READY=1 before its workers import the app (`--check-config`, which also
    // imports it, is not slowed): nginx starts, and the health check waits.
    let app = format!(
        "import sys\nif '--check-config' not in sys.argv:\n    import time\n    time.sleep(120)\n{}",
        "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'late']\n"
    );
    let port = free_port();
    let dir = project(&app, "gunicorn", "nginx", port, &example_venv());
    let s = start(dir.path(), &["up"], &[]);
    let log = interrupt_when(s, "nginx ready", libc::SIGINT, started_groups);
    assert!(log.contains("interrupted by SIGINT (Ctrl-C) during start-up"), "{log}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// A package index on loopback that accepts connections and never answers: pip waits.
fn silent_index() -> (u16, Arc<std::sync::atomic::AtomicBool>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let started = Instant::now();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) && started.elapsed() < Duration::from_secs(180) {
            if let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (port, done)
}

#[test]
fn sigterm_during_pip_install_stops_pip_and_leaves_no_record() {
    let (index, done) = silent_index();
    let dir = project(SLOW_IMPORT, "embedded", "none", free_port(), ".venv");
    std::fs::write(dir.path().join("requirements.txt"), "flask\n").unwrap();
    let env = [
        ("PIP_INDEX_URL", &*format!("http://127.0.0.1:{index}/simple")),
        ("PIP_FIND_LINKS", ""),
        ("PIP_DEFAULT_TIMEOUT", "100"),
        ("PIP_RETRIES", "0"),
    ];
    let s = start(dir.path(), &["up"], &env);
    let log = interrupt_when(s, "installing requirements.txt", libc::SIGTERM, started_groups);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(log.contains("interrupted by SIGTERM during start-up"), "{log}");
    let venv = dir.path().join(".venv");
    assert!(venv.join("bin/python3").exists(), "{log}");
    assert!(
        !venv.join(".deployctl-installed").exists(),
        "a record after an interrupted install"
    );
    let pips: Vec<String> = all_processes()
        .into_iter()
        .filter(|(_, _, c)| c.contains(&venv.display().to_string()))
        .map(|(p, _, c)| format!("{p}: {c}"))
        .collect();
    assert!(pips.is_empty(), "left behind: {pips:?}");
}

#[test]
fn sigterm_to_up_detach_while_starting_stops_the_background_supervisor_too() {
    let port = free_port();
    let dir = project(SLOW_IMPORT, "embedded", "none", port, &example_venv());
    let config = dir.path().join("deploy.toml").display().to_string();
    let s = start(dir.path(), &["up", "--detach", "-c", &config], &[]);
    let log_path = dir.path().join(".deployctl/embedded/up.log");
    assert!(
        wait_for(60, || std::fs::read_to_string(&log_path)
            .is_ok_and(|l| l.contains("starting app"))),
        "{}",
        s.log.lock().unwrap()
    );
    // The supervisor left our session: its groups (and itself) are found by the project path.
    let needle = dir.path().display().to_string();
    // SAFETY: getpgrp has no preconditions.
    let own = unsafe { libc::getpgrp() } as u32;
    let groups = || -> Vec<u32> {
        let mut g: Vec<u32> = all_processes()
            .into_iter()
            .filter(|(_, _, c)| c.contains(&needle))
            .map(|(_, g, _)| g)
            .filter(|g| *g != own)
            .collect();
        g.sort();
        g.dedup();
        g
    };
    let log = interrupt_when(s, "starting in the background", libc::SIGTERM, |_| groups());
    assert!(log.contains("interrupted by SIGTERM during start-up"), "{log}");
    assert!(groups().is_empty(), "left behind: {:?}", groups());
    let up_log = std::fs::read_to_string(&log_path).unwrap();
    assert!(up_log.contains("interrupted by SIGTERM during start-up"), "{up_log}");
}

/// Regression: a SIGHUP that came while `up` was starting was thrown away, so a `deploy.toml`
/// changed during a slow start-up (the file is read first) never took effect. It is now kept
/// and the stack reloaded once it is up.
#[test]
fn a_sighup_during_start_up_reloads_the_stack_once_it_is_up() {
    let port = free_port();
    let app = "import os, time\ntime.sleep(3)\n\
               def app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [os.environ['GREETING'].encode()]\n";
    let dir = project(app, "embedded", "none", port, &example_venv());
    let toml = dir.path().join("deploy.toml");
    let with = |greeting: &str| {
        let text = std::fs::read_to_string(&toml).unwrap();
        let (head, rest) = text.split_once("\n\n").unwrap();
        let head = head
            .lines()
            .filter(|l| !l.starts_with("env"))
            .collect::<Vec<_>>()
            .join("\n");
        // Written aside and renamed over, as an editor saves: the server starting meanwhile
        // reads deploy.toml, and a truncate-then-write gave it an empty file once in CI.
        let aside = toml.with_extension("toml.new");
        std::fs::write(
            &aside,
            format!("{head}\nenv = {{ GREETING = \"{greeting}\" }}\n\n{rest}"),
        )
        .unwrap();
        std::fs::rename(&aside, &toml).unwrap();
    };
    with("read at the start");
    let s = start(dir.path(), &["up"], &[]);
    let pid = s.child.id();
    assert!(
        wait_for(60, || s.log.lock().unwrap().contains("starting app")),
        "never got to starting the app:\n{}",
        s.log.lock().unwrap()
    );
    // The app is still importing (3 s): the change and the HUP come during the start-up.
    with("changed during the start-up");
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    let body = || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        std::io::Write::write_all(
            &mut stream,
            b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .ok()?;
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stream, &mut out).ok()?;
        out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
    };
    let mut last = None;
    let served = wait_for(60, || {
        last = body();
        last.as_deref() == Some("changed during the start-up")
    });
    let mut child = s.child;
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    // Its last lines may still be in the pipe: read to its end.
    wait_for(5, || s.reader.is_finished());
    let log = s.log.lock().unwrap().clone();
    assert!(
        served,
        "the change made during the start-up was never served (last: {last:?}):\n{log}"
    );
    assert!(log.contains("a SIGHUP came during the start-up"), "{log}");
    assert!(status.success(), "{status}\n{log}");
}
