//! `--protocol uwsgi`: packets built by hand, and the Flask example behind real nginx with
//! `uwsgi_pass` over a unix socket (page, static file from nginx, JSON, form POST).

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server;

fn packet(vars: &[(&str, &str)]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in vars {
        data.extend_from_slice(&(k.len() as u16).to_le_bytes());
        data.extend_from_slice(k.as_bytes());
        data.extend_from_slice(&(v.len() as u16).to_le_bytes());
        data.extend_from_slice(v.as_bytes());
    }
    let mut out = vec![0];
    out.extend_from_slice(&(data.len() as u16).to_le_bytes());
    out.push(0);
    out.extend_from_slice(&data);
    out
}

fn exchange(sock: &std::path::Path, bytes: &[u8]) -> String {
    let mut u = std::os::unix::net::UnixStream::connect(sock).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    u.write_all(bytes).unwrap();
    let mut out = Vec::new();
    u.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn uwsgi_variables_are_the_environ() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let _s = server("apps:app")
        .args(&["--protocol", "uwsgi", "--bind", &format!("unix:{}", sock.display())])
        .start();
    let mut req = packet(&[
        ("REQUEST_METHOD", "POST"),
        ("REQUEST_URI", "/environ/x%20y?q=1"),
        ("PATH_INFO", "/environ/x y"),
        ("QUERY_STRING", "q=1"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", "example.com"),
        ("SERVER_PORT", "443"),
        ("REMOTE_ADDR", "203.0.113.9"),
        ("HTTPS", "on"),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", "3"),
        ("HTTP_HOST", "example.com"),
    ]);
    req.extend_from_slice(b"abc");
    let out = exchange(&sock, &req);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let body = out.split("\r\n\r\n").nth(1).unwrap();
    let e: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(e["PATH_INFO"], "/environ/x y");
    assert_eq!(e["REMOTE_ADDR"], "203.0.113.9");
    assert_eq!(e["SERVER_NAME"], "example.com");
    assert_eq!(e["wsgi.url_scheme"], "https");
    assert_eq!(e["CONTENT_LENGTH"], "3");
    assert!(e.get("CONTENT_TYPE").is_none(), "empty CONTENT_TYPE is dropped");

    // A malformed packet is refused, and the server keeps serving.
    let mut bad = packet(&[("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/")]);
    bad[0] = 9;
    assert!(exchange(&sock, &bad).starts_with("HTTP/1.1 400"));
    let ok = exchange(
        &sock,
        &packet(&[
            ("REQUEST_METHOD", "GET"),
            ("REQUEST_URI", "/status?code=200"),
            ("QUERY_STRING", "code=200"),
        ]),
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: signalling the nginx we started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(port: u16, req: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

#[test]
fn nginx_uwsgi_pass_serves_the_flask_example() {
    let root = common::repo_root().join("examples/flask-hello");
    let venv = root.join(".venv");
    assert!(venv.join("bin/python3").exists(), "run scripts/setup.sh first");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let s = server("app:app")
        .args(&["--protocol", "uwsgi", "--bind", &format!("unix:{}", sock.display())])
        .args(&["--chdir", root.to_str().unwrap(), "--venv", venv.to_str().unwrap()])
        .start();
    let port = free_port();
    let d = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         uwsgi_temp_path {d}/uwsgi;\n  fastcgi_temp_path {d}/fastcgi;\n  scgi_temp_path {d}/scgi;\n\
         include /etc/nginx/mime.types;\n\
         server {{\n    listen 127.0.0.1:{port};\n    location /static/ {{ alias {static}/; }}\n\
         location / {{ include /etc/nginx/uwsgi_params; uwsgi_pass unix:{sock}; }}\n  }}\n}}\n",
        static = root.join("static").display(),
        sock = sock.display(),
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .args(["-p", dir.path().to_str().unwrap(), "-c", "nginx.conf"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx is not installed: run scripts/setup.sh");
    let _nginx = Nginx(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, head, body) = http(port, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200, "{head}");
    assert!(body.contains("<h1>Hello from flask-hello</h1>"));
    let (status, _, body) = http(
        port,
        "GET /static/style.css HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(!body.is_empty());
    let (status, _, body) = http(
        port,
        "GET /json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["remote_addr"], "127.0.0.1");
    assert_eq!(j["host"], "localhost");
    let name = "x".repeat(100_000);
    let form = format!("name={name}");
    let (status, _, body) = http(
        port,
        &format!(
            "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    assert_eq!(status, 200, "{}", s.log());
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["hello"].as_str().map(str::len), Some(100_000));
    assert_eq!(j["length"], form.len());
}
