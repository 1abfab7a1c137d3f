//! Static files served by the server itself (`--static URL[:EXPIRES]=DIR`), checked with raw
//! sockets (which send a path exactly as written, `..` and all) and curl: the headers nginx's
//! site sends (type, length, Last-Modified, its `"mtime-size"` ETag, Cache-Control and
//! Expires, nosniff), HEAD, 304s, ranges, 405, 404 without the app, no listing, dotfiles,
//! a traversal corpus, keep-alive across static and app requests, and a 1 MiB file byte for
//! byte over plain HTTP and TLS.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Server, server};

struct Site {
    server: Server,
    root: tempfile::TempDir,
}

impl Site {
    fn dir(&self) -> PathBuf {
        self.root.path().join("static")
    }
}

/// A project directory: `static/` with a stylesheet, a script, a 1 MiB file, a dotfile, a
/// subdirectory and a symlink leading out; a secret beside `static/`.
fn tree() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let s = root.path().join("static");
    std::fs::create_dir_all(s.join("css")).unwrap();
    std::fs::write(s.join("css/app.css"), "body { color: red }\n").unwrap();
    std::fs::write(s.join("app.js"), "console.log(1)\n").unwrap();
    std::fs::write(s.join("README"), "plain\n").unwrap();
    std::fs::write(s.join(".env"), "SECRET=dotfile\n").unwrap();
    let big: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(s.join("big.bin"), &big).unwrap();
    std::fs::write(root.path().join("deploy.toml"), "SECRET=outside\n").unwrap();
    std::os::unix::fs::symlink(root.path().join("deploy.toml"), s.join("out.txt")).unwrap();
    std::os::unix::fs::symlink("../deploy.toml", s.join("up.txt")).unwrap();
    std::os::unix::fs::symlink(s.join("app.js"), s.join("in.js")).unwrap();
    std::os::unix::fs::symlink("../app.js", s.join("css/rel.js")).unwrap();
    root
}

fn start(extra: &[&str]) -> Site {
    let root = tree();
    let arg = format!("/static/:1h={}", root.path().join("static").display());
    let server = server("apps:app").args(&["--static", &arg]).args(extra).start();
    common::the_worker(&server);
    Site { server, root }
}

fn raw(server: &Server, request: &str) -> common::Response {
    let mut c = server.connect();
    c.send(request.as_bytes());
    c.try_response_to(request.starts_with("HEAD ")).expect("a response")
}

fn get(server: &Server, path: &str, headers: &str) -> common::Response {
    raw(
        server,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n"),
    )
}

#[test]
fn a_file_with_the_nginx_sites_headers() {
    let site = start(&[]);
    let r = get(&site.server, "/static/css/app.css", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "body { color: red }\n");
    assert_eq!(r.header("content-type"), Some("text/css"));
    assert_eq!(r.header("content-length"), Some("20"));
    let meta = std::fs::metadata(site.dir().join("css/app.css")).unwrap();
    let etag = format!("\"{:x}-{:x}\"", meta.mtime(), meta.size());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert!(r.header("last-modified").is_some_and(|v| v.ends_with(" GMT")));
    assert_eq!(r.header("cache-control"), Some("max-age=3600"));
    assert!(r.header("expires").is_some_and(|v| v.ends_with(" GMT")));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("server"), None, "the server sends no Server header anywhere");
    assert_eq!(
        get(&site.server, "/static/app.js", "").header("content-type"),
        Some("application/javascript")
    );
    assert_eq!(
        get(&site.server, "/static/README", "").header("content-type"),
        Some("application/octet-stream")
    );
    // A symlink that stays inside the directory is followed, as nginx does.
    assert_eq!(get(&site.server, "/static/in.js", "").text(), "console.log(1)\n");
    assert_eq!(get(&site.server, "/static/css/rel.js", "").text(), "console.log(1)\n");
    // Query strings do not matter; percent-encoding is decoded.
    assert_eq!(get(&site.server, "/static/%61pp.js?v=3", "").status, 200);

    // HEAD: the same head, no body.
    let h = raw(
        &site.server,
        "HEAD /static/css/app.css HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("20"));
    assert_eq!(h.header("etag"), Some(etag.as_str()));
    assert!(h.body.is_empty());
}

