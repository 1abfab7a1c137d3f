//! `deployctl install` / `uninstall` into a staged root holding a copy of Debian's
//! /etc/nginx (its paths rewritten into the root, its logs and pid file outside it): the
//! files where Debian's packages expect them, the host's `nginx -t` over every enabled site,
//! `systemd-analyze verify` of the units, the rollback of a failed install, two apps side by
//! side, and uninstall.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{Cli, Run, example};
use sha2::{Digest, Sha256};

/// A staged root with Debian's nginx configuration (its includes pointing into the root),
/// and a directory outside it for nginx's logs and pid file, so checks leave the root as is.
struct Staged {
    root: tempfile::TempDir,
    _logs: tempfile::TempDir,
}

fn staged() -> Staged {
    let root = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let r = root.path().display().to_string();
    let l = logs.path().display().to_string();
    copy_dir(Path::new("/etc/nginx"), &root.path().join("etc/nginx"));
    // Debian's own default site would claim the default server too; install's hint says to
    // remove it.
    let _ = std::fs::remove_file(root.path().join("etc/nginx/sites-enabled/default"));
    let conf = root.path().join("etc/nginx/nginx.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let text: String = text
        .lines()
        .map(|line| {
            let t = line.trim_start();
            if t.starts_with("pid ") {
                format!("pid {l}/nginx.pid;")
            } else if t.starts_with("error_log ") {
                format!("error_log {l}/error.log;")
            } else if t.starts_with("access_log ") {
                format!("access_log {l}/access.log;")
            } else {
                line.replace("/etc/nginx/", &format!("{r}/etc/nginx/"))
            }
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(&conf, text).unwrap();
    Staged { root, _logs: logs }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let kind = e.file_type().unwrap();
        let dest = to.join(e.file_name());
        if kind.is_dir() {
            copy_dir(&e.path(), &dest);
        } else if kind.is_symlink() {
            let target = std::fs::read_link(e.path()).unwrap();
            // Debian's modules-enabled links point at /usr/share: keep them absolute.
            std::os::unix::fs::symlink(target, dest).unwrap();
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Every path under `root` with its contents (a link's target), hashed: the whole tree.
fn tree_hash(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let kind = e.file_type().unwrap();
            let value = if kind.is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if kind.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else {
                use std::os::unix::fs::PermissionsExt;
                let mode = e.metadata().unwrap().permissions().mode();
                format!("{:x} {mode:o}", Sha256::digest(std::fs::read(&p).unwrap()))
            };
            out.insert(rel, value);
        }
    }
    out
}

fn cli(dir: &Path) -> Cli {
    let path = format!(
        "{}:{}",
        common::repo().join(".tools/venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Cli::new(dir).env("PATH", &path)
}

fn install(dir: &Path, root: &Path, target: &str, extra: &[&str]) -> Run {
    let root = root.display().to_string();
    let mut args = vec!["install", "--target", target, "--root", &root];
    args.extend(extra);
    cli(dir).args(args).run()
}

fn uninstall(dir: &Path, root: &Path) -> Run {
    let root = root.display().to_string();
    cli(dir).args(["uninstall", "--root", &root]).run()
}

fn nginx_t(root: &Path) {
    let out = std::process::Command::new("nginx")
        .arg("-t")
        .arg("-c")
        .arg(root.join("etc/nginx/nginx.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nginx -t over the staged tree:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A second app: a minimal WSGI app on the embedded server, with names of its own, using the
/// Flask example's virtualenv.
fn second_app(names: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.py"),
        "def app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'second\\n']\n",
    )
    .unwrap();
    let venv = example("flask-hello").join(".venv");
    std::fs::write(
        dir.path().join("deploy.toml"),
        format!(
            "[app]\nname = \"second\"\nentry = \"app:app\"\nvenv = {venv:?}\n\n[server]\nnames = [{names}]\nlisten = \"0.0.0.0:80\"\n\n[backend]\nkind = \"embedded\"\n\n[frontend]\nkind = \"nginx\"\n\n[systemd]\nuser = \"www-data\"\ngroup = \"www-data\"\n",
            venv = venv.display().to_string()
        ),
    )
    .unwrap();
    dir
}

#[test]
fn installs_where_debian_expects_and_checks_the_host() {
    let s = staged();
    let root = s.root.path();
    let flask = example("flask-hello");
    install(&flask, root, "nginx+uwsgi", &[]).success();
    let etc = root.join("etc");
    let site = etc.join("nginx/sites-available/flask-hello.conf");
    assert!(site.is_file());
    assert_eq!(
        std::fs::read_link(etc.join("nginx/sites-enabled/flask-hello.conf")).unwrap(),
        PathBuf::from("../sites-available/flask-hello.conf")
    );
    assert!(etc.join("nginx/sites-available/deployctl-default.conf").is_file());
    assert!(etc.join("nginx/sites-enabled/deployctl-default.conf").exists());
    assert!(etc.join("systemd/system/flask-hello.service").is_file());
    assert!(etc.join("systemd/system/flask-hello.socket").is_file());
    let ini = etc.join("deployctl/flask-hello/uwsgi/flask-hello.ini");
    assert!(ini.is_file());
    // The unit reads the config where it is installed (the plan's configuration directory).
    let service = std::fs::read_to_string(etc.join("systemd/system/flask-hello.service")).unwrap();
    assert!(
        service.contains("--ini /etc/deployctl/flask-hello/uwsgi/flask-hello.ini"),
        "{service}"
    );
    // The per-app site has no default server: the shared file is the catch-all.
    assert!(!std::fs::read_to_string(&site).unwrap().contains("default_server"));
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("var/lib/deployctl/flask-hello/installed.json")).unwrap(),
    )
    .unwrap();
    let files = manifest["files"].as_object().unwrap();
    let hash = format!("{:x}", Sha256::digest(std::fs::read(&ini).unwrap()));
    assert_eq!(
        files["/etc/deployctl/flask-hello/uwsgi/flask-hello.ini"]["sha256"],
        serde_json::Value::String(hash)
    );
    assert_eq!(files.len(), 5, "{manifest}");
    nginx_t(root);

    // Again: nothing to change, and the dry run says so.
    let before = tree_hash(root);
    let run = install(&flask, root, "nginx+uwsgi", &["--dry-run"]).success();
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    // Another target: the diff, and nothing written.
    let run = install(&flask, root, "nginx+gunicorn", &["--dry-run"]).success();
    assert!(
        run.stdout.contains("+++ b/etc/nginx/sites-available/flask-hello.conf"),
        "{}",
        run.stdout
    );
    for line in [
        "+++ b/etc/deployctl/flask-hello/gunicorn/gunicorn.conf.py",
        "--- a/etc/deployctl/flask-hello/uwsgi/flask-hello.ini\n+++ /dev/null",
    ] {
        assert!(run.stdout.contains(line), "{line}:\n{}", run.stdout);
    }
    assert_eq!(tree_hash(root), before);
    // Then for real: the uWSGI config and its directory go, Gunicorn's comes.
    install(&flask, root, "nginx+gunicorn", &[]).success();
    assert!(!etc.join("deployctl/flask-hello/uwsgi").exists());
    assert!(etc.join("deployctl/flask-hello/gunicorn/gunicorn.conf.py").is_file());
    nginx_t(root);
}

#[test]
fn refuses_to_replace_a_file_it_did_not_install() {
    let s = staged();
    let root = s.root.path();
    let unit = root.join("etc/systemd/system/flask-hello.service");
    std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
    std::fs::write(&unit, "[Service]\nExecStart=/bin/true\n").unwrap();
    let before = tree_hash(root);
    let run = install(&example("flask-hello"), root, "nginx+uwsgi", &[]).failure();
    assert!(
        run.stderr
            .contains("refusing to replace /etc/systemd/system/flask-hello.service"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(tree_hash(root), before);
    install(&example("flask-hello"), root, "nginx+uwsgi", &["--force"]).success();
    assert!(std::fs::read_to_string(&unit).unwrap().contains("uwsgi"));
}

#[test]
fn a_failed_host_check_leaves_the_tree_byte_identical() {
    let s = staged();
    let root = s.root.path();
    let flask = example("flask-hello");
    install(&flask, root, "nginx+uwsgi", &[]).success();
    // nginx.conf on the host holds a directive that clashes with the new site (an upstream
    // of the same name): `nginx -t` of the host fails while the site alone passes the
    // per-file validators, after the files were placed.
    let conf = root.join("etc/nginx/nginx.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replacen(
            "http {",
            "http {\n\tupstream flask_hello_backend { server 127.0.0.1:9; }",
            1,
        ),
    )
    .unwrap();
    let before = tree_hash(root);
    let run = install(&flask, root, "nginx+gunicorn", &[]).failure();
    assert!(run.stderr.contains("nginx -t"), "{}", run.stderr);
    assert!(run.stderr.contains("nothing was installed"), "{}", run.stderr);
    assert_eq!(tree_hash(root), before);
}

#[test]
fn without_root_and_systemd_it_says_what_to_run_and_writes_nothing() {
    let run = cli(&example("flask-hello"))
        .args(["install", "--target", "nginx+uwsgi"])
        .run();
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("nothing was installed"), "{}", run.stderr);
    assert!(
        run.stderr.contains("systemctl enable --now flask-hello.socket"),
        "{}",
        run.stderr
    );
    assert!(!Path::new("/etc/systemd/system/flask-hello.service").exists());
}

#[test]
fn two_apps_side_by_side_then_uninstall() {
    let s = staged();
    let root = s.root.path();
    let flask = example("flask-hello");
    install(&flask, root, "nginx+uwsgi", &[]).success();
    let clash = second_app("\"flask-hello.test\"");
    let before = tree_hash(root);
    let run = install(clash.path(), root, "nginx+embedded", &[]).failure();
    assert!(
        run.stderr
            .contains("`second` and `flask-hello` both claim the server name flask-hello.test"),
        "{}",
        run.stderr
    );
    assert_eq!(tree_hash(root), before);

    let second = second_app("\"second.test\"");
    install(second.path(), root, "nginx+embedded", &[]).success();
    nginx_t(root);
    let default = root.join("etc/nginx/sites-available/deployctl-default.conf");
    let run = cli(&flask)
        .args(["list", "--json", "--root", &root.display().to_string()])
        .run()
        .success();
    let listed: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let states: Vec<(String, String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
            (s("app"), s("target"), s("state"))
        })
        .collect();
    assert_eq!(
        states,
        [
            ("flask-hello".into(), "nginx+uwsgi".into(), "installed".into()),
            ("second".into(), "nginx+embedded".into(), "installed".into())
        ]
    );
    assert!(std::fs::read_to_string(&default).unwrap().contains("return 444;"));
    assert_eq!(
        std::fs::read_to_string(&default)
            .unwrap()
            .matches("default_server")
            .count(),
        1
    );

    // Uninstalling the first keeps the shared catch-all for the second; a hand-edited file
    // survives and is reported.
    let socket = root.join("etc/systemd/system/flask-hello.socket");
    std::fs::write(&socket, "# edited by hand\n").unwrap();
    let run = cli(&flask)
        .args(["list", "--root", &root.display().to_string()])
        .run()
        .success();
    assert!(
        run.stdout.contains("changed: /etc/systemd/system/flask-hello.socket"),
        "{}",
        run.stdout
    );
    let run = uninstall(&flask, root).success();
    assert!(
        run.stderr.contains("flask-hello.socket was changed by hand"),
        "{}",
        run.stderr
    );
    assert!(socket.is_file());
    let left: Vec<String> = tree_hash(root)
        .into_keys()
        .filter(|p| p.contains("flask-hello"))
        .collect();
    assert_eq!(left, vec!["etc/systemd/system/flask-hello.socket".to_string()]);
    assert!(default.is_file());
    nginx_t(root);

    // The last app takes the catch-all with it.
    uninstall(second.path(), root).success();
    assert!(!default.exists());
    assert!(!root.join("etc/nginx/sites-enabled/deployctl-default.conf").exists());
    let left: Vec<String> = tree_hash(root)
        .into_keys()
        .filter(|p| p.contains("second") || p.contains("deployctl-default"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
