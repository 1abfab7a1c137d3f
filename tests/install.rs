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
    stage_apache(root.path());
    Staged { root, _logs: logs }
}

/// Debian's /etc/apache2 in the staged root: its own default site disabled (install's hint
/// says to), `Listen` on loopback only, and mod_wsgi not enabled, so install enables a module
/// with a `.conf` beside its `.load`; `alias` stays enabled as Debian ships it.
fn stage_apache(root: &Path) {
    let apache = root.join("etc/apache2");
    copy_dir(Path::new("/etc/apache2"), &apache);
    let _ = std::fs::remove_file(apache.join("sites-enabled/000-default.conf"));
    let ports = apache.join("ports.conf");
    let text = std::fs::read_to_string(&ports).unwrap();
    let text: String = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("Listen ") {
            Some(port) if !port.contains(':') => format!("Listen 127.0.0.1:{port}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&ports, text).unwrap();
    for m in [
        "wsgi.load",
        "wsgi.conf",
        "headers.load",
        "expires.load",
        "proxy.load",
        "proxy.conf",
    ] {
        let _ = std::fs::remove_file(apache.join("mods-enabled").join(m));
    }
    assert!(apache.join("mods-enabled/alias.load").exists());
}

/// The real `apache2ctl -t` over the staged /etc/apache2.
fn apache_t(root: &Path) {
    let out = std::process::Command::new("apache2ctl")
        .arg("-t")
        .env("APACHE_CONFDIR", root.join("etc/apache2"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "apache2ctl -t over the staged tree:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file and link under `root` (not directories) with its contents.
fn files_hash(root: &Path) -> BTreeMap<String, String> {
    tree_hash(root).into_iter().filter(|(_, v)| v != "dir").collect()
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
    wsgi_app("second", names, "")
}

/// A minimal WSGI app `name` on nginx+embedded with `names`, `extra` appended to its
/// deploy.toml, using the Flask example's virtualenv.
fn wsgi_app(name: &str, names: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.py"),
        format!(
            "def app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'{name}\\n']\n"
        ),
    )
    .unwrap();
    let venv = example("flask-hello").join(".venv");
    std::fs::write(
        dir.path().join("deploy.toml"),
        format!(
            "[app]\nname = \"{name}\"\nentry = \"app:app\"\nvenv = {venv:?}\n\n[server]\nnames = [{names}]\nlisten = \"0.0.0.0:80\"\n\n[backend]\nkind = \"embedded\"\n\n[frontend]\nkind = \"nginx\"\n\n[systemd]\nuser = \"www-data\"\ngroup = \"www-data\"\n{extra}",
            venv = venv.display().to_string()
        ),
    )
    .unwrap();
    dir
}

/// A self-signed pair for `name` in `dir` (openssl), as `[tls]` keys naming the files.
fn self_signed(dir: &Path, name: &str) -> String {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .arg("-subj")
        .arg(format!("/CN={name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    format!(
        "\n[tls]\ncertificate = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    )
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
    // The dry run reads the host and writes nothing, systemd or not.
    let run = cli(&example("flask-hello"))
        .args(["install", "--target", "nginx+uwsgi", "--dry-run"])
        .run()
        .success();
    assert!(
        run.stdout.contains("+++ b/etc/systemd/system/flask-hello.service"),
        "{}",
        run.stdout
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
    // Under a staged root systemd cannot tell whether they run.
    for a in listed.as_array().unwrap() {
        assert!(a["enabled"].is_null() && a["running"].is_null(), "{a}");
    }
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

#[test]
fn apache_targets_place_the_site_and_enable_exactly_its_modules() {
    let flask = example("flask-hello");
    for target in [
        "apache+embedded",
        "apache+gunicorn",
        "apache+uwsgi",
        "apache+mod_wsgi",
        "nginx+apache+mod_wsgi",
    ] {
        let s = staged();
        let root = s.root.path();
        let before = files_hash(root);
        // The dry run: the site, its link and the module links as a diff; nothing written.
        let run = install(&flask, root, target, &["--dry-run"]).success();
        for line in [
            "+++ b/etc/apache2/sites-available/flask-hello.conf",
            "+++ b/etc/apache2/sites-enabled/flask-hello.conf\n@@ -0,0 +1 @@\n+-> ../sites-available/flask-hello.conf",
            "+++ b/etc/apache2/mods-enabled/headers.load",
        ] {
            assert!(run.stdout.contains(line), "{target}: {line}\n{}", run.stdout);
        }
        assert!(!run.stdout.contains("mods-enabled/alias.load"), "{}", run.stdout);
        assert_eq!(files_hash(root), before, "{target}");
        let run = install(&flask, root, target, &[]);
        let run = run.success();
        assert!(run.stderr.contains("apache2ctl -t"), "{target}: {}", run.stderr);
        let apache = root.join("etc/apache2");
        let site = apache.join("sites-available/flask-hello.conf");
        assert!(site.is_file(), "{target}");
        assert_eq!(
            std::fs::read_link(apache.join("sites-enabled/flask-hello.conf")).unwrap(),
            PathBuf::from("../sites-available/flask-hello.conf"),
            "{target}"
        );
        // Every module of the site's own `a2enmod` line is enabled, a module's .conf beside
        // its .load.
        let text = std::fs::read_to_string(&site).unwrap();
        let a2enmod = text
            .lines()
            .find_map(|l| l.strip_prefix("#   a2enmod "))
            .unwrap_or_else(|| panic!("{target}: no a2enmod line in\n{text}"));
        for m in a2enmod.split_whitespace() {
            assert!(apache.join(format!("mods-enabled/{m}.load")).exists(), "{target}: {m}");
            if apache.join(format!("mods-available/{m}.conf")).exists() {
                assert_eq!(
                    std::fs::read_link(apache.join(format!("mods-enabled/{m}.conf"))).unwrap(),
                    PathBuf::from(format!("../mods-available/{m}.conf")),
                    "{target}: {m}"
                );
            }
        }
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("var/lib/deployctl/flask-hello/installed.json")).unwrap(),
        )
        .unwrap();
        let enabled: Vec<&str> = manifest["modules_enabled"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m.as_str())
            .collect();
        // Enabled before install: not install's.
        assert!(!enabled.contains(&"alias"), "{target}: {enabled:?}");
        assert!(enabled.contains(&"headers"), "{target}: {enabled:?}");
        if target.ends_with("mod_wsgi") {
            assert!(enabled.contains(&"wsgi"), "{target}: {enabled:?}");
            assert!(
                root.join("etc/deployctl/flask-hello/mod_wsgi/flask-hello.wsgi")
                    .is_file()
            );
            assert!(
                text.contains("/etc/deployctl/flask-hello/mod_wsgi/flask-hello.wsgi"),
                "{text}"
            );
            assert!(!root.join("etc/systemd/system/flask-hello.service").exists());
        } else {
            assert!(root.join("etc/systemd/system/flask-hello.socket").is_file(), "{target}");
        }
        // The self-contained httpd.conf is up's, not the host's.
        assert!(!root.join("etc/deployctl/flask-hello/apache").exists(), "{target}");
        // With --root no service is touched: the steps are printed for the host.
        assert!(run.stdout.contains("systemctl daemon-reload"), "{}", run.stdout);
        assert!(
            run.stdout.contains("systemctl reload-or-restart apache2"),
            "{}",
            run.stdout
        );
        assert_eq!(
            run.stdout.contains("systemctl reload-or-restart nginx"),
            target.starts_with("nginx+"),
            "{}",
            run.stdout
        );
        apache_t(root);
        if target.starts_with("nginx+") {
            nginx_t(root);
        }

        // Uninstall puts every file and link back as it was: the modules install enabled go,
        // alias stays.
        let run = uninstall(&flask, root).success();
        assert!(run.stdout.contains("systemctl daemon-reload"), "{}", run.stdout);
        assert_eq!(files_hash(root), before, "{target}");
        apache_t(root);
    }
}

#[test]
fn a_failed_apache_check_leaves_the_tree_byte_identical() {
    let s = staged();
    let root = s.root.path();
    // A host configuration that breaks once mod_headers is loaded: the site alone passes its
    // validators, the host's apache2ctl -t fails after the files and links were placed.
    std::fs::write(
        root.join("etc/apache2/conf-enabled/planted.conf"),
        "<IfModule headers_module>\n    NoSuchDirective on\n</IfModule>\n",
    )
    .unwrap();
    apache_t(root);
    let before = tree_hash(root);
    let run = install(&example("flask-hello"), root, "apache+gunicorn", &[]).failure();
    assert!(run.stderr.contains("apache2ctl -t"), "{}", run.stderr);
    assert!(run.stderr.contains("NoSuchDirective"), "{}", run.stderr);
    assert!(run.stderr.contains("nothing was installed"), "{}", run.stderr);
    assert_eq!(tree_hash(root), before);
}

#[test]
fn apps_share_the_modules_they_enable_and_a_front_its_port() {
    let s = staged();
    let root = s.root.path();
    let flask = example("flask-hello");
    install(&flask, root, "apache+gunicorn", &[]).success();
    let second = second_app("\"second.test\"");
    let toml = second.path().join("deploy.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, text.replace("kind = \"nginx\"", "kind = \"apache\"")).unwrap();
    // nginx and Apache cannot both have port 80.
    let before = tree_hash(root);
    let run = install(second.path(), root, "nginx+embedded", &[]).failure();
    assert!(
        run.stderr
            .contains("`second` and `flask-hello` both claim the port of 0.0.0.0:80"),
        "{}",
        run.stderr
    );
    assert_eq!(tree_hash(root), before);
    // Two Apache sites share it, by name.
    install(second.path(), root, "apache+embedded", &[]).success();
    apache_t(root);
    let headers = root.join("etc/apache2/mods-enabled/headers.load");
    uninstall(&flask, root).success();
    assert!(headers.exists(), "the second app still needs mod_headers");
    apache_t(root);
    uninstall(second.path(), root).success();
    assert!(!headers.exists());
    assert!(root.join("etc/apache2/mods-enabled/alias.load").exists());
}

#[test]
fn a_hand_edited_catch_all_is_kept() {
    let s = staged();
    let root = s.root.path();
    let flask = example("flask-hello");
    install(&flask, root, "nginx+uwsgi", &[]).success();
    let second = second_app("\"second.test\"");
    install(second.path(), root, "nginx+embedded", &[]).success();
    let default = root.join("etc/nginx/sites-available/deployctl-default.conf");
    let edited = std::fs::read_to_string(&default).unwrap() + "# edited by hand\n";
    std::fs::write(&default, &edited).unwrap();
    // Still needed by the second app: kept as it is, not a failure.
    let run = uninstall(&flask, root).success();
    assert!(
        run.stderr
            .contains("deployctl-default.conf was changed by hand since install: kept"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_to_string(&default).unwrap(), edited);
    nginx_t(root);
    // No longer needed: still kept, with its link.
    uninstall(second.path(), root).success();
    assert_eq!(std::fs::read_to_string(&default).unwrap(), edited);
    assert!(root.join("etc/nginx/sites-enabled/deployctl-default.conf").exists());
}

#[test]
fn two_tls_apps_share_the_https_catch_all() {
    let s = staged();
    let root = s.root.path();
    let certs = tempfile::tempdir().unwrap();
    let (a, b) = (certs.path().join("a"), certs.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let one = wsgi_app("one", "\"one.test\"", &self_signed(&a, "one.test"));
    let two = wsgi_app("two", "\"two.test\"", &self_signed(&b, "two.test"));
    let run = install(one.path(), root, "nginx+embedded", &[]).success();
    // The steps for the host: the health check goes through HTTPS (HTTP only redirects).
    assert!(
        run.stdout
            .contains("curl -fsSk -o /dev/null --resolve one.test:443:127.0.0.1 https://one.test:443/"),
        "{}",
        run.stdout
    );
    install(two.path(), root, "nginx+embedded", &[]).success();
    nginx_t(root);
    for app in ["one", "two"] {
        let site = std::fs::read_to_string(root.join(format!("etc/nginx/sites-available/{app}.conf"))).unwrap();
        assert!(!site.contains("default_server"), "{site}");
        assert!(!site.contains("ssl_reject_handshake"), "{site}");
    }
    // One catch-all per address: 444 on HTTP, the handshake refused on HTTPS with the apps'
    // profile.
    let default = std::fs::read_to_string(root.join("etc/nginx/sites-available/deployctl-default.conf")).unwrap();
    assert_eq!(default.matches("default_server").count(), 2, "{default}");
    assert_eq!(default.matches("ssl_reject_handshake on;").count(), 1, "{default}");
    assert!(default.contains("listen 0.0.0.0:443 ssl"), "{default}");
    assert!(default.contains("ssl_protocols TLSv1.2 TLSv1.3;"), "{default}");
    assert!(default.contains("return 421;"), "{default}");

    // A third app with another profile on the same address is refused, naming both.
    let c = certs.path().join("c");
    std::fs::create_dir_all(&c).unwrap();
    let modern = self_signed(&c, "three.test") + "profile = \"modern\"\n";
    let three = wsgi_app("three", "\"three.test\"", &modern);
    let before = tree_hash(root);
    let run = install(three.path(), root, "nginx+embedded", &[]).failure();
    assert!(
        run.stderr
            .contains("apps `three` and `one` both serve HTTPS on 0.0.0.0:443 with different TLS settings"),
        "{}",
        run.stderr
    );
    assert_eq!(tree_hash(root), before);

    uninstall(one.path(), root).success();
    let default = std::fs::read_to_string(root.join("etc/nginx/sites-available/deployctl-default.conf")).unwrap();
    assert!(default.contains("ssl_reject_handshake on;"), "{default}");
    nginx_t(root);
    uninstall(two.path(), root).success();
    assert!(!root.join("etc/nginx/sites-available/deployctl-default.conf").exists());
}

/// The Flask example copied to `dir` with `listen`, its virtualenv the example's own.
fn flask_copy(dir: &Path, listen: &str) -> PathBuf {
    let from = example("flask-hello");
    let to = dir.join("flask-hello");
    copy_dir(&from.join("static"), &to.join("static"));
    for f in ["app.py", "requirements.txt"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    let toml = std::fs::read_to_string(from.join("deploy.toml")).unwrap();
    let venv = from.join(".venv").display().to_string();
    let toml = toml
        .replace("venv = \".venv\"", &format!("venv = {venv:?}"))
        .replace("listen = \"0.0.0.0:80\"", &format!("listen = {listen:?}"));
    std::fs::write(to.join("deploy.toml"), toml).unwrap();
    to
}

/// The Python of `server/tests/.venv-apps` (Django and Bottle are installed there).
fn apps_venv() -> PathBuf {
    let venv = common::repo().join("server/tests/.venv-apps");
    assert!(venv.join("bin/django-admin").exists(), "run scripts/setup.sh first");
    venv
}

/// A Bottle app in `dir`/bottle-site on nginx+embedded.
fn bottle_app(dir: &Path, listen: &str) -> PathBuf {
    let to = dir.join("bottle-site");
    std::fs::create_dir_all(&to).unwrap();
    std::fs::write(
        to.join("app.py"),
        "import bottle\n\napp = bottle.Bottle()\n\n\n@app.route('/')\ndef index():\n    return 'Bottle home'\n",
    )
    .unwrap();
    std::fs::write(
        to.join("deploy.toml"),
        format!(
            "[app]\nname = \"bottle-site\"\nentry = \"app:app\"\nvenv = {:?}\n\n[server]\nnames = [\"bottle.test\"]\nlisten = {listen:?}\n\n\
             [backend]\nkind = \"embedded\"\n\n[frontend]\nkind = \"nginx\"\n\n[systemd]\nuser = \"www-data\"\ngroup = \"www-data\"\n",
            apps_venv().display().to_string()
        ),
    )
    .unwrap();
    to
}

/// `django-admin startproject mysite` in `dir`/mysite, on Apache in front of the embedded
/// server, listening on `listen`.
fn django_project(dir: &Path, listen: &str) -> PathBuf {
    let to = dir.join("mysite");
    std::fs::create_dir_all(&to).unwrap();
    let made = std::process::Command::new(apps_venv().join("bin/django-admin"))
        .args(["startproject", "mysite", "."])
        .current_dir(&to)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    std::fs::write(
        to.join("deploy.toml"),
        format!(
            "[app]\nname = \"mysite\"\nentry = \"mysite.wsgi:application\"\nvenv = {:?}\n\n[server]\nnames = [\"django.test\"]\nlisten = {listen:?}\n\n\
             [backend]\nkind = \"embedded\"\n\n[frontend]\nkind = \"apache\"\n\n[systemd]\nuser = \"www-data\"\ngroup = \"www-data\"\n",
            apps_venv().display().to_string()
        ),
    )
    .unwrap();
    to
}

/// Every unit file under the root's /etc/systemd/system.
fn staged_units(root: &Path) -> Vec<PathBuf> {
    let mut units: Vec<PathBuf> = std::fs::read_dir(root.join("etc/systemd/system"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    units.sort();
    units
}

#[test]
fn three_apps_side_by_side_pass_the_hosts_checks() {
    let s = staged();
    let root = s.root.path();
    let apps = tempfile::tempdir().unwrap();
    let flask = flask_copy(apps.path(), "0.0.0.0:80");
    let bottle = bottle_app(apps.path(), "0.0.0.0:80");
    let django = django_project(apps.path(), "127.0.0.1:8080");
    install(&flask, root, "nginx+gunicorn", &[]).success();
    install(&bottle, root, "nginx+embedded", &[]).success();
    install(&django, root, "apache+embedded", &[]).success();

    // The whole staged tree, as the host will run it.
    nginx_t(root);
    apache_t(root);
    let units = staged_units(root);
    let names: Vec<String> = units
        .iter()
        .map(|u| u.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "bottle-site.service",
            "bottle-site.socket",
            "flask-hello.service",
            "flask-hello.socket",
            "mysite.service",
            "mysite.socket"
        ]
    );
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg("--recursive-errors=no")
        .args(&units)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
    let run = cli(&flask)
        .args(["list", "--root", &root.display().to_string()])
        .run()
        .success();
    for line in [
        "bottle-site\tnginx+embedded\tinstalled",
        "flask-hello\tnginx+gunicorn\tinstalled",
        "mysite\tapache+embedded\tinstalled",
    ] {
        assert!(run.stdout.contains(line), "{line}:\n{}", run.stdout);
    }

    // Each goes, leaving the others checked.
    for (dir, name) in [(&bottle, "bottle-site"), (&flask, "flask-hello"), (&django, "mysite")] {
        uninstall(dir, root).success();
        let left: Vec<String> = tree_hash(root).into_keys().filter(|p| p.contains(name)).collect();
        assert!(left.is_empty(), "{name}: {left:?}");
        nginx_t(root);
        apache_t(root);
    }
    assert!(!root.join("etc/nginx/sites-available/deployctl-default.conf").exists());
}

/// The `KEY=VALUE` of a unit's `Environment=` lines and the words of its `ExecStart=` (no
/// word of these units is quoted).
fn unit_lines(unit: &Path) -> (Vec<(String, String)>, Vec<String>) {
    let text = std::fs::read_to_string(unit).unwrap();
    let mut env = Vec::new();
    let mut exec = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Environment=") {
            let v = v.trim_matches('"');
            let (k, v) = v.split_once('=').unwrap();
            env.push((k.to_string(), v.to_string()));
        } else if let Some(v) = line.strip_prefix("ExecStart=") {
            assert!(!v.contains('"') && !v.contains('\''), "{v}");
            exec = v.split_whitespace().map(str::to_string).collect();
        }
    }
    (env, exec)
}

/// A process started by the test, stopped by PID (TERM, then waited for) when dropped.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /` on 127.0.0.1:`port` with `Host: host`: (status, body), or `None` when nginx closes
/// the connection without an answer (444).
fn get(port: u16, host: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok()?;
    write!(s, "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

#[test]
fn nginx_from_the_staged_tree_serves_two_apps_by_name() {
    let s = staged();
    let root = s.root.path();
    let apps = tempfile::tempdir().unwrap();
    let port = common::up::free_port();
    let listen = format!("127.0.0.1:{port}");
    let flask = flask_copy(apps.path(), &listen);
    let bottle = bottle_app(apps.path(), &listen);
    install(&flask, root, "nginx+gunicorn", &[]).success();
    install(&bottle, root, "nginx+embedded", &[]).success();
    nginx_t(root);

    // Paths mapped into the test's own directories: the sockets systemd would create under
    // /run go to `run`, the configs under /etc/deployctl are read from the root; nginx's
    // workers run as root (they reach the sockets in a private directory).
    let run = tempfile::tempdir().unwrap();
    let r = run.path().display().to_string();
    let map = |text: &str| {
        text.replace("unix:/run/", &format!("unix:{r}/"))
            .replace("\"/run/", &format!("\"{r}/"))
            .replace("/etc/deployctl/", &format!("{}/etc/deployctl/", root.display()))
    };
    for f in [
        "etc/nginx/sites-available/flask-hello.conf",
        "etc/nginx/sites-available/bottle-site.conf",
        "etc/deployctl/flask-hello/gunicorn/gunicorn.conf.py",
    ] {
        let p = root.join(f);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, map(&text)).unwrap();
    }
    std::fs::create_dir_all(run.path().join("flask-hello")).unwrap();
    let conf = root.join("etc/nginx/nginx.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, text.replace("user www-data;", "user root;")).unwrap();

    // The backends, from their installed unit lines.
    let mut backends = Vec::new();
    for app in ["flask-hello", "bottle-site"] {
        let (env, exec) = unit_lines(&root.join(format!("etc/systemd/system/{app}.service")));
        let exec: Vec<String> = exec.iter().map(|w| map(w)).collect();
        let child = std::process::Command::new(&exec[0])
            .args(&exec[1..])
            .envs(env)
            .env_remove("LISTEN_FDS")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{exec:?}: {e}"));
        backends.push(Stopped(child));
    }
    // nginx from the staged tree: its own configuration, pid and logs (staged()).
    let nginx = Stopped(
        std::process::Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let answer = |host: &str| loop {
        match get(port, host) {
            Some((200, body)) => return body,
            other if std::time::Instant::now() > deadline => panic!("{host}: {other:?}"),
            _ => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    assert!(answer("flask-hello.test").contains("Hello"), "flask");
    assert_eq!(answer("bottle.test"), "Bottle home");
    // An unknown name gets no answer from the shared catch-all (444).
    assert_eq!(get(port, "other.test"), None);
    drop(nginx);
    drop(backends);
}

/// Every link in `dir` with its target.
fn links(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let target = std::fs::read_link(&p)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            (p.file_name().unwrap().to_string_lossy().into_owned(), target)
        })
        .collect()
}

#[test]
fn the_module_and_site_links_are_the_ones_a2enmod_and_a2ensite_make() {
    let flask = example("flask-hello");
    for target in ["apache+uwsgi", "nginx+apache+mod_wsgi"] {
        let ours = staged();
        install(&flask, ours.root.path(), target, &[]).success();
        let site = ours.root.path().join("etc/apache2/sites-available/flask-hello.conf");
        let text = std::fs::read_to_string(&site).unwrap();
        let modules: Vec<&str> = text
            .lines()
            .find_map(|l| l.strip_prefix("#   a2enmod "))
            .unwrap()
            .split_whitespace()
            .collect();
        // Debian's own tools on a second copy of the same staged /etc/apache2 (their state
        // directory in a scratch one).
        let theirs = staged();
        let apache = theirs.root.path().join("etc/apache2");
        std::fs::copy(&site, apache.join("sites-available/flask-hello.conf")).unwrap();
        let state = tempfile::tempdir().unwrap();
        for (tool, args) in [("a2enmod", modules.clone()), ("a2ensite", vec!["flask-hello"])] {
            let out = std::process::Command::new(tool)
                .arg("-q")
                .args(&args)
                .env("APACHE_CONFDIR", &apache)
                .env("APACHE_STATE_DIRECTORY", state.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{tool}: {}", String::from_utf8_lossy(&out.stderr));
        }
        for dir in ["mods-enabled", "sites-enabled"] {
            assert_eq!(
                links(&ours.root.path().join("etc/apache2").join(dir)),
                links(&apache.join(dir)),
                "{target}: {dir}"
            );
        }
    }
}

#[test]
fn debians_default_site_is_named_when_it_claims_the_default_server() {
    let s = staged();
    let root = s.root.path();
    // Enabled as Debian ships it (staged() disables it).
    std::os::unix::fs::symlink(
        root.join("etc/nginx/sites-available/default"),
        root.join("etc/nginx/sites-enabled/default"),
    )
    .unwrap();
    let before = tree_hash(root);
    let run = install(&example("flask-hello"), root, "nginx+uwsgi", &[]).failure();
    assert!(run.stderr.contains("duplicate default server"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("hint: another site is the default server of this address"),
        "{}",
        run.stderr
    );
    assert_eq!(tree_hash(root), before);
}

/// `[app].secret_env` on a host: the unit reads `/etc/deployctl/NAME/secrets.env`, the user's
/// file. Install checks it without writing it (missing, a key missing — systemd drops an
/// `export KEY=` line —, readable by others), never prints a value, and uninstall keeps it.
#[test]
fn the_secrets_file_is_checked_never_written_and_kept_by_uninstall() {
    let staged = staged();
    let root = staged.root.path();
    let app = wsgi_app("secretive", "\"secretive.example\"", "");
    let toml = app.path().join("deploy.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replacen("[app]\n", "[app]\nsecret_env = [\"SECRET_KEY\", \"DB_PASSWORD\"]\n", 1),
    )
    .unwrap();
    let secrets = root.join("etc/deployctl/secretive/secrets.env");

    let run = install(app.path(), root, "nginx+embedded", &[]).success();
    assert!(
        run.stderr.contains(&format!(
            "[app].secret_env (SECRET_KEY, DB_PASSWORD) is read from {}, which does not exist",
            secrets.display()
        )) && run
            .stderr
            .contains("install -D -m 600 /dev/null /etc/deployctl/secretive/secrets.env"),
        "{}",
        run.stderr
    );
    assert!(!secrets.exists(), "install wrote the user's secrets file");
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/secretive.service")).unwrap();
    assert!(
        unit.lines()
            .any(|l| l == "EnvironmentFile=/etc/deployctl/secretive/secrets.env"),
        "{unit}"
    );

    // A key only a shell would read, and a mode others can read.
    std::fs::create_dir_all(secrets.parent().unwrap()).unwrap();
    std::fs::write(&secrets, "SECRET_KEY=s3cr3t-value\nexport DB_PASSWORD=0ther-s3cr3t\n").unwrap();
    std::fs::set_permissions(&secrets, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let run = install(app.path(), root, "nginx+embedded", &[]).success();
    assert!(
        run.stderr.contains(&format!(
            "{} sets no DB_PASSWORD (listed in [app].secret_env)",
            secrets.display()
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("is mode 0644"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("SECRET_KEY"),
        "a key that is set is not reported: {}",
        run.stderr
    );
    for out in [&run.stdout, &run.stderr] {
        assert!(!out.contains("s3cr3t"), "a secret value was printed: {out}");
    }

    let fixed = "# made by hand\nSECRET_KEY=s3cr3t-value\nDB_PASSWORD = 0ther-s3cr3t\n";
    std::fs::write(&secrets, fixed).unwrap();
    std::fs::set_permissions(&secrets, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let run = install(app.path(), root, "nginx+embedded", &[]).success();
    assert!(!run.stderr.contains("secrets.env"), "{}", run.stderr);

    uninstall(app.path(), root).success();
    assert_eq!(
        std::fs::read_to_string(&secrets).unwrap(),
        fixed,
        "uninstall touched the secrets file"
    );
    assert!(!root.join("etc/systemd/system/secretive.service").exists());
}

/// `[tls]` with ACME on a host: the front cannot load the site before a certificate exists,
/// so install places a self-signed placeholder in the state directory (what the host's
/// `nginx -t` and `apache2ctl -t` then load, through the staged root), and the steps start
/// `NAME-cert.service` once the front serves the challenge path. A failed install takes the
/// placeholder away with everything else.
#[test]
fn acme_installs_a_placeholder_the_fronts_load_then_starts_the_cert_service() {
    let s = staged();
    let root = s.root.path();
    let acme = "\n[tls]\nlisten = \"0.0.0.0:443\"\nacme = { email = \"ops@example.com\", directory = \"https://acme.invalid/directory\" }\n";
    for target in ["nginx+gunicorn", "apache+gunicorn"] {
        let app = wsgi_app("acmeapp", "\"acme.example.com\"", acme);
        let before = files_hash(root);
        let run = install(app.path(), root, target, &[]).success();
        let live = root.join("var/lib/deployctl/acmeapp/tls/live");
        assert!(
            run.stderr
                .contains(&format!("a self-signed certificate in {}", live.display())),
            "{}",
            run.stderr
        );
        // The placeholder, as openssl reads it: self-signed, for the app's name.
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-issuer", "-ext", "subjectAltName", "-in"])
            .arg(live.join("fullchain.pem"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("DNS:acme.example.com"), "{text}");
        let subject = text.lines().find(|l| l.starts_with("subject")).unwrap();
        let issuer = text.lines().find(|l| l.starts_with("issuer")).unwrap();
        assert_eq!(
            subject.trim_start_matches("subject"),
            issuer.trim_start_matches("issuer")
        );
        // The host's checks loaded it (they ran on the staged tree, see the test below).
        let front = if target.starts_with("nginx") {
            "nginx -t"
        } else {
            "apache2ctl -t"
        };
        assert!(
            run.stderr
                .lines()
                .any(|l| l.trim_start().starts_with("Checked") && l.contains(front)),
            "{}",
            run.stderr
        );
        let steps: Vec<&str> = run.stdout.lines().map(str::trim).collect();
        let reload = steps
            .iter()
            .position(|l| l.starts_with("systemctl reload-or-restart"))
            .unwrap();
        let start = steps
            .iter()
            .position(|l| *l == "systemctl start acmeapp-cert.service")
            .unwrap_or_else(|| panic!("{}", run.stdout));
        assert!(
            reload < start,
            "the cert service starts after the front serves the site:\n{}",
            run.stdout
        );
        uninstall(app.path(), root).success();
        // The state directory (certificates, the ACME account) is kept as state; the rest goes.
        assert!(live.join("fullchain.pem").exists());
        std::fs::remove_dir_all(root.join("var/lib/deployctl/acmeapp")).unwrap();
        assert!(files_hash(root) == before, "{target}: uninstall left files behind");
    }

    // A failed install leaves no placeholder behind.
    let app = wsgi_app("acmeapp", "\"acme.example.com\"", acme);
    let conf = root.join("etc/nginx/nginx.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replacen(
            "http {",
            "http {\n\tupstream acmeapp_backend { server 127.0.0.1:9; }",
            1,
        ),
    )
    .unwrap();
    let before = tree_hash(root);
    let run = install(app.path(), root, "nginx+embedded", &[]).failure();
    assert!(run.stderr.contains("nothing was installed"), "{}", run.stderr);
    assert!(tree_hash(root) == before, "the failed install changed the tree");
    assert!(!root.join("var/lib/deployctl/acmeapp/tls").exists());
}

/// Regression: the host check of a staged root ran `nginx -t` on the root's `nginx.conf`,
/// whose `include /etc/nginx/…` lines named this machine's files, so the root's own sites
/// were never read (a broken one passed). The root is now read through a copy naming it.
#[test]
fn a_staged_root_is_checked_as_its_own_files_not_the_machines() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    // Debian's configuration as the package ships it: absolute includes, unchanged.
    copy_dir(Path::new("/etc/nginx"), &root.join("etc/nginx"));
    let _ = std::fs::remove_file(root.join("etc/nginx/sites-enabled/default"));
    let flask = example("flask-hello");
    install(&flask, root, "nginx+gunicorn", &[]).success();
    uninstall(&flask, root).success();
    std::fs::write(root.join("etc/nginx/conf.d/broken.conf"), "not_a_directive on;\n").unwrap();
    let before = tree_hash(root);
    let run = install(&flask, root, "nginx+gunicorn", &[]).failure();
    assert!(tree_hash(root) == before, "the failed install changed the tree");
    assert!(
        run.stderr.contains("unknown directive \"not_a_directive\"")
            && run
                .stderr
                .contains(&format!("{}/etc/nginx/conf.d/broken.conf", root.display())),
        "{}",
        run.stderr
    );
}

#[test]
fn another_project_under_an_installed_apps_name_is_refused_naming_both() {
    let s = staged();
    let root = s.root.path();
    let first = wsgi_app("shop", "\"shop.test\"", "");
    let second = wsgi_app("shop", "\"other-shop.test\"", "");
    let toml = |d: &Path| std::fs::canonicalize(d.join("deploy.toml")).unwrap();
    let manifest = root.join("var/lib/deployctl/shop/installed.json");
    install(first.path(), root, "nginx+embedded", &[]).success();
    let recorded: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(recorded["project"].as_str(), toml(first.path()).to_str());

    // The second project is not a reinstall of the first: refused, both deploy.toml named.
    let before = tree_hash(root);
    let run = install(second.path(), root, "nginx+embedded", &[]).failure();
    for p in [toml(first.path()), toml(second.path())] {
        assert!(run.stderr.contains(&p.display().to_string()), "{}", run.stderr);
    }
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(tree_hash(root), before);
    // Nor does the second project's uninstall remove the first one.
    let run = uninstall(second.path(), root).failure();
    assert!(
        run.stderr.contains("nothing was removed") && run.stderr.contains(&toml(first.path()).display().to_string()),
        "{}",
        run.stderr
    );
    assert_eq!(tree_hash(root), before);
    // The first project itself reinstalls as before.
    install(first.path(), root, "nginx+embedded", &[]).success();
    assert_eq!(tree_hash(root), before);

    // A manifest from before the project was recorded is taken as the same project.
    let mut old: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    old.as_object_mut().unwrap().remove("project");
    std::fs::write(&manifest, serde_json::to_string_pretty(&old).unwrap()).unwrap();
    install(second.path(), root, "nginx+embedded", &[]).success();
    let recorded: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(recorded["project"].as_str(), toml(second.path()).to_str());

    // `--force` replaces the installed project with this one.
    let run = install(first.path(), root, "nginx+embedded", &["--force"]).success();
    assert!(
        run.stderr.contains(&toml(second.path()).display().to_string()),
        "{}",
        run.stderr
    );
    let recorded: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(recorded["project"].as_str(), toml(first.path()).to_str());
    nginx_t(root);
}

#[test]
fn names_that_render_the_same_upstream_are_refused_naming_both() {
    let s = staged();
    let root = s.root.path();
    let dash = wsgi_app("a-b", "\"a-b.test\"", "");
    let underscore = wsgi_app("a_b", "\"a_b.test\"", "");
    install(dash.path(), root, "nginx+embedded", &[]).success();
    let before = tree_hash(root);
    let run = install(underscore.path(), root, "nginx+embedded", &[]).failure();
    assert!(
        run.stderr
            .contains("apps `a_b` and `a-b` both render the nginx upstream a_b_backend"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("[app].name"), "{}", run.stderr);
    assert_eq!(tree_hash(root), before);
    nginx_t(root);
}

/// A fault only the check of the installed units can see: the per-file gate verifies each
/// rendered unit with the rest of the rendered tree (a template's fault, such as an
/// `ExecStart=` program that does not exist, already fails there), while the host holds more
/// beside them — here an administrator's drop-in for the app's service whose program does
/// not exist. `systemd-analyze verify` of the installed units reads it and fails.
#[test]
fn a_failed_unit_verify_leaves_the_tree_byte_identical_and_names_the_unit() {
    let s = staged();
    let root = s.root.path();
    let flask = example("flask-hello");
    let dropin = root.join("etc/systemd/system/flask-hello.service.d/override.conf");
    std::fs::create_dir_all(dropin.parent().unwrap()).unwrap();
    std::fs::write(
        &dropin,
        "[Service]\nExecStart=\nExecStart=/nonexistent/deployctl-test-program\n",
    )
    .unwrap();
    let assert_refused = |run: &Run| {
        for needle in [
            "`systemd-analyze verify` of the installed units failed",
            "flask-hello.service: Command /nonexistent/deployctl-test-program is not executable",
            "nothing was installed",
        ] {
            assert!(run.stderr.contains(needle), "{needle}:\n{}", run.stderr);
        }
    };
    // A first install: nothing of it stays.
    let before = tree_hash(root);
    let run = install(&flask, root, "nginx+uwsgi", &[]).failure();
    assert_refused(&run);
    assert_eq!(tree_hash(root), before);

    // A reinstall onto another target: the files it replaced are restored byte for byte.
    std::fs::rename(&dropin, root.join("override.conf.aside")).unwrap();
    install(&flask, root, "nginx+uwsgi", &[]).success();
    std::fs::rename(root.join("override.conf.aside"), &dropin).unwrap();
    let before = tree_hash(root);
    let run = install(&flask, root, "nginx+gunicorn", &[]).failure();
    assert_refused(&run);
    assert_eq!(tree_hash(root), before);
}

/// What an app's lines are found by on a host: its units' `SyslogIdentifier=` (the journal's
/// and syslog's name; without one it is the program's, and two Gunicorn apps would both log
/// as `gunicorn`) and `LogsDirectory=`. Two apps on the same server program never share one.
#[test]
fn two_apps_on_one_program_never_share_a_log_name() {
    let s = staged();
    let root = s.root.path();
    let flask = example("flask-hello");
    let second = second_app("\"second.test\"");
    install(&flask, root, "nginx+gunicorn", &[]).success();
    install(second.path(), root, "nginx+gunicorn", &[]).success();
    nginx_t(root);
    let mut programs = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for app in ["flask-hello", "second"] {
        let unit = root.join(format!("etc/systemd/system/{app}.service"));
        let text = std::fs::read_to_string(&unit).unwrap();
        let values = |key: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(key))
                .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .collect()
        };
        assert_eq!(values("SyslogIdentifier="), [app], "{text}");
        assert_eq!(values("LogsDirectory="), [app], "{text}");
        programs.push(unit_lines(&unit).1[0].clone());
        for name in [
            format!("syslog {}", values("SyslogIdentifier=")[0]),
            format!("logs /var/log/{}", values("LogsDirectory=")[0]),
        ] {
            if let Some(other) = seen.insert(name.clone(), app.to_string()) {
                panic!("{name} of `{app}` is `{other}`'s too");
            }
        }
    }
    // The same program: without SyslogIdentifier= both would log under its name.
    assert_eq!(programs[0], programs[1]);
}

/// The `Listen` ports of app `name`'s Apache site and the loopback port its nginx site
/// proxies to, as placed under `root`.
fn inner_ports(root: &Path, name: &str) -> (Vec<u16>, Vec<u16>) {
    let read = |p: String| std::fs::read_to_string(root.join(p)).unwrap();
    let apache = read(format!("etc/apache2/sites-available/{name}.conf"));
    let listens = apache
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Listen 127.0.0.1:"))
        .map(|p| p.trim().parse().unwrap())
        .collect();
    let nginx = read(format!("etc/nginx/sites-available/{name}.conf"));
    let proxied = nginx
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server 127.0.0.1:"))
        .map(|p| p.trim_end_matches(';').parse().unwrap())
        .collect();
    (listens, proxied)
}

/// Regression: every `nginx+apache+*` app's Apache listened on 127.0.0.1:8081, so a second
/// one on a host was refused as a port clash. Install gives each its own loopback port, kept
/// by a reinstall.
#[test]
fn two_apps_with_apache_behind_nginx_get_a_loopback_port_each() {
    let s = staged();
    let root = s.root.path();
    let flask = example("flask-hello");
    let target = "nginx+apache+mod_wsgi";
    install(&flask, root, target, &[]).success();
    let second = second_app("\"second.test\"");
    let run = install(second.path(), root, target, &[]).success();
    assert!(
        run.stderr
            .contains("second's Apache listens for nginx on 127.0.0.1:8082"),
        "{}",
        run.stderr
    );
    apache_t(root);
    nginx_t(root);
    assert_eq!(inner_ports(root, "flask-hello"), (vec![8081], vec![8081]));
    assert_eq!(inner_ports(root, "second"), (vec![8082], vec![8082]));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("var/lib/deployctl/second/installed.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["inner_web_port"], 8082);

    // A reinstall keeps its port: nothing changes.
    let run = install(second.path(), root, target, &[]).success();
    assert!(run.stderr.contains("0 paths changed"), "{}", run.stderr);
    // With the first app gone and back, the second keeps 8082 and the first gets 8081 again.
    uninstall(&flask, root).success();
    let run = install(second.path(), root, target, &[]).success();
    assert!(run.stderr.contains("0 paths changed"), "{}", run.stderr);
    install(&flask, root, target, &[]).success();
    assert_eq!(inner_ports(root, "flask-hello"), (vec![8081], vec![8081]));
    assert_eq!(inner_ports(root, "second"), (vec![8082], vec![8082]));
    apache_t(root);
    nginx_t(root);

    // A real clash is still refused: an Apache site of its own on the second's port.
    let third = wsgi_app("third", "\"third.test\"", "");
    let toml = third.path().join("deploy.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, text.replace("0.0.0.0:80", "127.0.0.1:8082")).unwrap();
    let before = tree_hash(root);
    let run = install(third.path(), root, "apache+embedded", &[]).failure();
    assert!(
        run.stderr
            .contains("apps `third` and `second` both claim the port of 127.0.0.1:8082"),
        "{}",
        run.stderr
    );
    assert_eq!(tree_hash(root), before);
    uninstall(second.path(), root).success();
    uninstall(&flask, root).success();
    apache_t(root);
}
