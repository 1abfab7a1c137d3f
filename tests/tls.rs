//! Mozilla's TLS profiles as a real nginx serves them, probed with the real clients:
//! `openssl s_client` per protocol, cipher and group, and `testssl` (Debian's testssl.sh) for
//! the protocols offered. The certificate is `deployctl::acme`'s self-signed placeholder.
//!
//! Without testssl the tests are skipped with a message, and fail when
//! DEPLOYCTL_REQUIRE_VALIDATORS=1 (as in CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::tls::{nginx_conf, run, start_nginx};
use common::up::free_port;
use deployctl::acme::{self, Renewal};
use deployctl::tls::{self, OpensslVersion, Profile, Settings};

fn testssl() -> Option<PathBuf> {
    let found = ["/usr/bin/testssl", "/usr/bin/testssl.sh"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("DEPLOYCTL_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1") {
            panic!(
                "testssl is missing (DEPLOYCTL_REQUIRE_VALIDATORS=1): run scripts/setup.sh (apt package testssl.sh)"
            );
        }
        eprintln!("skipped: testssl is missing; run scripts/setup.sh (apt package testssl.sh)");
    }
    found
}

/// The OpenSSL the installed nginx runs with.
fn nginx_openssl() -> OpensslVersion {
    let out = Command::new("nginx").arg("-V").output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    OpensslVersion::of_nginx(&text).unwrap_or_else(|| panic!("no OpenSSL version in nginx -V:\n{text}"))
}

/// The directives a front would render for `s` (the templates' job later; here the test's).
fn nginx_directives(s: &Settings) -> String {
    let mut d = format!(
        "ssl_protocols {}; ssl_ecdh_curve {}; ssl_conf_command Ciphersuites {}; \
         ssl_prefer_server_ciphers {}; ssl_session_tickets {}; ",
        s.protocols.join(" "),
        s.groups.join(":"),
        s.ciphersuites.join(":"),
        if s.prefer_server_ciphers { "on" } else { "off" },
        if s.session_tickets { "on" } else { "off" },
    );
    if !s.ciphers.is_empty() {
        d.push_str(&format!("ssl_ciphers {}; ", s.ciphers.join(":")));
    }
    if s.prioritize_chacha {
        d.push_str("ssl_conf_command Options PrioritizeChaCha; ");
    }
    d
}

/// What `openssl s_client` negotiated: `(protocol, cipher)`, or `None` when the handshake
/// failed. `args` choose the protocol, ciphers or groups offered.
fn handshake(port: u16, ca: &Path, args: &[&str]) -> Option<(String, String)> {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-brief",
            "-servername",
            "localhost",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(ca)
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        // Let the client offer old protocols at all (its own security level would refuse them
        // before the server is asked).
        .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    match (field("Protocol version:"), field("Ciphersuite:")) {
        (Some(p), Some(c)) if out.status.success() => Some((p, c)),
        _ => None,
    }
}

/// The protocols testssl finds offered, from its JSON report: id → finding.
fn testssl_protocols(bin: &Path, port: u16, dir: &Path) -> Vec<(String, String)> {
    let json = dir.join(format!("testssl-{port}.json"));
    let out = Command::new(bin)
        .args(["--quiet", "--color", "0", "--warnings", "off", "-p", "--jsonfile"])
        .arg(&json)
        .arg(format!("127.0.0.1:{port}"))
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
        .filter_map(|f| {
            let id = f["id"].as_str()?;
            ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3"]
                .contains(&id)
                .then(|| (id.to_string(), f["finding"].as_str().unwrap_or_default().to_string()))
        })
        .collect()
}

fn offered(findings: &[(String, String)], id: &str) -> bool {
    let (_, finding) = findings
        .iter()
        .find(|(i, _)| i == id)
        .unwrap_or_else(|| panic!("testssl said nothing of {id}: {findings:?}"));
    // "offered", "offered (OK)", "offered with final" vs "not offered", "not offered (OK)".
    !finding.starts_with("not offered") && finding.starts_with("offered")
}

