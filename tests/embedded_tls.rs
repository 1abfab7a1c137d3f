//! The lone `embedded` target with `[tls]`: the embedded server terminates TLS itself
//! (rustls), listening on `[tls].listen` only. `render`/`check` give its socket unit the HTTPS
//! address and its service `--certfile`/`--keyfile`/`--tls-profile` (validated with
//! systemd-analyze); ACME is refused for it (nothing answers the HTTP-01 challenge); `up`
//! runs it on a self-signed pair, or the user's pair, asked with curl over HTTPS.

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
    assert!(socket.contains("ListenStream=0.0.0.0:8443"), "{socket}");
    let service = &files["systemd/shop.service"];
    let exec = service
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart");
    assert!(exec.contains(" serve app:app --bind 0.0.0.0:8443 "), "{exec}");
    assert!(
        exec.ends_with(
            "--certfile /etc/ssl/shop/fullchain.pem --keyfile /etc/ssl/shop/privkey.pem --tls-profile modern"
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
fn up_serves_https_itself_on_a_self_signed_pair_and_nothing_on_http() {
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
    // Only HTTPS: nothing listens on [server].listen.
    assert!(std::net::TcpStream::connect(("127.0.0.1", http)).is_err());
    // `status` is healthy over HTTPS.
    let status = Cli::new(p).args(["status"]).run();
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    assert!(status.stdout.contains("→ 200"), "{}", status.stdout);
    Cli::new(p).args(["down"]).run().success();
}