#[test]
fn conditional_requests_answer_304() {
    let site = start(&[]);
    let r = get(&site.server, "/static/app.js", "");
    let etag = r.header("etag").unwrap().to_string();
    let lm = r.header("last-modified").unwrap().to_string();
    let inm = get(&site.server, "/static/app.js", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(inm.status, 304);
    assert_eq!(inm.header("etag"), Some(etag.as_str()));
    assert_eq!(inm.header("cache-control"), Some("max-age=3600"));
    assert!(inm.body.is_empty());
    assert_eq!(
        get(&site.server, "/static/app.js", "If-None-Match: W/\"0-0\", *\r\n").status,
        304
    );
    assert_eq!(
        get(&site.server, "/static/app.js", "If-None-Match: \"0-0\"\r\n").status,
        200
    );
    assert_eq!(
        get(&site.server, "/static/app.js", &format!("If-Modified-Since: {lm}\r\n")).status,
        304
    );
    // nginx's `if_modified_since exact`: any other date is a full answer.
    assert_eq!(
        get(
            &site.server,
            "/static/app.js",
            "If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT\r\n"
        )
        .status,
        200
    );
    // If-None-Match wins over If-Modified-Since.
    let both = format!("If-None-Match: \"0-0\"\r\nIf-Modified-Since: {lm}\r\n");
    assert_eq!(get(&site.server, "/static/app.js", &both).status, 200);
}

#[test]
fn ranges() {
    let site = start(&[]);
    let big = std::fs::read(site.dir().join("big.bin")).unwrap();
    let r = get(&site.server, "/static/big.bin", "Range: bytes=10-19\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/1048576"));
    assert_eq!(r.body, &big[10..20]);
    let r = get(&site.server, "/static/big.bin", "Range: bytes=-5\r\n");
    assert_eq!((r.status, r.body.as_slice()), (206, &big[big.len() - 5..]));
    let r = get(&site.server, "/static/big.bin", "Range: bytes=1048570-\r\n");
    assert_eq!((r.status, r.body.len()), (206, 6));
    let r = get(&site.server, "/static/big.bin", "Range: bytes=2000000-\r\n");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */1048576"));
    // Several ranges: the whole file, 200 (allowed by RFC 9110 §14.2).
    let r = get(&site.server, "/static/big.bin", "Range: bytes=0-1,5-6\r\n");
    assert_eq!((r.status, r.body.len()), (200, big.len()));
    // If-Range with another validator: the whole file.
    let r = get(
        &site.server,
        "/static/big.bin",
        "Range: bytes=0-1\r\nIf-Range: \"0-0\"\r\n",
    );
    assert_eq!((r.status, r.body.len()), (200, big.len()));
}

