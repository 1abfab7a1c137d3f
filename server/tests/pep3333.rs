//! PEP 3333, server side: one test per checklist item (reference §3), over real sockets,
//! against the real embedded CPython, with the fixture app wrapped in
//! `wsgiref.validate.validator` (whose assertions would turn into a 500 and a traceback).

mod common;

use common::{Server, server};

fn validated() -> Server {
    server("apps:app").start()
}

fn raw() -> Server {
    server("apps:raw").start()
}

/// No validator assertion, no unclosed iterator, no traceback in the log.
fn assert_clean(s: &Server) {
    let log = s.log();
    assert!(!log.contains("Traceback"), "traceback in the log:\n{log}");
    assert!(!log.contains("without being closed"), "iterator not closed:\n{log}");
}

#[test]
fn environ_is_an_exact_dict_of_native_strings_with_the_required_keys() {
    let s = validated();
    let r = s.get("/environ/a%20b/%C3%A9?x=1&y=%20");
    assert_eq!(r.status, 200, "{}", r.text());
    let e = r.json();
    assert_eq!(e["__exact_dict__"], true);
    assert_eq!(e["REQUEST_METHOD"], "GET");
    assert_eq!(e["SCRIPT_NAME"], "");
    // Percent-decoded, then each byte as one latin-1 character (PEP 3333 native strings).
    assert_eq!(e["PATH_INFO"], "/environ/a b/\u{c3}\u{a9}");
    assert_eq!(e["QUERY_STRING"], "x=1&y=%20", "QUERY_STRING stays raw");
    assert_eq!(e["RAW_URI"], "/environ/a%20b/%C3%A9?x=1&y=%20");
    assert_eq!(e["SERVER_PROTOCOL"], "HTTP/1.1");
    assert_eq!(e["SERVER_NAME"], "127.0.0.1");
    assert_eq!(e["SERVER_PORT"], s.addr.rsplit(':').next().unwrap());
    assert_eq!(e["REMOTE_ADDR"], "127.0.0.1", "REMOTE_ADDR has no port");
    assert!(e["REMOTE_PORT"].as_str().unwrap().parse::<u16>().is_ok());
    assert_eq!(e["HTTP_HOST"], "test");
    assert_eq!(e["wsgi.version"], serde_json::json!([1, 0]));
    assert_eq!(e["wsgi.url_scheme"], "http");
    assert_eq!(e["wsgi.multithread"], false);
    assert_eq!(e["wsgi.multiprocess"], false);
    assert_eq!(e["wsgi.run_once"], false);
    assert_eq!(e["wsgi.input_terminated"], true);
    for (k, t) in e["__types__"].as_object().unwrap() {
        if k.starts_with(|c: char| c.is_ascii_uppercase()) {
            assert_eq!(t, "str", "{k} is a {t}");
        }
    }
    assert!(
        e.get("CONTENT_TYPE").is_none() && e.get("CONTENT_LENGTH").is_none(),
        "absent when not sent"
    );
    assert_clean(&s);
}

#[test]
fn os_environ_is_not_copied_into_the_environ() {
    let s = server("apps:app").env("DEPLOYCTL_TEST_SECRET", "x").start();
    let e = s.get("/environ").json();
    assert!(e.get("DEPLOYCTL_TEST_SECRET").is_none());
    assert!(e.get("PATH").is_none());
}

#[test]
fn headers_become_http_keys_joined_and_content_headers_have_no_prefix() {
    let s = validated();
    let mut c = s.connect();
    c.send(
        b"POST /environ HTTP/1.1\r\nHost: h\r\nX-Multi: a\r\nX-Multi: b\r\nCookie: c=1\r\nCookie: d=2\r\n\
          Content-Type: text/plain\r\nContent-Length: 2\r\nX_Underscore: dropped\r\nX-Dash: kept\r\n\r\nhi",
    );
    let e = c.response().json();
    assert_eq!(e["HTTP_X_MULTI"], "a,b");
    assert_eq!(e["HTTP_COOKIE"], "c=1; d=2");
    assert_eq!(e["CONTENT_TYPE"], "text/plain");
    assert_eq!(e["CONTENT_LENGTH"], "2");
    assert!(e.get("HTTP_CONTENT_TYPE").is_none() && e.get("HTTP_CONTENT_LENGTH").is_none());
    assert_eq!(e["HTTP_X_DASH"], "kept");
    assert!(e.get("HTTP_X_UNDERSCORE").is_none(), "names with _ are dropped");
    assert_clean(&s);
}

#[test]
fn server_protocol_is_http_1_0_for_http_1_0_requests() {
    let s = validated();
    let mut c = s.connect();
    c.send(b"GET /environ HTTP/1.0\r\n\r\n");
    let e = c.response().json();
    assert_eq!(e["SERVER_PROTOCOL"], "HTTP/1.0");
}

