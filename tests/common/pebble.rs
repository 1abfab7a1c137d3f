//! Debian's `pebble` (Let's Encrypt's ACME test server) on loopback for the ACME tests: its
//! own HTTPS certificate from a CA the test makes with openssl, HTTP-01 validated on the port
//! the test's front listens on, and the root it issues under.
//!
//! Without pebble the tests are skipped with a message, and fail when
//! DEPLOYCTL_REQUIRE_VALIDATORS=1 (as in CI).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::tls::{Proc, run, wait_port};
use super::up::free_port;

pub fn pebble() -> Option<PathBuf> {
    let found = ["/usr/bin/pebble", "/usr/local/bin/pebble"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("DEPLOYCTL_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1") {
            panic!("pebble is missing (DEPLOYCTL_REQUIRE_VALIDATORS=1): run scripts/setup.sh (apt package pebble)");
        }
        eprintln!("skipped: pebble is missing; run scripts/setup.sh (apt package pebble)");
    }
    found
}

/// A CA of the test's own and a certificate for Pebble's HTTPS listener, made with openssl.
pub fn pebble_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join("ca.key");
    let ca = dir.join("ca.pem");
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
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca)
        .args(["-days", "2", "-subj", "/CN=deployctl test CA"]));
    let key = dir.join("pebble.key");
    let csr = dir.join("pebble.csr");
    run(Command::new("openssl")
        .args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .args(["-subj", "/CN=localhost"]));
    let ext = dir.join("san.ext");
    std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    let cert = dir.join("pebble.pem");
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2"])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-CAcreateserial")
        .arg("-out")
        .arg(&cert)
        .arg("-extfile")
        .arg(&ext));
    (ca, cert, key)
}

pub struct Pebble {
    _proc: Proc,
    pub directory: String,
    pub management: u16,
    /// The test CA that signed Pebble's own HTTPS certificate.
    pub ca: PathBuf,
}

/// Pebble on loopback, validating HTTP-01 on `http_port`.
pub fn start_pebble(bin: &Path, dir: &Path, http_port: u16) -> Pebble {
    start_pebble_on(bin, dir, http_port, free_port())
}

/// Pebble on loopback port `acme_port`, validating HTTP-01 on `http_port`.
pub fn start_pebble_on(bin: &Path, dir: &Path, http_port: u16, acme_port: u16) -> Pebble {
    let (ca, cert, key) = pebble_tls(dir);
    let management = free_port();
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }
    });
    let config_path = dir.join("pebble-config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
    let mut child = Command::new(bin)
        .arg("-config")
        .arg(&config_path)
        // No random sleeps before validating; no random nonce rejections; every order
        // validated afresh (Pebble reuses a valid authorization half of the time by default,
        // which would let an order for a name it saw before pass without the front).
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_port(acme_port, &mut child, "pebble");
    wait_port(management, &mut child, "pebble's management interface");
    Pebble {
        _proc: Proc(child),
        directory: format!("https://127.0.0.1:{acme_port}/dir"),
        management,
        ca,
    }
}

impl Pebble {
    /// The root Pebble made for this run (it signs every certificate it issues).
    pub fn root(&self, dir: &Path) -> PathBuf {
        let pem = run(Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&self.ca)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management)));
        assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");
        let path = dir.join("pebble-root.pem");
        std::fs::write(&path, pem).unwrap();
        path
    }
}
