//! The life of a connection for every body shape a WSGI app can return (`apps:shapes`): a
//! one-element list, a longer list, a generator, an iterator class with `close()`, a
//! `wsgi.file_wrapper` over a real file, a response held in a reference cycle through the
//! environ (Werkzeug's shape), and the legacy `write()` callable.
//!
//! For each shape, over raw sockets against the real server with `--keep-alive 1` (the
//! hang-up tests with a long one, so that a hang-up must be noticed by itself): an idle
//! keep-alive connection is closed at its timeout; a second request after a shorter pause is
//! answered; `Connection: close` and HTTP/1.0 are honoured; a client hanging up (after a
//! response, on an idle connection, in the middle of a large response) leaves the worker idle
//! (its CPU time from /proc) and `close()` called; the worker's descriptors go back to their
//! idle count once the connections are gone. The same with `--threads 2` (the pool path).
//!
//! A shipped bug is the reason: after a Flask 404 (an iterable with `close()` held in a
//! reference cycle through the environ) the connection was neither closed at the keep-alive
//! timeout nor read again, `Connection: close` and HTTP/1.0 were ignored for it, and a hang-up
//! made the worker spin.

mod common;

use std::time::{Duration, Instant};

use common::{Client, End, Response, Server, server};

/// Every body shape `apps:shapes` has (its routes).
const SHAPES: [&str; 7] = ["one", "many", "gen", "closing", "file", "cycle", "write"];
/// Shapes whose body has a `close()` the app counts (the generator counts its `finally`,
/// which runs when it is closed or exhausted).
const CLOSABLE: [&str; 4] = ["gen", "closing", "file", "cycle"];
/// The shapes the thread-pool tests cover: the one that broke, and the common ones.
const POOL_SHAPES: [&str; 4] = ["cycle", "gen", "closing", "file"];
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// How much later than `--keep-alive` an idle connection may be closed (deadlines are
/// checked once a second).
const SLACK: Duration = Duration::from_secs(2);
/// How much earlier it may be closed: the loop reads its clock once per round.
const EARLY: Duration = Duration::from_millis(200);
/// A pause on a keep-alive connection that must not close it.
const PAUSE: Duration = Duration::from_millis(500);
/// An idle worker uses next to no CPU in this window; a spinning one uses all of it.
const SPIN_WINDOW: Duration = Duration::from_secs(2);
const SPIN_LIMIT: Duration = Duration::from_millis(200);
/// `--keep-alive` for the hang-up tests.
const HANG_UP_KEEP_ALIVE: u64 = 30;
/// Chunks of 64 KiB in a large response: 32 MiB, far more than the socket buffers hold.
const BIG: usize = 512;

/// A server of `apps:shapes`, its worker, and the worker's descriptor count when idle.
struct Fixture {
    server: Server,
    worker: u32,
    idle_fds: usize,
}

/// A server with `--keep-alive 1`.
fn start(threads: u32) -> Fixture {
    start_with(threads, 1)
}

/// A server whose keep-alive timeout is far longer than the checks after a hang-up: a
/// hang-up must be noticed by itself, not cleaned up later by the timeout.
fn start_for_hang_ups(threads: u32) -> Fixture {
    start_with(threads, HANG_UP_KEEP_ALIVE)
}

