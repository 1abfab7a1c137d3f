//! Hardening of the process model, each test named after what broke: a request that kills
//! its worker, a reload with code or a `deploy.toml` that does not work, descriptors leaking
//! into the app's children, and small open-file limits. Real sockets, the real server, real
//! CPython; every load loop is bounded in count and time.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Client, load_loop, server, signal, wait_until};

/// One request on a fresh connection: its status, or `None` when the connection closed first.
fn try_get(addr: &str, path: &str, secs: u64) -> Option<u16> {
    let stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(secs))).ok()?;
    let mut c = Client::from(stream);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").as_bytes());
    c.try_response_to(false).map(|r| r.status)
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v
}

/// Receives sd_notify datagrams on a socket in a temporary directory.
struct Notify {
    sock: std::os::unix::net::UnixDatagram,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Notify {
    fn new() -> Notify {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Notify { sock, path, _dir: dir }
    }

    fn recv(&self) -> String {
        let mut buf = [0u8; 2048];
        let n = self.sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

#[test]
fn requests_that_crash_their_worker_no_longer_stop_the_server() {
    // Was: five worker deaths in 10 s stopped the master with exit 4, so any request that
    // crashes a worker was a remote off switch.
    let mut s = server("apps:raw").args(&["--workers", "2"]).start();
    assert!(wait_until(10, || s.log().matches(" ready").count() == 2), "{}", s.log());
    let started = Instant::now();
    for n in 1..=8 {
        let how = if n % 2 == 1 { "segv" } else { "exit" };
        // Each waits in the listen queue while no worker is up (the backoff), then kills one.
        let answer = try_get(&s.addr, &format!("/crash?n={n}&how={how}"), 20);
        assert_eq!(answer, None, "crash request {n} got an answer:\n{}", s.log());
        assert!(started.elapsed() < Duration::from_secs(40), "{}", s.log());
    }
    let serving = wait_until(15, || {
        s.worker_pids().len() == 2 && (0..5).all(|_| try_get(&s.addr, "/pid", 10) == Some(200))
    });
    assert!(serving, "not serving after the crashes:\n{}", s.log());
    assert!(s.running(), "the master exited:\n{}", s.log());
    let log = s.log();
    // The master names the request each worker died serving, from the scoreboard.
    assert!(log.contains("while serving \"GET /crash?n=3&how=segv\""), "{log}");
    assert!(log.contains("while serving \"GET /crash?n=4&how=exit\""), "{log}");
    assert!(log.contains("was killed by signal 11"), "{log}");
    assert!(log.contains("exited with status 1"), "{log}");
    assert!(log.contains("starting a replacement in 0.1 s"), "{log}");
    assert!(!log.contains("crashing in a loop"), "{log}");
}

#[test]
fn a_worker_that_fails_to_boot_before_the_first_generation_is_ready_still_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("probe.py"), "raise ImportError('probe is broken')\n").unwrap();
    let (code, err) = server("apps:raw")
        .args(&["--workers", "2"])
        .env("PROBE_DIR", dir.path().to_str().unwrap())
        .run_to_exit();
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("a worker failed to boot") && err.contains("ImportError: probe is broken"),
        "{err}"
    );
}

#[test]
fn a_reload_whose_code_fails_to_import_is_cancelled_and_the_old_workers_keep_serving() {
    // Was: a new-generation worker that failed to import stopped the whole master (exit 4).
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe.py");
    std::fs::write(&probe, "VERSION = 'v1'\n").unwrap();
    let notify = Notify::new();
    let mut s = server("apps:raw")
        .args(&["--workers", "2"])
        .env("PROBE_DIR", dir.path().to_str().unwrap())
        .env("NOTIFY_SOCKET", notify.path.to_str().unwrap())
        .start();
    assert!(notify.recv().starts_with("READY=1"));
    let before = sorted(s.worker_pids());
    assert_eq!(before.len(), 2);

    let stop = Arc::new(AtomicBool::new(false));
    let loader = load_loop(s.addr.clone(), "/pid", stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&probe, "raise ImportError('probe is broken')\n").unwrap();
    signal(s.pid(), libc::SIGHUP);
    assert_eq!(notify.recv(), "RELOADING=1");
    let cancelled = notify.recv();
    assert!(
        cancelled.starts_with("READY=1\nSTATUS=reload failed: ") && cancelled.contains("probe is broken"),
        "{cancelled:?}"
    );
    assert!(s.wait_log("reload cancelled", 5), "{}", s.log());
    // The new workers are gone, the old ones were never touched.
    assert!(
        wait_until(10, || sorted(s.worker_pids()) == before),
        "{before:?} {:?}\n{}",
        s.worker_pids(),
        s.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, bodies) = loader.join().unwrap();
    assert_eq!(failed, 0, "failed requests across the cancelled reload:\n{}", s.log());
    assert!(ok > 20);
    assert!(bodies.iter().all(|b| b["version"] == "v1"));
    let log = s.log();
    assert!(log.contains("ImportError: probe is broken"), "{log}");
    assert!(!log.contains("reload complete"), "{log}");
    assert!(s.running());

    // Fixed, a second HUP goes through.
    std::fs::write(&probe, "VERSION = 'v2'\n").unwrap();
    signal(s.pid(), libc::SIGHUP);
    assert_eq!(notify.recv(), "RELOADING=1");
    assert!(notify.recv().starts_with("READY=1\nSTATUS=2 workers serving"));
    assert!(s.wait_log("reload complete", 10), "{}", s.log());
    assert_eq!(s.get("/pid").json()["version"], "v2");
    let after = s.worker_pids();
    assert!(after.iter().all(|p| !before.contains(p)), "{before:?} {after:?}");
}