#[test]
fn wsgi_input_read_all() {
    let s = validated();
    let mut c = s.connect();
    c.send(b"POST /echo?mode=read HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world");
    let r = c.response().json();
    assert_eq!(r["body"], "hello world");
    assert_clean(&s);
}

#[test]
fn wsgi_input_read_n_never_reads_past_the_body() {
    let s = validated();
    let mut c = s.connect();
    // 20 bytes of body read 7 at a time, then a pipelined request that must stay intact.
    c.send(
        b"POST /echo?mode=chunks HTTP/1.1\r\nHost: h\r\nContent-Length: 20\r\n\r\n01234567890123456789\
          GET /echo?mode=none HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let r = c.response().json();
    assert_eq!(r["parts"], serde_json::json!([7, 7, 6]));
    let second = c.response();
    assert_eq!(second.status, 200);
    assert_eq!(second.json()["len"], 0);
    assert_clean(&s);
}

#[test]
fn wsgi_input_readline_honours_its_size() {
    let s = validated();
    let mut c = s.connect();
    c.send(b"POST /echo?mode=readline HTTP/1.1\r\nHost: h\r\nContent-Length: 13\r\n\r\nab\nlongline\nz");
    let r = c.response().json();
    assert_eq!(r["lines"], serde_json::json!(["ab\n", "longl", "ine\n", "z"]));
    assert_clean(&s);
}

#[test]
fn wsgi_input_readlines_and_iteration() {
    let s = validated();
    for mode in ["readlines", "iter"] {
        let mut c = s.connect();
        c.send(format!("POST /echo?mode={mode} HTTP/1.1\r\nHost: h\r\nContent-Length: 8\r\n\r\na\nbb\nccc").as_bytes());
        assert_eq!(
            c.response().json()["lines"],
            serde_json::json!(["a\n", "bb\n", "ccc"]),
            "{mode}"
        );
    }
    assert_clean(&s);
}

#[test]
fn wsgi_input_reads_chunked_bodies() {
    let s = validated();
    let mut c = s.connect();
    c.send(
        b"POST /echo?mode=read HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer-Field: x\r\n\r\n",
    );
    let r = c.response().json();
    assert_eq!(r["body"], "hello world");
    assert_clean(&s);
}

#[test]
fn start_response_returns_a_working_write() {
    let s = validated();
    let r = s.get("/write");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "written;returned");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_clean(&s);
}

#[test]
fn headers_are_sent_lazily_with_the_first_non_empty_chunk() {
    // start_response is called inside the generator after an empty chunk: the status the
    // app gives there is the one on the wire.
    let s = validated();
    let r = s.get("/lazy");
    assert_eq!(r.status, 201);
    assert_eq!(r.reason, "Created");
    assert_eq!(r.header("x-lazy"), Some("yes"));
    assert_eq!(r.text(), "lazy body");
    assert_clean(&s);
}

#[test]
fn the_reason_phrase_is_kept() {
    let s = validated();
    let r = s.get("/status?code=299");
    assert_eq!((r.status, r.reason.as_str()), (299, "Whatever Reason"));
}

#[test]
fn exc_info_before_the_head_replaces_the_status() {
    let s = validated();
    let r = s.get("/exc_before");
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "replaced");
    assert_clean(&s);
}

#[test]
fn exc_info_after_the_head_reraises_and_aborts_the_connection() {
    let s = raw();
    let mut c = s.connect();
    c.send(b"GET /exc_after HTTP/1.1\r\nHost: h\r\n\r\n");
    let status = c.stream.try_clone().unwrap();
    drop(status);
    // The head and first chunk arrive; the body never completes (no terminating chunk).
    let mut all = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c.stream, &mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("first part"));
    assert!(!text.contains("never"));
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a complete chunked body was sent: {text:?}"
    );
    assert!(s.wait_log("RuntimeError: late", 5), "{}", s.log());
}

#[test]
fn a_second_start_response_without_exc_info_is_an_error() {
    let s = raw();
    let r = s.get("/twice");
    assert_eq!(r.status, 500);
    assert!(s.wait_log("AssertionError", 5), "{}", s.log());
}

#[test]
fn an_exception_before_the_head_is_a_500_with_the_traceback_only_in_the_log() {
    let s = raw();
    let r = s.get("/raise");
    assert_eq!(r.status, 500);
    assert!(
        !r.text().contains("boom"),
        "traceback leaked to the client: {}",
        r.text()
    );
    assert!(s.wait_log("Traceback", 5));
    assert!(s.wait_log("RuntimeError: boom before the head", 5));
    assert!(s.wait_log("GET /raise", 5), "the log names the request");
}

