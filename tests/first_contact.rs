//! First contact: projects nobody here wrote — a `django-admin startproject` project, a Flask
//! factory in a `src/` layout with only `pyproject.toml`, a Bottle app, a Falcon app — taken
//! through `init`, then `up` on every front target, with no hand edits, and `render`/`check`
//! after. The virtualenv lifecycle of `up` with real pip installs: the interpreter it is made
//! with, the backend installed into it, a failed install retried, a user's virtualenv given
//! what it lacks.
//!
//! pip is the real one, pointed at the local wheelhouse `scripts/setup.sh` fills
//! (`PIP_NO_INDEX=1`, `PIP_FIND_LINKS=tests/.wheels`): real installs, offline and fast. Every
//! server listens on 127.0.0.1; stacks run detached and are stopped by `down`, which signals
//! the PIDs of their state file, and a guard stops them if a test fails.

mod common;

use common::up::free_port;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Cli, Run, repo};

/// The targets every project goes through.
const FRONT_TARGETS: [&str; 4] = ["embedded", "nginx+embedded", "nginx+gunicorn", "nginx+uwsgi"];

fn wheels() -> PathBuf {
    let w = repo().join("tests/.wheels");
    assert!(
        w.join(".complete").is_file(),
        "run scripts/setup.sh first (tests/.wheels)"
    );
    w
}

/// The Python of `server/tests/.venv-apps` (Django's `django-admin` lives there).
fn apps_bin(name: &str) -> PathBuf {
    let p = repo().join("server/tests/.venv-apps/bin").join(name);
    assert!(p.exists(), "run scripts/setup.sh first ({})", p.display());
    p
}

/// `deployctl ARGS` in `dir`, with pip installing from the local wheelhouse only.
fn cli(dir: &Path) -> Cli {
    Cli::new(dir)
        .env("PIP_NO_INDEX", "1")
        .env("PIP_FIND_LINKS", &wheels().display().to_string())
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
}

/// (status, lower-cased head, body) of one request.
fn get(port: u16, path: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\nUser-Agent: first-contact\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}

/// Running: it exists and is not a zombie (an exited detached supervisor is left to init,
/// which may not reap it).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .map(|st| st != "Z")
        })
        .unwrap_or(false)
}

/// A detached stack; `down` when dropped, so a failing test leaves nothing running.
struct Stack {
    dir: PathBuf,
    target: String,
    port: u16,
    /// The supervisor and every component, from the state file.
    pids: Vec<i32>,
    stopped: bool,
}

impl Stack {
    /// `up --detach` of `target` on a free loopback port; panics with its output on failure.
    fn up(dir: &Path, target: &str) -> (Stack, Run) {
        let port = free_port();
        let run = cli(dir)
            .args([
                "up",
                "--detach",
                "--target",
                target,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .run()
            .success();
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(".deployctl").join(target).join("state.json")).unwrap())
                .unwrap();
        let mut pids = vec![state["supervisor"]["pid"].as_i64().unwrap() as i32];
        for c in state["components"].as_array().unwrap() {
            pids.push(c["pid"].as_i64().unwrap() as i32);
        }
        let stack = Stack {
            dir: dir.to_path_buf(),
            target: target.to_string(),
            port,
            pids,
            stopped: false,
        };
        (stack, run)
    }

    /// `down`, and every process of the stack gone.
    fn down(mut self) {
        self.stopped = true;
        cli(&self.dir).args(["down", "--target", &self.target]).run().success();
        let left: Vec<i32> = self.pids.iter().copied().filter(|p| alive(*p)).collect();
        assert!(left.is_empty(), "{}: still running after down: {left:?}", self.target);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = cli(&self.dir).args(["down", "--target", &self.target]).run();
        }
    }
}

