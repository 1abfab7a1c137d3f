//! Helpers for the TLS and ACME tests: processes stopped on drop, a real nginx serving a
//! webroot's ACME challenges and HTTPS with a certificate directory's live certificate, the
//! openssl command line, and testssl.sh's grade (also used by the server crate's tests, which
//! include this file with `#[path]`: it depends on std and libc only).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The serial (`serial=…`, as `openssl x509 -serial` prints it) of the certificate served on
/// `addr` (`HOST:PORT`) for `localhost`; empty when no handshake completes within 10 s.
pub fn served_serial_at(addr: &str) -> String {
    let s = Command::new("timeout")
        .args([
            "10",
            "openssl",
            "s_client",
            "-connect",
            addr,
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("openssl s_client");
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl x509");
    use std::io::Write as _;
    let _ = x509.stdin.take().expect("a pipe").write_all(&s.stdout);
    let out = x509.wait_with_output().expect("openssl x509");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// [`served_serial_at`] on a port of 127.0.0.1.
pub fn served_serial(port: u16) -> String {
    served_serial_at(&format!("127.0.0.1:{port}"))
}

/// The serial of the certificate in the PEM file `cert`.
pub fn file_serial(cert: &Path) -> String {
    run(Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(cert))
    .trim()
    .to_string()
}

/// A self-signed P-256 pair for localhost and 127.0.0.1 with the serial `serial`, written at
/// exactly `cert` and `key` (any path a file can have: openssl takes them as arguments).
pub fn pair_at(cert: &Path, key: &Path, serial: u32) {
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .args(["-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-set_serial", &serial.to_string()]));
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A process stopped (and reaped) when dropped: TERM, so that nginx's master stops its
/// workers too (a KILLed master leaves them serving), then KILL after 5 s.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of our own unreaped child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening on {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on {port} within 20 s");
}

/// An nginx configuration: the webroot's challenge directory on `http_port`, and, when `tls`
/// is given, HTTPS on `tls.0` with the live certificate of `tls.1` and the directives
/// `extra_tls`. Returns the file and nginx's prefix directory.
pub fn nginx_conf(
    dir: &Path,
    http_port: u16,
    webroot: &Path,
    tls: Option<(u16, &Path)>,
    extra_tls: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let run_dir = dir.join(format!("nginx-{http_port}"));
    std::fs::create_dir_all(&run_dir).unwrap();
    let https = match tls {
        Some((port, certs)) => format!(
            "server {{ listen 127.0.0.1:{port} ssl; server_name localhost; \
             ssl_certificate {c}/live/fullchain.pem; ssl_certificate_key {c}/live/privkey.pem; \
             {extra_tls} location / {{ return 200 \"served over TLS\\n\"; }} }}",
            c = certs.display()
        ),
        None => String::new(),
    };
    let r = run_dir.display();
    let conf = format!(
        "daemon off; master_process on; worker_processes 1; pid {r}/nginx.pid; error_log {r}/error.log;\n\
         events {{}}\n\
         http {{ access_log off; client_body_temp_path {r}; proxy_temp_path {r}; fastcgi_temp_path {r}; \
         uwsgi_temp_path {r}; scgi_temp_path {r};\n\
         server {{ listen 127.0.0.1:{http_port}; server_name localhost; \
         location /.well-known/acme-challenge/ {{ root {w}; default_type text/plain; }} \
         location / {{ return 404; }} }}\n\
         {https} }}\n",
        w = webroot.display()
    );
    let conf_path = run_dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    (conf_path, run_dir)
}

/// A real nginx running [`nginx_conf`]'s configuration.
pub fn start_nginx(dir: &Path, http_port: u16, webroot: &Path, tls: Option<(u16, &Path)>, extra_tls: &str) -> Proc {
    let (conf_path, run_dir) = nginx_conf(dir, http_port, webroot, tls, extra_tls);
    let mut child = Command::new("nginx")
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(&run_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_port(http_port, &mut child, "nginx");
    if let Some((port, _)) = tls {
        wait_port(port, &mut child, "nginx (TLS)");
    }
    Proc(child)
}

/// testssl.sh, or `None` (the test skips) when it is not installed; a failure with
/// DEPLOYCTL_REQUIRE_VALIDATORS=1.
pub fn testssl() -> Option<std::path::PathBuf> {
    let found = ["/usr/bin/testssl", "/usr/bin/testssl.sh"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("DEPLOYCTL_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1") {
            panic!("testssl is missing (DEPLOYCTL_REQUIRE_VALIDATORS=1): run scripts/setup.sh");
        }
        eprintln!("skipped: testssl is missing; run scripts/setup.sh (apt package testssl.sh)");
    }
    found
}

/// One testssl finding: (id, severity, finding).
pub type Finding = (String, String, String);

/// testssl.sh's findings for `localhost:PORT` (a name, not the address: a front may refuse a
/// handshake without a name it serves), with the checks `checks` (`-p`, `-h`, …), its JSON
/// report written to `json`.
pub fn testssl_report(bin: &Path, port: u16, json: &Path, checks: &[&str]) -> Vec<Finding> {
    let out = Command::new(bin)
        .args(["--quiet", "--color", "0", "--warnings", "off"])
        .args(checks)
        .arg("--jsonfile")
        .arg(json)
        .arg(format!("localhost:{port}"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let report = std::fs::read_to_string(json).unwrap_or_else(|e| {
        panic!(
            "testssl wrote no report ({e}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let findings: Vec<serde_json::Value> =
        serde_json::from_str(&report).unwrap_or_else(|e| panic!("testssl's report: {e}: {report}"));
    findings
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (s("id"), s("severity"), s("finding"))
        })
        .collect()
}

/// The finding of `id`; a failure naming every finding when testssl said nothing of it.
pub fn finding(findings: &[Finding], id: &str) -> String {
    findings
        .iter()
        .find(|(i, _, _)| i == id)
        .map(|(_, _, f)| f.clone())
        .unwrap_or_else(|| panic!("testssl said nothing of {id}: {findings:?}"))
}

/// The grade every TLS front must get for `profile`: SSL 2/3 and TLS 1.0/1.1 not offered, TLS
/// 1.2 offered on intermediate only, TLS 1.3 offered, nothing graded above LOW (findings for
/// which `excused` holds aside: a self-signed test certificate's, when `-S` judged it).
pub fn assert_graded(findings: &[Finding], profile: &str, excused: impl Fn(&str) -> bool) {
    let offered = |id: &str| finding(findings, id).starts_with("offered");
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert!(!offered(old), "{profile}: {old} offered");
    }
    assert_eq!(offered("TLS1_2"), profile == "intermediate", "{profile}: TLS 1.2");
    assert!(offered("TLS1_3"), "{profile}: TLS 1.3");
    let bad: Vec<_> = findings
        .iter()
        .filter(|(_, sev, _)| matches!(sev.as_str(), "MEDIUM" | "HIGH" | "CRITICAL"))
        .filter(|(id, _, _)| !excused(id))
        .collect();
    assert!(bad.is_empty(), "{profile}: {bad:?}");
}
