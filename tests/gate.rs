//! The one validation gate of `render`, `check` and `up` (issue 12): a validator that is not
//! installed is reported as skipped and never counted as passed, and with
//! `DEPLOYCTL_REQUIRE_VALIDATORS=1` it is a failure — the same policy in all three commands.

mod common;

use common::up::{DownOnDrop, example_copy, free_port};
use common::{Cli, example};

/// `PATH` without the directories that hold gixy.
fn path_without_gixy() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kept: Vec<std::path::PathBuf> = std::env::split_paths(&path)
        .filter(|d| !d.join("gixy").exists())
        .collect();
    std::env::join_paths(kept).unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_missing_validator_is_skipped_never_passed_and_fails_when_required() {
    let no_gixy = path_without_gixy();
    let ex = example("flask-hello");

    // check: nginx -t, systemd-analyze verify ×2 and security pass; gixy is skipped.
    let run = Cli::new(&ex)
        .args(["check", "-t", "nginx+embedded"])
        .env("PATH", &no_gixy)
        .env("DEPLOYCTL_REQUIRE_VALIDATORS", "0")
        .run()
        .success();
    assert!(
        run.stderr
            .contains("nginx+embedded: gixy nginx/flask-hello.conf: skipped, the tool is not installed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("4 validator runs passed, 1 skipped (not installed)"),
        "{}",
        run.stderr
    );
    let run = Cli::new(&ex)
        .args(["check", "-t", "nginx+embedded"])
        .env("PATH", &no_gixy)
        .env("DEPLOYCTL_REQUIRE_VALIDATORS", "1")
        .run()
        .failure();
    assert!(
        run.stderr
            .contains("gixy nginx/flask-hello.conf: the tool is not installed (DEPLOYCTL_REQUIRE_VALIDATORS is set)"),
        "{}",
        run.stderr
    );

    // render: the same policy; required, nothing is written.
    let out = tempfile::tempdir().unwrap();
    let site = out.path().join("site");
    let run = Cli::new(&ex)
        .args(["render", "-t", "nginx+embedded", "--out"])
        .args([&site])
        .env("PATH", &no_gixy)
        .env("DEPLOYCTL_REQUIRE_VALIDATORS", "1")
        .run()
        .failure();
    assert!(run.stderr.contains("nothing was written"), "{}", run.stderr);
    assert!(!site.exists());
    let run = Cli::new(&ex)
        .args(["render", "-t", "nginx+embedded", "--out"])
        .args([&site])
        .env("PATH", &no_gixy)
        .env("DEPLOYCTL_REQUIRE_VALIDATORS", "0")
        .run()
        .success();
    assert!(
        run.stderr.contains("skipped, the tool is not installed"),
        "{}",
        run.stderr
    );
    assert!(site.join("nginx/flask-hello.conf").is_file());
}

#[test]
fn up_reports_a_missing_validator_as_skipped_and_refuses_to_start_when_required() {
    let project = example_copy();
    let p = project.path();
    let _cleanup = DownOnDrop(p.to_path_buf());
    let no_gixy = path_without_gixy();
    let up = |require: &str| {
        Cli::new(p)
            .args([
                "up",
                "--target",
                "nginx+embedded",
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
                "--detach",
            ])
            .env("PATH", &no_gixy)
            .env("DEPLOYCTL_REQUIRE_VALIDATORS", require)
            .run()
    };
    let run = up("1").failure();
    assert!(
        run.stderr.contains("the rendered configs do not validate")
            && run.stderr.contains("gixy nginx/flask-hello.conf: not installed"),
        "{}",
        run.stderr
    );
    up("0").success();
    let log = std::fs::read_to_string(p.join(".deployctl/nginx+embedded/up.log")).unwrap();
    Cli::new(p).args(["down"]).run().success();
    let line = log
        .lines()
        .find(|l| l.trim_start().starts_with("validated "))
        .unwrap_or_else(|| panic!("no validated line:\n{log}"));
    assert!(line.contains("validated 4 checks passed"), "{line}");
    assert!(
        line.ends_with("; 1 skipped, not installed: gixy nginx/flask-hello.conf"),
        "{line}"
    );
}