/// `up` on every front target, each page checked by `pages`, then `status`, `render` and
/// `check` of that target (after `up`, the virtualenv they validate against exists).
fn through_every_target(dir: &Path, pages: impl Fn(&str, u16)) {
    for target in FRONT_TARGETS {
        let (stack, run) = Stack::up(dir, target);
        assert_eq!(
            run.stdout.trim(),
            format!("http://127.0.0.1:{}/", stack.port),
            "{target}: {}",
            run.stderr
        );
        pages(target, stack.port);
        let status = cli(dir).args(["status", "--target", target]).run();
        assert_eq!(status.code, 0, "{target}: status\n{}{}", status.stdout, status.stderr);
        stack.down();

        let out = tempfile::tempdir().unwrap();
        let rendered = out.path().join(target);
        cli(dir)
            .args(["render", "--target", target, "--out"])
            .args([&rendered])
            .env("DEPLOYCTL_REQUIRE_VALIDATORS", "1")
            .run()
            .success();
        assert!(rendered.join(".deployctl-manifest").is_file());
        cli(dir)
            .args(["check", "--require-validators", "--target", target])
            .run()
            .success();
    }
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// The written deploy.toml.
fn written(dir: &Path) -> toml::Table {
    toml::from_str(&std::fs::read_to_string(dir.join("deploy.toml")).unwrap()).unwrap()
}

/// `django-admin startproject mysite` in `dir`, as its user would: a virtualenv with Django
/// from the wheelhouse, the project, a requirements file.
fn django_project(dir: &Path) {
    std::fs::create_dir(dir).unwrap();
    // As its user made it: a virtualenv with Django, then `startproject`, and a requirements file.
    let made = std::process::Command::new(apps_bin("python"))
        .args(["-m", "venv", ".venv"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let pip = std::process::Command::new(dir.join(".venv/bin/pip"))
        .args(["install", "-q", "--no-index", "--find-links"])
        .arg(wheels())
        .arg("django>=5.2,<6")
        .output()
        .unwrap();
    assert!(pip.status.success(), "{}", String::from_utf8_lossy(&pip.stderr));
    let start = std::process::Command::new(dir.join(".venv/bin/django-admin"))
        .args(["startproject", "mysite", "."])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(start.status.success(), "{}", String::from_utf8_lossy(&start.stderr));
    write(dir, &[("requirements.txt", "Django>=5.2,<6\n")]);
}

#[test]
fn a_django_startproject_project() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mysite");
    django_project(&dir);

    let init = cli(&dir).args(["init"]).run().success();
    let spec = written(&dir);
    assert_eq!(spec["app"]["entry"].as_str(), Some("mysite.wsgi:application"));
    assert_eq!(spec["app"]["venv"].as_str(), Some(".venv"));
    assert_eq!(spec["app"]["requirements"].as_str(), Some("requirements.txt"));
    assert!(spec.get("static").is_none(), "STATIC_ROOT is unset");
    assert!(
        init.stderr
            .contains("warning: STATIC_ROOT is not set in mysite/settings.py"),
        "{}",
        init.stderr
    );
    // No `expect`: the default health check accepts Django's answer to `/` (404 with DEBUG off).
    assert!(spec["health"].get("expect").is_none());

    through_every_target(&dir, |target, port| {
        let (status, _, _) = get(port, "/");
        assert!(status < 500, "{target}: / answered {status}");
        let (status, _, body) = get(port, "/admin/login/");
        assert_eq!(status, 200, "{target}: /admin/login/\n{body}");
        assert!(body.contains("csrfmiddlewaretoken"), "{target}: {body}");
    });
    // The user's virtualenv got what the targets lack (Gunicorn), and nothing was lost from it.
    assert!(dir.join(".venv/bin/gunicorn").is_file());
    assert!(dir.join(".venv/bin/django-admin").is_file());
}

#[test]
fn a_src_layout_flask_factory_with_only_pyproject() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("myapp-project");
    write(
        &dir,
        &[
            (
                "pyproject.toml",
                "[project]\nname = \"myapp\"\nversion = \"1.0\"\nrequires-python = \">=3.10\"\ndependencies = [\"flask>=3,<4\"]\n\n\
                 [build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n",
            ),
            (
                "src/myapp/__init__.py",
                "from flask import Flask\n\nfrom .views import bp\n\n\ndef create_app(test_config=None):\n    \
                 app = Flask(__name__)\n    app.register_blueprint(bp)\n    return app\n",
            ),
            (
                "src/myapp/views.py",
                "from flask import Blueprint, url_for\n\nbp = Blueprint('main', __name__)\n\n\n@bp.route('/')\ndef index():\n    \
                 return f'<h1>Hello from myapp</h1><link rel=stylesheet href=\"{url_for(\"static\", filename=\"site.css\")}\">'\n",
            ),
            ("src/myapp/static/site.css", "h1 { color: teal; }\n"),
            ("README.md", "myapp\n"),
        ],
    );
    cli(&dir).args(["init"]).run().success();
    let spec = written(&dir);
    assert_eq!(spec["app"]["entry"].as_str(), Some("myapp:create_app()"));
    assert_eq!(spec["app"]["root"].as_str(), Some("src"));
    assert_eq!(spec["app"]["requirements"].as_str(), Some("pyproject.toml"));
    assert_eq!(spec["static"][0]["dir"].as_str(), Some("src/myapp/static"));

    through_every_target(&dir, |target, port| {
        let (status, _, body) = get(port, "/");
        assert_eq!(status, 200, "{target}: {body}");
        assert!(body.contains("<h1>Hello from myapp</h1>"), "{target}: {body}");
        assert!(body.contains("href=\"/static/site.css\""), "{target}: {body}");
        let (status, _, body) = get(port, "/static/site.css");
        assert_eq!((status, body.as_str()), (200, "h1 { color: teal; }\n"), "{target}");
    });
    // `up` made the virtualenv and installed pyproject's dependencies (not the project itself).
    let record = std::fs::read_to_string(dir.join(".venv/.deployctl-installed")).unwrap();
    assert!(
        record
            .lines()
            .any(|l| l.starts_with(&format!("requirements {}/pyproject.toml sha256:", dir.display()))),
        "{record}"
    );
    assert!(dir.join(".venv/bin/flask").is_file());
    let pip_list = std::process::Command::new(dir.join(".venv/bin/python"))
        .args(["-m", "pip", "list", "--format", "json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&pip_list.stdout).unwrap();
    let names: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_lowercase())
        .collect();
    assert!(
        names.contains(&"flask".to_string()) && names.contains(&"gunicorn".to_string()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"myapp".to_string()),
        "the project itself is not installed: {names:?}"
    );
}

#[test]
fn a_bottle_app() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bottle-site");
    write(
        &dir,
        &[
            ("requirements.txt", "bottle>=0.13,<0.14\n"),
            (
                "app.py",
                "import bottle\n\napp = bottle.Bottle()\n\n\n@app.route('/')\ndef index():\n    return 'Bottle home'\n\n\n\
                 @app.route('/hello/<name>')\ndef hello(name):\n    return f'Hello {name}'\n\n\nif __name__ == '__main__':\n    \
                 app.run(host='127.0.0.1', port=8080)\n",
            ),
        ],
    );
    cli(&dir).args(["init"]).run().success();
    assert_eq!(written(&dir)["app"]["entry"].as_str(), Some("app:app"));
    through_every_target(&dir, |target, port| {
        let (status, _, body) = get(port, "/hello/world");
        assert_eq!((status, body.as_str()), (200, "Hello world"), "{target}");
        let (status, _, _) = get(port, "/missing");
        assert_eq!(status, 404, "{target}");
    });
}

#[test]
fn a_falcon_app() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("falcon-api");
    write(
        &dir,
        &[
            ("requirements.txt", "falcon>=4,<5\n"),
            ("things/__init__.py", ""),
            (
                "things/api.py",
                "import falcon\n\n\nclass Things:\n    def on_get(self, req, resp):\n        \
                 resp.media = {'things': ['a', 'b'], 'host': req.host}\n\n\n\
                 app = falcon.App()\napp.add_route('/things', Things())\n",
            ),
        ],
    );
    cli(&dir).args(["init"]).run().success();
    assert_eq!(written(&dir)["app"]["entry"].as_str(), Some("things.api:app"));
    through_every_target(&dir, |target, port| {
        let (status, head, body) = get(port, "/things");
        assert_eq!(status, 200, "{target}: {body}");
        assert!(head.contains("content-type: application/json"), "{target}: {head}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["things"], serde_json::json!(["a", "b"]), "{target}");
        // `/` has no route: Falcon answers 404, and the default health check accepts it.
        assert_eq!(get(port, "/").0, 404, "{target}");
    });
}

const BOTTLE_APP: &str = "import bottle\n\napp = bottle.Bottle()\n\n\n@app.route('/')\ndef index():\n    return 'ok'\n";

/// A Bottle project with `requirements.txt` and no virtualenv.
fn bottle_project(extra_toml: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        &[
            ("app.py", BOTTLE_APP),
            ("requirements.txt", "bottle>=0.13,<0.14\n"),
            (
                "deploy.toml",
                &format!("[app]\nname = \"venvs\"\nentry = \"app:app\"\n\n[backend]\nworkers = 1\n{extra_toml}"),
            ),
        ],
    );
    tmp
}

