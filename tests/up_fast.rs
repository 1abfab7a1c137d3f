//! Fast starts: the validators' cache under the run directory (a second `up` reruns none of
//! the validators whose inputs did not change, a failure is never taken from it), and `-q`
//! that quiets the terminal of `up --detach` but keeps every component's lines in `up.log`.

mod common;

use common::up::{DownOnDrop, example_copy, free_port, get};

/// `validated N checks passed (M unchanged …)` → (N, M).
fn validated(log: &str) -> (usize, usize) {
    let line = log
        .lines()
        .find(|l| l.trim_start().starts_with("validated "))
        .unwrap_or_else(|| panic!("no validated line:\n{log}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let passed = words[1].parse().unwrap();
    let cached = line
        .split_once('(')
        .and_then(|(_, r)| r.split_whitespace().next())
        .map(|n| n.parse().unwrap())
        .unwrap_or(0);
    (passed, cached)
}

#[test]
fn a_second_up_reruns_no_unchanged_validator_and_quiet_keeps_the_logs() {
    let project = example_copy();
    let p = project.path();
    let _cleanup = DownOnDrop(p.to_path_buf());
    let log_path = p.join(".deployctl/nginx+gunicorn/up.log");
    let up = |port: u16| {
        let run = common::Cli::new(p)
            .args([
                "-q",
                "up",
                "--target",
                "nginx+gunicorn",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--detach",
            ])
            .run()
            .success();
        // -q: the URL on stdout, nothing on the terminal.
        assert_eq!(run.stdout.trim(), format!("http://127.0.0.1:{port}/"));
        assert!(run.stderr.trim().is_empty(), "{}", run.stderr);
        assert_eq!(get(port, "localhost", "/", &[]).status, 200);
        let log = std::fs::read_to_string(&log_path).unwrap();
        common::Cli::new(p).args(["down"]).run().success();
        log
    };

    let first = up(free_port());
    // nginx -t, gixy, gunicorn --check-config, verify ×2, security.
    let (passed, _) = validated(&first);
    assert_eq!(passed, 6, "{first}");
    for prefix in ["app   | ", "nginx | "] {
        assert!(
            first.lines().any(|l| l.starts_with(prefix)),
            "-q dropped the {prefix:?} lines from up.log:\n{first}"
        );
    }
    assert!(first.contains("      health GET / → 200"), "{first}");

    // Another port changes only the listen lines: the verdicts come from the cache.
    let second = up(free_port());
    assert_eq!(validated(&second), (6, 6), "{second}");

    // A change of the app's code: Gunicorn's check (it imports the app) runs again, the
    // others do not.
    let app = std::fs::read_to_string(p.join("app.py")).unwrap();
    std::fs::write(p.join("app.py"), format!("{app}\n# changed\n")).unwrap();
    let third = up(free_port());
    assert_eq!(validated(&third), (6, 5), "{third}");
}

#[test]
fn a_failing_validator_is_never_cached() {
    let project = example_copy();
    let p = project.path();
    // A site template nginx refuses.
    let templates = p.join("tpl/nginx");
    std::fs::create_dir_all(&templates).unwrap();
    let site = std::fs::read_to_string(common::repo().join("templates/nginx/site.conf.tera")).unwrap();
    let (import, rest) = site.split_once('\n').unwrap();
    assert!(import.contains("import"), "{import}");
    std::fs::write(
        templates.join("site.conf.tera"),
        format!("{import}\nno_such_directive on;\n{rest}"),
    )
    .unwrap();
    for _ in 0..2 {
        let run = common::Cli::new(p)
            .args([
                "up",
                "--target",
                "nginx+embedded",
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args(["--templates", "tpl"])
            .run()
            .failure();
        assert!(
            run.stderr.contains("the rendered configs do not validate"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("unknown directive \"no_such_directive\""),
            "nginx's own message, every time:\n{}",
            run.stderr
        );
    }
    let cache = std::fs::read_to_string(p.join(".deployctl/nginx+embedded/validated.json")).unwrap_or_default();
    assert!(!cache.contains("syntax ok"), "nginx -t recorded as passed: {cache}");
}
