//! `deployctl up` with `[tls]`, run for real: nginx in front of the embedded server, HTTPS
//! asked with curl. Without certificates, a self-signed pair; with the user's files, a key that
//! is not the certificate's or an expired certificate refused before anything starts (and on a
//! reload, the running stack left serving); with ACME, the front starts on a placeholder, `up`
//! obtains a certificate from Debian's pebble through the front's HTTP listener and nginx is
//! reloaded onto it — curl trusting only Pebble's root gets the page. An unreachable ACME
//! directory leaves the stack serving on the placeholder, with a warning naming the URL.

mod common;

use std::path::Path;
use std::process::Command;

use common::Cli;
use common::pebble::{pebble, start_pebble};
use common::tls::run;
use common::up::{DownOnDrop, example_copy, free_port, get, wait_for};

/// The example with `names = ["localhost"]` and `[tls]` holding `tls`.
fn project(tls: &str) -> tempfile::TempDir {
    let dir = example_copy();
    let path = dir.path().join("deploy.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "names = [\"localhost\", \"flask-hello.test\"]",
        "names = [\"localhost\"]",
    );
    std::fs::write(&path, format!("{text}\n[tls]\n{tls}")).unwrap();
    dir
}

/// `up --detach` on (HTTP, HTTPS) ports; the run.
fn up(p: &Path, http: u16, https: u16) -> common::Run {
    Cli::new(p)
        .args([
            "up",
            "--target",
            "nginx+embedded",
            "--listen",
            &format!("127.0.0.1:{http}"),
            "--tls-listen",
            &format!("127.0.0.1:{https}"),
            "--detach",
        ])
        .run()
}

/// curl over HTTPS to `localhost:PORT` (resolved to loopback), trusting `ca` (or nothing
/// checked with `None`): (status line and headers, body), or curl's error.
fn curl_https(port: u16, path: &str, ca: Option<&Path>) -> Result<(String, String), String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--http2", "-D", "-"]);
    match ca {
        Some(ca) => {
            cmd.arg("--cacert").arg(ca);
        }
        None => {
            cmd.arg("-k");
        }
    }
    let out = cmd
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((head.to_string(), body.to_string()))
}

fn log(p: &Path) -> String {
    std::fs::read_to_string(p.join(".deployctl/nginx+embedded/up.log")).unwrap_or_default()
}

#[test]
fn without_certificates_up_serves_https_with_a_self_signed_pair_and_http_redirects() {
    let project = project("");
    let p = project.path();
    let _down = DownOnDrop(p.to_path_buf());
    let (http, https) = (free_port(), free_port());
    let run = up(p, http, https);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, log(p));
    assert_eq!(run.stdout.trim(), format!("https://localhost:{https}/"));
    // `status` asks the printed URL over HTTPS.
    let status = Cli::new(p).args(["status"]).run();
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    assert!(status.stdout.contains("health GET / → 200"), "{}", status.stdout);
    assert!(log(p).contains("self-signed certificate for localhost"), "{}", log(p));

    let (head, body) = curl_https(https, "/", None).expect("HTTPS answers");
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    assert!(body.contains("Hello"), "{body}");
    assert!(
        head.contains("strict-transport-security: max-age=63072000; includeSubDomains"),
        "{head}"
    );
    // The pair is the run directory's, self-signed for localhost and the printed address.
    let cert = p.join(".deployctl/nginx+embedded/tls/live/fullchain.pem");
    let text = run_openssl_text(&cert);
    assert!(
        text.contains("DNS:localhost") && text.contains("IP Address:127.0.0.1"),
        "{text}"
    );

    // HTTP: everything goes to HTTPS, but ACME's challenge path is served from the webroot.
    let r = get(http, "localhost", "/some/page?x=1", &[]);
    assert_eq!(r.status, 301);
    assert_eq!(r.one("location"), format!("https://localhost:{https}/some/page?x=1"));
    let webroot = p.join(".deployctl/nginx+embedded/acme/.well-known/acme-challenge");
    std::fs::create_dir_all(&webroot).unwrap();
    std::fs::write(webroot.join("token-1"), "answer-1").unwrap();
    let r = get(http, "localhost", "/.well-known/acme-challenge/token-1", &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"answer-1"[..]));

    // A reload keeps the pair (still valid) and is health-checked over HTTPS.
    let serial = run_openssl_text(&cert);
    Cli::new(p).args(["reload"]).run().success();
    assert_eq!(run_openssl_text(&cert), serial);
    let (head, _) = curl_https(https, "/", None).expect("HTTPS answers after the reload");
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    Cli::new(p).args(["down"]).run().success();
}

fn run_openssl_text(cert: &Path) -> String {
    run(Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(cert))
}

