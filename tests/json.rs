//! `status --json` and `check --json`: one JSON object on stdout (messages stay on stderr),
//! parsed here, for a healthy stack and validators that pass, a component restarted by the
//! supervisor, nothing running, and a validator that fails through a `--templates` override.
//! Orphaned and stale stacks are in tests/supervision.rs.

mod common;

use std::collections::BTreeSet;

use common::up::{example_copy, free_port, wait_for};
use common::{Cli, example};

fn json(stdout: &str, stderr: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{stdout}\n{stderr}"))
}

struct Down(std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Cli::new(&self.0).args(["down"]).run();
    }
}

#[test]
fn status_json_of_a_running_stack_follows_a_restart() {
    let project = example_copy();
    let p = project.path();
    let _down = Down(p.to_path_buf());
    let port = free_port();
    Cli::new(p)
        .args([
            "up",
            "-t",
            "nginx+gunicorn",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--detach",
        ])
        .run()
        .success();

    let run = Cli::new(p).args(["status", "--json"]).run().success();
    assert!(!run.stderr.contains('{'), "JSON on stderr: {}", run.stderr);
    let v = json(&run.stdout, &run.stderr);
    assert_eq!(v["project"], p.display().to_string());
    assert_eq!(v["run_dir"], p.join(".deployctl").display().to_string());
    let stacks = v["stacks"].as_array().unwrap();
    assert_eq!(stacks.len(), 1);
    let s = &stacks[0];
    assert_eq!(s["target"], "nginx+gunicorn");
    assert_eq!(s["url"], format!("http://127.0.0.1:{port}/"));
    assert_eq!(s["state"], "running");
    assert_eq!(s["healthy"], true);
    assert_eq!(s["supervisor"]["alive"], true);
    assert!(s["supervisor"]["pid"].as_u64().unwrap() > 1);
    let names: Vec<&str> = s["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "nginx"]);
    for c in s["components"].as_array().unwrap() {
        assert_eq!(c["alive"], true, "{c}");
        assert_eq!(c["restarts"], 0, "{c}");
        assert_eq!(c["pgid"], c["pid"], "each component leads its group: {c}");
    }
    assert_eq!(s["health"]["path"], "/");
    assert_eq!(s["health"]["status"], 200);
    assert!(s["health"]["ms"].is_u64());
    assert!(s["health"]["error"].is_null());

    // Gunicorn's master killed: the supervisor restarts it and the state follows (new PID,
    // one restart), so status never looks for the old process.
    let app = s["components"][0]["pid"].as_u64().unwrap() as i32;
    // SAFETY: killing the app master this test's stack runs.
    unsafe { libc::kill(app, libc::SIGKILL) };
    let mut after = serde_json::Value::Null;
    let restarted = wait_for(30, || {
        let run = Cli::new(p).args(["status", "--json"]).run();
        after = json(&run.stdout, &run.stderr);
        let c = &after["stacks"][0]["components"][0];
        run.code == 0 && c["restarts"] == 1 && c["pid"].as_u64() != Some(app as u64) && c["alive"] == true
    });
    assert!(restarted, "{after:#}");

    Cli::new(p).args(["down"]).run().success();
    let run = Cli::new(p).args(["status", "--json"]).run().failure();
    let v = json(&run.stdout, &run.stderr);
    assert_eq!(v["stacks"], serde_json::json!([]));
    assert!(run.stderr.starts_with("error: no stack of "), "{}", run.stderr);
}

#[test]
fn check_json_gives_a_verdict_per_validator_and_file() {
    let run = Cli::new(&example("flask-hello"))
        .args(["check", "-t", "nginx+gunicorn", "--json"])
        .env("DEPLOYCTL_REQUIRE_VALIDATORS", "1")
        .run()
        .success();
    let v = json(&run.stdout, &run.stderr);
    assert_eq!(v["ok"], true);
    assert_eq!(
        v["config"],
        example("flask-hello").join("deploy.toml").display().to_string()
    );
    let verdicts = v["verdicts"].as_array().unwrap();
    let pairs: BTreeSet<(String, String)> = verdicts
        .iter()
        .map(|d| {
            assert_eq!(d["target"], "nginx+gunicorn");
            assert_eq!(d["ok"], true, "{d}");
            assert_eq!(d["outcome"], "passed", "{d}");
            assert!(d["message"].is_string());
            (
                d["tool"].as_str().unwrap().to_string(),
                d["file"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("nginx -t", "nginx/flask-hello.conf"),
        ("gixy", "nginx/flask-hello.conf"),
        ("gunicorn --check-config", "gunicorn/gunicorn.conf.py"),
    ]
    .into_iter()
    .map(|(t, f)| (t.to_string(), f.to_string()))
    .collect();
    assert!(want.is_subset(&pairs), "{pairs:?}");
    assert!(
        pairs
            .iter()
            .any(|(t, f)| t.starts_with("systemd-analyze") && f.ends_with(".service")),
        "{pairs:?}"
    );

    // nginx rejects an overridden template: that verdict fails with nginx's own message, the
    // others still pass, exit 1.
    let templates = tempfile::tempdir().unwrap();
    let site = templates.path().join("nginx/site.conf.tera");
    std::fs::create_dir_all(site.parent().unwrap()).unwrap();
    let builtin = std::fs::read_to_string(common::repo().join("templates/nginx/site.conf.tera")).unwrap();
    let broken = builtin.replace("charset utf-8;", "charset utf-8;\n    brotli on;");
    assert_ne!(builtin, broken);
    std::fs::write(&site, broken).unwrap();
    let run = Cli::new(&example("flask-hello"))
        .args(["check", "-t", "nginx+gunicorn", "--json", "--templates"])
        .args([templates.path()])
        .env("DEPLOYCTL_REQUIRE_VALIDATORS", "1")
        .run()
        .failure();
    let v = json(&run.stdout, &run.stderr);
    assert_eq!(v["ok"], false);
    let failed: Vec<&serde_json::Value> = v["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{v:#}");
    assert_eq!(failed[0]["tool"], "nginx -t");
    assert_eq!(failed[0]["file"], "nginx/flask-hello.conf");
    assert_eq!(failed[0]["outcome"], "failed");
    assert!(
        failed[0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown directive \"brotli\""),
        "{}",
        failed[0]
    );
    // The human verdicts stay on stderr.
    assert!(
        run.stderr.contains("nginx -t nginx/flask-hello.conf failed"),
        "{}",
        run.stderr
    );
}
