//! Strict framing (RFC 9112 §3, §7.1; RFC 9110 §6.5, §7.2, §10.1.1), one test per rule,
//! over real sockets against the real server and CPython: chunk-size lines and extensions,
//! trailer fields, request-target forms, Host values, `Expect: 100-continue` with an early
//! body, the request-line limit, and bodyless refusals of HEAD requests. Every refusal is
//! checked for its status, `Connection: close` and the connection being closed; every rule
//! has a valid edge case next to it that must still be served.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Server, server};

fn start() -> Server {
    server("apps:app").start()
}

/// Send `req` on a fresh connection; expect `status`, `Connection: close`, then the
/// connection closed.
fn refused(s: &Server, req: &[u8], status: u16) {
    let mut c = s.connect();
    c.send(req);
    let r = c.response();
    let shown = String::from_utf8_lossy(req);
    assert_eq!(r.status, status, "for {shown:?}: {}", r.text());
    assert_eq!(r.header("connection"), Some("close"), "for {shown:?}");
    assert!(c.closed_within(5), "connection left open after refusing {shown:?}");
}

/// A chunked POST whose body the app reads (so a framing error reaches it before the
/// response is started, and is answered with the error's status).
fn chunked_post(body: &str) -> Vec<u8> {
    format!("POST /echo?mode=read HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{body}").into_bytes()
}

/// Send a chunked POST that must be served: returns the body the app read, after checking
/// that the connection still carries a next request.
fn chunked_served(s: &Server, body: &str) -> String {
    let mut c = s.connect();
    c.send(&chunked_post(body));
    let r = c.response();
    assert_eq!(r.status, 200, "for {body:?}: {}", r.text());
    assert!(r.header("connection").is_none(), "for {body:?}");
    c.send(b"GET /status?code=201 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(
        c.response().status,
        201,
        "the connection is still in sync after {body:?}"
    );
    r.json()["body"].as_str().unwrap_or_default().to_string()
}

