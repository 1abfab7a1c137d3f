//! A reload never makes things worse, with the real servers on loopback: a detached stack is
//! reloaded by `deployctl reload` onto a broken entry, a deleted virtualenv and an app that
//! answers its health check with 500 — each refused (exit 1, the error in its output and in
//! `up.log`), the same processes serving — then onto a good change, which takes effect; a
//! bounded request loop running across every reload sees no failed request.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::up::{DownOnDrop, all_processes, example_copy, free_port, get, groups_of_dir, left_in, wait_for};

/// A WSGI app whose every answer is a 500: it imports and starts fine, so only a health
/// check can tell.
const SICK_APP: &str = "def app(environ, start_response):\n    \
                        start_response('500 Internal Server Error', [('Content-Type', 'text/plain')])\n    \
                        return [b'sick']\n";

/// Every process whose group is one of `groups`: the stack's tree.
fn tree(groups: &[u32]) -> Vec<u32> {
    let mut pids: Vec<u32> = all_processes()
        .into_iter()
        .filter(|(_, g, _)| groups.contains(g))
        .map(|(p, _, _)| p)
        .collect();
    pids.sort();
    pids
}

/// The GET loop: `/json` through the public port until `stop` (at most 20,000 requests and
/// 240 s); every answer but a 200 from the app is a failure, kept with its time.
fn load(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let (mut ok, mut failed) = (0, Vec::new());
        for _ in 0..20_000 {
            if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(240) {
                break;
            }
            let r = get(port, "localhost", "/json", &[]);
            let app = (r.status == 200).then(|| r.json()["app"].as_str().map(str::to_string));
            match app.flatten() {
                Some(_) => ok += 1,
                None => failed.push(format!(
                    "{:.1} s: {} {}",
                    started.elapsed().as_secs_f64(),
                    r.status,
                    String::from_utf8_lossy(&r.body)
                )),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (ok, failed)
    })
}

/// The app name that `/json` answers, three times in a row (nginx's old workers may still
/// take a connection just after a reload).
fn serves(port: u16, want: &str) -> bool {
    (0..3).all(|_| {
        let r = get(port, "localhost", "/json", &[]);
        r.status == 200 && r.json()["app"] == want
    })
}

