//! The process model: a master that never starts Python, workers re-executed with the
//! listening sockets inherited, Gunicorn's signals, supervision, systemd integration.
//! Every load loop here is bounded in count and time.

mod common;

use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Client, load_loop, server, signal, wait_until};

#[test]
fn workers_share_the_socket_and_multiprocess_is_true() {
    let s = server("apps:raw").args(&["--workers", "2"]).start();
    assert!(
        wait_until(10, || s.worker_pids().len() == 2
            && s.log().matches(" ready").count() == 2),
        "{}",
        s.log()
    );
    let e = s.get("/environ").json();
    assert_eq!(e["wsgi.multiprocess"], true);
    let mut pids = std::collections::HashSet::new();
    for _ in 0..40 {
        pids.insert(s.get("/pid").json()["pid"].to_string());
    }
    for p in s.worker_pids() {
        assert!(s.wait_log(&format!("worker {p} ready"), 5));
    }
    assert!(!pids.is_empty());
}

#[test]
fn a_killed_worker_is_replaced_within_a_second_and_only_in_flight_requests_fail() {
    let s = server("apps:raw").args(&["--workers", "2"]).start();
    assert!(wait_until(10, || s.log().matches(" ready").count() == 2));
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load_loop(s.addr.clone(), "/pid", stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let victim = s.worker_pids()[0];
    signal(victim, libc::SIGKILL);
    let killed = Instant::now();
    let replaced = wait_until(5, || {
        let pids = s.worker_pids();
        pids.len() == 2
            && !pids.contains(&victim)
            && pids.iter().all(|p| s.log().contains(&format!("worker {p} ready")))
    });
    let took = killed.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, _) = loader.join().unwrap();
    assert!(replaced, "no replacement:\n{}", s.log());
    assert!(took < Duration::from_secs(1), "replacement took {took:?}");
    assert!(
        failed <= 1,
        "{failed} failed requests (one client: at most one in flight on the victim)"
    );
    assert!(ok > 50, "only {ok} requests served");
}

/// `clients` keep-alive clients, each sending requests back to back on one connection and
/// opening a new one only when a response says `Connection: close` (as a browser or an nginx
/// upstream pool does). Returns (answered, failed, versions seen in order).
fn keep_alive_load(
    addr: String,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<(usize, usize, Vec<String>)>> {
    (0..clients)
        .map(|_| {
            let addr = addr.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed, mut versions) = (0, 0, Vec::new());
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut conn: Option<Client> = None;
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    let c = match conn.as_mut() {
                        Some(c) => c,
                        None => match std::net::TcpStream::connect(&addr) {
                            Ok(s) => {
                                s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                                conn.insert(Client::from(s))
                            }
                            Err(_) => {
                                failed += 1;
                                continue;
                            }
                        },
                    };
                    c.send(b"GET /pid HTTP/1.1\r\nHost: h\r\n\r\n");
                    match c.try_response_to(false) {
                        Some(r) if r.status == 200 => {
                            ok += 1;
                            versions.push(r.json()["version"].as_str().unwrap_or("").to_string());
                            if r.header("connection") == Some("close") {
                                conn = None;
                            }
                        }
                        _ => {
                            failed += 1;
                            conn = None;
                        }
                    }
                }
                (ok, failed, versions)
            })
        })
        .collect()
}

