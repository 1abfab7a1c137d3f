//! What the server logs: connection events counted and summarised instead of one INFO line
//! each (a flood of slow or broken clients must not flood the log), the client's own faults
//! without tracebacks, and the levels (`--log-level`, `-q`).

mod common;

use std::time::Duration;

use common::server;

#[test]
fn timeouts_are_counted_in_a_summary_not_logged_one_by_one() {
    // What broke: every timed-out connection wrote an INFO line (log flooding).
    let s = server("apps:app").args(&["--header-timeout", "1"]).start();
    let mut slow = Vec::new();
    for _ in 0..5 {
        let mut c = s.connect();
        c.send(b"GET / HTTP/1.1\r\nHost: h\r\n"); // never finished
        slow.push(c);
    }
    for c in &mut slow {
        assert_eq!(c.response().status, 408);
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = s.log();
    assert!(
        !log.contains("request head"),
        "a line per timed-out connection at INFO:\n{log}"
    );
    // The summary comes every minute and when the worker stops.
    let (code, log) = s.terminate_with_log();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("5 request heads not sent in time (408)"),
        "no summary:\n{log}"
    );
}

#[test]
fn debug_logs_each_connection_event() {
    let s = server("apps:app")
        .args(&["--header-timeout", "1", "--log-level", "debug"])
        .start();
    let mut c = s.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\n");
    assert_eq!(c.response().status, 408);
    assert!(
        s.wait_log("did not send a complete request head in time", 5),
        "{}",
        s.log()
    );
}

#[test]
fn a_body_over_the_limit_read_by_the_app_is_413_without_a_traceback() {
    // What broke: a chunked body found too large while the app read it logged the app's
    // traceback (the OSError from wsgi.input), as if the app had failed.
    let chunk = format!("{:x}\r\n{}\r\n", 1000, "x".repeat(1000));
    let body = format!("{}0\r\n\r\n", chunk.repeat(4));
    for buffer in ["0", "1M"] {
        let s = server("apps:app")
            .args(&["--max-body", "2k", "--body-buffer", buffer])
            .start();
        let mut c = s.connect();
        c.send(
            format!("POST /echo?mode=read HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{body}").as_bytes(),
        );
        assert_eq!(c.response().status, 413, "--body-buffer {buffer}");
        std::thread::sleep(Duration::from_millis(300));
        let log = s.log();
        assert!(!log.contains("Traceback"), "--body-buffer {buffer}:\n{log}");
        assert!(!log.contains("[ERROR]"), "--body-buffer {buffer}:\n{log}");
    }
}

#[test]
fn quiet_keeps_only_warnings_and_errors() {
    let s = server("apps:app").args(&["-q"]).start_quiet();
    assert_eq!(s.get("/status?code=200").status, 200);
    let (code, log) = s.terminate_with_log();
    assert_eq!(code, 0);
    assert!(!log.contains("[INFO]"), "{log}");
}

#[test]
fn a_client_that_goes_away_during_write_logs_no_traceback() {
    // What broke: a client abort during the legacy write() logged the app's traceback (the
    // OSError write() raised), as if the app had failed.
    let s = server("apps:app").start();
    let mut c = s.connect();
    c.send(b"GET /write_many?n=2000 HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut some = [0u8; 4096];
    let _ = std::io::Read::read(&mut c.stream, &mut some);
    c.reset();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.get("/status?code=200").status, 200);
    let log = s.log();
    assert!(!log.contains("Traceback"), "{log}");
    assert!(!log.contains("[ERROR]"), "{log}");
}