/// A bad change: what it is, how to make it, and what the error must say.
type Case<'a> = (&'a str, &'a dyn Fn(), &'a [&'a str]);

fn reloads_never_make_things_worse(target: &str) {
    let project = example_copy();
    let p = project.path();
    // The virtualenv through a link the test can delete and put back.
    let venv = common::repo().join("examples/flask-hello/.venv");
    std::os::unix::fs::symlink(&venv, p.join("venv")).unwrap();
    let config = p.join("deploy.toml");
    let original = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&format!("venv = {:?}", venv.display().to_string()), "venv = \"venv\"");
    assert!(original.contains("venv = \"venv\""));
    std::fs::write(&config, &original).unwrap();
    std::fs::write(p.join("sick.py"), SICK_APP).unwrap();
    std::fs::write(
        p.join("app2.py"),
        std::fs::read_to_string(p.join("app.py"))
            .unwrap()
            .replace("app=\"flask-hello\"", "app=\"reloaded\""),
    )
    .unwrap();

    let port = free_port();
    let cli = || {
        common::Cli::new(p)
            // A deleted virtualenv is created again by `up`, but nothing can be installed
            // into it: no index, no wheelhouse.
            .env("PIP_NO_INDEX", "1")
    };
    let _cleanup = DownOnDrop(p.to_path_buf());
    cli()
        .args([
            "up",
            "--target",
            target,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--detach",
        ])
        .run()
        .success();
    let log_path = p.join(".deployctl").join(target).join("up.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(serves(port, "flask-hello"), "{}", log());
    let groups = groups_of_dir(p);
    // Gunicorn says READY=1 before its workers have booted: wait until the tree stops changing.
    let mut before = tree(&groups);
    assert!(wait_for(15, || {
        std::thread::sleep(Duration::from_millis(500));
        let now = tree(&groups);
        std::mem::replace(&mut before, now.clone()) == now
    }));
    assert!(!before.is_empty());

    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(port, stop.clone());

    let broken_entry = original.replace("entry = \"app:app\"", "entry = \"no_such_module:app\"");
    let sick = original.replace("entry = \"app:app\"", "entry = \"sick:app\"");
    let cases: [Case; 3] = [
        (
            "a broken entry",
            &|| std::fs::write(&config, &broken_entry).unwrap(),
            &["no_such_module"],
        ),
        (
            "a deleted virtualenv",
            &|| std::fs::remove_file(p.join("venv")).unwrap(),
            &["installing", "failed"],
        ),
        (
            "an app failing its health check",
            &|| std::fs::write(&config, &sick).unwrap(),
            &["answered 500, expected 200"],
        ),
    ];
    for (n, (what, break_it, said)) in cases.iter().enumerate() {
        break_it();
        let run = cli().args(["reload", "--target", target]).run();
        assert_eq!(
            run.code,
            1,
            "{target}, {what}: reload did not fail\n{}\n{}",
            run.stderr,
            log()
        );
        for s in *said {
            assert!(
                run.stderr.contains(s),
                "{target}, {what}: {s:?} not said:\n{}",
                run.stderr
            );
        }
        assert!(
            run.stderr.contains("still serving the previous configuration"),
            "{target}, {what}:\n{}",
            run.stderr
        );
        let failures = log()
            .matches("reload failed; still serving the previous configuration")
            .count();
        assert_eq!(failures, n + 1, "{target}, {what}: up.log:\n{}", log());
        assert_eq!(tree(&groups), before, "{target}, {what}: the serving processes changed");
        assert!(serves(port, "flask-hello"), "{target}, {what}");
        // Put it right again.
        std::fs::write(&config, &original).unwrap();
        if !p.join("venv").is_symlink() {
            let _ = std::fs::remove_dir_all(p.join("venv"));
            std::os::unix::fs::symlink(&venv, p.join("venv")).unwrap();
        }
    }

    // A good change takes effect.
    std::fs::write(&config, original.replace("entry = \"app:app\"", "entry = \"app2:app\"")).unwrap();
    let run = cli().args(["reload", "--target", target]).run();
    assert_eq!(run.code, 0, "{target}: good reload\n{}\n{}", run.stderr, log());
    assert!(run.stderr.contains("the new configuration serves"), "{}", run.stderr);
    assert!(wait_for(10, || serves(port, "reloaded")), "{target}: {}", log());

    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = loader.join().unwrap();
    assert!(
        failed.is_empty(),
        "{target}: failed requests across the reloads: {failed:?}\n{}",
        log()
    );
    assert!(ok > 100, "{target}: only {ok} requests");

    let groups = groups_of_dir(p);
    cli().args(["down"]).run().success();
    assert!(left_in(&groups).is_empty(), "left behind: {:?}", left_in(&groups));
}

#[test]
fn embedded_reloads_never_make_things_worse() {
    reloads_never_make_things_worse("embedded");
}

#[test]
fn nginx_gunicorn_reloads_never_make_things_worse() {
    reloads_never_make_things_worse("nginx+gunicorn");
}

#[test]
fn nginx_uwsgi_reloads_never_make_things_worse() {
    reloads_never_make_things_worse("nginx+uwsgi");
}

#[test]
fn reload_without_a_stack_says_so() {
    let project = example_copy();
    let run = common::Cli::new(project.path()).args(["reload"]).run().failure();
    assert!(run.stderr.contains("no stack"), "{}", run.stderr);
    assert!(
        run.stderr.contains("hint: start one with `deployctl up --detach`"),
        "{}",
        run.stderr
    );
}