/// The libpython `deployctl-server` loads, as `ldd` resolves it.
fn server_libpython() -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_deployctl")).with_file_name("deployctl-server");
    let out = std::process::Command::new("ldd").arg(&server).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lib = text
        .lines()
        .find(|l| l.trim_start().starts_with("libpython"))
        .and_then(|l| l.split("=>").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no libpython in:\n{text}"));
    PathBuf::from(lib)
}

#[test]
fn a_missing_virtualenv_is_made_with_the_python_the_server_links_not_the_first_on_path() {
    let project = bottle_project("");
    let dir = project.path();
    // The first python3 (and python3.X) on PATH is not one to make a virtualenv with.
    let fake = tempfile::tempdir().unwrap();
    let lib = server_libpython();
    let version = lib
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("libpython")
        .split(".so")
        .next()
        .unwrap()
        .to_string();
    for name in ["python3".to_string(), format!("python{version}")] {
        let p = fake.path().join(name);
        std::fs::write(&p, "#!/bin/sh\necho 'not this python' >&2\nexit 3\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", fake.path().display(), std::env::var("PATH").unwrap());
    let port = free_port();
    let run = cli(dir)
        .env("PATH", &path)
        .args([
            "up",
            "--detach",
            "-t",
            "embedded",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .run()
        .success();
    let stack = Stack {
        dir: dir.to_path_buf(),
        target: "embedded".into(),
        port,
        pids: Vec::new(),
        stopped: false,
    };
    assert!(
        run.stderr.contains(&format!(
            "created .venv with {}",
            lib.parent().unwrap().parent().unwrap().join("bin").display()
        )) && run
            .stderr
            .contains(&format!("(Python {version}, the one deployctl-server links)")),
        "{}",
        run.stderr
    );
    assert_eq!(get(port, "/").2, "ok");
    // The virtualenv's Python is the one whose libpython the server loads.
    let libdir = std::process::Command::new(dir.join(".venv/bin/python"))
        .args(["-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"])
        .output()
        .unwrap();
    assert_eq!(
        std::fs::canonicalize(String::from_utf8_lossy(&libdir.stdout).trim()).unwrap(),
        std::fs::canonicalize(lib.parent().unwrap()).unwrap()
    );
    drop(stack);
}

#[test]
fn the_backend_is_installed_before_the_validators_and_a_failed_install_is_retried() {
    let project = bottle_project("");
    let dir = project.path();
    let record = dir.join(".venv/.deployctl-installed");
    // Nothing to install from: pip fails fast, offline.
    let empty = tempfile::tempdir().unwrap();
    let port = free_port();
    let run = cli(dir)
        .env("PIP_FIND_LINKS", &empty.path().display().to_string())
        .args(["up", "-t", "nginx+gunicorn", "--listen", &format!("127.0.0.1:{port}")])
        .run()
        .failure();
    assert!(
        run.stderr
            .contains("error: installing requirements.txt, gunicorn into .venv failed"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("No matching distribution found"), "{}", run.stderr);
    assert!(run.stderr.contains("hint: fix the requirements"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("validated"),
        "validators ran before the install:\n{}",
        run.stderr
    );
    assert!(!record.exists(), "a failed install left a record");
    assert!(dir.join(".venv/bin/python3").exists());

    // Retried: the same virtualenv, the install done, then validated (systemd-analyze verify
    // finds the unit's gunicorn) and served.
    let (stack, run) = Stack::up(dir, "nginx+gunicorn");
    assert!(!run.stderr.contains("created"), "{}", run.stderr);
    assert!(
        run.stderr.contains("installed requirements.txt, gunicorn"),
        "{}",
        run.stderr
    );
    // The background `up` found the virtualenv ready, then validated.
    let log = std::fs::read_to_string(dir.join(".deployctl/nginx+gunicorn/up.log")).unwrap();
    let ready_at = log.find(".venv is up to date").unwrap_or_else(|| panic!("{log}"));
    assert!(log[ready_at..].contains("validated"), "{log}");
    assert_eq!(get(stack.port, "/").2, "ok");
    stack.down();
    let text = std::fs::read_to_string(&record).unwrap();
    let items: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(items.len(), 2, "{text}");
    assert_eq!(items[0], "package gunicorn");
    assert!(
        items[1].starts_with(&format!("requirements {}/requirements.txt sha256:", dir.display())),
        "{text}"
    );

    // Nothing changed: no install. The embedded target needs nothing more either.
    for target in ["nginx+gunicorn", "embedded"] {
        let (stack, run) = Stack::up(dir, target);
        assert!(run.stderr.contains(".venv is up to date"), "{target}: {}", run.stderr);
        assert!(!run.stderr.contains("installed"), "{target}: {}", run.stderr);
        stack.down();
    }

    // A requirement that cannot be installed: the record goes, and comes back only with a
    // successful install.
    std::fs::write(
        dir.join("requirements.txt"),
        "bottle>=0.13,<0.14\ndeployctl-no-such-package==1.0\n",
    )
    .unwrap();
    let run = cli(dir)
        .args([
            "up",
            "-t",
            "embedded",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .run()
        .failure();
    assert!(
        run.stderr.contains("requirements changed since the last install"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("deployctl-no-such-package"), "{}", run.stderr);
    assert!(!record.exists());
    std::fs::write(dir.join("requirements.txt"), "bottle>=0.13,<0.14\n").unwrap();
    let (stack, run) = Stack::up(dir, "embedded");
    assert!(run.stderr.contains("installed requirements.txt"), "{}", run.stderr);
    stack.down();
    assert!(record.exists());
}

#[test]
fn a_users_virtualenv_gets_what_it_lacks() {
    let project = bottle_project("");
    let dir = project.path();
    // Made by its user, without bottle; deployctl has no record in it.
    let made = std::process::Command::new(apps_bin("python"))
        .args(["-m", "venv", ".venv"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let (stack, run) = Stack::up(dir, "nginx+embedded");
    assert!(!run.stderr.contains("created"), "{}", run.stderr);
    assert!(run.stderr.contains("installed requirements.txt"), "{}", run.stderr);
    assert_eq!(get(stack.port, "/").2, "ok");
    stack.down();
}

#[test]
fn uwsgi_built_by_pip_is_installed_into_the_virtualenv() {
    let project = bottle_project("uwsgi_build = \"pip\"\n");
    let dir = project.path();
    let (stack, run) = Stack::up(dir, "nginx+uwsgi");
    assert!(
        run.stderr.contains("installed requirements.txt, uwsgi"),
        "{}",
        run.stderr
    );
    assert!(dir.join(".venv/bin/uwsgi").is_file());
    assert_eq!(get(stack.port, "/").2, "ok");
    let ini = std::fs::read_to_string(dir.join(".deployctl/nginx+uwsgi/conf/uwsgi/venvs.ini")).unwrap();
    assert!(!ini.lines().any(|l| l.starts_with("plugins")), "{ini}");
    stack.down();
}

#[test]
fn a_health_check_that_times_out_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let venv = repo().join("examples/flask-hello/.venv");
    write(
        dir,
        &[
            (
                "app.py",
                "import time\n\ndef app(environ, start_response):\n    time.sleep(3)\n    \
                 start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'late']\n",
            ),
            (
                "deploy.toml",
                &format!(
                    "[app]\nname = \"slow\"\nentry = \"app:app\"\nvenv = {:?}\n\n[backend]\nworkers = 1\n\n\
                     [health]\ntimeout = \"1s\"\n",
                    venv.display().to_string()
                ),
            ),
        ],
    );
    let port = free_port();
    let run = cli(dir)
        .args(["up", "-t", "embedded", "--listen", &format!("127.0.0.1:{port}")])
        .run()
        .failure();
    assert!(
        run.stderr
            .contains(&format!("health check GET / on 127.0.0.1:{port}: timed out after 1 s")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("os error"), "{}", run.stderr);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening"
    );
}

/// The admin's login page as a browser meets it through nginx: its stylesheet served by nginx
/// from `STATIC_ROOT` (after `collectstatic`), and a login POST that passes Django's CSRF
/// check, whose `Origin` must match the Host the app sees — with the port (what broke: nginx
/// forwarded `Host $host` without it, and the POST got 403).
#[test]
fn the_django_admin_login_with_its_css_and_a_csrf_post_through_nginx() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mysite");
    django_project(&dir);
    let settings = dir.join("mysite/settings.py");
    let mut text = std::fs::read_to_string(&settings).unwrap();
    text.push_str(
        "\nSTATIC_ROOT = BASE_DIR / \"staticfiles\"\nDEBUG = False\nALLOWED_HOSTS = [\"localhost\", \"127.0.0.1\"]\n",
    );
    std::fs::write(&settings, text).unwrap();
    for args in [&["collectstatic", "--noinput"][..], &["migrate", "--noinput"][..]] {
        let run = std::process::Command::new(dir.join(".venv/bin/python"))
            .arg("manage.py")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    cli(&dir).args(["init"]).run().success();
    let spec = written(&dir);
    assert_eq!(spec["static"][0]["url"].as_str(), Some("/static/"), "{spec}");
    for target in ["nginx+embedded", "nginx+gunicorn", "nginx+uwsgi"] {
        let (stack, _) = Stack::up(&dir, target);
        let port = stack.port;
        let (status, head, page) = get(port, "/admin/login/");
        assert_eq!(status, 200, "{target}: {page}");
        // Django's own security headers, once each: the front adds its defaults only where
        // the app sent none (a second X-Frame-Options or Referrer-Policy would conflict with
        // or weaken Django's).
        let values = |head: &str, name: &str| -> Vec<String> {
            head.lines()
                .filter_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.trim().to_string())
                .collect()
        };
        assert_eq!(values(&head, "x-frame-options"), ["deny"], "{target}: {head}");
        assert_eq!(values(&head, "referrer-policy"), ["same-origin"], "{target}: {head}");
        assert_eq!(values(&head, "x-content-type-options"), ["nosniff"], "{target}: {head}");
        // The stylesheets the page links, each from nginx (its Cache-Control) as text/css.
        let sheets: Vec<&str> = page
            .split("<link rel=\"stylesheet\" href=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert!(!sheets.is_empty(), "{target}: no stylesheet in {page}");
        for sheet in &sheets {
            let (status, css_head, css) = get(port, sheet);
            assert_eq!(status, 200, "{target}: {sheet}");
            assert!(
                css_head.contains("content-type: text/css"),
                "{target}: {sheet}: {css_head}"
            );
            assert!(
                css_head.contains("cache-control: max-age="),
                "{target}: {sheet}: {css_head}"
            );
            // Served by nginx itself: the front's defaults.
            assert_eq!(
                values(&css_head, "x-frame-options"),
                ["sameorigin"],
                "{target}: {css_head}"
            );
            assert!(!css.is_empty());
        }
        // The login POST with the form's token, its cookie and the Origin a browser sends. (The
        // page is fetched again: `get` lower-cases the head, and the cookie's case matters.)
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "GET /admin/login/ HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, page) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let cookie = head
            .lines()
            .find_map(|l| l.strip_prefix("Set-Cookie:"))
            .and_then(|c| c.trim().split(';').next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{target}: no csrftoken cookie in {head}"));
        let token = page
            .split("name=\"csrfmiddlewaretoken\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("{target}: no csrfmiddlewaretoken"));
        let body = format!("csrfmiddlewaretoken={token}&username=nobody&password=wrong&next=%2Fadmin%2F");
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "POST /admin/login/?next=/admin/ HTTP/1.1\r\nHost: localhost:{port}\r\n\
             Origin: http://localhost:{port}\r\nCookie: {cookie}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let answer = String::from_utf8_lossy(&out);
        let status: u16 = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        assert_eq!(status, 200, "{target}: the CSRF check refused the login:\n{answer}");
        assert!(
            answer.contains("Please enter the correct username and password"),
            "{target}: {answer}"
        );
        stack.down();
    }
}
