//! HTTP/1.1 rules (RFC 9110/9112, reference §4), one test per rule, over raw sockets: valid
//! and invalid requests, pipelining, requests split across many writes, limits, timeouts.

mod common;

use std::time::{Duration, Instant};

use common::{Server, server};

fn start() -> Server {
    server("apps:app").start()
}

/// Send `req` on a fresh connection; expect `status` and then the connection closed.
fn refused(s: &Server, req: &[u8], status: u16) {
    let mut c = s.connect();
    c.send(req);
    let r = c.response();
    assert_eq!(r.status, status, "for {:?}: {}", String::from_utf8_lossy(req), r.text());
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(5), "connection left open after a refusal");
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let s = start();
    let mut c = s.connect();
    for i in 0..20 {
        c.send(format!("GET /status?code=200&i={i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!(r.status, 200);
        assert!(r.header("connection").is_none());
    }
}

#[test]
fn pipelined_requests_in_one_write_are_answered_in_order() {
    let s = start();
    let mut c = s.connect();
    let mut batch = Vec::new();
    for code in [200, 201, 202, 203] {
        batch.extend_from_slice(format!("GET /status?code={code} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    }
    batch.extend_from_slice(b"POST /echo?mode=read HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc");
    c.send(&batch);
    for code in [200, 201, 202, 203] {
        assert_eq!(c.response().status, code);
    }
    assert_eq!(c.response().json()["body"], "abc");
}

#[test]
fn a_request_split_into_single_bytes_is_reassembled() {
    let s = start();
    let mut c = s.connect();
    c.send_trickle(b"POST /echo?mode=read HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(c.response().json()["body"], "hello");
    c.send_trickle(
        b"POST /echo?mode=read HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    );
    assert_eq!(c.response().json()["body"], "hi");
}

#[test]
fn http_1_0_closes_unless_keep_alive_is_asked() {
    // A body of known length (a one-element list, unvalidated) so 1.0 keep-alive is possible.
    let s = server("apps:raw").start();
    let mut c = s.connect();
    c.send(b"GET /one HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(5));
    let mut c = s.connect();
    c.send(b"GET /one HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.response().header("connection"), Some("keep-alive"));
    c.send(b"GET /one HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn connection_close_is_honoured() {
    let s = start();
    let mut c = s.connect();
    c.send(b"GET /status?code=200 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert_eq!(c.response().header("connection"), Some("close"));
    assert!(c.closed_within(5));
}

#[test]
fn expect_100_continue_is_sent_at_once_for_a_body_the_loop_reads_ahead() {
    // Bodies up to --body-buffer are read by the event loop before the app is called (a slow
    // upload must not hold the worker), so the go-ahead comes before the app runs.
    let s = start();
    let mut c = s.connect();
    c.send(b"POST /echo?mode=none HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.response().status, 100);
    c.send(b"data");
    assert_eq!(c.response().status, 200);
    // The body was read, so the connection goes on.
    c.send(b"GET /status?code=201 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response().status, 201);
}

#[test]
fn expect_100_continue_is_sent_only_when_the_app_reads_a_body_past_the_buffer() {
    let s = server("apps:app").args(&["--body-buffer", "0"]).start();
    let mut c = s.connect();
    c.send(b"POST /echo?mode=read HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.response();
    assert_eq!(interim.status, 100, "the app reads, so 100 Continue comes first");
    c.send(b"data");
    assert_eq!(c.response().json()["body"], "data");

    // An app that never reads: no 100, a final answer, and the connection closed since the
    // client may or may not still send the body.
    let mut c = s.connect();
    c.send(b"POST /echo?mode=none HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(c.closed_within(5));
}

#[test]
fn an_unsupported_expectation_is_417() {
    refused(
        &start(),
        b"POST / HTTP/1.1\r\nHost: h\r\nExpect: something\r\nContent-Length: 1\r\n\r\nx",
        417,
    );
}

#[test]
fn content_length_with_transfer_encoding_is_refused() {
    refused(
        &start(),
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn duplicate_content_length_is_refused() {
    refused(
        &start(),
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400,
    );
}

#[test]
fn malformed_content_length_is_refused() {
    for cl in ["-1", "+3", "3 3", "0x3", "", "99999999999999999999"] {
        refused(
            &start(),
            format!("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: {cl}\r\n\r\n").as_bytes(),
            400,
        );
    }
}

#[test]
fn transfer_encoding_must_end_in_chunked() {
    let s = start();
    refused(
        &s,
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        400,
    );
    refused(
        &s,
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        501,
    );
    refused(
        &s,
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    );
}

#[test]
fn transfer_encoding_in_http_1_0_is_refused() {
    refused(
        &start(),
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn malformed_chunk_sizes_and_framing_are_refused() {
    let s = start();
    for body in [
        "zz\r\nab\r\n0\r\n\r\n",
        "2\r\nabXX0\r\n\r\n",
        "-2\r\nab\r\n0\r\n\r\n",
        "2\nab\r\n0\r\n\r\n",
    ] {
        let req = format!("POST /echo?mode=read HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let mut c = s.connect();
        c.send(req.as_bytes());
        let r = c.response();
        assert_eq!(r.status, 400, "{body:?}: {}", r.text());
        assert!(c.closed_within(5));
    }
}

#[test]
fn bare_lf_and_obs_fold_are_refused() {
    let s = start();
    refused(&s, b"GET / HTTP/1.1\nHost: h\n\n", 400);
    refused(&s, b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  folded\r\n\r\n", 400);
}

#[test]
fn control_characters_in_header_values_are_refused() {
    let s = start();
    refused(&s, b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400);
    refused(&s, b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400);
    refused(&s, b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n", 400);
}

#[test]
fn invalid_header_names_are_refused() {
    let s = start();
    refused(&s, b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n", 400);
    refused(&s, b"GET / HTTP/1.1\r\nHost: h\r\nBad(name): x\r\n\r\n", 400);
    refused(&s, b"GET / HTTP/1.1\r\nHost: h\r\nName : x\r\n\r\n", 400);
    refused(&s, b"GET / HTTP/1.1\r\nHost: h\r\n: x\r\n\r\n", 400);
}

#[test]
fn host_is_required_once_in_http_1_1() {
    let s = start();
    refused(&s, b"GET / HTTP/1.1\r\n\r\n", 400);
    refused(&s, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
}

#[test]
fn malformed_request_lines_are_refused() {
    let s = start();
    refused(&s, b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    refused(&s, b"GET / HTTP/1.1 extra\r\nHost: h\r\n\r\n", 400);
    refused(&s, b"GET example HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    refused(&s, b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    refused(&s, b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505);
}

#[test]
fn a_body_cut_short_by_eof_never_completes_a_200() {
    // Read ahead by the loop: the app is never called.
    let s = server("apps:app").args(&["--log-level", "debug"]).start();
    let mut c = s.connect();
    c.send(b"POST /echo?mode=read HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nonly this");
    c.shutdown_write();
    assert!(
        c.try_response_to(false).is_none(),
        "a response to a body that never arrived"
    );
    assert!(
        s.wait_log("closed the connection before its request body ended", 5),
        "{}",
        s.log()
    );
    // Read by the app (past --body-buffer): it sees the error, the client a 400 at most.
    let s = server("apps:app")
        .args(&["--body-buffer", "0", "--log-level", "debug"])
        .start();
    let mut c = s.connect();
    c.send(b"POST /echo?mode=read HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nonly this");
    c.shutdown_write();
    match c.try_response_to(false) {
        None => {}
        Some(r) => assert_eq!(r.status, 400, "{}", r.text()),
    }
    assert!(s.wait_log("before the request body ended", 5), "{}", s.log());
}

#[test]
fn limits_answer_414_431_413() {
    let s = server("apps:app")
        .args(&["--limit-request-line", "200", "--limit-request-fields", "5"])
        .args(&["--limit-request-field-size", "100", "--max-body", "1k"])
        .start();
    refused(
        &s,
        format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(300)).as_bytes(),
        414,
    );
    refused(
        &s,
        format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", "a".repeat(200)).as_bytes(),
        431,
    );
    let many: String = (0..6).map(|i| format!("X-{i}: v\r\n")).collect();
    refused(&s, format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n").as_bytes(), 431);
    refused(
        &s,
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1025\r\n\r\n",
        413,
    );
    // A chunked body discovers its size late: the app's read fails and the answer is 413.
    let chunk = format!("400\r\n{}\r\n", "a".repeat(1024));
    let mut c = s.connect();
    c.send(
        format!(
            "POST /echo?mode=read HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(c.response().status, 413);
    // At the limit is fine.
    let mut c = s.connect();
    c.send(
        format!(
            "POST /echo?mode=read HTTP/1.1\r\nHost: h\r\nContent-Length: 1024\r\n\r\n{}",
            "b".repeat(1024)
        )
        .as_bytes(),
    );
    assert_eq!(c.response().json()["len"], 1024);
}

#[test]
fn a_slow_head_is_cut_off_by_the_header_timeout() {
    let s = server("apps:app").args(&["--header-timeout", "1"]).start();
    let mut c = s.connect();
    let started = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\n");
    // Keep trickling header lines: progress does not extend the head deadline.
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(300));
        c.send(b"X-Slow: 1\r\n");
    }
    let r = c.response();
    assert_eq!(r.status, 408);
    assert!(c.closed_within(5));
    assert!(started.elapsed() < Duration::from_secs(4));
    // Other clients are served meanwhile.
    assert_eq!(s.get("/status?code=200").status, 200);
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let s = server("apps:app").args(&["--keep-alive", "1"]).start();
    let mut c = s.connect();
    c.send(b"GET /status?code=200 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert!(c.closed_within(4), "idle connection not closed after --keep-alive");
}

#[test]
fn a_stalled_body_is_cut_off_by_the_body_timeout() {
    // Read ahead by the loop, then by the app: 408 both ways.
    for buffer in ["1M", "0"] {
        let s = server("apps:raw")
            .args(&["--body-timeout", "1", "--body-buffer", buffer, "--log-level", "debug"])
            .start();
        let mut c = s.connect();
        c.send(b"POST /slow_read HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
        let r = c.response();
        assert_eq!(r.status, 408, "{}", r.text());
        assert!(s.wait_log("request body", 5), "{}", s.log());
    }
}

#[test]
fn an_unread_body_is_drained_so_keep_alive_continues() {
    let s = start();
    let mut c = s.connect();
    c.send(b"POST /echo?mode=none HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET /status?code=201 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert_eq!(
        c.response().status,
        201,
        "the unread body was taken for the next request"
    );
}

#[test]
fn responses_carry_a_date_header() {
    let s = start();
    let r = s.get("/status?code=200");
    let date = r.header("date").expect("Date header");
    assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
}
