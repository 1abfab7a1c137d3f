//! The bad-input corpus: every file in `tests/fixtures/invalid/` is a `deploy.toml` with one
//! mistake, marked `# <- error` on its line, and `# expect-key: KEY` on the first line.
//! Each must fail with exit 1, name the file, that line and the key, and write nothing.

mod common;

use common::{Cli, project, repo};

fn fixtures() -> Vec<(String, String)> {
    let dir = repo().join("tests/fixtures/invalid");
    let mut v: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn corpus_has_at_least_fifteen_kinds() {
    assert!(fixtures().len() >= 15, "{}", fixtures().len());
}

#[test]
fn every_mistake_names_file_line_and_key_and_writes_nothing() {
    let mut transcript = String::new();
    for (name, text) in fixtures() {
        let key = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect-key: "))
            .unwrap_or_else(|| panic!("{name}: no expect-key"));
        let dirs: Vec<&str> = text
            .lines()
            .find_map(|l| l.strip_prefix("# dirs: "))
            .map(|d| d.split(' ').collect())
            .unwrap_or_default();
        let line = text
            .lines()
            .position(|l| l.contains("# <- error"))
            .unwrap_or_else(|| panic!("{name}: no `# <- error` marker"))
            + 1;
        let dir = project(&text, &dirs);
        for args in [
            vec!["render", "--no-validate", "--target", "nginx+gunicorn"],
            vec!["check"],
        ] {
            let run = Cli::new(dir.path()).args(&args).run().failure();
            let err = &run.stderr;
            assert!(err.starts_with("error: "), "{name}: {err}");
            assert!(
                err.contains(&format!("deploy.toml:{line}:")),
                "{name}: expected line {line} in:\n{err}"
            );
            assert!(
                err.contains(&format!("`{key}`")),
                "{name}: expected key `{key}` in:\n{err}"
            );
            assert!(!dir.path().join("deploy").exists(), "{name}: {args:?} wrote files");
            if args[0] == "check" {
                transcript.push_str(&format!("## {name}\n{err}\n"));
            }
        }
    }
    insta::assert_snapshot!("invalid_messages", transcript);
}

#[test]
fn problems_are_collected_not_just_the_first() {
    let dir = project(
        "[app]\nentry = \"nocolon\"\n[server]\nlisten = \"0.0.0.0:0\"\nmax_body = \"big\"\n[[static]]\nurl = \"/s/\"\ndir = \"missing\"\n",
        &[],
    );
    let run = Cli::new(dir.path()).args(["check"]).run().failure();
    assert!(run.stderr.contains("has 4 problems"), "{}", run.stderr);
    for (line, key) in [
        (2, "app.entry"),
        (4, "server.listen"),
        (5, "server.max_body"),
        (8, "static[0].dir"),
    ] {
        assert!(
            run.stderr.contains(&format!("deploy.toml:{line}:")) && run.stderr.contains(&format!("`{key}`")),
            "{key}: {}",
            run.stderr
        );
    }
}

#[test]
fn a_failed_render_keeps_the_previous_files() {
    let dir = project("[app]\nname = \"keep\"\nentry = \"app:app\"\n", &[]);
    Cli::new(dir.path())
        .args(["render", "--no-validate", "-t", "gunicorn"])
        .run()
        .success();
    let conf = dir.path().join("deploy/gunicorn/gunicorn/gunicorn.conf.py");
    let before = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        dir.path().join("deploy.toml"),
        "[app]\nname = \"keep\"\nentry = \"app:app\"\n[server]\ntimeout = \"soon\"\n",
    )
    .unwrap();
    Cli::new(dir.path())
        .args(["render", "--no-validate", "-t", "gunicorn"])
        .run()
        .failure();
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), before);
}