#[test]
fn keep_alive_clients_see_no_failed_request_across_three_reloads() {
    // What broke: keep-alive requests arriving while old workers stopped were dropped (4-16
    // per reload under load).
    let dir = tempfile::tempdir().unwrap();
    let version = dir.path().join("version");
    std::fs::write(&version, "v0").unwrap();
    let s = server("apps:raw")
        .args(&["--workers", "2"])
        .env("VERSION_FILE", version.to_str().unwrap())
        .start();
    assert!(wait_until(10, || s.log().matches(" ready").count() == 2));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = keep_alive_load(s.addr.clone(), 8, stop.clone());
    for n in 1..=3 {
        std::thread::sleep(Duration::from_millis(500));
        std::fs::write(&version, format!("v{n}")).unwrap();
        signal(s.pid(), libc::SIGHUP);
        assert!(
            wait_until(20, || s.log().matches("reload complete").count() == n),
            "{}",
            s.log()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    let mut last = Vec::new();
    for c in clients {
        let (o, f, versions) = c.join().unwrap();
        ok += o;
        failed += f;
        // A client never goes back to older code: an old worker only finishes the request in
        // flight (`Connection: close`), and the next connection lands on a new one.
        assert!(
            versions.windows(2).all(|w| w[0] <= w[1]),
            "a client went back to older code: {versions:?}"
        );
        last.push(versions.last().cloned().unwrap_or_default());
    }
    assert_eq!(failed, 0, "failed keep-alive requests across the reloads:\n{}", s.log());
    assert!(ok > 500, "only {ok} requests");
    // (A client starved of CPU on a loaded machine may not have made a request since.)
    assert!(last.iter().any(|v| v == "v3"), "new code not served: {last:?}");
}

#[test]
fn hup_reloads_new_code_with_zero_failed_requests() {
    let dir = tempfile::tempdir().unwrap();
    let version = dir.path().join("version");
    std::fs::write(&version, "v1").unwrap();
    let s = server("apps:raw")
        .args(&["--workers", "2"])
        .env("VERSION_FILE", version.to_str().unwrap())
        .start();
    assert!(wait_until(10, || s.log().matches(" ready").count() == 2));
    let before = s.worker_pids();
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load_loop(s.addr.clone(), "/pid", stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&version, "v2").unwrap();
    signal(s.pid(), libc::SIGHUP);
    assert!(wait_until(20, || s.log().contains("reload complete")), "{}", s.log());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, bodies) = loader.join().unwrap();
    let versions: Vec<&str> = bodies.iter().map(|b| b["version"].as_str().unwrap_or("")).collect();
    assert_eq!(failed, 0, "failed requests during the reload:\n{}", s.log());
    assert!(ok > 50);
    assert_eq!(versions.first(), Some(&"v1"));
    assert_eq!(versions.last(), Some(&"v2"), "new code is served");
    let after = s.worker_pids();
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "old workers still running: {before:?} {after:?}"
    );
}

