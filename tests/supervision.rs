//! A read-only project runs with `--run-dir`: everything `up` writes goes under DIR, and
//! `status`, `logs` and `down` find the stack there. Real servers on loopback.

mod common;

use std::process::Command;

use common::Cli;
use common::up::{example_copy, free_port, get, left_in};

/// How a test makes the project really unwritable, for root too (which ignores mode bits):
/// as root, `up` runs in a mount namespace of its own (`unshare --mount`) where the project is
/// a read-only bind mount, so every write gets EROFS as on a read-only filesystem; as another
/// user, `chmod a-w` is enough. Either way the test first proves a write fails.
struct ReadOnly {
    dir: std::path::PathBuf,
    root: bool,
}

impl ReadOnly {
    fn new(dir: &std::path::Path) -> ReadOnly {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        ReadOnly {
            dir: dir.to_path_buf(),
            root,
        }
    }

    /// `program args…` with the project read-only.
    fn command(&self, program: &str) -> Command {
        if self.root {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(r#"mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@""#)
                .arg(&self.dir)
                .arg(program);
            c
        } else {
            Command::new(program)
        }
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755));
    }
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    v.sort();
    v
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        out.push(e.path());
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

#[test]
fn a_read_only_project_runs_with_run_dir_on_every_target() {
    let project = example_copy();
    let p = project.path();
    let run_dir = tempfile::tempdir().unwrap();
    let rd = run_dir.path().join("runs");
    let before = listing(p);
    let ro = ReadOnly::new(p);
    let deployctl = env!("CARGO_BIN_EXE_deployctl");

    // Proof that the project cannot be written, by root too.
    let touch = ro.command("touch").arg(p.join("probe")).output().unwrap();
    assert!(!touch.status.success(), "the project is writable");
    assert!(!p.join("probe").exists());

    // Without --run-dir: an error naming the project, and the hint.
    let out = ro
        .command(deployctl)
        .current_dir(p)
        .args([
            "up",
            "-t",
            "embedded",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--detach",
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: cannot create the run directory {}/.deployctl/embedded: the project {} cannot be written\n",
            p.display(),
            p.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("hint: run it with its configs, sockets, logs and state elsewhere: `--run-dir "));

    let rd_arg = rd.display().to_string();
    // status, logs and down find it through DEPLOYCTL_RUN_DIR; up is given --run-dir.
    let cli = || Cli::new(p).env("DEPLOYCTL_RUN_DIR", &rd_arg);
    struct DownIn(std::path::PathBuf, String);
    impl Drop for DownIn {
        fn drop(&mut self) {
            let _ = Cli::new(&self.0).args(["down", "--run-dir", &self.1]).run();
        }
    }
    let _down = DownIn(p.to_path_buf(), rd_arg.clone());
    for target in common::TARGETS {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let out = ro
            .command(deployctl)
            .current_dir(p)
            .args([
                "up",
                "-t",
                target,
                "--listen",
                &listen,
                "--detach",
                "--run-dir",
                &rd_arg,
            ])
            .env("NO_COLOR", "1")
            .env_remove("VIRTUAL_ENV")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("http://{listen}/"));
        assert_eq!(get(port, &listen, "/", &[]).status, 200, "{target}");

        let status = cli().args(["status", "-t", target]).run().success();
        assert!(
            status.stdout.starts_with(&format!("{target}  http://{listen}/")),
            "{}",
            status.stdout
        );
        // Each component leads its own group.
        let groups: Vec<u32> = status
            .stdout
            .lines()
            .skip(2)
            .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(!groups.is_empty(), "{}", status.stdout);
        assert!(rd.join(target).join("state.json").is_file());
        let logs = cli().args(["logs", "-t", target]).run().success();
        assert!(logs.stdout.contains("app"), "{}", logs.stdout);
        // Without --run-dir, nothing is found (and nothing is written).
        Cli::new(p).args(["status", "-t", target]).run().failure();

        cli().args(["down", "-t", target]).run().success();
        assert!(
            left_in(&groups).is_empty(),
            "{target} left behind: {:?}",
            left_in(&groups)
        );
    }
    assert_eq!(listing(p), before, "the project was written to");
}