#[test]
fn an_unknown_target_is_a_usage_error_listing_the_valid_ones() {
    let dir = project("[app]\nentry = \"app:app\"\n", &[]);
    for cmd in ["render", "check", "up", "status", "down", "logs"] {
        let run = Cli::new(dir.path()).args([cmd, "-t", "nginx+waitress"]).run();
        assert_eq!(run.code, 2, "{cmd}: usage errors exit 2\n{}", run.stderr);
        assert!(
            run.stderr
                .starts_with("error: unknown target `nginx+waitress`\nhint: valid targets: "),
            "{cmd}: {}",
            run.stderr
        );
        let listed: Vec<&str> = run
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("hint: valid targets: "))
            .unwrap()
            .split(", ")
            .collect();
        // render and check also take the cluster targets; up and the stack commands do not.
        let mut expected = common::TARGETS.to_vec();
        if matches!(cmd, "render" | "check") {
            expected.extend(["kubernetes", "compose"]);
        }
        assert_eq!(listed, expected, "{cmd}");
    }
    let run = Cli::new(dir.path())
        .args(["render", "--stdout", "-t", "nginx+apache+gunicorn"])
        .run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("error: target `nginx+apache+gunicorn` is a possible chain, not implemented yet\n"),
        "{}",
        run.stderr
    );
    let run = Cli::new(dir.path()).args(["up", "--listen", "localhost"]).run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("error: --listen \"localhost\": \"localhost\" has no port\n"),
        "{}",
        run.stderr
    );
    // clap's own usage errors exit 2 as well.
    assert_eq!(Cli::new(dir.path()).args(["render", "--bogus"]).run().code, 2);
}

#[test]
fn stacks_are_named_by_the_project_path() {
    let dir = project("[app]\nentry = \"app:app\"\n", &[]);
    let abs = std::fs::canonicalize(dir.path()).unwrap();
    for (cwd, config) in [(abs.clone(), "deploy.toml"), (abs.parent().unwrap().to_path_buf(), "")] {
        let config = if config.is_empty() {
            format!("{}/deploy.toml", abs.file_name().unwrap().to_string_lossy())
        } else {
            config.to_string()
        };
        let run = Cli::new(&cwd).args(["status", "-c", &config]).run().failure();
        assert!(
            run.stderr
                .starts_with(&format!("error: no stack of {} is running\n", abs.display())),
            "{}",
            run.stderr
        );
    }
    // Nothing to stop is not a failure: down says so and exits 0.
    let run = Cli::new(&abs).args(["down", "-t", "nginx+gunicorn"]).run().success();
    assert_eq!(
        run.stderr.trim(),
        format!(
            "down no `nginx+gunicorn` stack of {} is running; nothing to stop",
            abs.display()
        ),
    );
}

#[test]
fn missing_deploy_toml_hints_at_init() {
    let dir = tempfile::tempdir().unwrap();
    let run = Cli::new(dir.path()).args(["check"]).run().failure();
    assert!(run.stderr.contains("deploy.toml does not exist"), "{}", run.stderr);
    assert!(run.stderr.contains("hint: run `deployctl init`"), "{}", run.stderr);
}

/// `-t` is `--target` in every command that takes one; `serve` keeps Gunicorn's long names
/// (`--timeout`) but not its `-t`, which is refused with a hint rather than read as a timeout.
#[test]
fn dash_t_is_target_everywhere_and_serve_points_to_timeout() {
    let dir = project("[app]\nentry = \"app:app\"\n", &[]);
    let run = Cli::new(dir.path()).args(["serve", "-t", "60", "app:app"]).run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(
        run.stderr.trim(),
        "error: `-t` is not a flag of `serve`: in deployctl, `-t` means `--target`\n\
         hint: for the request timeout (Gunicorn's `-t`), write `--timeout 60`"
    );
    let help = Cli::new(dir.path()).args(["serve", "--help"]).run().success();
    assert!(help.stdout.contains("      --timeout <SECS>"), "{}", help.stdout);
    assert!(!help.stdout.contains("-t,"), "{}", help.stdout);
    for cmd in ["render", "check", "up", "status", "logs", "down"] {
        let help = Cli::new(dir.path()).args([cmd, "--help"]).run().success();
        assert!(
            help.stdout.contains("  -t, --target <TARGET>"),
            "{cmd}: {}",
            help.stdout
        );
    }
}
