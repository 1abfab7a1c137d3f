//! `render` output modes, drift checks, template overrides and `init`.

mod common;

use common::{Cli, project};

const SPEC: &str = "[app]\nname = \"d\"\nentry = \"app:app\"\n";

#[test]
fn drift_check_passes_then_reports_a_diff() {
    let dir = project(SPEC, &[]);
    Cli::new(dir.path())
        .args(["render", "--no-validate", "-t", "nginx+uwsgi"])
        .run()
        .success();
    Cli::new(dir.path())
        .args(["render", "--check", "-t", "nginx+uwsgi"])
        .run()
        .success();

    let ini = dir.path().join("deploy/nginx+uwsgi/uwsgi/d.ini");
    let text = std::fs::read_to_string(&ini).unwrap();
    std::fs::write(&ini, text.replace("harakiri = 30", "harakiri = 99")).unwrap();
    std::fs::write(dir.path().join("deploy/nginx+uwsgi/stray.conf"), "x\n").unwrap();
    let run = Cli::new(dir.path())
        .args(["render", "--check", "-t", "nginx+uwsgi"])
        .run()
        .failure();
    let minus: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with('-') && !l.starts_with("---"))
        .collect();
    let plus: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .collect();
    assert_eq!(minus, ["-x", "-harakiri = 99"], "{}", run.stdout);
    assert_eq!(plus, ["+harakiri = 30"], "{}", run.stdout);
    assert!(
        run.stdout.contains("+++ /dev/null"),
        "a stray file is drift: {}",
        run.stdout
    );
    // --check never writes.
    assert!(std::fs::read_to_string(&ini).unwrap().contains("harakiri = 99"));
}