#[test]
fn methods_missing_files_directories_and_keep_alive() {
    let site = start(&[]);
    let r = raw(
        &site.server,
        "POST /static/app.js HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    // A missing file is 404 from the server: the app never sees a URL under the prefix.
    let r = get(&site.server, "/static/nope.css", "");
    assert_eq!(r.status, 404);
    assert!(r.text().starts_with("404 Not Found"), "{}", r.text());
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(get(&site.server, "/static/", "").status, 403);
    assert_eq!(get(&site.server, "/static/css/", "").status, 403);
    assert_eq!(get(&site.server, "/static/css", "").status, 403);
    assert_eq!(get(&site.server, "/static/app.js/", "").status, 404);

    // Static and app answers on one kept-alive connection, pipelined too.
    let mut c = site.server.connect();
    c.send(b"GET /static/app.js HTTP/1.1\r\nHost: a\r\n\r\nGET /static/nope HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert_eq!(c.response().status, 404);
    c.send(b"GET /environ HTTP/1.1\r\nHost: a\r\n\r\n");
    let app = c.response();
    assert_eq!(app.status, 200);
    assert_eq!(app.json()["PATH_INFO"], "/environ");
    c.send(b"HEAD /static/big.bin HTTP/1.1\r\nHost: a\r\n\r\n");
    let h = c.try_response_to(true).unwrap();
    assert_eq!(h.header("content-length"), Some("1048576"));
    c.send(b"GET /static/css/app.css HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().text(), "body { color: red }\n");
}

#[test]
fn nothing_leaves_the_directory() {
    let site = start(&[]);
    for (path, want) in [
        ("/static/../deploy.toml", 400),
        ("/static/%2e%2e/deploy.toml", 400),
        ("/static/%2E%2E%2fdeploy.toml", 400),
        ("/static/..%2fdeploy.toml", 400),
        ("/static/css/../../deploy.toml", 400),
        ("/static/%2e%2e%5cdeploy.toml", 403),
        ("/static/out.txt", 403),
        ("/static/up.txt", 403),
        ("/static/.env", 403),
        ("/static/%2eenv", 403),
        ("/static/css/.hidden", 403),
        ("/static/app.js%00.css", 400),
        ("/static/%zz", 400),
        ("/static//etc/passwd", 404),
    ] {
        let r = get(&site.server, path, "");
        assert_eq!(r.status, want, "{path}: {}", r.text());
        assert!(!r.text().contains("SECRET"), "{path} leaked: {}", r.text());
    }
    // The server still serves after the corpus.
    assert_eq!(get(&site.server, "/static/app.js", "").status, 200);
}

fn curl_bytes(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn a_mebibyte_byte_for_byte_over_plain_http_and_tls() {
    let plain = start(&[]);
    let big = std::fs::read(plain.dir().join("big.bin")).unwrap();
    let url = format!("http://{}/static/big.bin", plain.server.addr);
    assert!(curl_bytes(&[&url]) == big, "plain HTTP: bytes differ");

    let keys = tempfile::tempdir().unwrap();
    let (cert, key) = common::make_pair(keys.path(), "s", 1);
    let tls = start(&["--certfile", cert.to_str().unwrap(), "--keyfile", key.to_str().unwrap()]);
    let port = tls.server.addr.rsplit(':').next().unwrap_or_default().to_string();
    let url = format!("https://localhost:{port}/static/big.bin");
    let got = curl_bytes(&["--cacert", cert.to_str().unwrap(), &url]);
    assert!(got == big, "TLS: bytes differ ({} of {})", got.len(), big.len());
    // Two files on one TLS connection (curl reuses it), the second a range.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert", cert.to_str().unwrap(), "-v"])
        .arg(format!("https://localhost:{port}/static/app.js"))
        .arg(format!("https://localhost:{port}/static/css/app.css"))
        .output()
        .expect("curl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Re-using existing connection"), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "console.log(1)\nbody { color: red }\n"
    );
}

#[test]
fn flags_and_config() {
    // Another prefix, with the default lifetime (7 days).
    let root = tree();
    let arg = format!("/assets/={}", root.path().join("static").display());
    let s = server("apps:app").args(&["--static", &arg]).start();
    common::the_worker(&s);
    let r = get(&s, "/assets/app.js", "");
    assert_eq!((r.status, r.header("cache-control")), (200, Some("max-age=604800")));
    drop(s);
    // Bad values are refused at start, naming the flag.
    let missing = format!("/static/={}", root.path().join("nope").display());
    for bad in [
        "/static",
        "static/=/tmp",
        "/static/:soon=/tmp",
        "/a/",
        "/a/../=/tmp",
        &missing,
    ] {
        let (code, log) = server("apps:app").args(&["--static", bad]).run_to_exit();
        assert_ne!(code, 0, "{bad}");
        assert!(log.contains("--static"), "{bad}: {log}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn curl_head(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "/dev/null", "-D", "-"])
        .args(args)
        .output()
        .expect("curl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
}

/// `--redirect-bind` beside TLS: the ACME challenge from the webroot, a 301 to https with the
/// Host and the TLS port for the rest, 421 for a name not served; `--hsts` on every answer over
/// TLS (the app's, a static file's, the app's own header replaced), never on plain HTTP.
#[test]
fn the_plain_listener_beside_tls_and_hsts() {
    let keys = tempfile::tempdir().unwrap();
    let (cert, key) = common::make_pair(keys.path(), "s", 1);
    let webroot = keys.path().join("acme");
    let plain = free_port();
    let root = tree();
    let static_arg = format!("/static/={}", root.path().join("static").display());
    let s = server("apps:app")
        .args(&["--certfile", cert.to_str().unwrap(), "--keyfile", key.to_str().unwrap()])
        .args(&["--redirect-bind", &format!("127.0.0.1:{plain}")])
        .args(&["--acme-webroot", webroot.to_str().unwrap()])
        .args(&["--server-name", "localhost", "--server-name", "*.example.test"])
        .args(&["--hsts", "max-age=63072000; includeSubDomains"])
        .args(&["--static", &static_arg])
        .start();
    common::the_worker(&s);
    let tls_port = s.addr.rsplit(':').next().unwrap_or_default().to_string();
    assert!(s.wait_log(&format!("127.0.0.1:{plain}"), 5), "{}", s.log());

    // The webroot made after the start (as ACME makes it) is served, text/plain, no expiry.
    let challenge = webroot.join(".well-known/acme-challenge");
    std::fs::create_dir_all(&challenge).unwrap();
    std::fs::write(challenge.join("tok-123_x"), "tok-123_x.thumbprint").unwrap();
    let url = format!("http://localhost:{plain}/.well-known/acme-challenge/tok-123_x");
    assert_eq!(curl_bytes(&[&url]), b"tok-123_x.thumbprint");
    let head = curl_head(&[&url]);
    assert!(head.contains("content-type: text/plain"), "{head}");
    assert!(
        !head.contains("cache-control") && !head.contains("strict-transport"),
        "{head}"
    );
    let missing = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://localhost:{plain}/.well-known/acme-challenge/nope"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&missing.stdout), "404");

    // Everything else: 301 to https on the TLS port, path and query kept.
    let head = curl_head(&[&format!("http://localhost:{plain}/a/b?x=1&y=%20")]);
    assert!(head.starts_with("http/1.1 301"), "{head}");
    assert!(
        head.contains(&format!("location: https://localhost:{tls_port}/a/b?x=1&y=%20\r\n")),
        "{head}"
    );
    let head = curl_head(&[
        "-H",
        "Host: www.example.test",
        &format!("http://127.0.0.1:{plain}/static/app.js"),
    ]);
    assert!(
        head.contains(&format!("location: https://www.example.test:{tls_port}/static/app.js")),
        "{head}"
    );
    let head = curl_head(&["-H", "Host: evil.test", &format!("http://127.0.0.1:{plain}/")]);
    assert!(head.starts_with("http/1.1 421"), "{head}");
    // Followed, the redirect lands on the app over TLS.
    let out = curl_bytes(&[
        "-L",
        "--cacert",
        cert.to_str().unwrap(),
        &format!("http://localhost:{plain}/environ"),
    ]);
    let env: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(env["wsgi.url_scheme"], "https");

    // HSTS on TLS answers: the app's, a static file's, and the app's own replaced (one only).
    for path in ["/environ", "/static/app.js", "/static/nope"] {
        let head = curl_head(&[
            "--cacert",
            cert.to_str().unwrap(),
            &format!("https://localhost:{tls_port}{path}"),
        ]);
        assert_eq!(
            head.matches("strict-transport-security: max-age=63072000; includesubdomains\r\n")
                .count(),
            1,
            "{path}: {head}"
        );
    }
    let head = curl_head(&[
        "--cacert",
        cert.to_str().unwrap(),
        &format!("https://localhost:{tls_port}/sts"),
    ]);
    assert_eq!(head.matches("strict-transport-security").count(), 1, "{head}");
    assert!(!head.contains("max-age=1\r\n"), "{head}");
}

/// nginx with the site's static setup (its `mime.types`, the dotfile `deny`, `alias` with
/// `expires`, the security headers), on `port`, serving `dir` under /static/; stopped by PID
/// when dropped (its prefix directory with it).
struct Nginx {
    child: std::process::Child,
    _prefix: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: signalling the child we started, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn nginx(dir: &Path, port: u16) -> Option<Nginx> {
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())?;
    let prefix = tempfile::tempdir().unwrap();
    let d = prefix.path().display();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; sendfile on; server_tokens off; include /etc/nginx/mime.types;
  default_type application/octet-stream; client_body_temp_path {d}/b; proxy_temp_path {d}/p;
  uwsgi_temp_path {d}/u; fastcgi_temp_path {d}/f; scgi_temp_path {d}/s;
  server {{ listen 127.0.0.1:{port};
    add_header X-Content-Type-Options nosniff always; add_header X-Frame-Options SAMEORIGIN always;
    add_header Referrer-Policy strict-origin-when-cross-origin always;
    add_header Cross-Origin-Opener-Policy same-origin always;
    location ~ /\\.(?!well-known/) {{ deny all; }}
    location /static/ {{ alias {}/; expires 3600s; }} }} }}
",
        dir.display()
    );
    std::fs::write(prefix.path().join("nginx.conf"), conf).unwrap();
    let child = Command::new(bin)
        .arg("-p")
        .arg(prefix.path())
        .args(["-c", "nginx.conf"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let up = common::wait_until(10, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(up, "nginx did not listen");
    Some(Nginx { child, _prefix: prefix })
}

fn raw_at(addr: &str, request: &str) -> common::Response {
    let stream = std::net::TcpStream::connect(addr).expect("connect");
    let mut c = common::Client::from(stream);
    c.send(request.as_bytes());
    c.try_response_to(request.starts_with("HEAD ")).expect("a response")
}

/// The same requests to the embedded server and to nginx with the site's static setup, over
/// the same directory: the same status and the same fields that matter (type, length,
/// validators, cache, ranges, nosniff), the same bytes. Where the two differ by design, it is
/// said: a request under the prefix that nginx would answer otherwise (a `..` it normalises,
/// `Allow` on 405, a multipart answer to several ranges) is not in this list.
#[test]
fn answers_as_the_nginx_site_does() {
    let site = start(&[]);
    let port = free_port();
    let Some(_nginx) = nginx(&site.dir(), port) else {
        eprintln!("skipped: nginx is not installed");
        return;
    };
    let ngx = format!("127.0.0.1:{port}");
    let etag = get(&site.server, "/static/app.js", "")
        .header("etag")
        .unwrap()
        .to_string();
    let lm = get(&site.server, "/static/app.js", "")
        .header("last-modified")
        .unwrap()
        .to_string();
    let requests = [
        "GET /static/css/app.css HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
        "HEAD /static/big.bin HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
        "GET /static/README HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
        "GET /static/%61pp.js?x=1 HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
        format!("GET /static/app.js HTTP/1.1\r\nHost: a\r\nIf-None-Match: {etag}\r\n\r\n"),
        format!("GET /static/app.js HTTP/1.1\r\nHost: a\r\nIf-Modified-Since: {lm}\r\n\r\n"),
        "GET /static/big.bin HTTP/1.1\r\nHost: a\r\nRange: bytes=100-199\r\n\r\n".to_string(),
        "GET /static/big.bin HTTP/1.1\r\nHost: a\r\nRange: bytes=-7\r\n\r\n".to_string(),
        "GET /static/big.bin HTTP/1.1\r\nHost: a\r\nRange: bytes=5000000-\r\n\r\n".to_string(),
        "GET /static/nope.css HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
        "GET /static/.env HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
        "GET /static/css/ HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
        "POST /static/app.js HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n".to_string(),
        "GET /static/in.js HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
    ];
    let fields = [
        "content-type",
        "content-length",
        "etag",
        "last-modified",
        "cache-control",
        "content-range",
        "x-content-type-options",
        "accept-ranges",
    ];
    for req in &requests {
        let ours = raw_at(&site.server.addr, req);
        let theirs = raw_at(&ngx, req);
        let line = req.lines().next().unwrap_or_default();
        assert_eq!(ours.status, theirs.status, "{line}\nours: {ours:?}\nnginx: {theirs:?}");
        if ours.status >= 400 {
            continue; // error bodies and their types differ (nginx's are HTML)
        }
        for f in fields {
            assert_eq!(
                ours.header(f),
                theirs.header(f),
                "{line}: {f}\nours: {ours:?}\nnginx: {theirs:?}"
            );
        }
        assert!(ours.body == theirs.body, "{line}: the bytes differ");
        // Expires: both now + 3600 s (to the second, give or take the clock's tick).
        assert_eq!(
            ours.header("expires").is_some(),
            theirs.header("expires").is_some(),
            "{line}"
        );
    }
}

/// With a pool of Python threads the loop still answers static requests itself, between app
/// requests handed to the pool, on one kept-alive connection.
#[test]
fn static_and_app_requests_alternate_with_a_thread_pool() {
    let site = start(&["--threads", "2"]);
    let mut c = site.server.connect();
    for _ in 0..3 {
        c.send(b"GET /static/app.js HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.response().text(), "console.log(1)\n");
        c.send(b"GET /environ HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.response().json()["PATH_INFO"], "/environ");
    }
    c.send(b"GET /environ HTTP/1.1\r\nHost: a\r\n\r\nGET /static/css/app.css HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert_eq!(c.response().text(), "body { color: red }\n");
}

/// `--security-headers` (the lone embedded target: no front adds them): each of deployctl's
/// security headers the app's answer lacks is added, an app's own is kept alone (never two of a
/// name), and without the flag the app's answers carry only what the app sent.
#[test]
fn security_headers_are_added_to_the_apps_answers_where_it_sent_none() {
    const NAMES: [&str; 4] = [
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
        "cross-origin-opener-policy",
    ];
    let count =
        |r: &common::Response, name: &str| r.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).count();
    let site = start(&["--security-headers"]);
    let r = get(&site.server, "/environ", "");
    assert_eq!(r.status, 200);
    for name in NAMES {
        assert_eq!(count(&r, name), 1, "{name} in {:?}", r.headers);
    }
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("SAMEORIGIN"));
    let framed = get(&site.server, "/framed", "");
    assert_eq!(framed.text(), "framed");
    assert_eq!(count(&framed, "x-frame-options"), 1, "{:?}", framed.headers);
    assert_eq!(framed.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        framed.header("referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );

    let plain = start(&[]);
    let r = get(&plain.server, "/environ", "");
    for name in NAMES {
        assert_eq!(count(&r, name), 0, "{name} without the flag: {:?}", r.headers);
    }
}

fn rename_exchange(a: &Path, b: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = std::ffi::CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: renameat2 with two NUL-terminated paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(r, 0, "renameat2: {}", std::io::Error::last_os_error());
}

/// A deploy that builds `static.new` and puts it in place of the served `static` under a
/// running server — swapped in one `renameat2(RENAME_EXCHANGE)`, or moved aside and renamed
/// over — is served from the next request on (it was served from the directory opened at the
/// start until a HUP): the new file, a file only the new one has, 404 for one only the old had.
#[test]
fn a_directory_renamed_over_the_served_one_is_served_at_once() {
    let site = start(&[]);
    let dir = site.dir();
    assert_eq!(get(&site.server, "/static/app.js", "").text(), "console.log(1)\n");
    // Kept alive across the swap: the same connection sees the new directory too.
    let mut kept = site.server.connect();
    kept.send(b"GET /static/app.js HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(kept.response().text(), "console.log(1)\n");

    let new = site.root.path().join("static.new");
    std::fs::create_dir_all(&new).unwrap();
    std::fs::write(new.join("app.js"), "console.log(2)\n").unwrap();
    std::fs::write(new.join("only-new.js"), "new\n").unwrap();
    rename_exchange(&new, &dir);
    assert_eq!(get(&site.server, "/static/app.js", "").text(), "console.log(2)\n");
    assert_eq!(get(&site.server, "/static/only-new.js", "").status, 200);
    assert_eq!(get(&site.server, "/static/css/app.css", "").status, 404);
    kept.send(b"GET /static/app.js HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(kept.response().text(), "console.log(2)\n");

    // Moved aside, and a third one renamed into its place.
    let third = site.root.path().join("static.3");
    std::fs::create_dir_all(&third).unwrap();
    std::fs::write(third.join("app.js"), "console.log(3)\n").unwrap();
    std::fs::rename(&dir, site.root.path().join("static.old")).unwrap();
    std::fs::rename(&third, &dir).unwrap();
    assert_eq!(get(&site.server, "/static/app.js", "").text(), "console.log(3)\n");
    assert_eq!(get(&site.server, "/static/only-new.js", "").status, 404);
    assert!(!site.server.log().contains("ERROR"), "{}", site.server.log());
}

/// The mount names a symlink (`current -> releases/1`) and a deploy renames a new link over
/// it (`current -> releases/2`): the next request is served from releases/2, and the
/// traversal check follows — an absolute symlink inside releases/2 is served (the checked
/// open compares with where the new directory is), one into releases/1 is refused.
#[test]
fn a_symlink_renamed_over_the_served_one_is_followed_at_once() {
    let root = tempfile::tempdir().unwrap();
    let releases = root.path().join("releases");
    for n in ["1", "2"] {
        std::fs::create_dir_all(releases.join(n)).unwrap();
        std::fs::write(releases.join(n).join("app.js"), format!("v{n}\n")).unwrap();
    }
    std::os::unix::fs::symlink(releases.join("2/app.js"), releases.join("2/abs.js")).unwrap();
    std::os::unix::fs::symlink(releases.join("1/app.js"), releases.join("2/old.js")).unwrap();
    let current = root.path().join("current");
    std::os::unix::fs::symlink(releases.join("1"), &current).unwrap();
    let server = server("apps:app")
        .args(&["--static", &format!("/static/={}", current.display())])
        .start();
    common::the_worker(&server);
    assert_eq!(get(&server, "/static/app.js", "").text(), "v1\n");

    let next = root.path().join("current.next");
    std::os::unix::fs::symlink(releases.join("2"), &next).unwrap();
    std::fs::rename(&next, &current).unwrap();
    assert_eq!(get(&server, "/static/app.js", "").text(), "v2\n");
    let abs = get(&server, "/static/abs.js", "");
    assert_eq!((abs.status, abs.text().as_str()), (200, "v2\n"));
    let old = get(&server, "/static/old.js", "");
    assert_eq!(old.status, 403, "{}", old.text());
    assert!(!old.text().contains("v1"));
}

/// The served directory removed under a running server: its URLs answer 404 at once (not a
/// 500, not a hang), the app is served as before, and a directory made again at the path is
/// served.
#[test]
fn a_removed_static_directory_answers_404_until_it_is_back() {
    let site = start(&[]);
    std::fs::remove_dir_all(site.dir()).unwrap();
    for path in ["/static/app.js", "/static/css/app.css", "/static/"] {
        let started = std::time::Instant::now();
        let r = get(&site.server, path, "");
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{path}");
    }
    assert_eq!(get(&site.server, "/environ", "").status, 200);
    std::fs::create_dir_all(site.dir()).unwrap();
    std::fs::write(site.dir().join("app.js"), "back\n").unwrap();
    assert_eq!(get(&site.server, "/static/app.js", "").text(), "back\n");
}

/// Send `GET path` with `Connection: close` on `c`, read the head and about 256 KiB of the
/// body, run `meanwhile`, then read to the end: (Content-Length, the body read).
fn fetch_around(c: &mut common::Client, path: &str, meanwhile: impl FnOnce()) -> (usize, Vec<u8>) {
    use std::io::Read;
    c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes());
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 65536];
    while got.len() < 256 * 1024 {
        let n = c.stream.read(&mut chunk).expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&chunk[..n]);
    }
    meanwhile();
    c.stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    loop {
        match c.stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    let end = got.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    (length, got.split_off(end))
}

/// A file renamed over while it is being sent — with sendfile over plain HTTP, with pread over
/// TLS — is sent whole as it was when the request came (the open descriptor keeps the old
/// inode): the Content-Length of the old file and exactly its bytes, nothing of the new one;
/// the next request gets the new file. A file truncated in place under the transfer cannot be
/// sent as promised: the connection ends short of its Content-Length (no hang), and the server
/// serves on.
#[test]
fn a_file_replaced_while_it_is_sent_is_sent_whole_as_it_was() {
    let keys = tempfile::tempdir().unwrap();
    let (cert, key) = common::make_pair(keys.path(), "s", 1);
    let site = start(&["--certfile", cert.to_str().unwrap(), "--keyfile", key.to_str().unwrap()]);
    let bridge = common::TlsBridge::start(&site.server, &cert);
    let plain = start(&[]);
    let old: Vec<u8> = (0..32 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    for (what, s, addr) in [
        ("sendfile", &plain, plain.server.addr.clone()),
        ("TLS", &site, bridge.addr.clone()),
    ] {
        let file = s.dir().join("large.bin");
        std::fs::write(&file, &old).unwrap();
        let mut c = common::Client::connect(&addr);
        let (length, body) = fetch_around(&mut c, "/static/large.bin", || {
            let tmp = s.dir().join("large.bin.tmp");
            std::fs::write(&tmp, vec![b'n'; 1024 * 1024]).unwrap();
            std::fs::rename(&tmp, &file).unwrap();
        });
        assert_eq!(length, old.len(), "{what}");
        assert_eq!(body.len(), old.len(), "{what}: bytes sent");
        assert!(body == old, "{what}: other bytes than the old file's");
        let mut c = common::Client::connect(&addr);
        c.send(b"GET /static/large.bin HTTP/1.1\r\nHost: a\r\n\r\n");
        let next = c.response();
        assert_eq!(next.body.len(), 1024 * 1024, "{what}: the new file");

        // Truncated in place (not replaced): the connection ends short, then serves on.
        std::fs::write(&file, &old).unwrap();
        let mut c = common::Client::connect(&addr);
        let (length, body) = fetch_around(&mut c, "/static/large.bin", || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .and_then(|f| f.set_len(1024 * 1024))
                .unwrap();
        });
        assert_eq!(length, old.len(), "{what}");
        assert!(
            body.len() < old.len(),
            "{what}: {} bytes of a truncated file",
            body.len()
        );
        // What the file still has arrived as it is. Past the cut, what sendfile had queued
        // from the page cache may read as zeros (zero-copy: the truncation reaches bytes
        // already handed to the socket): the short body is the client's only signal, and it
        // has it.
        let kept = body.len().min(1024 * 1024);
        assert!(body[..kept] == old[..kept], "{what}: other bytes than the file's");
        let mut c = common::Client::connect(&addr);
        c.send(b"GET /static/app.js HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.response().text(), "console.log(1)\n", "{what}");
    }
}