#[test]
fn each_profile_is_served_as_the_guidelines_say() {
    let Some(testssl) = testssl() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let webroot = dir.join("webroot");
    std::fs::create_dir_all(&webroot).unwrap();
    let certs = dir.join("tls");
    let names = vec!["app.example".to_string()];
    let placeholder = acme::install_self_signed(&certs, &names, 30).unwrap();
    assert_eq!(placeholder.names, ["app.example", "localhost"]);
    assert_eq!(
        acme::renewal(&certs, &names, Duration::from_secs(86_400), SystemTime::now()).unwrap(),
        Renewal::SelfSigned
    );
    let ca = placeholder.fullchain.clone();
    let openssl = nginx_openssl();

    for profile in Profile::ALL {
        let settings = tls::resolve(profile, openssl);
        let (http_port, tls_port) = (free_port(), free_port());
        let _front = start_nginx(
            dir,
            http_port,
            &webroot,
            Some((tls_port, &certs)),
            &nginx_directives(&settings),
        );

        // TLS 1.3: offered by both, with a guideline cipher suite.
        let (proto, suite) =
            handshake(tls_port, &ca, &["-tls1_3"]).unwrap_or_else(|| panic!("{profile}: no TLS 1.3 handshake"));
        assert_eq!(proto, "TLSv1.3");
        assert!(settings.ciphersuites.contains(&suite.as_str()), "{profile}: {suite}");
        // TLS 1.2: intermediate only, with a guideline cipher; a cipher outside the list is
        // refused.
        match profile {
            Profile::Intermediate => {
                let (proto, cipher) = handshake(tls_port, &ca, &["-tls1_2"]).expect("intermediate: TLS 1.2");
                assert_eq!(proto, "TLSv1.2");
                assert!(settings.ciphers.contains(&cipher.as_str()), "{cipher}");
                assert_eq!(
                    handshake(
                        tls_port,
                        &ca,
                        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256:@SECLEVEL=0"]
                    ),
                    None,
                    "a CBC cipher was accepted"
                );
            }
            Profile::Modern => assert_eq!(handshake(tls_port, &ca, &["-tls1_2"]), None, "modern: TLS 1.2 accepted"),
        }
        // TLS 1.1 and 1.0: never.
        assert_eq!(
            handshake(tls_port, &ca, &["-tls1_1"]),
            None,
            "{profile}: TLS 1.1 accepted"
        );
        assert_eq!(
            handshake(tls_port, &ca, &["-tls1"]),
            None,
            "{profile}: TLS 1.0 accepted"
        );
        // Groups: one of the list works, one outside it does not.
        assert!(
            handshake(tls_port, &ca, &["-tls1_3", "-groups", "X25519"]).is_some(),
            "{profile}: X25519"
        );
        assert_eq!(
            handshake(tls_port, &ca, &["-tls1_3", "-groups", "secp521r1"]),
            None,
            "{profile}: a group outside the list was accepted"
        );

        // testssl agrees on the protocols.
        let found = testssl_protocols(&testssl, tls_port, dir);
        for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
            assert!(!offered(&found, old), "{profile}: {old} offered: {found:?}");
        }
        assert!(offered(&found, "TLS1_3"), "{profile}: {found:?}");
        assert_eq!(
            offered(&found, "TLS1_2"),
            profile == Profile::Intermediate,
            "{profile}: {found:?}"
        );
    }
}

#[test]
fn the_post_quantum_group_is_left_out_where_the_servers_openssl_lacks_it() {
    let openssl = nginx_openssl();
    let settings = tls::resolve(Profile::Intermediate, openssl);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = dir.join("tls");
    acme::install_self_signed(&certs, &["app.example".to_string()], 30).unwrap();
    let check = |directives: &str| {
        let (conf, prefix) = nginx_conf(dir, free_port(), dir, Some((free_port(), &certs)), directives);
        Command::new("nginx")
            .arg("-t")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&prefix)
            .output()
            .unwrap()
    };
    let filtered = check(&nginx_directives(&settings));
    assert!(
        filtered.status.success(),
        "nginx -t refused the filtered profile:\n{}",
        String::from_utf8_lossy(&filtered.stderr)
    );
    if openssl < OpensslVersion(3, 5, 0) {
        // The guidelines' list as written: this nginx's OpenSSL cannot load it, which is why
        // the filter exists.
        let mut unfiltered = settings.clone();
        unfiltered.groups.insert(0, "X25519MLKEM768");
        let out = check(&nginx_directives(&unfiltered));
        assert!(
            !out.status.success(),
            "nginx -t accepted X25519MLKEM768 with OpenSSL {openssl}"
        );
        assert_eq!(settings.left_out.len(), 1, "{:?}", settings.left_out);
    } else {
        assert_eq!(settings.groups[0], "X25519MLKEM768");
    }
    // openssl itself knows the TLS 1.2 list exactly.
    let listed = run(Command::new("openssl")
        .args(["ciphers", "-tls1_2", "-s"])
        .arg(settings.ciphers.join(":")));
    let mut listed: Vec<&str> = listed.trim().split(':').filter(|c| !c.starts_with("TLS_")).collect();
    listed.sort();
    let mut want = settings.ciphers.clone();
    want.sort();
    assert_eq!(listed, want);
}