#[test]
fn render_writes_exactly_the_target_files() {
    let dir = project(SPEC, &[]);
    let out = dir.path().join("out");
    Cli::new(dir.path())
        .args(["render", "--no-validate", "-t", "nginx+gunicorn", "--out"])
        .args([&out])
        .run()
        .success();
    let mut files: Vec<String> = Vec::new();
    for e in walk(&out) {
        files.push(e.strip_prefix(&out).unwrap().to_string_lossy().into_owned());
    }
    files.sort();
    assert_eq!(
        files,
        [
            ".deployctl-manifest",
            "gunicorn/gunicorn.conf.py",
            "nginx/d.conf",
            "systemd/d.service",
            "systemd/d.socket"
        ]
    );
    // The manifest lists every other file with its SHA-256, in `sha256sum` format.
    let manifest = manifest(&out);
    assert_eq!(
        manifest.keys().map(String::as_str).collect::<Vec<_>>(),
        &files[1..],
        "every rendered file listed"
    );
    let check = std::process::Command::new("sha256sum")
        .args(["-c", "--strict", ".deployctl-manifest"])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    // The unit refers to the config where it was written.
    let unit = std::fs::read_to_string(out.join("systemd/d.service")).unwrap();
    assert!(
        unit.contains(&format!("--config {}/gunicorn/gunicorn.conf.py", out.display())),
        "{unit}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".out."))
        .collect();
    assert!(leftovers.is_empty(), "staging directories are cleaned up");
}

/// `.deployctl-manifest` of a rendered directory: path → SHA-256 (hex).
fn manifest(dir: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(dir.join(".deployctl-manifest"))
        .unwrap()
        .lines()
        .map(|l| {
            let (hash, path) = l.split_once("  ").expect("HASH  PATH");
            assert_eq!(hash.len(), 64, "{l}");
            (path.to_string(), hash.to_string())
        })
        .collect()
}

/// Every file under `dir` with its contents, to compare a tree before and after.
fn snapshot_dir(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    walk(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// A project with an app, a venv marker and a data file, as a user's directory looks.
fn users_project() -> tempfile::TempDir {
    let dir = project(SPEC, &[".venv/bin", "precious"]);
    std::fs::write(dir.path().join("app.py"), "app = None\n").unwrap();
    std::fs::write(dir.path().join(".venv/pyvenv.cfg"), "home = /usr/bin\n").unwrap();
    std::fs::write(dir.path().join("precious/data.txt"), "irreplaceable\n").unwrap();
    dir
}

#[test]
fn render_refuses_a_directory_it_did_not_write_and_keeps_every_file() {
    let dir = users_project();
    let before = snapshot_dir(dir.path());
    let run = Cli::new(dir.path())
        .args(["render", "--no-validate", "-t", "gunicorn", "--out", "precious"])
        .run()
        .failure();
    let precious = std::fs::canonicalize(dir.path().join("precious")).unwrap();
    assert!(
        run.stderr
            .starts_with(&format!("error: refusing to render into {}: ", precious.display())),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("no .deployctl-manifest): data.txt"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("\nhint: "), "{}", run.stderr);
    // --force does not make a foreign directory replaceable.
    Cli::new(dir.path())
        .args([
            "render",
            "--no-validate",
            "-t",
            "gunicorn",
            "--out",
            "precious",
            "--force",
        ])
        .run()
        .failure();
    assert_eq!(snapshot_dir(dir.path()), before, "a file changed");
}

#[test]
fn render_refuses_the_project_directory_and_its_parents() {
    let dir = users_project();
    let before = snapshot_dir(dir.path());
    let project = std::fs::canonicalize(dir.path()).unwrap();
    for out in [".", "..", "precious/..", "/"] {
        let run = Cli::new(dir.path())
            .args([
                "render",
                "--no-validate",
                "-t",
                "nginx+gunicorn",
                "--out",
                out,
                "--force",
            ])
            .run()
            .failure();
        let named = std::fs::canonicalize(dir.path().join(out)).unwrap();
        let why = if named == project {
            "it is the project directory".to_string()
        } else {
            format!("it is a parent of the project directory {}", project.display())
        };
        assert!(
            run.stderr
                .starts_with(&format!("error: refusing to render into {}: {why}", named.display())),
            "{out}: {}",
            run.stderr
        );
    }
    assert_eq!(snapshot_dir(dir.path()), before, "a file changed");
}

#[test]
fn render_replaces_only_what_its_manifest_lists() {
    let dir = users_project();
    let cli = || Cli::new(dir.path());
    let out = dir.path().join("deploy/gunicorn");
    // An empty directory the user made is fine.
    std::fs::create_dir_all(&out).unwrap();
    cli()
        .args(["render", "--no-validate", "-t", "gunicorn"])
        .run()
        .success();
    assert_eq!(manifest(&out).len(), 3);
    // Rendering again over its own files is fine.
    cli()
        .args(["render", "--no-validate", "-t", "gunicorn"])
        .run()
        .success();

    // A rendered file edited by hand: refused, then replaced with --force.
    let conf = out.join("gunicorn/gunicorn.conf.py");
    let rendered = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{rendered}# tuned by hand\n")).unwrap();
    let run = cli()
        .args(["render", "--no-validate", "-t", "gunicorn"])
        .run()
        .failure();
    assert!(
        run.stderr.contains("were changed since: gunicorn/gunicorn.conf.py"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("hint: `deployctl render --check` shows the changes; pass `--force`")
    );
    assert!(std::fs::read_to_string(&conf).unwrap().ends_with("# tuned by hand\n"));
    cli()
        .args(["render", "--no-validate", "-t", "gunicorn", "--force"])
        .run()
        .success();
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), rendered);

    // A file the user put there is never replaced, not even with --force.
    std::fs::create_dir_all(out.join("tls")).unwrap();
    std::fs::write(out.join("tls/key.pem"), "secret\n").unwrap();
    for force in [false, true] {
        let mut args = vec!["render", "--no-validate", "-t", "gunicorn"];
        if force {
            args.push("--force");
        }
        let run = cli().args(&args).run().failure();
        assert!(
            run.stderr
                .contains("holds files deployctl did not write (not in its .deployctl-manifest): tls/key.pem"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(std::fs::read_to_string(out.join("tls/key.pem")).unwrap(), "secret\n");
    // A drift check does not count the manifest, only the user's file.
    let run = cli().args(["render", "--check", "-t", "gunicorn"]).run().failure();
    assert!(run.stdout.contains("--- a/tls/key.pem"), "{}", run.stdout);
    assert!(!run.stdout.contains(".deployctl-manifest"), "{}", run.stdout);

    // A file in place of the directory is not replaced either.
    let file = dir.path().join("out-file");
    std::fs::write(&file, "mine\n").unwrap();
    let run = cli()
        .args(["render", "--no-validate", "-t", "gunicorn", "--out", "out-file"])
        .run()
        .failure();
    assert!(run.stderr.contains("is a file, not a directory"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine\n");
}

#[test]
fn render_takes_over_a_directory_holding_exactly_what_it_would_write() {
    // Rendered before manifests existed: the same files, no manifest. Nothing would be lost.
    let dir = users_project();
    let out = dir.path().join("deploy/gunicorn");
    Cli::new(dir.path())
        .args(["render", "--no-validate", "-t", "gunicorn"])
        .run()
        .success();
    std::fs::remove_file(out.join(".deployctl-manifest")).unwrap();
    Cli::new(dir.path())
        .args(["render", "--no-validate", "-t", "gunicorn"])
        .run()
        .success();
    assert!(out.join(".deployctl-manifest").is_file());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn a_user_template_replaces_the_built_in_one() {
    let dir = project(SPEC, &[]);
    let t = dir.path().join("my-templates/systemd");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(
        t.join("app.socket.tera"),
        "[Socket]\nListenStream={{ systemd.listen_stream }}\n# custom for {{ name }}\n",
    )
    .unwrap();
    let files = common::split_listing(
        &Cli::new(dir.path())
            .args(["render", "--stdout", "-t", "gunicorn", "--templates", "my-templates"])
            .run()
            .success()
            .stdout,
    );
    assert_eq!(
        files["systemd/d.socket"],
        "[Socket]\nListenStream=0.0.0.0:80\n# custom for d\n"
    );
    assert!(
        files["systemd/d.service"].contains("Type=notify"),
        "others stay built in"
    );

    // The same through deploy.toml's [render].templates.
    std::fs::write(
        dir.path().join("deploy.toml"),
        format!("{SPEC}[render]\ntemplates = \"my-templates\"\n"),
    )
    .unwrap();
    let files = common::split_listing(
        &Cli::new(dir.path())
            .args(["render", "--stdout", "-t", "gunicorn"])
            .run()
            .success()
            .stdout,
    );
    assert!(files["systemd/d.socket"].contains("# custom for d"));
}

#[test]
fn template_errors_name_the_template() {
    let dir = project(SPEC, &[]);
    let t = dir.path().join("t/systemd");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("app.socket.tera"), "{{ no_such_variable }}\n").unwrap();
    let run = Cli::new(dir.path())
        .args(["render", "--stdout", "-t", "gunicorn", "--templates", "t"])
        .run()
        .failure();
    assert!(
        run.stderr.contains("systemd/app.socket.tera") && run.stderr.contains("no_such_variable"),
        "{}",
        run.stderr
    );

    std::fs::write(t.join("typo.tera"), "x").unwrap();
    let run = Cli::new(dir.path())
        .args(["render", "--stdout", "-t", "gunicorn", "--templates", "t"])
        .run()
        .failure();
    assert!(
        run.stderr.contains("does not replace a built-in template"),
        "{}",
        run.stderr
    );
}

fn init_project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("shop").tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

fn written_spec(dir: &std::path::Path) -> toml::Table {
    let run = Cli::new(dir).args(["check", "--show"]).run().success();
    toml::from_str(&run.stdout).unwrap()
}

#[test]
fn init_detects_a_flask_app_venv_requirements_and_static() {
    let dir = init_project(&[
        ("app.py", "from flask import Flask\napp = Flask(__name__)\n"),
        ("static/site.css", "body{}"),
        ("requirements.txt", "flask\n"),
        (".venv/pyvenv.cfg", "home = /usr/bin\n"),
    ]);
    Cli::new(dir.path()).args(["init"]).run().success();
    let spec = written_spec(dir.path());
    assert_eq!(spec["app"]["entry"].as_str(), Some("app:app"));
    assert!(spec["app"]["venv"].as_str().unwrap().ends_with("/.venv"));
    assert!(
        spec["app"]["requirements"]
            .as_str()
            .unwrap()
            .ends_with("/requirements.txt")
    );
    assert_eq!(spec["static"][0]["url"].as_str(), Some("/static/"));
    assert!(spec["static"][0]["dir"].as_str().unwrap().ends_with("/static"));

    let before = std::fs::read_to_string(dir.path().join("deploy.toml")).unwrap();
    let run = Cli::new(dir.path())
        .args(["init", "--entry", "other:app"])
        .run()
        .failure();
    assert!(
        run.stderr.contains("already exists") && run.stderr.contains("hint: pass --force"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_to_string(dir.path().join("deploy.toml")).unwrap(), before);
    Cli::new(dir.path())
        .args([
            "init",
            "--force",
            "--entry",
            "other:app",
            "--name",
            "shop",
            "--backend",
            "gunicorn",
        ])
        .run()
        .success();
    let spec = written_spec(dir.path());
    assert_eq!(spec["app"]["entry"].as_str(), Some("other:app"));
    assert_eq!(spec["app"]["name"].as_str(), Some("shop"));
    assert_eq!(spec["backend"]["kind"].as_str(), Some("gunicorn"));
}

#[test]
fn init_detects_a_factory_and_django() {
    let dir = init_project(&[(
        "shop/__init__.py",
        "from flask import Flask\n\ndef create_app():\n    app = Flask(__name__)\n    return app\n",
    )]);
    Cli::new(dir.path()).args(["init"]).run().success();
    assert_eq!(
        written_spec(dir.path())["app"]["entry"].as_str(),
        Some("shop:create_app()")
    );

    let dir = init_project(&[
        ("manage.py", "import os\n"),
        ("mysite/settings.py", "DEBUG = False\n"),
        (
            "mysite/wsgi.py",
            "from django.core.wsgi import get_wsgi_application\napplication = get_wsgi_application()\n",
        ),
    ]);
    Cli::new(dir.path()).args(["init"]).run().success();
    assert_eq!(
        written_spec(dir.path())["app"]["entry"].as_str(),
        Some("mysite.wsgi:application")
    );
}

#[test]
fn init_without_an_entry_says_where_it_looked() {
    let dir = init_project(&[("tools.py", "print('hi')\n"), ("lib/util.py", "X = 1\n")]);
    let run = Cli::new(dir.path()).args(["init"]).run().failure();
    assert!(
        run.stderr.contains("looked in: lib/util.py, tools.py"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("hint: pass it as `--entry"), "{}", run.stderr);
    assert!(!dir.path().join("deploy.toml").exists());
}

#[test]
fn init_finds_a_src_layout_factory_and_pyproject_dependencies() {
    let dir = init_project(&[
        (
            "pyproject.toml",
            "[project]\nname = \"myapp\"\nversion = \"1.0\"\ndependencies = [\"flask>=3\"]\n\n\
             [build-system]\nrequires = [\"setuptools\"]\nbuild-backend = \"setuptools.build_meta\"\n",
        ),
        (
            "src/myapp/__init__.py",
            "from flask import Flask\n\n\ndef create_app(test_config=None):\n    app = Flask(__name__)\n    return app\n",
        ),
        ("src/myapp/views.py", "X = 1\n"),
        (
            "tests/test_app.py",
            "from myapp import create_app\napp = create_app()\n",
        ),
    ]);
    Cli::new(dir.path()).args(["init"]).run().success();
    let text = std::fs::read_to_string(dir.path().join("deploy.toml")).unwrap();
    let written: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(written["app"]["entry"].as_str(), Some("myapp:create_app()"));
    assert_eq!(written["app"]["root"].as_str(), Some("src"));
    assert_eq!(written["app"]["requirements"].as_str(), Some("pyproject.toml"));
    let spec = written_spec(dir.path());
    assert!(spec["app"]["root"].as_str().unwrap().ends_with("/src"));
}

#[test]
fn init_finds_bottle_falcon_and_pyramid_apps() {
    for (file, text, entry) in [
        (
            "app.py",
            "import bottle\n\napp = bottle.Bottle()\n\n@app.route('/')\ndef index():\n    return 'hi'\n\n\
             if __name__ == '__main__':\n    app.run()\n",
            "app:app",
        ),
        (
            "hello.py",
            "from bottle import default_app, route\n\n@route('/')\ndef index():\n    return 'hi'\n\n\
             application = default_app()\n",
            "hello:application",
        ),
        (
            "things/api.py",
            "import falcon\n\n\nclass Things:\n    def on_get(self, req, resp):\n        resp.media = {}\n\n\n\
             app = falcon.App(\n    cors_enable=True,\n)\napp.add_route('/', Things())\n",
            "things.api:app",
        ),
        (
            "web.py",
            concat!(
                "from pyramid.config import Configurator\nfrom pyramid.response import Response\n\n",
                "def hello(request):\n    return Response('hi')\n\n",
                "with Configurator() as config:\n    config.add_route('hello', '/')\n",
                "    config.add_view(hello, route_name='hello')\n    app = config.make_wsgi_app()\n",
            ),
            "web:app",
        ),
    ] {
        let dir = init_project(&[(file, text)]);
        let run = Cli::new(dir.path()).args(["init"]).run().success();
        let written: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.path().join("deploy.toml")).unwrap()).unwrap();
        assert_eq!(written["app"]["entry"].as_str(), Some(entry), "{file}: {}", run.stderr);
        assert!(written["app"].get("root").is_none(), "{file}: the project is the root");
    }
}

#[test]
fn init_points_at_an_app_made_only_under_main() {
    let dir = init_project(&[(
        "serve.py",
        concat!(
            "from pyramid.config import Configurator\n\nif __name__ == '__main__':\n",
            "    with Configurator() as config:\n        app = config.make_wsgi_app()\n",
        ),
    )]);
    let run = Cli::new(dir.path()).args(["init"]).run().failure();
    assert!(
        run.stderr.contains(
            "serve.py:5: `app = config.make_wsgi_app()` runs only under `if __name__ == \"__main__\":`, \
             which a server never runs: move it to module level"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn init_reads_django_static_settings() {
    let wsgi = "import os\nfrom django.core.wsgi import get_wsgi_application\n\
                os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\napplication = get_wsgi_application()\n";
    let asgi = "import os\nfrom django.core.asgi import get_asgi_application\napplication = get_asgi_application()\n";
    let settings = |extra: &str| {
        format!(
            "from pathlib import Path\nBASE_DIR = Path(__file__).resolve().parent.parent\nSTATIC_URL = 'assets/'\n{extra}"
        )
    };
    // STATIC_ROOT unset (as `startproject` leaves it): a commented entry and a warning saying what to do.
    let unset = settings("");
    let dir = init_project(&[
        ("manage.py", "import os\n"),
        ("mysite/__init__.py", ""),
        ("mysite/asgi.py", asgi),
        ("mysite/wsgi.py", wsgi),
        ("mysite/settings.py", &unset),
    ]);
    let run = Cli::new(dir.path()).args(["init"]).run().success();
    let text = std::fs::read_to_string(dir.path().join("deploy.toml")).unwrap();
    let written: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(written["app"]["entry"].as_str(), Some("mysite.wsgi:application"));
    assert!(written.get("static").is_none(), "{text}");
    assert!(
        text.contains("# [[static]]\n# url = \"/assets/\"\n# dir = \"staticfiles\"\n"),
        "{text}"
    );
    assert!(
        run.stderr.contains("warning: STATIC_ROOT is not set in mysite/settings.py")
            && run.stderr.contains("hint: add `STATIC_ROOT = BASE_DIR / \"staticfiles\"` to mysite/settings.py, run `python manage.py collectstatic`"),
        "{}",
        run.stderr
    );
    // Uncommented, the entry is valid once the directory exists.
    std::fs::create_dir(dir.path().join("staticfiles")).unwrap();
    std::fs::write(
        dir.path().join("deploy.toml"),
        text.replace("# [[static]]\n# url", "[[static]]\nurl")
            .replace("# dir", "dir")
            .replace("# expires", "expires"),
    )
    .unwrap();
    let spec = written_spec(dir.path());
    assert_eq!(spec["static"][0]["url"].as_str(), Some("/assets/"));

    // STATIC_ROOT set: a [[static]] entry; its directory made (empty) when collectstatic has not run yet.
    let set = settings("STATIC_ROOT = BASE_DIR / 'collected'\n");
    let dir = init_project(&[
        ("manage.py", "import os\n"),
        ("mysite/__init__.py", ""),
        ("mysite/wsgi.py", wsgi),
        ("mysite/settings.py", &set),
    ]);
    let run = Cli::new(dir.path()).args(["init"]).run().success();
    assert!(dir.path().join("collected").is_dir());
    assert!(
        run.stderr
            .contains("created collected/ (STATIC_ROOT of mysite/settings.py)"),
        "{}",
        run.stderr
    );
    let spec = written_spec(dir.path());
    assert_eq!(spec["static"][0]["url"].as_str(), Some("/assets/"));
    assert!(spec["static"][0]["dir"].as_str().unwrap().ends_with("/collected"));

    let joined = settings("import os\nSTATIC_ROOT = os.path.join(BASE_DIR, 'var', 'static')\n");
    let dir = init_project(&[
        ("mysite/__init__.py", ""),
        ("mysite/wsgi.py", wsgi),
        ("mysite/settings.py", &joined),
        ("var/static/admin/base.css", "body{}"),
    ]);
    Cli::new(dir.path()).args(["init"]).run().success();
    let spec = written_spec(dir.path());
    assert!(spec["static"][0]["dir"].as_str().unwrap().ends_with("/var/static"));
}

#[test]
fn init_flags_are_checked_as_usage() {
    let dir = init_project(&[("app.py", "from flask import Flask\napp = Flask(__name__)\n")]);
    for args in [
        vec!["init", "--backend", "waitress"],
        vec!["init", "--frontend", "caddy"],
        vec!["init", "--static", "/static/"],
    ] {
        let run = Cli::new(dir.path()).args(&args).run();
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(!dir.path().join("deploy.toml").exists());
    }
}

/// Gunicorn serves no files: alone, it says so at render, check and up (up: tests/up.rs),
/// naming the `[[static]]` entries; uWSGI and the embedded server alone and every front serve
/// them and say nothing.
#[test]
fn lone_gunicorn_warns_that_static_files_need_a_front() {
    let ex = common::example("flask-hello");
    let want = "warning: target `gunicorn` does not serve [[static]] /static/ (static): Gunicorn serves no files, \
                so these URLs go to the app (404 unless it serves them itself, and without their `expires`); put a \
                front before it (`--target nginx+gunicorn`) or use the `uwsgi` or `embedded` target, which serve \
                them themselves";
    let render = Cli::new(&ex)
        .args(["render", "--stdout", "-t", "gunicorn"])
        .run()
        .success();
    let lines: Vec<&str> = render.stderr.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(lines, [want], "render gunicorn");
    let check = Cli::new(&ex).args(["check", "-t", "gunicorn"]).run();
    assert!(
        check.stderr.lines().any(|l| l == want),
        "check gunicorn:\n{}",
        check.stderr
    );
    for target in ["uwsgi", "embedded", "nginx+embedded", "nginx+uwsgi", "nginx+gunicorn"] {
        let render = Cli::new(&ex).args(["render", "--stdout", "-t", target]).run().success();
        assert!(!render.stderr.contains("does not serve"), "{target}: {}", render.stderr);
    }
    // Nothing to warn about without [[static]].
    let dir = project(SPEC, &[]);
    let render = Cli::new(dir.path())
        .args(["render", "--stdout", "-t", "gunicorn"])
        .run()
        .success();
    assert!(!render.stderr.contains("warning"), "{}", render.stderr);
}