#[test]
fn an_exception_after_the_head_aborts_the_connection() {
    let s = raw();
    let mut c = s.connect();
    c.send(b"GET /raise_after HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut all = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c.stream, &mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("first part"));
    assert!(!text.ends_with("0\r\n\r\n"));
    assert!(s.wait_log("boom after the head", 5));
}

#[test]
fn str_chunks_are_a_logged_type_error() {
    let s = raw();
    let r = s.get("/str_body");
    assert_eq!(r.status, 500);
    assert!(s.wait_log("TypeError", 5), "{}", s.log());
    assert!(s.wait_log("not bytes", 5));
}

#[test]
fn start_response_rejects_hop_by_hop_headers_and_control_characters() {
    let s = raw();
    assert_eq!(s.get("/hop").status, 500);
    assert!(s.wait_log("hop-by-hop header Connection", 5), "{}", s.log());
    let r = s.get("/crlf");
    assert_eq!(r.status, 500);
    assert!(r.header("injected").is_none());
    assert!(s.wait_log("CR, LF or NUL", 5));
}

#[test]
fn returning_without_start_response_is_a_500() {
    let s = raw();
    assert_eq!(s.get("/no_start").status, 500);
    assert!(s.wait_log("without calling start_response", 5), "{}", s.log());
}

#[test]
fn content_length_is_computed_for_a_one_element_list() {
    // Unvalidated: the validator wraps the list in an iterator of unknown length.
    let s = raw();
    let r = s.get("/one");
    assert_eq!(r.header("content-length"), Some("4"));
    assert!(r.header("transfer-encoding").is_none());
}

#[test]
fn bodies_of_unknown_length_are_chunked_on_http_1_1_and_close_delimited_on_1_0() {
    let s = validated();
    let r = s.get("/stream?n=3");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body.len(), 3 * 65536);
    let mut c = s.connect();
    c.send(b"GET /stream?n=2 HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert!(r.header("transfer-encoding").is_none());
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body.len(), 2 * 65536);
}

#[test]
fn content_length_mismatch_is_logged_and_the_connection_closed() {
    let s = raw();
    // Short: 5 of 10 promised bytes, then the server must close so the client sees the cut.
    let mut c = s.connect();
    c.send(b"GET /short HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut all = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c.stream, &mut all);
    assert!(String::from_utf8_lossy(&all).ends_with("12345"));
    assert!(s.wait_log("Content-Length said 10", 5), "{}", s.log());
    // Long: the excess is not sent.
    let mut c = s.connect();
    c.send(b"GET /long HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response();
    assert_eq!(r.text(), "123");
    assert!(c.closed_within(5));
    assert!(s.wait_log("more bytes than its Content-Length", 5));
}

#[test]
fn no_body_for_head_204_and_304() {
    let s = raw();
    let mut c = s.connect();
    c.send(b"HEAD /one HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.try_response_to(true).unwrap();
    assert_eq!(r.header("content-length"), Some("4"), "HEAD reports the GET length");
    for code in ["204", "304"] {
        c.send(format!("GET /status?code={code} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        let r = c.try_response_to(false).unwrap();
        assert_eq!(r.status.to_string(), code);
        assert!(r.header("content-length").is_none() && r.header("transfer-encoding").is_none());
    }
    // The connection is still in sync: no stray body bytes were sent.
    c.send(b"GET /status?code=200 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response().text(), "body");
    assert_clean(&s);
}

#[test]
fn wsgi_errors_goes_to_the_error_log() {
    let s = validated();
    assert_eq!(s.get("/errors").status, 200);
    assert!(s.wait_log("message to wsgi.errors", 5));
    assert!(s.wait_log("second line", 5));
    assert_clean(&s);
}

#[test]
fn file_wrapper_sends_a_real_file_from_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    // Unvalidated: the validator would wrap the file_wrapper and hide it from the server.
    let s = raw();
    let r = s.get(&format!("/file?path={}&skip=1000", path.display()));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("299000"), "length from the file size");
    assert!(r.body == data[1000..], "file bytes differ");
    assert_clean(&s);
}

#[test]
fn close_is_called_when_the_client_disconnects_mid_response() {
    let dir = tempfile::tempdir().unwrap();
    let s = server("apps:raw")
        .env("MARKER_DIR", dir.path().to_str().unwrap())
        .start();
    let mut c = s.connect();
    c.send(b"GET /closing?n=100000 HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut first = [0u8; 4096];
    let _ = std::io::Read::read(&mut c.stream, &mut first).unwrap();
    drop(c);
    let marker = dir.path().join("closed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !marker.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(marker.exists(), "close() was not called:\n{}", s.log());
    // And the server still serves.
    assert_eq!(s.get("/status?code=200").status, 200);
}

#[test]
fn factory_entries_are_called() {
    let s = server("apps:factory()").start();
    assert_eq!(s.get("/status?code=200").status, 200);
}