fn start_with(threads: u32, keep_alive: u64) -> Fixture {
    let server = server("apps:shapes")
        .args(&[
            "--keep-alive",
            &keep_alive.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .start();
    let worker = common::the_worker(&server);
    // Every shape once (with `?n=` too), so what a first request loads (modules, the
    // shapes' files) is there before the idle count is taken.
    for shape in SHAPES {
        for path in [format!("/{shape}"), format!("/{shape}?n=1")] {
            let mut c = Client::connect(&server.addr);
            c.send(&request(&path, "HTTP/1.1", "Connection: close\r\n"));
            assert_eq!(c.response().status, 200, "warm-up {path}");
            assert!(matches!(c.end_by(Instant::now() + SLACK), End::Closed(_)));
        }
    }
    let idle_fds = common::settled_fd_count(worker);
    Fixture {
        server,
        worker,
        idle_fds,
    }
}

impl Fixture {
    fn connect(&self) -> Client {
        Client::connect(&self.server.addr)
    }

    /// The worker's descriptors are back to their idle count (at most 5 s after `what`).
    fn assert_no_fd_leak(&self, what: &str) {
        if let Err(n) = common::fds_back_to(self.worker, self.idle_fds, 5) {
            panic!(
                "{what}: the worker holds {n} descriptors 5 s later, {} when idle:\n{}",
                self.idle_fds,
                fd_list(self.worker)
            );
        }
    }

    /// The `close()` calls the app counted, by shape.
    fn closed(&self) -> serde_json::Value {
        let mut c = self.connect();
        c.send(&request("/closed", "HTTP/1.1", "Connection: close\r\n"));
        c.response().json()
    }

    /// Wait (at most 5 s) for `close()` to have been called `times` more than in `before` for
    /// each closable shape of `shapes`, and not more than that.
    fn assert_closed(&self, before: &serde_json::Value, shapes: &[&str], times: u64, what: &str) {
        let count = |v: &serde_json::Value, s: &str| v[s].as_u64().unwrap_or(0);
        let closable: Vec<&str> = shapes.iter().copied().filter(|s| CLOSABLE.contains(s)).collect();
        let mut now = before.clone();
        common::wait_until(5, || {
            now = self.closed();
            closable.iter().all(|s| count(&now, s) >= count(before, s) + times)
        });
        let wrong: Vec<String> = closable
            .iter()
            .map(|s| (s, count(&now, s) - count(before, s).min(count(&now, s))))
            .filter(|(_, n)| *n != times)
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        assert!(
            wrong.is_empty(),
            "{what}: close() should have been called {times} time(s) for each shape, was {wrong:?} \
             (before {before}, after {now})"
        );
    }

    /// CPU the worker uses in `SPIN_WINDOW` now that nothing is asked of it.
    fn cpu_while_idle(&self) -> Duration {
        common::cpu_used_over(self.worker, SPIN_WINDOW)
    }
}

fn fd_list(pid: u32) -> String {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| {
                    format!(
                        "  {} -> {:?}",
                        e.file_name().to_string_lossy(),
                        std::fs::read_link(e.path())
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn request(path: &str, version: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} {version}\r\nHost: test\r\n{extra}\r\n").into_bytes()
}

/// Read a response to `/shape` and check it is the shape's small body.
fn answered(c: &mut Client, shape: &str, what: &str) -> Response {
    let r = c
        .try_response_to(false)
        .unwrap_or_else(|| panic!("{shape}: {what}: the server closed the connection without a response"));
    assert_eq!(r.status, 200, "{shape}: {what}: {}", r.text());
    assert_eq!(r.text(), format!("{shape} ok\n"), "{shape}: {what}: body");
    r
}

/// The server ends the connection with EOF within `SLACK` of now.
fn assert_closes_soon(c: &mut Client, shape: &str, what: &str) {
    match c.end_by(Instant::now() + SLACK) {
        End::Closed(_) => {}
        other => panic!("{shape}: {what}: expected the server to close the connection, got {other:?}"),
    }
}

/// The server closes an idle connection whose last response was read at `since`, at its
/// keep-alive timeout: not before, and not more than `SLACK` after.
fn assert_idle_closed(c: &mut Client, since: Instant, shape: &str, what: &str) {
    match c.end_by(since + KEEP_ALIVE + SLACK) {
        End::Closed(_) => {
            let idle = since.elapsed();
            assert!(
                idle + EARLY >= KEEP_ALIVE,
                "{shape}: {what}: closed after {idle:?} idle, before the keep-alive timeout"
            );
        }
        End::Open => panic!(
            "{shape}: {what}: still open {:?} after the response (--keep-alive 1)",
            since.elapsed()
        ),
        other => panic!("{shape}: {what}: expected a close at the keep-alive timeout, got {other:?}"),
    }
}

// --- the scenarios, each for a list of shapes on one server --------------------------------

/// One request per shape, then the connection is left idle: closed at the timeout.
fn idle_keep_alive_closes(f: &Fixture, shapes: &[&str]) {
    let mut open = Vec::new();
    for &shape in shapes {
        let mut c = f.connect();
        c.send(&request(&format!("/{shape}"), "HTTP/1.1", ""));
        let r = answered(&mut c, shape, "first request");
        assert_eq!(r.header("connection"), None, "{shape}: a keep-alive response");
        open.push((shape, c, Instant::now()));
    }
    for (shape, mut c, since) in open {
        assert_idle_closed(&mut c, since, shape, "idle after one response");
    }
    f.assert_no_fd_leak("after idle keep-alive connections were closed");
}

/// A second request after a pause shorter than the keep-alive timeout is answered; then the
/// connection is closed at the timeout counted from the second response.
fn second_request_after_a_pause(f: &Fixture, shapes: &[&str]) {
    let mut open = Vec::new();
    for &shape in shapes {
        let mut c = f.connect();
        c.send(&request(&format!("/{shape}"), "HTTP/1.1", ""));
        answered(&mut c, shape, "first request");
        open.push((shape, c));
    }
    std::thread::sleep(PAUSE);
    let mut again = Vec::new();
    for (shape, mut c) in open {
        assert_eq!(c.pending(), b"", "{shape}: bytes after the first response");
        c.send(&request(&format!("/{shape}"), "HTTP/1.1", ""));
        answered(&mut c, shape, "second request after a pause");
        again.push((shape, c, Instant::now()));
    }
    for (shape, mut c, since) in again {
        assert_idle_closed(&mut c, since, shape, "idle after a second response");
    }
    f.assert_no_fd_leak("after connections with two requests were closed");
}

/// `Connection: close` is answered with `Connection: close`, and the server closes.
fn connection_close_is_honoured(f: &Fixture, shapes: &[&str]) {
    for &shape in shapes {
        let mut c = f.connect();
        c.send(&request(&format!("/{shape}"), "HTTP/1.1", "Connection: close\r\n"));
        let r = answered(&mut c, shape, "Connection: close");
        assert_eq!(r.header("connection"), Some("close"), "{shape}: Connection: close");
        assert_closes_soon(&mut c, shape, "after a Connection: close response");
    }
    f.assert_no_fd_leak("after Connection: close");
}

/// HTTP/1.0 without keep-alive: closed after the response. HTTP/1.0 asking for keep-alive:
/// kept open when the body's length is known (the server knows it for a one-element list and
/// a file; the app gives it with `?cl=1`), closed (the body ends with the connection) when not.
fn http_1_0_is_honoured(f: &Fixture, shapes: &[&str]) {
    for &shape in shapes {
        let mut c = f.connect();
        c.send(&request(&format!("/{shape}"), "HTTP/1.0", ""));
        let r = answered(&mut c, shape, "HTTP/1.0");
        assert_eq!(r.header("connection"), Some("close"), "{shape}: HTTP/1.0");
        assert_closes_soon(&mut c, shape, "after an HTTP/1.0 response");
    }
    let mut open = Vec::new();
    for &shape in shapes {
        let known = matches!(shape, "one" | "file");
        let mut c = f.connect();
        c.send(&request(&format!("/{shape}"), "HTTP/1.0", "Connection: keep-alive\r\n"));
        let r = answered(&mut c, shape, "HTTP/1.0 keep-alive");
        if known {
            assert_eq!(
                r.header("connection"),
                Some("keep-alive"),
                "{shape}: HTTP/1.0 keep-alive"
            );
            open.push((shape, c, format!("/{shape}")));
        } else {
            assert_eq!(
                r.header("connection"),
                Some("close"),
                "{shape}: HTTP/1.0 keep-alive with a body of unknown length"
            );
            assert_closes_soon(&mut c, shape, "after a close-delimited HTTP/1.0 response");
        }
        let path = format!("/{shape}?cl=1");
        let mut c = f.connect();
        c.send(&request(&path, "HTTP/1.0", "Connection: keep-alive\r\n"));
        let r = answered(&mut c, shape, "HTTP/1.0 keep-alive, Content-Length from the app");
        assert_eq!(
            r.header("connection"),
            Some("keep-alive"),
            "{shape}: HTTP/1.0 keep-alive with the app's Content-Length"
        );
        open.push((shape, c, path));
    }
    let mut again = Vec::new();
    for (shape, mut c, path) in open {
        c.send(&request(&path, "HTTP/1.0", "Connection: keep-alive\r\n"));
        let r = answered(&mut c, shape, "second HTTP/1.0 keep-alive request");
        assert_eq!(r.header("connection"), Some("keep-alive"), "{shape}: {path}");
        again.push((shape, c, Instant::now()));
    }
    for (shape, mut c, since) in again {
        assert_idle_closed(&mut c, since, shape, "idle HTTP/1.0 keep-alive");
    }
    f.assert_no_fd_leak("after HTTP/1.0 connections");
}

/// The client hangs up after reading a response: with a FIN, with a reset, and with a
/// half-close (FIN, still reading: the server must close its side).
fn hang_up_after_the_response(f: &Fixture, shapes: &[&str]) {
    let before = f.closed();
    for &shape in shapes {
        for how in ["close", "reset", "half-close"] {
            let mut c = f.connect();
            c.send(&request(&format!("/{shape}"), "HTTP/1.1", ""));
            answered(&mut c, shape, how);
            match how {
                "close" => drop(c),
                "reset" => c.reset(),
                _ => {
                    c.shutdown_write();
                    assert_closes_soon(&mut c, shape, "after the client half-closed");
                }
            }
        }
    }
    f.assert_closed(&before, shapes, 3, "after hang-ups following a response");
}

/// The client hangs up on a connection that never sent a request (or only half a head).
fn hang_up_on_an_idle_connection(f: &Fixture, _shapes: &[&str]) {
    drop(f.connect());
    f.connect().reset();
    let mut c = f.connect();
    c.shutdown_write();
    assert_closes_soon(&mut c, "-", "a half-closed connection without a request");
    let mut c = f.connect();
    c.send(b"GET /one HTTP/1.1\r\nHo");
    drop(c);
    let mut c = f.connect();
    c.send(b"GET /one HTTP/1.1\r\nHo");
    c.reset();
    // And after a response, idle for a while first.
    let mut c = f.connect();
    c.send(&request("/cycle", "HTTP/1.1", ""));
    answered(&mut c, "cycle", "before idling");
    std::thread::sleep(PAUSE);
    c.reset();
}

/// The client hangs up in the middle of a large response (a reset: unread data is waiting).
fn hang_up_mid_response(f: &Fixture, shapes: &[&str]) {
    let before = f.closed();
    for &shape in shapes {
        let mut c = f.connect();
        c.send(&request(&format!("/{shape}?n={BIG}"), "HTTP/1.1", ""));
        let got = c.read_raw(256 * 1024);
        assert!(got >= 256 * 1024, "{shape}: only {got} bytes of a large response");
        drop(c); // unread data in the receive buffer: the kernel sends a reset
    }
    f.assert_closed(&before, shapes, 1, "after hang-ups in the middle of large responses");
}

type Scenario = fn(&Fixture, &[&str]);

/// Run `scenario` on `f` (started with `start_for_hang_ups`) for `shapes`, then check at once
/// that the worker is idle (not spinning), holds no descriptor of the gone connections, and
/// still serves. If it spins, each shape is tried alone on a fresh server to name the ones
/// that cause it.
fn leaves_the_worker_idle(f: &Fixture, threads: u32, shapes: &[&str], scenario: Scenario, what: &str) {
    scenario(f, shapes);
    let cpu = f.cpu_while_idle();
    if cpu > SPIN_LIMIT {
        let culprits: Vec<String> = shapes
            .iter()
            .filter_map(|&shape| {
                let alone = start_for_hang_ups(threads);
                scenario(&alone, &[shape]);
                let cpu = alone.cpu_while_idle();
                (cpu > SPIN_LIMIT).then(|| format!("{shape} ({cpu:?})"))
            })
            .collect();
        panic!(
            "{what}: the worker used {cpu:?} of CPU in {SPIN_WINDOW:?} with nothing to do (spinning); \
             the shapes that make it spin alone: {culprits:?}"
        );
    }
    f.assert_no_fd_leak(what);
    for &shape in shapes {
        let mut c = f.connect();
        c.send(&request(&format!("/{shape}"), "HTTP/1.1", "Connection: close\r\n"));
        answered(&mut c, shape, &format!("a new connection {what}"));
    }
    f.assert_no_fd_leak(what);
}

// --- threads = 1: the event loop calls the app inline ---------------------------------------

#[test]
fn a_keep_alive_connection_after_a_response_held_in_a_reference_cycle_is_closed_at_its_timeout() {
    let f = start(1);
    let before = f.closed()["cycle"].as_u64().unwrap_or(0);
    let mut c = f.connect();
    c.send(&request("/cycle", "HTTP/1.1", ""));
    answered(&mut c, "cycle", "first request");
    // Read again after a pause...
    std::thread::sleep(PAUSE);
    c.send(&request("/cycle", "HTTP/1.1", ""));
    answered(&mut c, "cycle", "second request after a pause");
    // ...and closed at the keep-alive timeout, not left hanging.
    assert_idle_closed(&mut c, Instant::now(), "cycle", "idle after the second response");
    // `Connection: close` and HTTP/1.0 are honoured for it.
    connection_close_is_honoured(&f, &["cycle"]);
    http_1_0_is_honoured(&f, &["cycle"]);
    // close() was called for every one of those 7 responses, although the environ keeps
    // each alive.
    let after = f.closed()["cycle"].as_u64().unwrap_or(0);
    assert_eq!(after - before, 7, "close() calls for 7 responses");
    f.assert_no_fd_leak("after the cycle responses");
}

#[test]
fn every_body_shape_closes_an_idle_keep_alive_connection_at_its_timeout() {
    idle_keep_alive_closes(&start(1), &SHAPES);
}

#[test]
fn every_body_shape_answers_a_second_request_after_a_pause_shorter_than_keep_alive() {
    second_request_after_a_pause(&start(1), &SHAPES);
}

#[test]
fn connection_close_is_honoured_for_every_body_shape() {
    connection_close_is_honoured(&start(1), &SHAPES);
}

#[test]
fn http_1_0_is_closed_after_every_body_shape_unless_keep_alive_and_a_known_length() {
    http_1_0_is_honoured(&start(1), &SHAPES);
}

#[test]
fn every_shape_in_turn_on_one_connection_then_closed_at_its_timeout() {
    let f = start(1);
    let mut c = f.connect();
    for shape in SHAPES {
        c.send(&request(&format!("/{shape}"), "HTTP/1.1", ""));
        answered(&mut c, shape, "in turn on one connection");
    }
    // All of them pipelined in one write, answered in order.
    let batch: Vec<u8> = SHAPES
        .iter()
        .flat_map(|s| request(&format!("/{s}"), "HTTP/1.1", ""))
        .collect();
    c.send(&batch);
    for shape in SHAPES {
        answered(&mut c, shape, "pipelined");
    }
    assert_idle_closed(&mut c, Instant::now(), "all", "idle after every shape");
    f.assert_no_fd_leak("after one connection served every shape");
}

#[test]
fn a_client_hanging_up_after_any_body_shape_leaves_the_worker_idle() {
    let f = start_for_hang_ups(1);
    leaves_the_worker_idle(
        &f,
        1,
        &SHAPES,
        hang_up_after_the_response,
        "after hang-ups following a response",
    );
}

#[test]
fn a_client_hanging_up_on_an_idle_connection_leaves_the_worker_idle() {
    let f = start_for_hang_ups(1);
    leaves_the_worker_idle(&f, 1, &SHAPES, hang_up_on_an_idle_connection, "after idle hang-ups");
}

#[test]
fn a_client_hanging_up_mid_response_gets_close_called_and_leaves_the_worker_idle() {
    let f = start_for_hang_ups(1);
    leaves_the_worker_idle(
        &f,
        1,
        &SHAPES,
        hang_up_mid_response,
        "after hang-ups in the middle of large responses",
    );
}

// --- threads = 2: complete requests go to a pool of Python threads --------------------------

#[test]
fn with_python_threads_keep_alive_close_and_http_1_0_hold_for_the_cycle_and_the_generator() {
    let f = start(2);
    idle_keep_alive_closes(&f, &POOL_SHAPES);
    second_request_after_a_pause(&f, &POOL_SHAPES);
    connection_close_is_honoured(&f, &POOL_SHAPES);
    http_1_0_is_honoured(&f, &POOL_SHAPES);
}

#[test]
fn with_python_threads_hang_ups_leave_the_worker_idle_for_the_cycle_and_the_generator() {
    let f = start_for_hang_ups(2);
    let scenarios: [(Scenario, &str); 3] = [
        (hang_up_after_the_response, "after hang-ups following a response"),
        (hang_up_on_an_idle_connection, "after idle hang-ups"),
        (hang_up_mid_response, "after hang-ups in the middle of large responses"),
    ];
    for (scenario, what) in scenarios {
        leaves_the_worker_idle(&f, 2, &POOL_SHAPES, scenario, what);
    }
}
