//! TLS terminated by the server itself (`--certfile`, `--keyfile`, `--tls-profile`), checked
//! with real clients: `openssl s_client` for protocols, ciphers, groups and ALPN; curl for
//! pages, files, uploads and keep-alive reuse; Python's `ssl` for every body shape of
//! `apps:shapes` over one connection and for a hang-up mid-stream; raw sockets for handshakes
//! that stall; testssl.sh for the grade (HSTS and the banner too); a HUP for a new certificate
//! (and a bad or expired pair on HUP leaving the serving one); certificates outside their
//! validity refused. Pairs are made with `openssl req` (dated ones with `openssl ca`).

mod common;
// testssl's grade, shared with the CLI's tests.
#[allow(dead_code)]
#[path = "../../tests/common/tls.rs"]
mod tls_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, make_pair, server};
use tls_common::{assert_graded, finding, testssl, testssl_report};

/// A self-signed P-256 pair for localhost valid from `start` to `end` (`YYYYMMDDHHMMSSZ`, in
/// the past or the future), in `dir`: `openssl ca -selfsign`, which takes both dates (OpenSSL
/// 3.0's `req -x509` has only a positive `-days`).
fn dated_pair(dir: &Path, name: &str, start: &str, end: &str) -> (PathBuf, PathBuf) {
    let ca = dir.join(format!("{name}-ca"));
    std::fs::create_dir_all(&ca).unwrap();
    std::fs::write(ca.join("index.txt"), "").unwrap();
    std::fs::write(
        ca.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nrand_serial = yes\n\
         policy = p\ndefault_md = sha256\n[p]\ncommonName = supplied\n\
         [ext]\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&ca)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        k,
        "-out",
        "csr.pem",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "ca",
        "-batch",
        "-config",
        "ca.cnf",
        "-selfsign",
        "-keyfile",
        k,
        "-in",
        "csr.pem",
        "-out",
        c,
        "-startdate",
        start,
        "-enddate",
        end,
        "-notext",
        "-extensions",
        "ext",
    ]);
    (cert, key)
}

struct Tls {
    server: Server,
    dir: tempfile::TempDir,
}

impl Tls {
    fn port(&self) -> &str {
        self.server.addr.rsplit(':').next().unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port())
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("live.crt")
    }
}

/// A TLS server of `entry` with the pair `live.crt`/`live.key` (serial 1).
fn start(entry: &str, extra: &[&str]) -> Tls {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_pair(dir.path(), "live", 1);
    let server = server(entry)
        .args(&["--certfile", cert.to_str().unwrap(), "--keyfile", key.to_str().unwrap()])
        .args(extra)
        .start();
    common::the_worker(&server);
    Tls { server, dir }
}