#[test]
fn term_lets_in_flight_requests_finish_and_exits_0() {
    let s = server("apps:app")
        .args(&["--workers", "1", "--threads", "4", "--graceful-timeout", "10"])
        .start();
    assert!(wait_until(10, || s.log().contains(" ready")));
    let addr = s.addr.clone();
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = Client::from(std::net::TcpStream::connect(addr).unwrap());
                c.send(b"GET /sleep?s=1 HTTP/1.1\r\nHost: h\r\n\r\n");
                c.try_response_to(false).map(|r| r.status)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let code = s.terminate();
    for r in requests {
        assert_eq!(r.join().unwrap(), Some(200), "an in-flight request did not complete");
    }
    assert_eq!(code, 0);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn ttin_and_ttou_change_the_worker_count() {
    let s = server("apps:raw").args(&["--workers", "1"]).start();
    assert!(wait_until(10, || s.worker_pids().len() == 1));
    signal(s.pid(), libc::SIGTTIN);
    assert!(wait_until(10, || s.worker_pids().len() == 2), "TTIN:\n{}", s.log());
    signal(s.pid(), libc::SIGTTOU);
    assert!(wait_until(10, || s.worker_pids().len() == 1), "TTOU:\n{}", s.log());
    assert_eq!(s.get("/pid").status, 200);
}

#[test]
fn a_worker_that_cannot_import_the_app_stops_the_master() {
    let started = Instant::now();
    let (code, err) = server("no_such_module:app").args(&["--workers", "2"]).run_to_exit();
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("a worker failed to boot") && err.contains("ModuleNotFoundError"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn sd_notify_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let s = server("apps:raw")
        .args(&["--workers", "2"])
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .start();
    let ready = recv();
    assert!(ready.starts_with("READY=1"), "{ready}");
    // Sent once both workers had loaded the app (the count comes from the master's state;
    // the log lines may reach this test later than the datagram).
    assert!(ready.contains("STATUS=2 workers serving"), "{ready}");
    signal(s.pid(), libc::SIGHUP);
    assert_eq!(recv(), "RELOADING=1");
    assert!(recv().starts_with("READY=1"));
    signal(s.pid(), libc::SIGTERM);
    assert_eq!(recv(), "STOPPING=1");
}

#[test]
fn socket_activation_serves_on_the_inherited_socket_and_pid_file() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("server.pid");
    let b = server("apps:raw").args(&["--pid", pid_file.to_str().unwrap()]);
    let cmd = b.command();
    // What systemd does: the socket as fd 3, LISTEN_FDS=1 and LISTEN_PID set to the server's
    // own PID (sh's `exec` keeps its PID).
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
        .arg(program)
        .args(args)
        .env_remove("VIRTUAL_ENV")
        .stderr(std::process::Stdio::null());
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    unsafe {
        sh.pre_exec(move || {
            // dup2(3, 3) would keep close-on-exec: when the listener already is fd 3, clear it.
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = sh.spawn().unwrap();
    let served = wait_until(15, || {
        std::net::TcpStream::connect(addr)
            .ok()
            .and_then(|st| {
                let mut c = Client::from(st);
                c.send(b"GET /pid HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
                c.try_response_to(false)
            })
            .is_some_and(|r| r.status == 200)
    });
    let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
    signal(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();
    assert!(served, "nothing served on the inherited socket");
    assert_eq!(pid.trim(), child.id().to_string(), "--pid holds the master's PID");
    assert!(status.success());
    assert!(!pid_file.exists(), "the pid file is removed on exit");
}

#[test]
fn a_request_past_the_timeout_gets_its_worker_replaced_while_others_serve() {
    let s = server("apps:raw").args(&["--workers", "2", "--timeout", "1"]).start();
    assert!(wait_until(10, || s.log().matches(" ready").count() == 2));
    let addr = s.addr.clone();
    let stuck = std::thread::spawn(move || {
        let mut c = Client::from(std::net::TcpStream::connect(addr).unwrap());
        c.send(b"GET /sleep?s=20 HTTP/1.1\r\nHost: h\r\n\r\n");
        let started = Instant::now();
        let r = c.try_response_to(false).map(|r| r.status);
        (r, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load_loop(s.addr.clone(), "/pid", stop.clone());
    let (status, took) = stuck.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, _) = loader.join().unwrap();
    assert_eq!(status, Some(504), "the stuck client is told, not left to the kill");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert_eq!(failed, 0, "requests on the other worker failed:\n{}", s.log());
    assert!(ok > 20);
    assert!(s.wait_log("more than --timeout 1 s", 5), "{}", s.log());
    assert!(
        s.wait_log("in sleep_route", 5),
        "no Python stack in the log:\n{}",
        s.log()
    );
    assert!(
        wait_until(10, || s.log().matches(" ready").count() == 3),
        "no replacement:\n{}",
        s.log()
    );
}

#[test]
fn a_stuck_request_with_threads_retires_its_worker_gracefully_and_its_client_gets_504() {
    // One worker, four threads: the stuck request must not take down the healthy request
    // running beside it (`--timeout` used to kill the worker at once).
    let s = server("apps:raw")
        .args(&[
            "--workers",
            "1",
            "--threads",
            "4",
            "--timeout",
            "2",
            "--graceful-timeout",
            "4",
        ])
        .start();
    assert!(wait_until(10, || s.log().matches(" ready").count() == 1));
    let old = s.worker_pids();
    let request = |path: &'static str| {
        let addr = s.addr.clone();
        std::thread::spawn(move || {
            let mut c = Client::from(std::net::TcpStream::connect(addr).expect("connect"));
            c.send(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
            let started = Instant::now();
            (c.try_response_to(false).map(|r| r.status), started.elapsed())
        })
    };
    let t0 = Instant::now();
    let stuck = request("/sleep?s=30");
    // In flight when the worker is retired (about 2.6 s in), done before its grace ends.
    std::thread::sleep(Duration::from_millis(1500));
    let healthy = request("/sleep?s=1.5");
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load_loop(s.addr.clone(), "/pid", stop.clone());
    let (stuck_status, stuck_took) = stuck.join().expect("stuck client");
    let (healthy_status, _) = healthy.join().expect("healthy client");
    // The old worker goes once its grace is over.
    let gone = wait_until(10, || !s.worker_pids().iter().any(|p| old.contains(p)));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, _) = loader.join().expect("load loop");
    assert_eq!(stuck_status, Some(504), "{}", s.log());
    assert!(stuck_took < Duration::from_secs(4), "504 after {stuck_took:?}");
    assert_eq!(healthy_status, Some(200), "the healthy request was cut:\n{}", s.log());
    assert_eq!(failed, 0, "requests failed while the worker was replaced:\n{}", s.log());
    assert!(ok > 20);
    assert!(gone, "the retired worker is still there:\n{}", s.log());
    assert!(t0.elapsed() < Duration::from_secs(12));
    assert!(
        s.wait_log("in sleep_route", 5),
        "no Python stack in the log:\n{}",
        s.log()
    );
    assert!(s.log().contains("the worker is retired"), "{}", s.log());
    assert!(
        wait_until(5, || s.log().matches(" ready").count() == 2),
        "no replacement:\n{}",
        s.log()
    );
}

fn distinct_pids_under_load(s: &common::Server, millis: u64) -> (usize, usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load_loop(s.addr.clone(), "/pid", stop.clone());
    std::thread::sleep(Duration::from_millis(millis));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, bodies) = loader.join().unwrap();
    let distinct: std::collections::HashSet<_> = bodies.iter().map(|b| b["pid"].to_string()).collect();
    (ok, failed, distinct.len())
}

#[test]
fn max_requests_recycles_workers_the_rolling_way() {
    let s = server("apps:raw")
        .args(&["--workers", "1", "--max-requests", "20", "--max-requests-jitter", "5"])
        .start();
    assert!(wait_until(10, || s.log().contains(" ready")));
    let (ok, failed, distinct) = distinct_pids_under_load(&s, 2500);
    assert_eq!(failed, 0, "{}", s.log());
    assert!(ok > 100);
    assert!(
        distinct >= 3,
        "only {distinct} workers served {ok} requests:\n{}",
        s.log()
    );
    assert!(s.wait_log("(--max-requests): replacing it", 5));
}

#[test]
fn max_lifetime_recycles_workers() {
    let s = server("apps:raw")
        .args(&["--workers", "1", "--max-lifetime", "1"])
        .start();
    assert!(wait_until(10, || s.log().contains(" ready")));
    let (_, failed, distinct) = distinct_pids_under_load(&s, 3000);
    assert_eq!(failed, 0, "{}", s.log());
    assert!(distinct >= 2, "{}", s.log());
}

#[test]
fn max_rss_recycles_workers() {
    // Every Python worker is above 1 MiB: each is replaced once its successor is ready,
    // and service continues throughout.
    let s = server("apps:raw").args(&["--workers", "1", "--max-rss", "1M"]).start();
    assert!(wait_until(10, || s.log().contains(" ready")));
    let (ok, failed, distinct) = distinct_pids_under_load(&s, 2000);
    assert_eq!(failed, 0, "{}", s.log());
    assert!(ok > 50);
    assert!(distinct >= 2, "{}", s.log());
    assert!(s.wait_log("(--max-rss 1 MiB): replacing it", 5));
}

#[test]
fn usr1_reopens_log_files_in_the_master_and_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let rotated = dir.path().join("error.log.1");
    let s = server("apps:raw")
        .args(&["--workers", "2", "--error-log", log.to_str().unwrap()])
        .start_logging_to(&log);
    std::fs::rename(&log, &rotated).unwrap();
    signal(s.pid(), libc::SIGUSR1);
    // Every worker must write to the new file: keep causing errors until both have. A
    // request that keeps one worker busy sends the next one to the other worker.
    let addr = s.addr.clone();
    let reopened = wait_until(10, || {
        let _ = s.get("/raise");
        let a = addr.clone();
        let busy = std::thread::spawn(move || {
            let mut c = Client::from(std::net::TcpStream::connect(a).unwrap());
            c.send(b"GET /sleep?s=0.3 HTTP/1.1\r\nHost: h\r\n\r\n");
            c.try_response_to(false)
        });
        std::thread::sleep(Duration::from_millis(50));
        let _ = s.get("/raise");
        let _ = busy.join();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        s.worker_pids().iter().all(|p| text.contains(&format!("[{p}] [ERROR]")))
    });
    assert!(
        reopened,
        "new log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains("listening on"),
        "the rotated file keeps what was written before"
    );
}

#[test]
fn int_stops_fast_without_waiting_for_in_flight_requests() {
    let s = server("apps:app")
        .args(&["--workers", "1", "--threads", "2", "--graceful-timeout", "30"])
        .start();
    assert!(wait_until(10, || s.log().contains(" ready")));
    let addr = s.addr.clone();
    let slow = std::thread::spawn(move || {
        let mut c = Client::from(std::net::TcpStream::connect(addr).unwrap());
        c.send(b"GET /sleep?s=20 HTTP/1.1\r\nHost: h\r\n\r\n");
        c.try_response_to(false).map(|r| r.status)
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    signal(s.pid(), libc::SIGINT);
    assert!(
        wait_until(10, || s.log().contains("all workers stopped")),
        "{}",
        s.log()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "INT waited {:?}",
        started.elapsed()
    );
    assert_eq!(slow.join().unwrap(), None, "the 20 s request was not cut short");
    assert!(s.log().contains("INT/QUIT: fast stop"));
}