fn write_deploy_toml(path: &Path, env_value: &str) {
    std::fs::write(
        path,
        format!("[app]\nname = \"probe\"\nentry = \"apps:raw\"\nenv = {{ DEPLOYCTL_TEST_ENV = \"{env_value}\" }}\n"),
    )
    .unwrap();
}

#[test]
fn a_reload_with_a_broken_deploy_toml_keeps_serving_and_workers_never_read_it() {
    // Was: every worker re-parsed the command line and deploy.toml itself, so a file broken
    // after the start made any new worker (reload, replacement, TTIN) fail, and the master
    // stop.
    let venv = common::repo_root().join("examples/flask-hello/.venv");
    assert!(venv.join("bin/python3").exists(), "run scripts/setup.sh first");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("deploy.toml");
    write_deploy_toml(&config, "one");
    let notify = Notify::new();
    let s = server("apps:raw")
        .args(&["-c", config.to_str().unwrap(), "--venv", venv.to_str().unwrap()])
        .env("NOTIFY_SOCKET", notify.path.to_str().unwrap())
        .start();
    assert!(notify.recv().starts_with("READY=1"));
    assert_eq!(s.get("/sys").json()["env"], "one");
    let before = s.worker_pids();

    let stop = Arc::new(AtomicBool::new(false));
    let loader = load_loop(s.addr.clone(), "/pid", stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&config, "[app\nentry = \n").unwrap();
    signal(s.pid(), libc::SIGHUP);
    assert_eq!(notify.recv(), "RELOADING=1");
    let failed_status = notify.recv();
    assert!(
        failed_status.starts_with("READY=1\nSTATUS=reload failed: "),
        "{failed_status:?}"
    );
    assert!(
        s.wait_log("reload failed, the current workers keep serving", 5),
        "{}",
        s.log()
    );
    assert!(s.log().contains("deploy.toml"), "{}", s.log());
    // A worker started now gets the settings the master holds, not the broken file.
    signal(s.pid(), libc::SIGTTIN);
    assert!(
        wait_until(15, || s.worker_pids().len() == 2
            && s.log().matches(" ready").count() == 2),
        "TTIN with a broken deploy.toml:\n{}",
        s.log()
    );
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, _) = loader.join().unwrap();
    assert_eq!(failed, 0, "{}", s.log());
    assert!(ok > 20);
    assert!(s.worker_pids().contains(&before[0]), "the old worker was replaced");

    // Fixed and changed, a HUP applies it.
    write_deploy_toml(&config, "two");
    signal(s.pid(), libc::SIGHUP);
    assert!(s.wait_log("reload complete", 15), "{}", s.log());
    assert_eq!(s.get("/sys").json()["env"], "two");
}

#[test]
fn a_recycled_worker_whose_replacement_fails_to_boot_keeps_serving() {
    // The replacement imports the code on disk, which broke after the start: the worker it
    // should replace goes on serving, and the master retries with backoff.
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe.py");
    std::fs::write(&probe, "VERSION = 'v1'\n").unwrap();
    let mut s = server("apps:raw")
        .args(&["--workers", "1", "--max-requests", "5"])
        .env("PROBE_DIR", dir.path().to_str().unwrap())
        .start();
    assert!(wait_until(10, || s.log().contains(" ready")));
    let first = s.worker_pids();
    std::fs::write(&probe, "raise ImportError('probe is broken')\n").unwrap();
    for _ in 0..10 {
        assert_eq!(try_get(&s.addr, "/pid", 10), Some(200), "{}", s.log());
    }
    assert!(s.wait_log("a worker failed to boot", 10), "{}", s.log());
    assert!(s.wait_log("(the other workers keep serving; retrying in", 1));
    assert!(s.wait_log("ImportError: probe is broken", 1));
    for _ in 0..10 {
        assert_eq!(try_get(&s.addr, "/pid", 10), Some(200), "{}", s.log());
    }
    assert!(s.running());
    assert!(s.worker_pids().contains(&first[0]));
    // Fixed on disk: the next retry replaces the worker.
    std::fs::write(&probe, "VERSION = 'v2'\n").unwrap();
    assert!(wait_until(20, || !s.worker_pids().contains(&first[0])), "{}", s.log());
    assert_eq!(s.get("/pid").json()["version"], "v2");
}