/// `openssl s_client -brief` with `args`: the protocol and suite, or `None` when refused.
fn s_client(addr: &str, args: &[&str]) -> Option<(String, String)> {
    let out = Command::new("timeout")
        .args([
            "10",
            "openssl",
            "s_client",
            "-brief",
            "-connect",
            addr,
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    if !text.contains("CONNECTION ESTABLISHED") {
        return None;
    }
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    Some((field("Protocol version:"), field("Ciphersuite:")))
}

fn curl(t: &Tls, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(t.cert())
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn protocols_ciphers_groups_and_alpn_follow_the_profile() {
    for (profile, tls12) in [("intermediate", true), ("modern", false)] {
        let t = start("apps:app", &["--tls-profile", profile]);
        let addr = &t.server.addr;
        assert_eq!(s_client(addr, &["-tls1"]), None, "{profile}: TLS 1.0");
        assert_eq!(s_client(addr, &["-tls1_1"]), None, "{profile}: TLS 1.1");
        let v13 = s_client(addr, &["-tls1_3"]).unwrap_or_else(|| panic!("{profile}: TLS 1.3 refused"));
        assert_eq!(v13.0, "TLSv1.3");
        let v12 = s_client(addr, &["-tls1_2"]);
        assert_eq!(v12.is_some(), tls12, "{profile}: TLS 1.2: {v12:?}");
        if tls12 {
            for cipher in ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"] {
                let got = s_client(addr, &["-tls1_2", "-cipher", cipher]);
                assert_eq!(got.map(|g| g.1), Some(cipher.to_string()), "{profile}");
            }
            // Outside the guideline: CBC, and RSA key exchange.
            for cipher in [
                "ECDHE-ECDSA-AES128-SHA",
                "ECDHE-ECDSA-AES256-SHA384",
                "AES128-GCM-SHA256",
            ] {
                assert_eq!(
                    s_client(addr, &["-tls1_2", "-cipher", cipher]),
                    None,
                    "{profile}: {cipher}"
                );
            }
        }
        assert!(s_client(addr, &["-groups", "X25519"]).is_some());
        assert!(s_client(addr, &["-groups", "P-384"]).is_some());
        assert_eq!(s_client(addr, &["-groups", "P-521"]), None, "{profile}: P-521");
        // ALPN: http/1.1 chosen, h2 not.
        let out = Command::new("timeout")
            .args(["10", "openssl", "s_client", "-connect", addr, "-alpn", "h2,http/1.1"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("ALPN protocol: http/1.1"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        // No session ticket is issued.
        let out = Command::new("timeout")
            .args(["10", "openssl", "s_client", "-connect", addr, "-tls1_3", "-sess_out"])
            .arg(t.dir.path().join("sess"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("TLS session ticket:"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn curl_gets_pages_files_uploads_and_reuses_the_connection() {
    curl_session(1);
}

/// The same with a pool of Python threads: bodies are read, and responses written, by the
/// pool's threads through the same TLS state.
#[test]
fn curl_gets_pages_files_uploads_and_reuses_the_connection_with_two_threads() {
    curl_session(2);
}

fn curl_session(threads: u32) {
    let t = start("apps:app", &["--threads", &threads.to_string()]);
    let (ok, body, err) = curl(&t, &[&t.url("/environ")]);
    assert!(ok, "{err}");
    let env: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(env["wsgi.url_scheme"], "https");
    assert_eq!(env["HTTPS"], "on");
    // A file (wsgi.file_wrapper: pread through TLS instead of sendfile).
    let (ok, body, err) = curl(&t, &[&t.url("/file")]);
    assert!(ok && !body.is_empty(), "{err}");
    // A chunked upload of 3 MiB, echoed.
    let upload = t.dir.path().join("upload");
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&upload, &data).unwrap();
    let (ok, body, err) = curl(
        &t,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", upload.display()),
            &t.url("/echo?mode=count"),
        ],
    );
    assert!(ok, "{err}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["total"], data.len(), "{echo}");
    // Two URLs on one connection.
    let (ok, _, err) = curl(&t, &["-v", &t.url("/environ"), &t.url("/stream")]);
    assert!(ok, "{err}");
    assert!(err.contains("Re-using existing connection"), "{err}");
    assert!(err.contains("ALPN: server accepted http/1.1"), "{err}");
}

/// Every body shape, with and without Content-Length, small and 2.5 MiB, one after the other
/// on one keep-alive connection (Python's http.client over ssl); then each closable body was
/// closed exactly once per request, and a client hanging up mid-stream leaves the worker idle.
#[test]
fn every_body_shape_over_one_tls_connection_and_a_hang_up_mid_stream() {
    body_shapes(1);
}

#[test]
fn every_body_shape_over_one_tls_connection_and_a_hang_up_mid_stream_with_two_threads() {
    body_shapes(2);
}

fn body_shapes(threads: u32) {
    let t = start(
        "apps:shapes",
        &["--keep-alive", "30", "--threads", &threads.to_string()],
    );
    let worker = common::the_worker(&t.server);
    let script = r#"
import http.client, json, socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
c = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=20)
sock = None
for shape in ["one", "many", "gen", "closing", "file", "cycle", "write"]:
    for n in [0, 40]:
        for cl in ["0", "1"]:
            c.request("GET", f"/{shape}?n={n}&cl={cl}")
            r = c.getresponse()
            body = r.read()
            want = n * 65536 if n else len(shape) + 4
            assert r.status == 200, (shape, n, cl, r.status)
            assert len(body) == want, (shape, n, cl, len(body), want)
            if sock is None:
                sock = c.sock
            assert c.sock is sock, "the connection was not kept"
# A hang-up in the middle of a 32 MiB response.
raw = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
raw.sendall(b"GET /gen?n=512 HTTP/1.1\r\nHost: x\r\n\r\n")
got = 0
while got < 200000:
    got += len(raw.recv(65536))
raw.close()
c.request("GET", "/closed")
print(c.getresponse().read().decode())
"#;
    let out = Command::new("python3")
        .args(["-c", script, t.port()])
        .arg(t.cert())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        t.server.log()
    );
    let closed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 4 requests each (n 0/40, cl 0/1); gen once more, for the hang-up, once it is noticed.
    for shape in ["closing", "file", "cycle"] {
        assert_eq!(closed[shape], 4, "{shape}: {closed}");
    }
    assert!(
        common::wait_until(5, || {
            let c = t.server.get_closed();
            c["gen"] == 5
        }),
        "the hang-up mid-stream did not close the generator: {}",
        t.server.log()
    );
    let cpu = common::cpu_used_over(worker, Duration::from_secs(2));
    assert!(
        cpu < Duration::from_millis(200),
        "worker busy after the hang-up: {cpu:?}"
    );
}

trait Closed {
    fn get_closed(&self) -> serde_json::Value;
}

impl Closed for Server {
    /// `/closed` of `apps:shapes`, over TLS with curl (the server speaks nothing else).
    fn get_closed(&self) -> serde_json::Value {
        let port = self.addr.rsplit(':').next().unwrap_or_default();
        let out = Command::new("curl")
            .args(["-sS", "-k", "--max-time", "10"])
            .arg(format!("https://127.0.0.1:{port}/closed"))
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }
}

/// A client that connects and sends nothing, or stops in the middle of its ClientHello, is
/// closed at the header timeout (2 s here, keep-alive 30 s), and the worker does not spin.
#[test]
fn a_stalled_handshake_is_closed_at_the_header_timeout() {
    let t = start("apps:app", &["--header-timeout", "2", "--keep-alive", "30"]);
    let worker = common::the_worker(&t.server);
    // A TLS 1.2 record header announcing a 200-byte ClientHello, and only its first bytes.
    let partial: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03, 1, 2, 3, 4,
    ];
    for (what, bytes) in [("nothing", &[][..]), ("a partial ClientHello", partial)] {
        let mut c = t.server.connect();
        c.send(bytes);
        let since = Instant::now();
        let cpu_before = common::cpu_time(worker);
        assert!(c.closed_within(8), "{what}: not closed");
        let took = since.elapsed();
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
            "{what}: closed after {took:?}"
        );
        let cpu = common::cpu_time(worker) - cpu_before;
        assert!(
            cpu < Duration::from_millis(300),
            "{what}: worker used {cpu:?} while waiting"
        );
    }
    // Garbage instead of a handshake: closed at once, the server serves on.
    let mut c = t.server.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(c.closed_within(3), "plain HTTP on the TLS port was not closed");
    let (ok, _, err) = curl(&t, &[&t.url("/environ")]);
    assert!(ok, "{err}");
}

/// HUP with a new pair in place: the new generation serves the new certificate. A key that
/// does not match on HUP: the reload is refused, said so, and the old certificate serves on.
#[test]
fn a_hup_serves_the_new_pair_and_a_bad_pair_leaves_the_old_one() {
    let t = start("apps:app", &[]);
    let addr = t.server.addr.clone();
    assert_eq!(tls_common::served_serial_at(&addr), "serial=01");
    let (cert2, key2) = make_pair(t.dir.path(), "next", 2);
    std::fs::copy(&cert2, t.dir.path().join("live.crt")).unwrap();
    std::fs::copy(&key2, t.dir.path().join("live.key")).unwrap();
    common::signal(t.server.pid(), libc::SIGHUP);
    assert!(t.server.wait_log("reload complete", 20), "{}", t.server.log());
    assert_eq!(tls_common::served_serial_at(&addr), "serial=02");
    // A key of another pair.
    let (_, key3) = make_pair(t.dir.path(), "other", 3);
    std::fs::copy(&key3, t.dir.path().join("live.key")).unwrap();
    common::signal(t.server.pid(), libc::SIGHUP);
    assert!(
        t.server.wait_log("reload failed, the current workers keep serving", 10),
        "{}",
        t.server.log()
    );
    assert!(
        t.server.log().contains("does not match the certificate"),
        "{}",
        t.server.log()
    );
    assert_eq!(tls_common::served_serial_at(&addr), "serial=02");
}

/// A pair that cannot serve stops the start, naming the file.
#[test]
fn a_bad_pair_at_start_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = make_pair(dir.path(), "a", 1);
    let (_, key) = make_pair(dir.path(), "b", 2);
    let (code, log) = server("apps:app")
        .args(&["--certfile", cert.to_str().unwrap(), "--keyfile", key.to_str().unwrap()])
        .run_to_exit();
    assert_ne!(code, 0);
    assert!(log.contains("does not match the certificate in"), "{log}");
    assert!(log.contains(key.to_str().unwrap()), "{log}");
    let missing = dir.path().join("missing.pem");
    let (code, log) = server("apps:app")
        .args(&[
            "--certfile",
            missing.to_str().unwrap(),
            "--keyfile",
            key.to_str().unwrap(),
        ])
        .run_to_exit();
    assert_ne!(code, 0);
    assert!(log.contains("--certfile: cannot read the certificate chain"), "{log}");
    assert!(log.contains(missing.to_str().unwrap()), "{log}");
}

/// A certificate outside its validity period stops the start, naming the file (rustls would
/// serve it and every client refuse it); on HUP, the reload is refused and the old
/// certificate serves on.
#[test]
fn an_expired_or_not_yet_valid_certificate_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (old, old_key) = dated_pair(dir.path(), "old", "20200101000000Z", "20200201000000Z");
    let (code, log) = server("apps:app")
        .args(&[
            "--certfile",
            old.to_str().unwrap(),
            "--keyfile",
            old_key.to_str().unwrap(),
        ])
        .run_to_exit();
    assert_ne!(code, 0, "{log}");
    assert!(
        log.contains(&format!(
            "{}: the certificate expired on 2020-02-01 00:00:00 UTC",
            old.display()
        )),
        "{log}"
    );
    let (future, future_key) = dated_pair(dir.path(), "future", "20990101000000Z", "20991231000000Z");
    let (code, log) = server("apps:app")
        .args(&[
            "--certfile",
            future.to_str().unwrap(),
            "--keyfile",
            future_key.to_str().unwrap(),
        ])
        .run_to_exit();
    assert_ne!(code, 0, "{log}");
    assert!(
        log.contains(&format!(
            "{}: the certificate is not valid before 2099-01-01 00:00:00 UTC",
            future.display()
        )),
        "{log}"
    );

    // Running on a good pair, the files replaced by the expired one, then HUP.
    let t = start("apps:app", &[]);
    let addr = t.server.addr.clone();
    assert_eq!(tls_common::served_serial_at(&addr), "serial=01");
    std::fs::copy(&old, t.cert()).unwrap();
    std::fs::copy(&old_key, t.dir.path().join("live.key")).unwrap();
    common::signal(t.server.pid(), libc::SIGHUP);
    assert!(
        t.server.wait_log("reload failed, the current workers keep serving", 10),
        "{}",
        t.server.log()
    );
    assert!(
        t.server
            .log()
            .contains(&format!("{}: the certificate expired on", t.cert().display())),
        "{}",
        t.server.log()
    );
    assert_eq!(tls_common::served_serial_at(&addr), "serial=01");
}

/// testssl.sh (protocols, server defaults, ciphers, forward secrecy, header checks; JSON
/// parsed by tests/common/tls.rs): 1.0/1.1 not offered, 1.2 offered on intermediate only, 1.3
/// offered, nothing graded above LOW; with `--hsts` (the plan's value for `hsts = "2y"`),
/// HSTS of 63072000 s, and no version banner — the grade of the nginx and Apache fronts.
#[test]
fn testssl_grades_the_embedded_server_for_each_profile() {
    let Some(bin) = testssl() else { return };
    for profile in ["intermediate", "modern"] {
        let t = start(
            "apps:app",
            &[
                "--tls-profile",
                profile,
                "--hsts",
                "max-age=63072000; includeSubDomains",
                // What the plan gives the lone embedded target (it has no front).
                "--security-headers",
            ],
        );
        let json = t.dir.path().join("testssl.json");
        let port: u16 = t.port().parse().expect("a port");
        let findings = testssl_report(&bin, port, &json, &["-p", "-h", "-s", "-f", "-P", "-S"]);
        // Graded above LOW: nothing, except what a self-signed test certificate is (its
        // chain of trust and the missing OCSP/CRL URIs: -S judges the certificate too).
        // `security_headers` included: `--security-headers` adds them to the app's answers
        // (`apps:app` sends none), as the fronts do.
        assert_graded(&findings, profile, |id| id.starts_with("cert_"));
        let hsts = finding(&findings, "HSTS_time");
        assert!(hsts.contains("=63072000 seconds"), "{profile}: {hsts}");
        let banner = finding(&findings, "banner_server");
        assert!(
            !banner.contains('/') && !banner.chars().any(|c| c.is_ascii_digit()),
            "{profile}: {banner}"
        );
    }
}

const HSTS: &str = "max-age=63072000; includeSubDomains";
const SECURITY_HEADERS: [&str; 4] = [
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "cross-origin-opener-policy",
];

fn count(r: &common::Response, name: &str) -> usize {
    r.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).count()
}

/// One `Strict-Transport-Security: HSTS` and one of each security header.
fn assert_added(r: &common::Response, what: &str) {
    assert_eq!(count(r, "strict-transport-security"), 1, "{what}: {:?}", r.headers);
    assert_eq!(r.header("strict-transport-security"), Some(HSTS), "{what}");
    for name in SECURITY_HEADERS {
        assert_eq!(count(r, name), 1, "{what}: {name} in {:?}", r.headers);
    }
}

/// Every answer the server makes itself over TLS carries `--hsts` and `--security-headers`, as
/// the app's answers and the static files do (the nginx site's `add_header … always`): its
/// refusals of a head (400 for a request line or framing, 414, 431, 417, 501, 505), of a body
/// (413; a malformed chunk, 400), its timeouts (408 for a head and for a body), the app's
/// failure (500, and to HEAD without a body), the static refusals (400, 403, 404, 405, 416),
/// and the watchdog's 504. Requests go through a plain-to-TLS bridge (OpenSSL's client), so
/// they reach the server as written. The plain `--redirect-bind` listener adds neither, to
/// anything: its 301, 421, ACME 404 and a refusal (RFC 6797 §7.2: no HSTS over plain HTTP).
#[test]
fn the_servers_own_answers_over_tls_carry_hsts_and_the_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_pair(dir.path(), "live", 1);
    let statics = dir.path().join("static");
    std::fs::create_dir_all(&statics).unwrap();
    std::fs::write(statics.join("app.js"), "console.log(1)\n").unwrap();
    std::fs::write(statics.join(".env"), "SECRET=1\n").unwrap();
    let plain = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let s = server("apps:raw")
        .args(&["--certfile", cert.to_str().unwrap(), "--keyfile", key.to_str().unwrap()])
        .args(&["--hsts", HSTS, "--security-headers"])
        .args(&["--static", &format!("/static/={}", statics.display())])
        .args(&[
            "--redirect-bind",
            &format!("127.0.0.1:{plain}"),
            "--server-name",
            "localhost",
        ])
        .args(&["--acme-webroot", dir.path().join("acme").to_str().unwrap()])
        .args(&["--header-timeout", "2", "--body-timeout", "2", "--timeout", "2"])
        .start();
    common::the_worker(&s);
    let bridge = common::TlsBridge::start(&s, &cert);
    let ask = |request: &str| -> common::Response {
        let mut c = bridge.connect();
        c.send(request.as_bytes());
        c.try_response_to(request.starts_with("HEAD "))
            .unwrap_or_else(|| panic!("no answer to {request:?}\n{}", s.log()))
    };
    // The app's own answer, for comparison.
    let r = ask("GET /environ HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["wsgi.url_scheme"], "https");
    assert_added(&r, "the app's 200");

    let long_line = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(9000));
    let long_field = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
    for (request, status) in [
        ("GET /\r\n\r\n", 400),
        ("HEAD / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        (
            "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (long_line.as_str(), 414),
        (long_field.as_str(), 431),
        ("GET / HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n", 417),
        (
            "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        ("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (
            "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999\r\n\r\n",
            413,
        ),
        (
            "POST /echo?mode=read HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
            400,
        ),
        // A head, and a body, that stop coming: 408 at the header and body timeouts (2 s).
        ("GET / HTTP/1.1\r\nHost: h\r\n", 408),
        ("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab", 408),
        // The app raises before its head: the server's 500, with and without a body.
        ("GET /raise HTTP/1.1\r\nHost: h\r\n\r\n", 500),
        ("HEAD /raise HTTP/1.1\r\nHost: h\r\n\r\n", 500),
        // Static refusals.
        ("GET /static/nope.css HTTP/1.1\r\nHost: h\r\n\r\n", 404),
        ("GET /static/.env HTTP/1.1\r\nHost: h\r\n\r\n", 403),
        ("GET /static/ HTTP/1.1\r\nHost: h\r\n\r\n", 403),
        (
            "POST /static/app.js HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
            405,
        ),
        ("GET /static/%zz HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (
            "GET /static/app.js HTTP/1.1\r\nHost: h\r\nRange: bytes=100-\r\n\r\n",
            416,
        ),
        ("GET /static/app.js HTTP/1.1\r\nHost: h\r\n\r\n", 200),
    ] {
        let line = request.lines().next().unwrap_or_default();
        let line = &line[..line.len().min(60)];
        let r = ask(request);
        assert_eq!(r.status, status, "{line}: {}", r.text());
        assert_added(&r, line);
        if request.starts_with("HEAD ") {
            assert!(r.body.is_empty(), "{line}: a body after HEAD");
        }
    }
    // The watchdog's 504 (--timeout 2) to a request stuck in the app; last, since the master
    // then replaces the worker.
    let r = ask("GET /sleep?s=6 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_added(&r, "the watchdog's 504");

    // The plain listener: neither HSTS nor the security headers, whatever it answers.
    let at_plain = |request: &str| {
        let mut c = common::Client::connect(&format!("127.0.0.1:{plain}"));
        c.send(request.as_bytes());
        c.try_response_to(false).expect("an answer on the plain listener")
    };
    for (request, status) in [
        ("GET /a?b=1 HTTP/1.1\r\nHost: localhost\r\n\r\n", 301),
        ("GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n", 421),
        (
            "GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: localhost\r\n\r\n",
            404,
        ),
        ("GET /\r\n\r\n", 400),
    ] {
        let r = at_plain(request);
        assert_eq!(r.status, status, "{request:?}: {}", r.text());
        assert_eq!(
            count(&r, "strict-transport-security"),
            0,
            "{request:?}: {:?}",
            r.headers
        );
        for name in SECURITY_HEADERS {
            assert_eq!(count(&r, name), 0, "{request:?}: {name} in {:?}", r.headers);
        }
    }
}

/// The busy refusal (503: the worker's request memory at its cap, here by 40 uploads of
/// 900 KiB stalled before their end) over TLS carries HSTS and the security headers too.
#[test]
fn the_busy_refusal_over_tls_carries_hsts_and_the_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_pair(dir.path(), "live", 1);
    let s = server("apps:app")
        .args(&["--certfile", cert.to_str().unwrap(), "--keyfile", key.to_str().unwrap()])
        .args(&["--hsts", HSTS, "--security-headers", "--body-timeout", "30"])
        .start();
    common::the_worker(&s);
    let bridge = common::TlsBridge::start(&s, &cert);
    let body = vec![b'x'; 900 * 1024];
    let mut flood = Vec::new();
    for _ in 0..40 {
        let mut c = bridge.connect();
        c.send(b"POST /echo?mode=len HTTP/1.1\r\nHost: h\r\nContent-Length: 1048576\r\n\r\n");
        if std::io::Write::write_all(&mut c.stream, &body).is_ok() {
            flood.push(c);
        }
    }
    let mut refused = 0;
    for c in &mut flood {
        c.stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut first = [0u8; 1];
        if std::io::Read::read(&mut c.stream, &mut first).is_ok_and(|n| n == 1) {
            c.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            // The byte read belongs to the status line: put the stream back together.
            let mut rest = Vec::new();
            let _ = std::io::Read::read_to_end(&mut c.stream, &mut rest);
            let text = String::from_utf8_lossy(&[&first[..], &rest].concat()).to_string();
            assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
            let head = text.split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase();
            assert_eq!(
                head.matches(&format!("strict-transport-security: {}\r\n", HSTS.to_ascii_lowercase()))
                    .count(),
                1,
                "{head}"
            );
            for name in SECURITY_HEADERS {
                assert_eq!(head.matches(&format!("\r\n{name}: ")).count(), 1, "{name}: {head}");
            }
            refused += 1;
        }
    }
    assert!(
        refused > 0,
        "40 MiB of bodies buffered over TLS without a 503\n{}",
        s.log()
    );
    drop(flood);
}
