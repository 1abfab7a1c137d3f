//! `[app].secret_env` outside the cluster targets: a server's unit reads the names from the
//! user's `EnvironmentFile=` (never rendered; `systemd-analyze verify` passes), and `up` takes
//! them from its own environment and passes them to the app (embedded, Gunicorn and uWSGI
//! behind nginx, mod_wsgi inside Apache) — a test app reports whether the
//! value reached it (as a digest), and nothing deployctl prints holds it. A missing one stops
//! `up` before anything starts, naming the key.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::up::{Up, example_copy, free_port, get, stop};
use common::{Cli, split_listing};

const VALUE: &str = "s3cr3t-reaches-the-app-only";

/// The app: says whether SECRET_KEY reached it, as a SHA-256 of the value (never the value).
const APP: &str = r#"import hashlib, os

def app(environ, start_response):
    v = os.environ.get("SECRET_KEY")
    body = ("unset" if v is None else "sha256=" + hashlib.sha256(v.encode()).hexdigest()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

fn project() -> tempfile::TempDir {
    let dir = example_copy();
    std::fs::write(dir.path().join("app.py"), APP).unwrap();
    let toml = std::fs::read_to_string(dir.path().join("deploy.toml"))
        .unwrap()
        .replace(
            "env = { APP_MODE = \"production\" }",
            "env = { APP_MODE = \"production\" }\nsecret_env = [\"SECRET_KEY\"]",
        );
    assert!(toml.contains("secret_env"), "the example's deploy.toml changed");
    std::fs::write(dir.path().join("deploy.toml"), toml).unwrap();
    dir
}

fn sha256_hex(s: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_servers_unit_reads_the_secrets_file_and_nothing_renders_a_value() {
    let dir = project();
    for target in ["nginx+embedded", "nginx+gunicorn", "nginx+uwsgi"] {
        let run = Cli::new(dir.path())
            .args(["render", "--stdout", "-t", target])
            .env("SECRET_KEY", VALUE)
            .run()
            .success();
        let files = split_listing(&run.stdout);
        for (name, text) in &files {
            assert!(!text.contains(VALUE), "{target}: {name} holds the value");
        }
        let unit = &files["systemd/flask-hello.service"];
        let lines: Vec<&str> = unit.lines().filter(|l| l.starts_with("EnvironmentFile=")).collect();
        assert_eq!(
            lines,
            ["EnvironmentFile=/etc/deployctl/flask-hello/secrets.env"],
            "{target}: without `-`, a missing file stops the service"
        );
        assert!(
            !files.keys().any(|k| k.contains("secrets")),
            "{target}: {:?}",
            files.keys()
        );
    }
    // systemd-analyze verify passes on the unit (the file need not exist to verify it).
    let out_dir = dir.path().join("out");
    let run = Cli::new(dir.path())
        .args(["render", "-t", "nginx+gunicorn", "--out"])
        .args([&out_dir])
        .env("SECRET_KEY", VALUE)
        .run()
        .success();
    assert!(
        run.stderr
            .contains("systemd-analyze verify systemd/flask-hello.service: no errors")
            || std::env::var("DEPLOYCTL_REQUIRE_VALIDATORS").as_deref() != Ok("1"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("/etc/deployctl/flask-hello/secrets.env") && run.stderr.contains("mode 0600"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(VALUE) && !run.stdout.contains(VALUE));
    // mod_wsgi runs the app in Debian's apache2.service: said, with how to give it the file.
    let run = Cli::new(dir.path())
        .args(["render", "-t", "apache+mod_wsgi", "--out"])
        .args([&dir.path().join("out-apache")])
        .run()
        .success();
    assert!(
        run.stderr
            .contains("warning: [app].secret_env (SECRET_KEY) is not passed to the app by target `apache+mod_wsgi`")
            && run
                .stderr
                .contains("EnvironmentFile=/etc/deployctl/flask-hello/secrets.env"),
        "{}",
        run.stderr
    );
    // Without secret_env, no EnvironmentFile.
    let plain = common::render(&common::example("flask-hello"), "nginx+gunicorn");
    assert!(!plain["systemd/flask-hello.service"].contains("EnvironmentFile"));
}

/// `up` started with SECRET_KEY set to `value` (or removed from its environment); its URL and
/// everything it writes to stderr (read on a thread, for as long as it runs).
fn up(dir: &std::path::Path, target: &str, port: u16, value: Option<&str>) -> (Up, String, Log) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deployctl"));
    cmd.args(["up", "-c"])
        .arg(dir.join("deploy.toml"))
        .args(["--target", target, "--listen", &format!("127.0.0.1:{port}")])
        .env("NO_COLOR", "1")
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match value {
        Some(v) => cmd.env("SECRET_KEY", v),
        None => cmd.env_remove("SECRET_KEY"),
    };
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log: Log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut url = String::new();
    let _ = stdout.read_line(&mut url);
    (Up(child), url.trim().to_string(), log)
}

type Log = Arc<Mutex<String>>;

#[test]
fn up_passes_the_secret_from_its_environment_to_the_app() {
    let dir = project();
    let _down = common::up::DownOnDrop(dir.path().to_path_buf());
    for target in ["embedded", "nginx+gunicorn", "apache+mod_wsgi", "nginx+uwsgi"] {
        let port = free_port();
        let (up, url, log) = up(dir.path(), target, port, Some(VALUE));
        assert!(!url.is_empty(), "{target}: up printed no URL:\n{}", log.lock().unwrap());
        let reply = get(port, "localhost", "/", &[]);
        assert_eq!(reply.status, 200, "{target}");
        assert_eq!(
            String::from_utf8_lossy(&reply.body),
            format!("sha256={}", sha256_hex(VALUE)),
            "{target}: the value reached the app"
        );
        stop(up, target);
        let log = log.lock().unwrap();
        assert!(
            !log.contains(VALUE) && !url.contains(VALUE),
            "{target}: up printed the value"
        );
    }
}

#[test]
fn up_without_a_secret_in_its_environment_says_which() {
    let dir = project();
    let (mut up, url, _) = up(dir.path(), "embedded", free_port(), None);
    assert!(url.is_empty(), "up started: {url}");
    let status = up.terminate();
    assert_eq!(status.code(), Some(1), "{status}");
    let run = Cli::new(dir.path()).args(["up", "-t", "embedded"]).run();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "error: [app].secret_env lists `SECRET_KEY`, which is not set in the environment of `deployctl up`"
        ) && run
            .stderr
            .contains("hint: set the variable for `up` (`SECRET_KEY=… deployctl up`"),
        "{}",
        run.stderr
    );
    // Nothing was started or left: no run directory state.
    assert!(!dir.path().join(".deployctl/embedded/state.json").exists());
}
