//! ACME against a real ACME server: Debian's `pebble` (Let's Encrypt's test server), on
//! loopback, with the HTTP-01 answers served by a real nginx from the webroot `deployctl::acme`
//! writes into. What was issued is checked with the real tools: `openssl verify` against the
//! root Pebble generated for this run (fetched from its management interface with `curl`),
//! `openssl pkey` for the key type, and nginx serving HTTPS with it, asked by `curl` trusting
//! only that root. As `up` will: the front starts on a self-signed placeholder, answers the
//! challenge, and takes the issued certificate with a graceful reload (HUP).
//!
//! Without pebble the tests are skipped with a message, and fail when
//! DEPLOYCTL_REQUIRE_VALIDATORS=1 (as in CI).

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::pebble::{pebble, start_pebble};
use common::tls::{run, start_nginx};
use common::up::free_port;
use deployctl::acme::{self, Renewal, Request};
use deployctl::orchestrate::tls::check_pair;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn serial(cert: &Path) -> String {
    run(Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(cert))
}

#[test]
fn a_certificate_from_pebble_is_issued_verified_served_renewed_and_failures_leave_it_in_place() {
    let Some(bin) = pebble() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // nginx's workers may run as another user: they read the webroot.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let webroot = dir.join("webroot");
    std::fs::create_dir_all(&webroot).unwrap();
    let certs = dir.join("tls");
    let http_port = free_port();
    let pebble = start_pebble(&bin, dir, http_port);
    let names = vec!["localhost".to_string()];
    let request = Request {
        directory: &pebble.directory,
        email: Some("ops@example.com"),
        ca: Some(&pebble.ca),
        names: &names,
        webroot: &webroot,
        dir: &certs,
        timeout: Duration::from_secs(30),
    };

    // Nothing yet.
    assert_eq!(
        acme::renewal(&certs, &names, Duration::from_secs(30 * 86_400), SystemTime::now()).unwrap(),
        Renewal::Missing
    );

    // The front starts on a self-signed placeholder (it needs a certificate to start HTTPS,
    // and HTTP to answer the challenge), as `up` will.
    let placeholder = acme::install_self_signed(&certs, &names, 30).unwrap();
    assert_eq!(
        acme::renewal(&certs, &names, Duration::from_secs(30 * 86_400), SystemTime::now()).unwrap(),
        Renewal::SelfSigned
    );
    let tls_port = free_port();
    let front = start_nginx(dir, http_port, &webroot, Some((tls_port, &certs)), "");
    let https = |ca: &Path| {
        Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(ca)
            .arg("--resolve")
            .arg(format!("localhost:{tls_port}:127.0.0.1"))
            .arg(format!("https://localhost:{tls_port}/"))
            .output()
            .unwrap()
    };
    assert_eq!(
        String::from_utf8_lossy(&https(&placeholder.fullchain).stdout),
        "served over TLS\n"
    );

    // Issued: the chain verifies against Pebble's root, the key is P-256, the secrets are 0600.
    let first = acme::obtain(&request, &check_pair).unwrap_or_else(|e| {
        panic!(
            "{e:#}\npebble:\n{}",
            std::fs::read_to_string(dir.join("pebble.log")).unwrap_or_default()
        )
    });
    assert_eq!(first.names, names);
    let root = pebble.root(dir);
    let verified = run(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&root)
        .arg("-untrusted")
        .arg(&first.fullchain)
        .arg(&first.fullchain));
    assert!(verified.trim_end().ends_with(": OK"), "{verified}");
    let key_text = run(Command::new("openssl")
        .args(["pkey", "-noout", "-text", "-in"])
        .arg(&first.key));
    assert!(key_text.contains("prime256v1"), "not a P-256 key:\n{key_text}");
    assert_eq!(mode(&first.key), 0o600);
    assert_eq!(mode(&certs.join(acme::ACCOUNT)), 0o600);
    assert_eq!(mode(&certs), 0o700);
    let answers: Vec<_> = std::fs::read_dir(webroot.join(acme::CHALLENGE_DIR)).unwrap().collect();
    assert!(answers.is_empty(), "challenge answers left in the webroot: {answers:?}");

    // Not due: Pebble's certificates are valid far beyond the 30-day margin.
    let due = acme::renewal(&certs, &names, Duration::from_secs(30 * 86_400), SystemTime::now()).unwrap();
    assert!(
        matches!(due, Renewal::NotYet { days_left } if days_left > 30),
        "{due:?}"
    );
    // A name it does not cover, or a date past its end, makes it due.
    let more = vec!["localhost".to_string(), "www.localhost".to_string()];
    assert_eq!(
        acme::renewal(&certs, &more, Duration::from_secs(30 * 86_400), SystemTime::now()).unwrap(),
        Renewal::Names {
            missing: vec!["www.localhost".into()]
        }
    );
    let later = first.not_after + Duration::from_secs(86_400);
    assert!(matches!(
        acme::renewal(&certs, &names, Duration::from_secs(30 * 86_400), later).unwrap(),
        Renewal::Expiring { days_left } if days_left < 0
    ));

    // Swapped in by a graceful reload (HUP to nginx's master): curl trusting only Pebble's
    // root now gets through.
    // SAFETY: kill(2) on the PID of our own child.
    unsafe { libc::kill(front.0.id() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = https(&root);
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "served over TLS\n",
        "curl: {}\nnginx: {}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join(format!("nginx-{http_port}/error.log"))).unwrap_or_default()
    );

    // A forced renewal: a new certificate and key in their own generation, `live` switched,
    // the account reused (its file unchanged).
    let account_before = std::fs::read(certs.join(acme::ACCOUNT)).unwrap();
    let before = serial(&first.fullchain);
    let second = acme::obtain(&request, &check_pair).unwrap();
    assert_ne!(
        serial(&second.fullchain),
        before,
        "the renewal gave the same certificate"
    );
    assert_eq!(std::fs::read_link(certs.join(acme::LIVE)).unwrap(), Path::new("cert-3"));
    assert_eq!(std::fs::read(certs.join(acme::ACCOUNT)).unwrap(), account_before);
    // The previous generation is kept (a rollback by hand), older ones go.
    assert!(certs.join("cert-2").is_dir() && !certs.join("cert-1").exists());
    let live_serial = serial(&certs.join("live/fullchain.pem"));

    // Failures leave the live certificate as it was, and say where they failed.
    // The ACME server cannot be reached: the error names its URL.
    let nowhere = format!("https://127.0.0.1:{}/dir", free_port());
    let err = acme::obtain(
        &Request {
            directory: &nowhere,
            ..request.clone()
        },
        &check_pair,
    )
    .unwrap_err();
    let text = format!("{err:#}");
    eprintln!("error (expected): {text}");
    assert!(text.contains(&nowhere), "{text}");
    assert_eq!(serial(&certs.join("live/fullchain.pem")), live_serial);

    // The server's certificate is not trusted (the system's roots instead of the test CA).
    let err = acme::obtain(
        &Request {
            ca: None,
            ..request.clone()
        },
        &check_pair,
    )
    .unwrap_err();
    let text = format!("{err:#}");
    eprintln!("error (expected): {text}");
    assert!(text.contains(&pebble.directory), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");

    // The front does not serve the challenge (stopped): the error names the name and the
    // path the server fetched, and no answer is left behind.
    drop(front);
    let err = acme::obtain(&request, &check_pair).unwrap_err();
    let text = format!("{err:#}");
    eprintln!("error (expected): {text}");
    assert!(text.contains("did not validate localhost"), "{text}");
    assert!(text.contains(acme::CHALLENGE_DIR), "{text}");
    assert_eq!(serial(&certs.join("live/fullchain.pem")), live_serial);
    let answers: Vec<_> = std::fs::read_dir(webroot.join(acme::CHALLENGE_DIR)).unwrap().collect();
    assert!(answers.is_empty(), "challenge answers left in the webroot: {answers:?}");
}

#[test]
fn a_server_that_never_answers_is_given_up_on_naming_its_url() {
    // Connections are accepted by the kernel (the backlog) and never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let directory = format!("https://127.0.0.1:{}/dir", silent.local_addr().unwrap().port());
    let tmp = tempfile::tempdir().unwrap();
    let names = vec!["localhost".to_string()];
    let started = std::time::Instant::now();
    let err = acme::obtain(
        &Request {
            directory: &directory,
            email: None,
            ca: None,
            names: &names,
            webroot: &tmp.path().join("webroot"),
            dir: &tmp.path().join("tls"),
            timeout: Duration::from_secs(1),
        },
        &check_pair,
    )
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains(&directory) && text.contains("no answer"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(acme::live(&tmp.path().join("tls")).unwrap().is_none());
}
