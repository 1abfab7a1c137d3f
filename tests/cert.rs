//! `deployctl cert` against Debian's pebble, for a running `up` stack: the stack starts while
//! the ACME server is down (it serves on the placeholder and says why), `cert` then obtains the
//! first certificate through the stack's HTTP listener and reloads its nginx (curl trusting
//! only Pebble's root gets the page); a second `cert` finds nothing due; `cert --force` renews,
//! and nginx serves the new certificate (its serial, read with `openssl s_client`).

mod common;

use std::path::Path;
use std::process::Command;

use common::Cli;
use common::pebble::{pebble, pebble_tls, start_pebble_on};
use common::tls::{file_serial, served_serial};
use common::up::{DownOnDrop, example_copy, free_port, up_tls, wait_for};

fn curl_ok(port: u16, root: &Path) -> bool {
    Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(root)
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg(format!("https://localhost:{port}/"))
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn cert_obtains_for_a_running_stack_skips_when_not_due_and_force_renews() {
    let Some(bin) = pebble() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (http, https, acme_port) = (free_port(), free_port(), free_port());
    let directory = format!("https://127.0.0.1:{acme_port}/dir");
    let (ca, _, _) = pebble_tls(tmp.path());
    let project = example_copy();
    let p = project.path();
    let _down = DownOnDrop(p.to_path_buf());
    let toml = std::fs::read_to_string(p.join("deploy.toml")).unwrap().replace(
        "names = [\"localhost\", \"flask-hello.test\"]",
        "names = [\"localhost\"]",
    );
    std::fs::write(
        p.join("deploy.toml"),
        format!(
            "{toml}\n[tls]\nacme = {{ directory = {directory:?}, ca = {:?} }}\n",
            ca.display().to_string()
        ),
    )
    .unwrap();
    let log = || std::fs::read_to_string(p.join(".deployctl/nginx+embedded/up.log")).unwrap_or_default();

    // The ACME server is down: the stack serves HTTPS on the placeholder and says why.
    let up = up_tls(p, "nginx+embedded", http, https);
    assert_eq!(up.code, 0, "{}\n{}", up.stderr, log());
    assert!(log().contains(&directory), "{}", log());

    // `cert` obtains the first one through the running front and reloads its nginx.
    let pebble = start_pebble_on(&bin, tmp.path(), http, acme_port);
    let cert = Cli::new(p).args(["cert", "--target", "nginx+embedded"]).run();
    assert_eq!(
        cert.code,
        0,
        "{}\npebble:\n{}",
        cert.stderr,
        std::fs::read_to_string(tmp.path().join("pebble.log")).unwrap_or_default()
    );
    assert!(
        cert.stderr.contains("a self-signed placeholder is in use"),
        "{}",
        cert.stderr
    );
    assert!(cert.stderr.contains("Reloaded"), "{}", cert.stderr);
    let root = pebble.root(tmp.path());
    assert!(
        wait_for(10, || curl_ok(https, &root)),
        "not served with Pebble's certificate\n{}",
        log()
    );
    let live = p.join(".deployctl/nginx+embedded/tls/live/fullchain.pem");
    let first = file_serial(&live);
    assert_eq!(served_serial(https), first);

    // Not due: nothing is asked of the ACME server.
    let again = Cli::new(p).args(["cert"]).run().success();
    assert!(again.stderr.contains("valid for"), "{}", again.stderr);
    assert_eq!(file_serial(&live), first);

    // --force renews, and the running nginx serves the new one.
    let forced = Cli::new(p).args(["cert", "--force"]).run();
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    let second = file_serial(&live);
    assert_ne!(second, first, "the forced renewal gave the same certificate");
    assert!(
        wait_for(10, || served_serial(https) == second),
        "nginx still serves {}",
        served_serial(https)
    );
    assert!(curl_ok(https, &root));
    Cli::new(p).args(["down"]).run().success();
}

#[test]
fn cert_without_acme_says_what_to_add() {
    let project = example_copy();
    let p = project.path();
    let run = Cli::new(p).args(["cert"]).run().failure();
    assert!(run.stderr.contains("has no [tls].acme"), "{}", run.stderr);
    assert!(run.stderr.contains("hint: add `acme = {"), "{}", run.stderr);
}