/// A self-signed certificate for localhost and its P-256 key (rcgen), valid from `from` to
/// `to` days from now (negative: in the past), into `dir` as NAME.pem and NAME.key.
fn pair(dir: &Path, name: &str, from: i64, to: i64) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from);
    params.not_after = now + time::Duration::days(to);
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

#[test]
fn the_users_files_are_checked_before_anything_starts_and_on_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let (good_cert, good_key) = pair(tmp.path(), "good", -1, 90);
    let (_, other_key) = pair(tmp.path(), "other", -1, 90);
    let (old_cert, old_key) = pair(tmp.path(), "old", -100, -10);
    let files = |c: &Path, k: &Path| {
        format!(
            "certificate = {:?}\nkey = {:?}\n",
            c.display().to_string(),
            k.display().to_string()
        )
    };

    // A key that is not the certificate's: nothing starts, the error names the key.
    let project1 = project(&files(&good_cert, &other_key));
    let p = project1.path();
    let _down = DownOnDrop(p.to_path_buf());
    let run = up(p, free_port(), free_port());
    assert_eq!(run.code, 1, "{}", run.stderr);
    let err = format!("{}{}", run.stderr, log(p));
    assert!(
        err.contains(&format!(
            "{}: the key does not match the certificate",
            other_key.display()
        )),
        "{err}"
    );
    assert!(
        Cli::new(p).args(["status"]).run().stdout.is_empty(),
        "something was left running"
    );

    // An expired certificate: the error names it.
    let project2 = project(&files(&old_cert, &old_key));
    let p2 = project2.path();
    let _down2 = DownOnDrop(p2.to_path_buf());
    let run = up(p2, free_port(), free_port());
    assert_eq!(run.code, 1);
    let err = format!("{}{}", run.stderr, log(p2));
    assert!(
        err.contains(&format!("{}: the certificate expired on", old_cert.display())),
        "{err}"
    );

    // The good pair serves; a reload onto a mismatched key fails and the stack keeps serving.
    std::fs::write(
        p.join("deploy.toml"),
        std::fs::read_to_string(p.join("deploy.toml"))
            .unwrap()
            .replace(&other_key.display().to_string(), &good_key.display().to_string()),
    )
    .unwrap();
    let https = free_port();
    let run = up(p, free_port(), https);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, log(p));
    let (head, _) = curl_https(https, "/", Some(&good_cert)).expect("served with the user's pair");
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    std::fs::write(
        p.join("deploy.toml"),
        std::fs::read_to_string(p.join("deploy.toml"))
            .unwrap()
            .replace(&good_key.display().to_string(), &other_key.display().to_string()),
    )
    .unwrap();
    let reload = Cli::new(p).args(["reload"]).run();
    assert_ne!(reload.code, 0, "the reload was refused: {}", reload.stderr);
    assert!(
        format!("{}{}", reload.stderr, log(p)).contains("the key does not match the certificate"),
        "{}\n{}",
        reload.stderr,
        log(p)
    );
    let (head, _) = curl_https(https, "/", Some(&good_cert)).expect("still served");
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    Cli::new(p).args(["down"]).run().success();
}

#[test]
fn with_acme_up_obtains_a_certificate_from_pebble_and_reloads_nginx_onto_it() {
    let Some(bin) = pebble() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let http = free_port();
    let pebble = start_pebble(&bin, tmp.path(), http);
    let project = project(&format!(
        "acme = {{ email = \"ops@example.com\", directory = {:?}, ca = {:?} }}\n",
        pebble.directory,
        pebble.ca.display().to_string()
    ));
    let p = project.path();
    let _down = DownOnDrop(p.to_path_buf());
    let https = free_port();
    let run = up(p, http, https);
    assert_eq!(
        run.code,
        0,
        "{}\n{}\npebble:\n{}",
        run.stderr,
        log(p),
        std::fs::read_to_string(tmp.path().join("pebble.log")).unwrap_or_default()
    );
    assert!(
        log(p).contains("issued for localhost, nginx reloaded onto it"),
        "{}",
        log(p)
    );
    let root = pebble.root(tmp.path());
    let served = wait_for(10, || curl_https(https, "/", Some(&root)).is_ok());
    assert!(served, "{:?}\n{}", curl_https(https, "/", Some(&root)), log(p));
    let (head, body) = curl_https(https, "/", Some(&root)).unwrap();
    assert!(
        head.starts_with("HTTP/2 200") && body.contains("Hello"),
        "{head}\n{body}"
    );
    // The challenge path stays on HTTP; the rest is redirected.
    assert_eq!(get(http, "localhost", "/", &[]).status, 301);
    assert_eq!(
        get(http, "localhost", "/.well-known/acme-challenge/none", &[]).status,
        404
    );
    Cli::new(p).args(["down"]).run().success();
}

