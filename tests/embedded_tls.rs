//! The lone `embedded` target with `[tls]`: the embedded server terminates TLS itself
//! (rustls) on `[tls].listen`, and `[server].listen` is its plain listener (the ACME challenge
//! from the webroot, a 301 to https for the rest). `render`/`check` give its socket unit both
//! addresses and its service `--certfile`/`--keyfile`/`--tls-profile`, `--redirect-bind`,
//! `--acme-webroot`, `--server-name` and `--hsts` (validated with systemd-analyze); with ACME,
//! renewal units that reload the server's own unit; `up` runs it on a self-signed pair, asked
//! with curl over HTTPS and plain HTTP, and obtains a certificate from Debian's pebble through
//! its plain listener, then HUPs it onto the certificate; `deployctl cert --force` renews
//! through the running server and reloads it.

mod common;

use std::path::Path;
use std::process::Command;

use common::pebble::{pebble, start_pebble};
use common::tls::served_serial;
use common::up::{DownOnDrop, example_copy, free_port, wait_for};
use common::{Cli, project, render};

fn spec_text(tls: &str) -> String {
    format!(
        "[app]\nname = \"shop\"\nentry = \"app:app\"\n\n[server]\nnames = [\"shop.example\"]\n\n[tls]\nlisten = \"0.0.0.0:8443\"\n{tls}"
    )
}

const FILES: &str = "certificate = \"/etc/ssl/shop/fullchain.pem\"\nkey = \"/etc/ssl/shop/privkey.pem\"\n";

#[test]
fn render_gives_the_socket_the_https_address_and_the_service_the_pair() {
    let dir = project(&spec_text(&format!("{FILES}profile = \"modern\"\n")), &[]);
    let files = render(dir.path(), "embedded");
    let socket = &files["systemd/shop.socket"];
    // The TLS listener first, the plain one second: the order the server takes them in.
    assert!(
        socket.contains("ListenStream=0.0.0.0:8443\n# Plain HTTP beside TLS: the ACME challenge and a redirect to https.\nListenStream=0.0.0.0:80\n"),
        "{socket}"
    );
    let service = &files["systemd/shop.service"];
    let exec = service
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart");
    assert!(exec.contains(" serve app:app --bind 0.0.0.0:8443 "), "{exec}");
    assert!(
        exec.ends_with(
            "--certfile /etc/ssl/shop/fullchain.pem --keyfile /etc/ssl/shop/privkey.pem --tls-profile modern \
             --redirect-bind 0.0.0.0:80 --acme-webroot /var/lib/deployctl/shop/acme --server-name shop.example \
             --hsts \"max-age=63072000; includeSubDomains\""
        ),
        "{exec}"
    );
    assert!(!files.keys().any(|k| k.starts_with("nginx/")), "{:?}", files.keys());
}

#[test]
fn check_validates_the_units_with_tls() {
    let dir = project(&spec_text(FILES), &[]);
    let run = Cli::new(dir.path())
        .args(["check", "--target", "embedded"])
        .env("DEPLOYCTL_REQUIRE_VALIDATORS", "1")
        .run();
    let text = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 0, "{text}");
    for unit in ["shop.service", "shop.socket"] {
        assert!(
            text.contains(&format!("systemd-analyze verify systemd/{unit}: no errors or warnings")),
            "{text}"
        );
    }
}

#[test]
fn acme_renders_renewal_units_that_reload_the_server_itself() {
    let dir = project(&spec_text("acme = { email = \"ops@shop.example\" }\n"), &[]);
    let files = render(dir.path(), "embedded");
    let service = &files["systemd/shop-cert.service"];
    assert!(
        service.contains("ExecStartPost=+/usr/bin/systemctl reload shop.service\n"),
        "{service}"
    );
    assert!(files.contains_key("systemd/shop-cert.timer"), "{:?}", files.keys());
    let exec = files["systemd/shop.service"]
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart")
        .to_string();
    assert!(
        exec.contains("--certfile /var/lib/deployctl/shop/tls/live/fullchain.pem"),
        "{exec}"
    );
    assert!(exec.contains("--acme-webroot /var/lib/deployctl/shop/acme"), "{exec}");
}

/// The example with `[tls]` holding `tls`.
fn up_project(tls: &str) -> tempfile::TempDir {
    let dir = example_copy();
    let path = dir.path().join("deploy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n[tls]\n{tls}")).unwrap();
    dir
}

fn log(p: &Path) -> String {
    std::fs::read_to_string(p.join(".deployctl/embedded/up.log")).unwrap_or_default()
}

fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn up_serves_https_itself_on_a_self_signed_pair_and_redirects_on_http() {
    let project = up_project("");
    let p = project.path();
    let _down = DownOnDrop(p.to_path_buf());
    let (http, https) = (free_port(), free_port());
    let run = Cli::new(p)
        .args([
            "up",
            "--target",
            "embedded",
            "--listen",
            &format!("127.0.0.1:{http}"),
            "--tls-listen",
            &format!("127.0.0.1:{https}"),
            "--detach",
        ])
        .run();
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, log(p));
    assert_eq!(run.stdout.trim(), format!("https://localhost:{https}/"));
    let cert = p.join(".deployctl/embedded/tls/live/fullchain.pem");
    let resolve = format!("localhost:{https}:127.0.0.1");
    let url = |path: &str| format!("https://localhost:{https}{path}");
    // The page, a static file and the page again on one connection, trusting the pair.
    let (ok, body, err) = curl(&[
        "-v",
        "--cacert",
        cert.to_str().unwrap(),
        "--resolve",
        &resolve,
        &url("/"),
        &url("/"),
    ]);
    assert!(ok, "{err}\n{}", log(p));
    assert!(body.contains("Hello"), "{body}");
    assert!(err.contains("Re-using existing connection"), "{err}");
    assert!(err.contains("ALPN: server accepted http/1.1"), "{err}");
    // HSTS, the nginx front's value.
    let (ok, head, err) = curl(&[
        "-sS",
        "-o",
        "/dev/null",
        "-D",
        "-",
        "--cacert",
        cert.to_str().unwrap(),
        "--resolve",
        &resolve,
        &url("/"),
    ]);
    assert!(ok, "{err}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("strict-transport-security: max-age=63072000; includesubdomains\r\n"),
        "{head}"
    );
    // [server].listen: a 301 to https on the TLS port, path and query kept ...
    let (ok, head, err) = curl(&[
        "-sS",
        "-o",
        "/dev/null",
        "-D",
        "-",
        &format!("http://localhost:{http}/a?b=1"),
    ]);
    assert!(ok, "{err}");
    assert!(head.starts_with("HTTP/1.1 301"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("location: https://localhost:{https}/a?b=1\r\n")),
        "{head}"
    );
    // ... and the ACME challenge from the run directory's webroot.
    let challenge = p.join(".deployctl/embedded/acme/.well-known/acme-challenge");
    std::fs::create_dir_all(&challenge).unwrap();
    std::fs::write(challenge.join("tok"), "tok.key").unwrap();
    let (ok, body, err) = curl(&[
        "-sS",
        "--fail",
        &format!("http://localhost:{http}/.well-known/acme-challenge/tok"),
    ]);
    assert!(ok, "{err}\n{}", log(p));
    assert_eq!(body, "tok.key");
    // A reload (a probe instance on a private socket, then a HUP): both listeners go on.
    let reload = Cli::new(p).args(["reload"]).run();
    assert_eq!(reload.code, 0, "{}\n{}", reload.stderr, log(p));
    let (ok, _, err) = curl(&["--cacert", cert.to_str().unwrap(), "--resolve", &resolve, &url("/")]);
    assert!(ok, "{err}\n{}", log(p));
    let (ok, head, err) = curl(&[
        "-sS",
        "-o",
        "/dev/null",
        "-D",
        "-",
        &format!("http://localhost:{http}/"),
    ]);
    assert!(ok && head.starts_with("HTTP/1.1 301"), "{head}{err}");
    // `status` is healthy over HTTPS.
    let status = Cli::new(p).args(["status"]).run();
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    assert!(status.stdout.contains("→ 200"), "{}", status.stdout);
    Cli::new(p).args(["down"]).run().success();
}

#[test]
fn with_acme_up_and_cert_obtain_from_pebble_through_the_servers_plain_listener() {
    let Some(bin) = pebble() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let http = free_port();
    let pebble = start_pebble(&bin, tmp.path(), http);
    let project = up_project(&format!(
        "acme = {{ email = \"ops@example.com\", directory = {:?}, ca = {:?} }}\n",
        pebble.directory,
        pebble.ca.display().to_string()
    ));
    let p = project.path();
    let toml = std::fs::read_to_string(p.join("deploy.toml")).unwrap().replace(
        "names = [\"localhost\", \"flask-hello.test\"]",
        "names = [\"localhost\"]",
    );
    std::fs::write(p.join("deploy.toml"), toml).unwrap();
    let _down = DownOnDrop(p.to_path_buf());
    let https = free_port();
    let run = Cli::new(p)
        .args([
            "up",
            "--target",
            "embedded",
            "--listen",
            &format!("127.0.0.1:{http}"),
            "--tls-listen",
            &format!("127.0.0.1:{https}"),
            "--detach",
        ])
        .run();
    let pebble_log = || std::fs::read_to_string(tmp.path().join("pebble.log")).unwrap_or_default();
    assert_eq!(run.code, 0, "{}\n{}\npebble:\n{}", run.stderr, log(p), pebble_log());
    assert!(
        log(p).contains("issued for localhost, the embedded server reloaded onto it"),
        "{}\npebble:\n{}",
        log(p),
        pebble_log()
    );
    // Served and verified against Pebble's root only.
    let root = pebble.root(tmp.path());
    let resolve = format!("localhost:{https}:127.0.0.1");
    let url = format!("https://localhost:{https}/");
    let fetch = || curl(&["--cacert", root.to_str().unwrap(), "--resolve", &resolve, &url]);
    assert!(wait_for(10, || fetch().0), "{:?}\n{}", fetch(), log(p));
    let (_, body, _) = fetch();
    assert!(body.contains("Hello"), "{body}");

    // `deployctl cert --force`: renewed through the running server, which is HUPed onto it.
    let before = served_serial(https);
    let cert = Cli::new(p).args(["cert", "--target", "embedded", "--force"]).run();
    assert_eq!(cert.code, 0, "{}\n{}\npebble:\n{}", cert.stderr, log(p), pebble_log());
    assert!(
        cert.stderr.contains("the embedded server of the running `up` stack"),
        "{}",
        cert.stderr
    );
    assert!(
        wait_for(15, || served_serial(https) != before),
        "still serving {before}\n{}",
        log(p)
    );
    assert!(fetch().0, "{:?}", fetch());
    Cli::new(p).args(["down"]).run().success();
}