#[test]
fn a_ttin_worker_that_fails_to_boot_leaves_the_others_serving() {
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe.py");
    std::fs::write(&probe, "VERSION = 'v1'\n").unwrap();
    let mut s = server("apps:raw")
        .args(&["--workers", "1"])
        .env("PROBE_DIR", dir.path().to_str().unwrap())
        .start();
    assert!(wait_until(10, || s.log().contains(" ready")));
    let first = s.worker_pids();
    std::fs::write(&probe, "raise ImportError('probe is broken')\n").unwrap();
    signal(s.pid(), libc::SIGTTIN);
    assert!(
        s.wait_log(
            "a worker failed to boot (the other workers keep serving; retrying in 0.1 s)",
            10
        ),
        "{}",
        s.log()
    );
    assert!(s.wait_log("ImportError: probe is broken", 1));
    for _ in 0..10 {
        assert_eq!(try_get(&s.addr, "/pid", 10), Some(200), "{}", s.log());
    }
    // TTOU takes the request back: no more attempts (the backoff is at most 2 s).
    signal(s.pid(), libc::SIGTTOU);
    std::thread::sleep(Duration::from_millis(500));
    let attempts = s.log().matches("a worker failed to boot").count();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        s.log().matches("a worker failed to boot").count(),
        attempts,
        "{}",
        s.log()
    );
    assert_eq!(s.worker_pids(), first);
    assert!(s.running());
}

/// (number, link target) of every descriptor a process holds.
fn open_fds(pid: u32) -> Vec<(u32, String)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let n = e.file_name().to_str()?.parse().ok()?;
                    let target = std::fs::read_link(e.path()).ok()?;
                    Some((n, target.display().to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Kills the left-behind process by PID, also when an assertion fails first.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY: a process this test made the app start.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

#[test]
fn processes_the_app_leaves_behind_hold_none_of_the_servers_descriptors() {
    // Was: the listening socket, the status pipe and the scoreboard were inherited by the
    // app's children, so after a stop the port stayed taken (EADDRINUSE on restart).
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("sleep.pid");
    let s = server("apps:raw").args(&["--workers", "1"]).start();
    let addr = s.addr.clone();
    assert_eq!(s.get(&format!("/background?pidfile={}", pidfile.display())).status, 200);
    let mut sleep_pid = 0;
    assert!(wait_until(5, || {
        sleep_pid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        sleep_pid > 0
    }));
    let _guard = KillOnDrop(sleep_pid);
    assert_eq!(s.terminate(), 0);
    let sleep_fds = open_fds(sleep_pid as u32);
    assert!(!sleep_fds.is_empty(), "the sleep is not running");
    // Whatever runs this test may pass inheritable descriptors of its own down to every
    // process (this one has them too): those are not the server's. A socket or a memfd is.
    let own: Vec<String> = open_fds(std::process::id()).into_iter().map(|(_, t)| t).collect();
    let leaked: Vec<_> = sleep_fds
        .iter()
        .filter(|(n, t)| *n > 2 && (t.starts_with("socket:") || t.contains("memfd:") || !own.contains(t)))
        .collect();
    assert!(
        leaked.is_empty(),
        "descriptors of the server in its app's child: {leaked:?}"
    );
    // The port is free at once.
    let rebound = std::net::TcpListener::bind(&addr);
    assert!(rebound.is_ok(), "{addr}: {rebound:?}");
}

#[test]
fn the_server_starts_under_a_100_file_limit_and_raises_the_soft_limit() {
    // Was: "Invalid argument (os error 22)": the master moved fds to 100 and up while
    // starting a worker, which fails when 100 is not below the limit.
    let s = server("apps:raw").nofile(100, 100).start();
    assert!(wait_until(10, || s.log().contains(" ready")), "{}", s.log());
    assert_eq!(s.get("/pid").status, 200);
    assert!(
        s.log()
            .contains("the open-file limit (RLIMIT_NOFILE) is only 100 (hard limit 100)")
            && s.log().contains("LimitNOFILE="),
        "{}",
        s.log()
    );
    drop(s);
    // A soft limit below the hard one is raised for the master and inherited by the workers.
    let s = server("apps:raw").nofile(100, 4096).start();
    assert!(wait_until(10, || s.log().contains(" ready")), "{}", s.log());
    assert_eq!(s.get("/pid").status, 200);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", s.worker_pids()[0])).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    assert_eq!(line.split_whitespace().nth(3), Some("4096"), "{line}");
    assert!(!s.log().contains("open-file limit"), "{}", s.log());
}

#[test]
fn a_file_limit_too_small_to_work_is_a_clear_error() {
    let (code, err) = server("apps:raw").nofile(12, 12).run_to_exit();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the open-file limit (RLIMIT_NOFILE) is 12 (hard limit 12)") && err.contains("ulimit -n"),
        "{err}"
    );
}