#[test]
fn an_unreachable_acme_directory_leaves_the_stack_serving_on_the_placeholder() {
    let nowhere = format!("https://127.0.0.1:{}/dir", free_port());
    let project = project(&format!("acme = {{ directory = {nowhere:?} }}\n"));
    let p = project.path();
    let _down = DownOnDrop(p.to_path_buf());
    let https = free_port();
    let run = up(p, free_port(), https);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, log(p));
    let text = log(p);
    assert!(text.contains("cannot obtain a certificate"), "{text}");
    assert!(text.contains(&nowhere), "{text}");
    let (head, _) = curl_https(https, "/", None).expect("HTTPS on the placeholder");
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    let cert = p.join(".deployctl/nginx+embedded/tls/live/fullchain.pem");
    assert!(run_openssl_text(&cert).contains("self-signed by deployctl"));
    Cli::new(p).args(["down"]).run().success();
}

/// testssl's findings: (id, severity, finding).
fn testssl_report(bin: &Path, port: u16, dir: &Path) -> Vec<(String, String, String)> {
    let json = dir.join(format!("testssl-{port}.json"));
    // localhost, not the address: the front refuses a handshake without a name it serves.
    let out = Command::new(bin)
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "-p",
            "-h",
            "-s",
            "-f",
            "-P",
        ])
        .arg("--jsonfile")
        .arg(&json)
        .arg(format!("localhost:{port}"))
        .output()
        .unwrap();
    let report = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "testssl wrote no report ({e}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let findings: Vec<serde_json::Value> = serde_json::from_str(&report).unwrap();
    findings
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (s("id"), s("severity"), s("finding"))
        })
        .collect()
}

fn testssl() -> Option<std::path::PathBuf> {
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

#[test]
fn testssl_grades_the_front_up_runs_for_each_profile() {
    let Some(bin) = testssl() else { return };
    for (profile, tls12) in [("intermediate", true), ("modern", false)] {
        let project = project(&format!("profile = \"{profile}\"\n"));
        let p = project.path();
        let _down = DownOnDrop(p.to_path_buf());
        let https = free_port();
        let run = up(p, free_port(), https);
        assert_eq!(run.code, 0, "{}\n{}", run.stderr, log(p));
        let findings = testssl_report(&bin, https, p);
        let finding = |id: &str| {
            findings
                .iter()
                .find(|(i, _, _)| i == id)
                .map(|(_, _, f)| f.clone())
                .unwrap_or_else(|| panic!("testssl said nothing of {id}: {findings:?}"))
        };
        let offered = |id: &str| finding(id).starts_with("offered");
        for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
            assert!(!offered(old), "{profile}: {old} offered");
        }
        assert_eq!(offered("TLS1_2"), tls12, "{profile}: TLS 1.2");
        assert!(offered("TLS1_3"), "{profile}: TLS 1.3");
        assert!(
            finding("HSTS_time").contains("=63072000 seconds"),
            "{}",
            finding("HSTS_time")
        );
        // No version in the Server header.
        assert_eq!(finding("banner_server"), "nginx");
        // Nothing graded above LOW (the self-signed certificate is not judged: no -S).
        let bad: Vec<_> = findings
            .iter()
            .filter(|(_, sev, _)| matches!(sev.as_str(), "MEDIUM" | "HIGH" | "CRITICAL"))
            .collect();
        assert!(bad.is_empty(), "{profile}: {bad:?}");
        Cli::new(p).args(["down"]).run().success();
    }
}

#[test]
fn every_backend_behind_the_tls_front_sees_https_and_the_clients_host() {
    let project = project("");
    let p = project.path();
    let _down = DownOnDrop(p.to_path_buf());
    for target in ["nginx+embedded", "nginx+gunicorn", "nginx+uwsgi"] {
        let https = free_port();
        let run = Cli::new(p)
            .args([
                "up",
                "--target",
                target,
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
                "--tls-listen",
                &format!("127.0.0.1:{https}"),
                "--detach",
            ])
            .run();
        assert_eq!(run.code, 0, "{target}: {}", run.stderr);
        let (head, body) = curl_https(https, "/json", None).expect("HTTPS answers");
        assert!(head.starts_with("HTTP/2 200"), "{target}: {head}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{target}: {e}: {body}"));
        assert_eq!(json["scheme"], "https", "{target}: {json}");
        assert_eq!(json["host"], format!("localhost:{https}"), "{target}: {json}");
        Cli::new(p).args(["down", "--target", target]).run().success();
    }
}
