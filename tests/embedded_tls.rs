//! The lone `embedded` target with `[tls]`: the embedded server terminates TLS itself
//! (rustls) on `[tls].listen`, and `[server].listen` is its plain listener (the ACME challenge
//! from the webroot, a 301 to https for the rest). `render`/`check` give its socket unit both
//! addresses and its service `--certfile`/`--keyfile`/`--tls-profile`, `--redirect-bind`,
//! `--acme-webroot`, `--server-name` and `--hsts` (validated with systemd-analyze); ACME is
//! still refused for it (`up` and `cert` do not drive it yet); `up` runs it on a self-signed
//! pair, asked with curl over HTTPS and plain HTTP.

mod common;

use std::path::Path;
use std::process::Command;

use common::up::{DownOnDrop, example_copy, free_port};
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
fn acme_is_refused_for_the_lone_embedded_server() {
    let dir = project(&spec_text("acme = { email = \"ops@shop.example\" }\n"), &[]);
    let run = Cli::new(dir.path())
        .args(["render", "--stdout", "--target", "embedded"])
        .run()
        .failure();
    assert!(
        run.stderr
            .contains("[tls].acme needs a front that answers ACME's HTTP-01 challenge"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("nginx+embedded"), "{}", run.stderr);
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
    // `status` is healthy over HTTPS.
    let status = Cli::new(p).args(["status"]).run();
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    assert!(status.stdout.contains("→ 200"), "{}", status.stdout);
    Cli::new(p).args(["down"]).run().success();
}
