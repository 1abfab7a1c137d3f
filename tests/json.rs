//! `status --json`: one JSON object on stdout (messages stay on stderr), parsed here, for a
//! healthy stack, a component restarted by the supervisor, and nothing running. Orphaned and
//! stale stacks are in tests/supervision.rs.

mod common;

use common::Cli;
use common::up::{example_copy, free_port, wait_for};

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