/// Send `req` and read everything until the server closes the connection: (status, head,
/// bytes after the head). For responses whose body must be absent, which the common
/// client would not notice (it reads a HEAD response's head only).
fn read_to_close(s: &Server, req: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(&s.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(req).expect("send");
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the connection was not closed ({e}); got {:?}",
                String::from_utf8_lossy(&all)
            ),
        }
    }
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {:?}", String::from_utf8_lossy(&all)))
        + 4;
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head, all[end..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

// --- chunk-size lines and extensions (RFC 9112 §7.1, §7.1.1) ---------------------------------

#[test]
fn chunk_size_followed_by_whitespace_is_refused() {
    let s = start();
    refused(&s, &chunked_post("5 \r\nhello\r\n0\r\n\r\n"), 400);
    refused(&s, &chunked_post("5\t\r\nhello\r\n0\r\n\r\n"), 400);
    refused(&s, &chunked_post("5\r\nhello\r\n0 \r\n\r\n"), 400);
}

#[test]
fn a_bare_semicolon_chunk_extension_is_refused() {
    let s = start();
    refused(&s, &chunked_post("5;\r\nhello\r\n0\r\n\r\n"), 400);
    refused(&s, &chunked_post("5 ; \r\nhello\r\n0\r\n\r\n"), 400);
}

#[test]
fn an_empty_chunk_extension_name_is_refused() {
    let s = start();
    refused(&s, &chunked_post("5;=x\r\nhello\r\n0\r\n\r\n"), 400);
    refused(&s, &chunked_post("5;a=b;=c\r\nhello\r\n0\r\n\r\n"), 400);
}

#[test]
fn a_space_inside_an_unquoted_extension_value_is_refused() {
    let s = start();
    refused(&s, &chunked_post("5;a=b c\r\nhello\r\n0\r\n\r\n"), 400);
    refused(&s, &chunked_post("5;a b=c\r\nhello\r\n0\r\n\r\n"), 400);
}

#[test]
fn trailing_whitespace_after_a_chunk_extension_is_refused() {
    let s = start();
    refused(&s, &chunked_post("5;a=b \r\nhello\r\n0\r\n\r\n"), 400);
    refused(&s, &chunked_post("5;a\t\r\nhello\r\n0\r\n\r\n"), 400);
}

#[test]
fn an_unterminated_quoted_extension_value_is_refused() {
    let s = start();
    refused(&s, &chunked_post("5;a=\"b\r\nhello\r\n0\r\n\r\n"), 400);
    // The closing quote is escaped, so the string never ends.
    refused(&s, &chunked_post("5;a=\"b\\\"\r\nhello\r\n0\r\n\r\n"), 400);
}

#[test]
fn a_chunk_size_line_not_ended_by_crlf_is_refused() {
    let s = start();
    refused(&s, &chunked_post("5\rhello\r\n0\r\n\r\n"), 400);
    refused(&s, &chunked_post("5\r\r\nhello\r\n0\r\n\r\n"), 400);
    refused(&s, &chunked_post("5\nhello\r\n0\r\n\r\n"), 400);
    refused(&s, &chunked_post("5\r\nhello\r\n0\r\n\r\r\n"), 400);
}

#[test]
fn bws_before_the_extension_semicolon_is_accepted() {
    let s = start();
    assert_eq!(chunked_served(&s, "5 ;a=b\r\nhello\r\n0\r\n\r\n"), "hello");
    assert_eq!(chunked_served(&s, "5\t; a = b ;c\r\nhello\r\n0 ;last\r\n\r\n"), "hello");
}

#[test]
fn a_quoted_extension_value_with_an_escaped_quote_is_accepted() {
    let s = start();
    assert_eq!(
        chunked_served(
            &s,
            "5;name=\"a \\\"quoted\\\" value; with=signs\"\r\nhello\r\n0\r\n\r\n"
        ),
        "hello"
    );
}

// --- trailer fields (RFC 9110 §6.5, RFC 9112 §7.1.2) ------------------------------------------

#[test]
fn framing_and_routing_fields_in_trailers_are_refused() {
    let s = start();
    for field in [
        "Content-Length: 5",
        "Transfer-Encoding: chunked",
        "Host: evil.example",
        "Content-Type: text/html",
        "Authorization: Basic YTpi",
        "X-Forwarded-For: 203.0.113.7",
        "Trailer: X-Checksum",
    ] {
        refused(&s, &chunked_post(&format!("5\r\nhello\r\n0\r\n{field}\r\n\r\n")), 400);
    }
}

#[test]
fn trailer_field_names_must_be_tokens() {
    let s = start();
    for line in [
        "Bad Name: x",
        "Bad(name): x",
        "Name : x",
        ": x",
        "no colon",
        " folded: x",
    ] {
        refused(&s, &chunked_post(&format!("5\r\nhello\r\n0\r\n{line}\r\n\r\n")), 400);
    }
}

#[test]
fn trailer_values_must_be_valid_field_bytes() {
    let s = start();
    for value in ["a\x00b", "a\x01b", "a\x7fb", "a\rb"] {
        refused(
            &s,
            &chunked_post(&format!("5\r\nhello\r\n0\r\nX-T: {value}\r\n\r\n")),
            400,
        );
    }
    refused(&s, &chunked_post("5\r\nhello\r\n0\r\nX-T: a\r\n folded\r\n\r\n"), 400);
}

#[test]
fn a_valid_trailer_field_is_accepted() {
    let s = start();
    assert_eq!(
        chunked_served(
            &s,
            "5\r\nhello\r\n0\r\nX-Checksum: sha256=\"2cf24d\"\r\nServer-Timing: db;dur=53\r\n\r\n"
        ),
        "hello"
    );
}

// --- request targets and Host (RFC 9112 §3.2, RFC 9110 §4.2.4, §7.2) --------------------------

#[test]
fn asterisk_form_is_refused_for_methods_other_than_options() {
    let s = start();
    refused(&s, b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    refused(&s, b"POST * HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 400);
    refused(&s, b"options * HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

#[test]
fn options_asterisk_is_served() {
    let s = start();
    let mut c = s.connect();
    c.send(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response();
    // The fixture has no route for an empty PATH_INFO: a 404 from the app, through the
    // validator (which would fail on a PATH_INFO of `*`).
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.text(), "no such route");
    c.send(b"GET /status?code=201 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response().status, 201);
    assert!(!s.log().contains("Traceback"), "{}", s.log());
}

#[test]
fn an_invalid_host_is_refused() {
    let s = start();
    for host in [
        "a b",
        "user@example.com",
        "user:pw@example.com",
        "example.com/path",
        "a.example,b.example",
        "example.com:8o",
        "example.com:",
        "example.com:80:80",
        "example.com:65536",
        "[::1",
        "[::1]x",
        "[fe80::1%25eth0]",
        "::1",
        "a\"b",
    ] {
        refused(&s, format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(), 400);
    }
    // HTTP/1.0 may leave Host out, but one it sends is checked the same way.
    refused(&s, b"GET / HTTP/1.0\r\nHost: a b\r\n\r\n", 400);
    refused(&s, b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400);
}

#[test]
fn an_empty_host_is_refused() {
    let s = start();
    refused(&s, b"GET / HTTP/1.1\r\nHost:\r\n\r\n", 400);
    refused(&s, b"GET / HTTP/1.1\r\nHost:   \r\n\r\n", 400);
}

#[test]
fn an_ipv6_literal_host_is_accepted() {
    let s = start();
    let mut c = s.connect();
    c.send(b"GET /environ HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["HTTP_HOST"], "[::1]:8080");
    c.send(b"GET /environ HTTP/1.1\r\nHost: [2001:db8::1]\r\n\r\n");
    assert_eq!(c.response().json()["HTTP_HOST"], "[2001:db8::1]");
}

#[test]
fn userinfo_in_an_absolute_form_target_is_refused() {
    let s = start();
    refused(
        &s,
        b"GET http://user:pw@example.com/environ HTTP/1.1\r\nHost: example.com\r\n\r\n",
        400,
    );
    refused(
        &s,
        b"GET http://user@example.com/environ HTTP/1.1\r\nHost: h\r\n\r\n",
        400,
    );
    refused(&s, b"GET http://@example.com/environ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    // An absolute-form authority is a Host value: the same rules.
    refused(&s, b"GET http:///environ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    refused(&s, b"GET http://a,b/environ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    assert!(
        !s.log().contains("user:pw"),
        "the app never saw the request: {}",
        s.log()
    );
}

#[test]
fn an_absolute_form_target_replaces_the_host_header() {
    let s = start();
    let mut c = s.connect();
    c.send(b"GET http://example.com:8080/environ/x?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    let e = r.json();
    assert_eq!(e["HTTP_HOST"], "example.com:8080");
    assert_eq!(e["PATH_INFO"], "/environ/x");
    assert_eq!(e["QUERY_STRING"], "q=1");
    assert_eq!(e["RAW_URI"], "http://example.com:8080/environ/x?q=1");

    // On a unix socket SERVER_NAME/SERVER_PORT come from the host too: the same authority.
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("app.sock");
    let s = server("apps:app")
        .args(&["--bind", &format!("unix:{}", sock.display())])
        .start();
    let mut u = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    u.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    u.write_all(b"GET http://example.com:8080/environ HTTP/1.1\r\nHost: other.example:81\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut out = String::new();
    u.read_to_string(&mut out).expect("read");
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default();
    let e: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(e["HTTP_HOST"], "example.com:8080");
    assert_eq!(e["SERVER_NAME"], "example.com");
    assert_eq!(e["SERVER_PORT"], "8080");
    drop(s);
}

// --- Expect: 100-continue (RFC 9110 §10.1.1) --------------------------------------------------

#[test]
fn expect_continue_with_an_early_body_and_a_pipelined_request_answers_both() {
    // Inline (the app runs in the event loop) and with a thread pool: two code paths for
    // pipelined requests.
    for threads in ["1", "2"] {
        let s = server("apps:app").args(&["--threads", threads]).start();
        let mut c = s.connect();
        // The client did not wait for 100 Continue: the body follows the head, and the next
        // request follows the body, all in one write. The app does not read the body.
        c.send(
            b"POST /echo?mode=none HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n\
              hello\
              GET /status?code=201 HTTP/1.1\r\nHost: h\r\n\r\n",
        );
        let r = c.response();
        assert_eq!(r.status, 200, "no 100 Continue for a body that is already here");
        assert!(r.header("connection").is_none(), "the connection is kept");
        assert_eq!(c.response().status, 201, "the pipelined request is answered");

        // The same with a chunked body, and with an app that does read it.
        c.send(
            b"POST /echo?mode=none HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n\
              POST /echo?mode=read HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc\
              GET /status?code=202 HTTP/1.1\r\nHost: h\r\n\r\n",
        );
        assert_eq!(c.response().status, 200);
        let r = c.response();
        assert_eq!(r.status, 200, "no 100 Continue before the answer to the second request");
        assert_eq!(r.json()["body"], "abc");
        assert_eq!(c.response().status, 202);
    }
}

#[test]
fn expect_continue_unanswered_by_the_app_closes_and_says_so() {
    // A body past --body-buffer (here: any) is the app's to ask for; this one never does.
    let s = server("apps:app").args(&["--body-buffer", "0"]).start();
    let mut c = s.connect();
    c.send(b"POST /echo?mode=none HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200, "a final answer, no 100 Continue");
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "the client may or may not send the body now: the connection cannot be reused"
    );
    assert!(c.closed_within(5));
}

// --- limits -----------------------------------------------------------------------------------

#[test]
fn the_default_request_line_limit_is_8190_bytes() {
    let s = start();
    let line = |len: usize| {
        let fixed = "GET /status?code=200&pad= HTTP/1.1".len();
        format!(
            "GET /status?code=200&pad={} HTTP/1.1\r\nHost: h\r\n\r\n",
            "p".repeat(len - fixed)
        )
    };
    let mut c = s.connect();
    c.send(line(8190).as_bytes());
    assert_eq!(c.response().status, 200, "an 8190-byte request line is served");
    refused(&s, line(8191).as_bytes(), 414);
}

// --- no body in an error answered to HEAD (RFC 9110 §9.3.2) -----------------------------------

#[test]
fn a_refusal_of_a_head_request_has_no_body() {
    let s = start();
    for req in [
        b"HEAD / HTTP/1.1\r\nHost: a b\r\n\r\n".as_slice(),
        b"HEAD * HTTP/1.1\r\nHost: h\r\n\r\n",
        b"\r\nHEAD / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n",
    ] {
        let (status, head, rest) = read_to_close(&s, req);
        let shown = String::from_utf8_lossy(req);
        assert_eq!(status, 400, "{shown:?}: {head}");
        assert_eq!(header(&head, "connection"), Some("close"), "{shown:?}");
        assert!(
            header(&head, "content-length").is_some_and(|l| l != "0"),
            "the length a GET would have had: {head}"
        );
        assert!(rest.is_empty(), "{shown:?}: body bytes after a HEAD response: {rest:?}");
    }
    // The same refusal to a GET has its body.
    let (status, _, rest) = read_to_close(&s, b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n");
    assert_eq!(status, 400);
    assert!(!rest.is_empty());
}

#[test]
fn a_server_error_answering_a_head_request_has_no_body() {
    let s = server("apps:raw").start();
    // The app raises before its head: the server's own 500.
    let (status, head, rest) = read_to_close(&s, b"HEAD /raise HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status, 500, "{head}");
    assert_eq!(header(&head, "connection"), Some("close"));
    assert!(rest.is_empty(), "body bytes after a HEAD response: {rest:?}");
    // A body error found by the app's read: the server's own 400.
    let (status, head, rest) = read_to_close(
        &s,
        b"HEAD /echo?mode=read HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(status, 400, "{head}");
    assert_eq!(header(&head, "connection"), Some("close"));
    assert!(rest.is_empty(), "body bytes after a HEAD response: {rest:?}");
}
