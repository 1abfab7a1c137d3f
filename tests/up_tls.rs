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
use common::tls::{assert_graded, finding, run, served_serial, testssl, testssl_report};
use common::up::{DownOnDrop, curl_https, example_copy, free_port, get, up_tls, wait_for};

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

/// `up --detach` of nginx+embedded on (HTTP, HTTPS) ports; the run.
fn up(p: &Path, http: u16, https: u16) -> common::Run {
    up_tls(p, "nginx+embedded", http, https)
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

    let (head, body) = curl_https(https, "/", None, &[]).expect("HTTPS answers");
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
    let (head, _) = curl_https(https, "/", None, &[]).expect("HTTPS answers after the reload");
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
    let (head, _) = curl_https(https, "/", Some(&good_cert), &[]).expect("served with the user's pair");
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
    let (head, _) = curl_https(https, "/", Some(&good_cert), &[]).expect("still served");
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
    let served = wait_for(10, || curl_https(https, "/", Some(&root), &[]).is_ok());
    assert!(served, "{:?}\n{}", curl_https(https, "/", Some(&root), &[]), log(p));
    let (head, body) = curl_https(https, "/", Some(&root), &[]).unwrap();
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
    let (head, _) = curl_https(https, "/", None, &[]).expect("HTTPS on the placeholder");
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    let cert = p.join(".deployctl/nginx+embedded/tls/live/fullchain.pem");
    assert!(run_openssl_text(&cert).contains("self-signed by deployctl"));
    Cli::new(p).args(["down"]).run().success();
}

#[test]
fn testssl_grades_the_front_up_runs_for_each_profile() {
    let Some(bin) = testssl() else { return };
    for profile in ["intermediate", "modern"] {
        let project = project(&format!("profile = \"{profile}\"\n"));
        let p = project.path();
        let _down = DownOnDrop(p.to_path_buf());
        let https = free_port();
        let run = up(p, free_port(), https);
        assert_eq!(run.code, 0, "{}\n{}", run.stderr, log(p));
        let json = p.join(format!("testssl-{https}.json"));
        let findings = testssl_report(&bin, https, &json, &["-p", "-h", "-s", "-f", "-P"]);
        // Nothing graded above LOW (the self-signed certificate is not judged: no -S).
        assert_graded(&findings, profile, |_| false);
        let hsts = finding(&findings, "HSTS_time");
        assert!(hsts.contains("=63072000 seconds"), "{hsts}");
        // No version in the Server header.
        assert_eq!(finding(&findings, "banner_server"), "nginx");
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
        let run = up_tls(p, target, free_port(), https);
        assert_eq!(run.code, 0, "{target}: {}", run.stderr);
        let (head, body) = curl_https(https, "/json", None, &[]).expect("HTTPS answers");
        assert!(head.starts_with("HTTP/2 200"), "{target}: {head}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{target}: {e}: {body}"));
        assert_eq!(json["scheme"], "https", "{target}: {json}");
        assert_eq!(json["host"], format!("localhost:{https}"), "{target}: {json}");
        Cli::new(p).args(["down", "--target", target]).run().success();
    }
}

/// The user's files replaced under a running stack by an expired pair: the reload (SIGHUP to
/// `up`'s supervisor, through `deployctl reload`) is refused with an error naming the
/// certificate, and nginx keeps serving the old certificate (its serial, seen by s_client).
#[test]
fn an_expired_certificate_put_in_place_under_a_running_stack_is_refused_on_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let with_serial = |serial: u64, from: i64, to: i64| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from);
        params.not_after = now + time::Duration::days(to);
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (good_cert, good_key) = with_serial(0x11, -1, 90);
    let (old_cert, old_key) = with_serial(0x22, -100, -10);
    let (cert, key) = (tmp.path().join("fullchain.pem"), tmp.path().join("privkey.pem"));
    std::fs::write(&cert, &good_cert).unwrap();
    std::fs::write(&key, &good_key).unwrap();
    let project = project(&format!(
        "certificate = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    ));
    let p = project.path();
    let _down = DownOnDrop(p.to_path_buf());
    let https = free_port();
    let run = up(p, free_port(), https);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, log(p));
    assert_eq!(served_serial(https), "serial=11");

    // The same paths now hold an expired pair (the key its own: only the date is wrong).
    std::fs::write(&cert, &old_cert).unwrap();
    std::fs::write(&key, &old_key).unwrap();
    let reload = Cli::new(p).args(["reload"]).run();
    assert_ne!(reload.code, 0, "the reload went through: {}", reload.stderr);
    let err = format!("{}{}", reload.stderr, log(p));
    assert!(
        err.contains(&format!("{}: the certificate expired on", cert.display())),
        "{err}"
    );
    // The running stack serves on, with the certificate it started with.
    assert_eq!(served_serial(https), "serial=11");
    let (head, _) = curl_https(https, "/", None, &[]).expect("still served");
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    Cli::new(p).args(["down"]).run().success();
}

/// A key in SEC1 form (`BEGIN EC PRIVATE KEY`, what `openssl ecparam -genkey` and older tools
/// write) that is not the certificate's: nothing starts, the error names the key file.
#[test]
fn a_mismatched_sec1_key_is_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, _) = pair(tmp.path(), "good", -1, 90);
    let (_, other_key) = pair(tmp.path(), "other", -1, 90);
    let sec1 = tmp.path().join("other.sec1.key");
    run(Command::new("openssl")
        .args(["ec", "-in"])
        .arg(&other_key)
        .arg("-out")
        .arg(&sec1));
    assert!(std::fs::read_to_string(&sec1).unwrap().contains("BEGIN EC PRIVATE KEY"));
    let project = project(&format!(
        "certificate = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        sec1.display().to_string()
    ));
    let p = project.path();
    let _down = DownOnDrop(p.to_path_buf());
    let run = up(p, free_port(), free_port());
    assert_eq!(run.code, 1, "{}", run.stderr);
    let err = format!("{}{}", run.stderr, log(p));
    assert!(
        err.contains(&format!("{}: the key does not match the certificate", sec1.display())),
        "{err}"
    );
    assert!(
        Cli::new(p).args(["status"]).run().stdout.is_empty(),
        "something was left running"
    );
}
