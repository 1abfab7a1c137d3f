//! Escaping per config language, proven by the real tools reading the values back.
//!
//! A property test renders random project paths (spaces, quotes, `$`, `%`, `\`, `;`, `#`, `{}`,
//! `[]`, `$(`, `@(`, unicode and unicode spaces), app names of 1 to 64 characters,
//! internationalised and long server names and environment values into real files, and has
//! each tool parse them back:
//!
//! - systemd: `systemd-analyze verify` accepts every unit without a warning; with
//!   `SYSTEMD_LOG_LEVEL=debug` the same command dumps each unit as systemd loaded it
//!   (`WorkingDirectory:`, `Environment:`, `Command Line:`, `BindReadOnlyPaths:`,
//!   `ReadWritePaths:`, `ListenStream:`), which must hold the spec's values. `$` in a command
//!   is expanded when systemd runs it, not when it loads it, so the dumped argument still holds
//!   `$$`, which the comparison turns into `$` as systemd.service(5) says (a lone `$` fails).
//! - nginx: `nginx -t` accepts every site; a real nginx on 127.0.0.1 then serves a file from
//!   each static directory (the `alias` read back), answers each server name sent as the
//!   browser sends it (punycode) and refuses an unknown one (the 444 default server), and
//!   connects to the backend's unix socket (the `upstream` read back), where a listener answers.
//! - uWSGI: `uwsgi --strict --ini FILE --get KEY` prints `chdir` and `virtualenv` as parsed.
//! - Gunicorn: its own `Config` loads the rendered file, validators included, and prints
//!   `chdir`, `bind` and `control_socket`.
//! - mod_wsgi's script: Debian's `python3` runs it with a stand-in app module and reports, as
//!   JSON, the environment it set, which must be `[app].env` exactly.
//!
//! A value the spec refuses must be one `render::quote` documents as unrepresentable (control
//! characters, uWSGI's `$(`/`@(`/`%(`, an app directory ending in whitespace, names that are
//! not host names), and the refusal must name its key; everything else must be accepted and
//! read back unchanged. `PROPTEST_CASES` changes the number of cases (default 32).

mod common;

use common::up::free_port;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deployctl::render::{self, Templates, quote};
use deployctl::spec::{Spec, SpecError};
use deployctl::target::Target;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

// ---------------------------------------------------------------------------------------------
// Generated cases.

/// Pieces that stress some config language, or several.
const SPECIAL: &[&str] = &[
    " ", "  ", "\"", "'", "$", "%", "\\", ";", "#", "{", "}", "(", ")", "@", ":", "=", "*", "?", "[", "]", "!", "&",
    "~", "`", "<", ">", "|", "^", ",", "+", "-", ".", "%%", "$$", "${x}", "$x", "%n", "%(", "\\x20", "\\n", "%d", "-",
    "'\"'", "\\\"",
];
const UNICODE: &[&str] = &[
    "ü", "é", "ß", "ñ", "日本", "€", "😀", "я", "\u{a0}", "\u{3000}", "\u{200b}",
];
/// Pieces that no config language here can hold (refused by the spec).
const REFUSED: &[&str] = &["$(", "@(", "%(", "\t", "\u{7f}"];

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        30 => "[a-zA-Z0-9_]{1,3}",
        30 => prop::sample::select(SPECIAL).prop_map(String::from),
        12 => prop::sample::select(UNICODE).prop_map(String::from),
        1 => prop::sample::select(REFUSED).prop_map(String::from),
    ]
}

/// One file name: 1 to 4 pieces.
fn segment() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 1..5)
        .prop_map(|v| v.concat())
        .prop_filter("a file name", |s| s != "." && s != ".." && !s.contains('/'))
}

/// A host-name label: ASCII, letters of other scripts, or long (server_names_hash_bucket_size).
fn label() -> impl Strategy<Value = String> {
    const LETTERS: &[&str] = &["a", "b", "z", "Z", "0", "ü", "é", "ß", "я", "日", "本", "ω", "ς"];
    prop_oneof![
        4 => "[a-z0-9]{1,10}",
        3 => prop::collection::vec(prop::sample::select(LETTERS), 1..8).prop_map(|v| v.concat()),
        1 => "[a-z]{40,60}",
    ]
}

/// A valid server name, distinct from the others by its first label `nI`.
fn host(i: usize) -> impl Strategy<Value = String> {
    (
        prop::collection::vec(label(), 1..3),
        prop::sample::select(&["", "", "*.", "."][..]),
    )
        .prop_map(move |(labels, wild)| format!("{wild}n{i}.{}", labels.join(".")))
}

#[derive(Debug, Clone)]
struct Case {
    project: String,
    static_dir: String,
    venv: String,
    rw: String,
    name: String,
    names: Vec<String>,
    /// A name that may or may not be a host name (`~…`, `$…`, punctuation).
    junk_name: Option<String>,
    env: BTreeMap<String, String>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            segment(),
            segment(),
            // Mostly a path systemd can start a program from (no quote or backslash).
            prop_oneof![4 => segment().prop_filter("no quote", |s| !s.contains(['"', '\'', '\\'])), 1 => segment()],
            segment(),
        ),
        "[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}",
        (host(0), prop::option::of(host(1))),
        prop::option::weighted(0.15, prop::collection::vec(piece(), 1..4).prop_map(|v| v.concat())),
        prop::collection::btree_map(
            "[A-Z][A-Z0-9_]{0,6}",
            prop::collection::vec(piece(), 0..5).prop_map(|v| v.concat()),
            0..3,
        ),
    )
        .prop_map(
            |((project, static_dir, venv, rw), name, (h0, h1), junk_name, env)| Case {
                project,
                static_dir,
                venv,
                rw,
                name,
                names: std::iter::once(h0).chain(h1).collect(),
                junk_name,
                env,
            },
        )
}

// ---------------------------------------------------------------------------------------------
// The tools.

struct Tools {
    nginx: PathBuf,
    apache2: PathBuf,
    uwsgi: PathBuf,
    systemd_analyze: PathBuf,
    /// The example's virtualenv Python, which has Gunicorn.
    gunicorn_python: PathBuf,
}

fn tools() -> Option<Tools> {
    let found = (|| {
        let gunicorn_python = common::example("flask-hello").join(".venv/bin/python");
        let has_gunicorn = Command::new(&gunicorn_python)
            .args(["-c", "import gunicorn"])
            .output()
            .is_ok_and(|o| o.status.success());
        let plugin = Path::new("/usr/lib/uwsgi/plugins/python3_plugin.so").is_file();
        Some(Tools {
            nginx: which::which("nginx").ok()?,
            apache2: deployctl::validate::apache::find().ok()?,
            uwsgi: which::which("uwsgi").ok().filter(|_| plugin)?,
            systemd_analyze: which::which("systemd-analyze").ok()?,
            gunicorn_python: has_gunicorn.then_some(gunicorn_python)?,
        })
    })();
    if found.is_none() {
        let required = std::env::var("DEPLOYCTL_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "nginx, apache2, uwsgi with its python3 plugin, systemd-analyze and the example's virtualenv \
             with Gunicorn are required (bash scripts/setup.sh)"
        );
        eprintln!("skipped: a tool is missing (bash scripts/setup.sh installs them)");
    }
    found
}

fn output(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.stdin(Stdio::null()).output().expect("run a tool");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// The property.

#[test]
fn every_tool_reads_back_the_values_it_was_given() {
    let Some(tools) = tools() else { return };
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let config = ProptestConfig {
        cases,
        max_shrink_iters: 256,
        // A failing case is kept here and tried first next time.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/escaping.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    };
    proptest!(config, |(c in case())| check(&tools, &c));
    let (accepted, refused) = (ACCEPTED.load(Ordering::Relaxed), REFUSED_CASES.load(Ordering::Relaxed));
    eprintln!("{accepted} cases read back, {refused} refused by the spec");
    assert!(
        accepted * 2 >= accepted + refused,
        "most cases must be representable: {accepted} read back, {refused} refused"
    );
}

/// Cases run (shrinking included), for the summary.
static ACCEPTED: AtomicUsize = AtomicUsize::new(0);
static REFUSED_CASES: AtomicUsize = AtomicUsize::new(0);

/// A `deploy.toml` for the case, written with the `toml` crate (its own string escaping).
fn deploy_toml(c: &Case, port: u16, venv: &Path, deployctl: &Path, rw: &Path) -> String {
    use toml::Value;
    let s = |v: &str| Value::String(v.to_string());
    let mut names: Vec<Value> = c.names.iter().map(|n| s(n)).collect();
    names.extend(c.junk_name.iter().map(|n| s(n)));
    let table = |pairs: Vec<(&str, Value)>| Value::Table(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
    let doc = table(vec![
        (
            "app",
            table(vec![
                ("name", s(&c.name)),
                ("entry", s("app:app")),
                ("venv", s(&venv.display().to_string())),
                (
                    "env",
                    Value::Table(c.env.iter().map(|(k, v)| (k.clone(), s(v))).collect()),
                ),
            ]),
        ),
        (
            "server",
            table(vec![
                ("names", Value::Array(names)),
                ("listen", s(&format!("127.0.0.1:{port}"))),
            ]),
        ),
        (
            "static",
            Value::Array(vec![
                table(vec![("url", s("/static/")), ("dir", s(&c.static_dir))]),
                table(vec![("url", s("/m/ü/")), ("dir", s(&c.static_dir))]),
            ]),
        ),
        ("backend", table(vec![("kind", s("gunicorn"))])),
        (
            "systemd",
            table(vec![
                ("deployctl", s(&deployctl.display().to_string())),
                ("read_write_paths", Value::Array(vec![s(&rw.display().to_string())])),
            ]),
        ),
    ]);
    toml::to_string(&doc).expect("serialise deploy.toml")
}

fn executable(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The keys the spec must refuse for this case: the rules of `render::quote`, restated.
fn must_refuse(
    root: &str,
    venv: &str,
    static_dir: &str,
    deployctl: &str,
    rw: &str,
    env: &[&String],
) -> BTreeSet<String> {
    let control = |s: &str| s.chars().any(char::is_control);
    let uwsgi = |s: &str| ["$(", "@(", "%("].iter().any(|q| s.contains(q));
    let mut keys = BTreeSet::new();
    if control(root) || uwsgi(root) || root.ends_with(char::is_whitespace) {
        keys.insert("app.root".to_string());
    }
    // `venv/bin/gunicorn` is the program of the Gunicorn units.
    if control(venv) || uwsgi(venv) || venv.contains(['\\', '"', '\'']) {
        keys.insert("app.venv".to_string());
    }
    if control(static_dir) || uwsgi(static_dir) {
        keys.insert("static[0].dir".to_string());
        keys.insert("static[1].dir".to_string());
    }
    if control(deployctl) {
        keys.insert("systemd.deployctl".to_string());
    }
    if control(rw) {
        keys.insert("systemd.read_write_paths".to_string());
    }
    if env.iter().any(|v| control(v)) {
        keys.insert("app.env".to_string());
    }
    keys
}

fn check(tools: &Tools, c: &Case) {
    let tmp = tempfile::Builder::new().prefix("dc-esc-").tempdir().unwrap();
    let project = tmp.path().join(&c.project);
    let static_dir = project.join(&c.static_dir);
    // Beside the project, not in it: the project's path may hold what systemd refuses in a
    // program's path (see `must_refuse`) and still be tested everywhere else.
    let venv = tmp.path().join(&c.venv);
    let deployctl = venv.join("bin/deployctl");
    let rw = tmp.path().join(&c.rw);
    std::fs::create_dir_all(&static_dir).unwrap();
    executable(&venv.join("bin/gunicorn"));
    executable(&deployctl);
    let port = free_port();
    let toml_path = project.join("deploy.toml");
    std::fs::write(&toml_path, deploy_toml(c, port, &venv, &deployctl, &rw)).unwrap();

    let text = |p: &Path| p.to_str().unwrap().to_string();
    let env_values: Vec<&String> = c.env.values().collect();
    let refuse = must_refuse(
        &text(&project),
        &text(&venv),
        &text(&static_dir),
        &text(&deployctl),
        &text(&rw),
        &env_values,
    );
    let spec = match Spec::load(&toml_path) {
        Ok(spec) => {
            assert!(refuse.is_empty(), "accepted, but {refuse:?} cannot be represented");
            spec
        }
        Err(e) => {
            let e = e.downcast::<SpecError>().expect("a spec error");
            let keys: BTreeSet<String> = e.diagnostics.iter().map(|d| e.position(d).key).collect();
            let mut allowed = refuse.clone();
            if c.junk_name.is_some() {
                allowed.insert("server.names".into());
            }
            REFUSED_CASES.fetch_add(1, Ordering::Relaxed);
            assert!(
                !keys.is_empty() && keys.is_subset(&allowed) && refuse.is_subset(&keys),
                "refused keys {keys:?}, expected {refuse:?} (or server.names for {:?}):\n{e}",
                c.junk_name
            );
            return;
        }
    };
    let root = text(&project);
    let venv_s = text(&venv);
    // The project holds the output; the venv holds the deployctl stub. One of them may hold
    // the other when their names are the same.
    let binds: Vec<String> = if venv.starts_with(&project) {
        vec![root.clone()]
    } else if project.starts_with(&venv) {
        vec![venv_s.clone()]
    } else {
        let mut v = vec![root.clone(), venv_s.clone()];
        v.sort_by(|a, b| Path::new(a).cmp(Path::new(b)));
        v
    };
    let want = Expect {
        root: root.clone(),
        binds,
        env: c.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        rw: text(&rw),
    };
    let templates = Templates::load(None).unwrap();

    // nginx+uwsgi, as rendered for a server.
    let target: Target = "nginx+uwsgi".parse().unwrap();
    let out = project.join("deploy/nginx+uwsgi");
    let tree = render::render(&spec, target, &out, &templates).unwrap();
    tree.write_into(&out).unwrap();
    let name = &spec.app.name;
    let ini = out.join(format!("uwsgi/{name}.ini"));
    let units = check_units(tools, &out, name, &want);
    let argv = &units.exec_start;
    assert_eq!(argv[..2], ["/usr/bin/uwsgi".to_string(), "--ini".into()]);
    assert_eq!(units.listen_stream, format!("/run/{name}.sock"));
    nginx_accepts(tools, &out.join(format!("nginx/{name}.conf")));
    // uWSGI started with the arguments systemd would give it.
    for (key, want) in [("chdir", &root), ("virtualenv", &venv_s)] {
        let (ok, stdout, stderr) = output(
            Command::new(&tools.uwsgi)
                .arg("--strict")
                .args(&argv[1..])
                .args(["--get", key]),
        );
        assert!(ok, "uwsgi --strict {argv:?} failed on {}:\n{stderr}", ini.display());
        let got = stdout.strip_suffix('\n').unwrap_or(&stdout);
        assert_eq!(Path::new(got), Path::new(want), "uWSGI read {key} back as {got:?}");
    }

    // nginx+embedded: the longest command line.
    let target: Target = "nginx+embedded".parse().unwrap();
    let out = project.join("deploy/nginx+embedded");
    render::render(&spec, target, &out, &templates)
        .unwrap()
        .write_into(&out)
        .unwrap();
    let units = check_units(tools, &out, name, &want);
    let argv = &units.exec_start;
    let flag = |f: &str| {
        argv[argv
            .iter()
            .position(|a| a == f)
            .unwrap_or_else(|| panic!("no {f} in {argv:?}"))
            + 1]
        .clone()
    };
    assert_eq!(argv[0], text(&deployctl));
    assert_eq!(argv[1..3], ["serve".to_string(), "app:app".into()]);
    assert_eq!(flag("--chdir"), root);
    assert_eq!(flag("--venv"), venv_s);
    assert_eq!(flag("--bind"), format!("unix:/run/{name}.sock"));
    nginx_accepts(tools, &out.join(format!("nginx/{name}.conf")));

    // apache+embedded: both shapes of Apache's configuration through `apache2 -t`; Apache
    // substitutes `${…}` in every line and has no escape for it, so such a value is refused.
    let target: Target = "apache+embedded".parse().unwrap();
    let out = project.join("deploy/apache+embedded");
    let rendered = render::render(&spec, target, &out, &templates);
    if text(&static_dir).contains("${") || spec.server.names.iter().any(|n| n.contains("${")) {
        let Err(e) = rendered else {
            panic!("a value holding `${{` is refused for Apache");
        };
        assert!(format!("{e:#}").contains("cannot escape"), "{e:#}");
    } else {
        rendered.unwrap().write_into(&out).unwrap();
        let plan = deployctl::plan::Plan::resolve(
            &spec,
            target,
            deployctl::plan::Environment::Production { out: out.clone() },
        );
        let files = plan.apache.as_ref().expect("Apache's files");
        use deployctl::validate::{Outcome, apache};
        for (rel, outcome) in [
            (
                files.httpd_conf.rel.as_str(),
                apache::test_self_contained(&tools.apache2, &out.join(&files.httpd_conf.rel)),
            ),
            (
                files.site.rel.as_str(),
                apache::test_site(&tools.apache2, files, &out.join(&files.site.rel)),
            ),
        ] {
            let outcome = outcome.expect("apache2 runs");
            assert!(matches!(outcome, Outcome::Ok(_)), "apache2 -t {rel}: {outcome:?}");
        }
    }

    // apache+mod_wsgi: the script mod_wsgi runs is Python source; Debian's interpreter (the
    // one its mod_wsgi embeds) runs it with a stand-in app module and reports the environment
    // the script set.
    // Apache's side names the virtualenv and the project too: a `${` in any of them is refused.
    let target: Target = "apache+mod_wsgi".parse().unwrap();
    let out = project.join("deploy/apache+mod_wsgi");
    let rendered = render::render(&spec, target, &out, &templates);
    let dollar_brace = [&static_dir, &project, &venv].iter().any(|p| text(p).contains("${"))
        || spec.server.names.iter().any(|n| n.contains("${"));
    if dollar_brace {
        let Err(e) = rendered else {
            panic!("a value holding `${{` is refused for Apache");
        };
        assert!(format!("{e:#}").contains("cannot escape"), "{e:#}");
    } else {
        rendered.unwrap().write_into(&out).unwrap();
        let plan = deployctl::plan::Plan::resolve(
            &spec,
            target,
            deployctl::plan::Environment::Production { out: out.clone() },
        );
        let wsgi = plan
            .apache
            .as_ref()
            .and_then(|a| a.wsgi.as_ref())
            .expect("mod_wsgi's plan");
        wsgi_script_sets(&out.join(&wsgi.script.rel), tmp.path(), &c.env);
    }

    // nginx+gunicorn as `up` renders it: the backend's socket under the project, served live.
    let target: Target = "nginx+gunicorn".parse().unwrap();
    let out = project.join(".deployctl/nginx+gunicorn/conf");
    let sock_name = format!("{name}.sock");
    // A unix socket path holds at most 107 bytes (sun_path).
    let socket_dir = if project.join(&sock_name).as_os_str().len() <= 100 {
        project.clone()
    } else {
        tmp.path().to_path_buf()
    };
    let socket = socket_dir.join(&sock_name);
    render::render_local(&spec, target, &out, &socket_dir, &templates)
        .unwrap()
        .write_into(&out)
        .unwrap();
    let units = check_units(tools, &out, name, &want);
    let conf = out.join("gunicorn/gunicorn.conf.py");
    assert_eq!(
        units.exec_start,
        vec![text(&venv.join("bin/gunicorn")), "--config".into(), text(&conf)]
    );
    assert_eq!(units.listen_stream, text(&socket));
    let site = out.join(format!("nginx/{name}.conf"));
    nginx_accepts(tools, &site);
    gunicorn_reads_back(tools, &conf, &root, &socket);
    nginx_serves(tools, &spec, &site, tmp.path(), &static_dir, &socket, port);
    ACCEPTED.fetch_add(1, Ordering::Relaxed);
}

/// Debian's `python3` runs the rendered mod_wsgi script, with `app` a stand-in module, and
/// the environment it set holds `env` exactly (keys and values, through JSON).
fn wsgi_script_sets(script: &Path, tmp: &Path, env: &BTreeMap<String, String>) {
    let stub = tmp.join("wsgi-stub");
    std::fs::create_dir_all(&stub).unwrap();
    std::fs::write(stub.join("app.py"), "app = 'the callable'\n").unwrap();
    let probe = "import json, os, sys\n\
                 before = dict(os.environ)\n\
                 sys.path.insert(0, sys.argv[2])\n\
                 ns = {'__name__': '__mod_wsgi__'}\n\
                 exec(compile(open(sys.argv[1], encoding='utf-8').read(), sys.argv[1], 'exec'), ns)\n\
                 assert ns['application'] == 'the callable', ns.get('application')\n\
                 print(json.dumps({k: v for k, v in os.environ.items() if before.get(k) != v}))\n";
    let out = Command::new("/usr/bin/python3")
        .args(["-c", probe])
        .arg(script)
        .arg(&stub)
        .env_clear()
        .output()
        .expect("run /usr/bin/python3");
    assert!(
        out.status.success(),
        "python3 failed on {}:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let set: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).expect("the script's environment as JSON");
    assert_eq!(&set, env, "{}", std::fs::read_to_string(script).unwrap_or_default());
}

/// The values every unit of a case must hold.
struct Expect {
    root: String,
    /// The paths bound back read-only (under /tmp, hidden by PrivateTmp).
    binds: Vec<String>,
    /// `NAME=value`, in the spec's order.
    env: Vec<String>,
    rw: String,
}

/// What systemd loaded from the service and socket units of `out`.
struct Units {
    exec_start: Vec<String>,
    listen_stream: String,
}

/// `systemd-analyze verify` accepts both units without a word, and its dump of them holds
/// the spec's values (the ones every target shares are compared here).
///
/// `systemd-analyze verify` puts the unit's directory on a `:`-separated search path, so the
/// units are checked from a directory of their own, as `deployctl check` does (a scratch
/// directory); what they refer to stays where it is.
fn check_units(tools: &Tools, out: &Path, name: &str, want: &Expect) -> Units {
    let scratch = tempfile::Builder::new().prefix("dc-esc-units-").tempdir().unwrap();
    let service = scratch.path().join(format!("{name}.service"));
    let socket = scratch.path().join(format!("{name}.socket"));
    std::fs::copy(out.join(format!("systemd/{name}.service")), &service).unwrap();
    std::fs::copy(out.join(format!("systemd/{name}.socket")), &socket).unwrap();
    let (ok, stdout, stderr) = output(
        Command::new(&tools.systemd_analyze)
            .args(["verify", "--recursive-errors=one"])
            .arg(&service)
            .arg(&socket),
    );
    assert!(
        ok && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "systemd-analyze verify {}:\n{stdout}{stderr}\n{}",
        service.display(),
        std::fs::read_to_string(&service).unwrap()
    );
    let (ok, dump, stderr) = output(
        Command::new(&tools.systemd_analyze)
            .env("SYSTEMD_LOG_LEVEL", "debug")
            .arg("verify")
            .arg(&service)
            .arg(&socket),
    );
    assert!(ok, "{stderr}");
    let svc = unit_section(&dump, &format!("{name}.service"));
    let sock = unit_section(&dump, &format!("{name}.socket"));
    let field = |lines: &[&str], key: &str| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("{key}: ")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        field(&svc, "WorkingDirectory"),
        std::slice::from_ref(&want.root),
        "WorkingDirectory"
    );
    let binds: Vec<String> = want.binds.iter().map(|p| format!("-{p}:{p}:rbind")).collect();
    assert_eq!(field(&svc, "BindReadOnlyPaths"), binds, "BindReadOnlyPaths");
    assert_eq!(field(&svc, "Environment"), want.env, "Environment");
    assert_eq!(
        field(&svc, "ReadWritePaths"),
        std::slice::from_ref(&want.rw),
        "ReadWritePaths"
    );
    let exec = svc
        .iter()
        .skip_while(|l| **l != "-> ExecStart:")
        .find_map(|l| l.strip_prefix("Command Line: "))
        .unwrap_or_else(|| panic!("no ExecStart in the dump:\n{}", svc.join("\n")));
    // Variables are substituted in the arguments, not in the program.
    let mut exec_start = parse_command_line(exec);
    for w in &mut exec_start[1..] {
        *w = spawn_expand(w).unwrap_or_else(|| panic!("systemd would expand a variable in {w:?}"));
    }
    let listen = field(&sock, "ListenStream");
    assert_eq!(listen.len(), 1, "{sock:?}");
    Units {
        exec_start,
        listen_stream: c_unescape(&listen[0]),
    }
}

/// The lines of `-> Unit NAME:` in a `systemd-analyze` dump, without their indentation
/// (tabs only: values may end in other whitespace).
fn unit_section<'a>(dump: &'a str, unit: &str) -> Vec<&'a str> {
    let header = format!("-> Unit {unit}:");
    dump.lines()
        .map(|l| l.trim_start_matches('\t'))
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| !l.starts_with("-> Unit "))
        .collect()
}

/// A command line as systemd prints it (`quote_command_line`): words separated by spaces,
/// each bare or double-quoted with `\t`, `\n` and backslash-escaped characters.
fn parse_command_line(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut w = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next().expect("unterminated quote") {
                    '"' => break,
                    '\\' => match chars.next().expect("escape") {
                        't' => w.push('\t'),
                        'n' => w.push('\n'),
                        c => w.push(c),
                    },
                    c => w.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                w.push(c);
                chars.next();
            }
        }
        words.push(w);
    }
    words
}

/// What systemd passes to the process for an argument it loaded: `$$` is `$`; any other `$`
/// would start a variable (systemd.service(5) "Command lines"), which no value may contain.
fn spawn_expand(word: &str) -> Option<String> {
    let parts: Vec<&str> = word.split("$$").collect();
    (!parts.iter().any(|p| p.contains('$'))).then(|| parts.join("$"))
}

/// C escapes as systemd's `cescape` writes them (`\\`, `\"`, `\'`, `\n`, octal bytes `\303`).
fn c_unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let e = b[i + 1];
        i += 2;
        match e {
            b'0'..=b'7' => {
                let oct = std::str::from_utf8(&b[i - 1..i + 2]).unwrap();
                out.push(u8::from_str_radix(oct, 8).unwrap());
                i += 2;
            }
            b'x' => {
                out.push(u8::from_str_radix(std::str::from_utf8(&b[i..i + 2]).unwrap(), 16).unwrap());
                i += 2;
            }
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            c => out.push(c),
        }
    }
    String::from_utf8(out).expect("UTF-8 socket path")
}

/// `nginx -t`, through the same wrapper `deployctl check` uses.
fn nginx_accepts(tools: &Tools, site: &Path) {
    let (prefix, conf) = deployctl::validate::nginx::wrapper(&tools.nginx, site).unwrap();
    let (ok, stdout, stderr) = output(
        Command::new(&tools.nginx)
            .arg("-t")
            .arg("-q")
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(prefix.path().join("error.log")),
    );
    assert!(
        ok,
        "nginx -t rejected {}:\n{stdout}{stderr}\n{}",
        site.display(),
        std::fs::read_to_string(site).unwrap()
    );
}

/// Gunicorn's own configuration machinery loads the file: every setting goes through its
/// validator (`chdir` is made absolute and must exist), as `gunicorn --config FILE` does.
fn gunicorn_reads_back(tools: &Tools, conf: &Path, root: &str, socket: &Path) {
    let script = "import json, sys\n\
        from gunicorn.config import Config\n\
        path = sys.argv[1]\n\
        ns = {'__file__': path, '__name__': '__config__'}\n\
        exec(compile(open(path, encoding='utf-8').read(), path, 'exec'), ns)\n\
        cfg = Config()\n\
        for k, v in ns.items():\n    if k in cfg.settings:\n        cfg.set(k, v)\n\
        print(json.dumps({'chdir': cfg.chdir, 'bind': cfg.bind, 'control_socket': cfg.control_socket}))";
    let (ok, stdout, stderr) = output(
        Command::new(&tools.gunicorn_python)
            .current_dir(common::repo())
            .arg("-c")
            .arg(script)
            .arg(conf),
    );
    assert!(ok, "Gunicorn could not load {}:\n{stderr}", conf.display());
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["chdir"], root, "Gunicorn's chdir");
    assert_eq!(v["bind"], serde_json::json!([format!("unix:{}", socket.display())]));
    assert_eq!(
        v["control_socket"],
        socket.parent().unwrap().join("gunicorn.ctl").display().to_string()
    );
}

/// The Host header a browser sends for a `server_name` (wildcards filled in).
fn host_for(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("*.") {
        format!("www.{rest}")
    } else if let Some(rest) = name.strip_prefix('.') {
        rest.to_string()
    } else if let Some(rest) = name.strip_suffix(".*") {
        format!("{rest}.com")
    } else {
        name.to_string()
    }
}

/// A request over a new connection; `None` when the server closes without answering (444).
fn get(port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    if buf.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Percent-encodes the non-ASCII bytes of a path, as a browser does.
fn encode_path(path: &str) -> String {
    path.bytes()
        .map(|b| {
            if b.is_ascii() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A real nginx on 127.0.0.1 serving the site: every static location serves a file from its
/// directory, every server name is answered, an unknown host is refused, and `location /`
/// reaches the backend's unix socket.
fn nginx_serves(tools: &Tools, spec: &Spec, site: &Path, tmp: &Path, static_dir: &Path, socket: &Path, port: u16) {
    let prefix = tmp.join("nginx-prefix");
    std::fs::create_dir_all(prefix.join("temp")).unwrap();
    // The site includes nginx's mime.types by relative name, found beside the configuration
    // (/etc/nginx on a server): copied from the installed nginx, as `up` and `check` do.
    let conf_dir = deployctl::validate::nginx::conf_dir(&tools.nginx).expect("nginx -V names its conf path");
    std::fs::copy(conf_dir.join("mime.types"), prefix.join("mime.types")).unwrap();
    let p = |rel: &str| quote::nginx_literal(&prefix.join(rel).display().to_string());
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    let conf = format!(
        "{user}daemon off;\nmaster_process off;\npid {pid};\nerror_log {log};\nevents {{}}\nhttp {{\n    \
         access_log off;\n    client_body_temp_path {body};\n    proxy_temp_path {proxy};\n    \
         fastcgi_temp_path {fcgi};\n    uwsgi_temp_path {uwsgi};\n    scgi_temp_path {scgi};\n    include {site};\n}}\n",
        pid = p("nginx.pid"),
        log = p("error.log"),
        body = p("temp/body"),
        proxy = p("temp/proxy"),
        fcgi = p("temp/fastcgi"),
        uwsgi = p("temp/uwsgi"),
        scgi = p("temp/scgi"),
        site = quote::nginx_include(&site.display().to_string()),
    );
    std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
    let token = format!("served from {}\n", static_dir.display());
    std::fs::write(static_dir.join("probe.txt"), &token).unwrap();
    let _ = std::fs::remove_file(socket);
    let backend = std::os::unix::net::UnixListener::bind(socket).unwrap();
    backend.set_nonblocking(true).unwrap();
    let backend = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match backend.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                        head.push(byte[0]);
                    }
                    let _ =
                        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nupstream");
                    return true;
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => return false,
            }
        }
    });
    let mut nginx = Command::new(&tools.nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = nginx.try_wait().unwrap() {
                let mut err = String::new();
                nginx.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                panic!("nginx exited ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "nginx did not listen on {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
        for name in &spec.server.names {
            let host = host_for(name);
            for url in ["/static/probe.txt", "/m/ü/probe.txt"] {
                let got = get(port, &host, &encode_path(url));
                assert_eq!(
                    got,
                    Some((200, token.clone())),
                    "GET {url} with Host {host} (server_name {name}): alias {}",
                    static_dir.display()
                );
            }
        }
        assert_eq!(
            get(port, "unknown.invalid", "/static/probe.txt"),
            None,
            "444 for an unknown host"
        );
        let host = host_for(&spec.server.names[0]);
        assert_eq!(
            get(port, &host, "/"),
            Some((200, "upstream".into())),
            "through {}",
            socket.display()
        );
    }));
    let _ = nginx.kill();
    let _ = nginx.wait();
    let reached = backend.join().unwrap();
    if let Err(panic) = result {
        let log = std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
        eprintln!(
            "nginx error log:\n{log}\nsite:\n{}",
            std::fs::read_to_string(site).unwrap()
        );
        std::panic::resume_unwind(panic);
    }
    assert!(reached, "nginx never connected to {}", socket.display());
}

/// The whole `check` on a project whose path holds every character the config languages treat
/// specially (and a long name, an IDN, a `$` in a static directory): every validator of every
/// target passes — gixy and `gunicorn --check-config` (which imports the app from there) too.
#[test]
fn every_validator_accepts_a_project_path_with_special_characters() {
    if tools().is_none() {
        return;
    }
    let tmp = tempfile::Builder::new().prefix("dc-esc-check-").tempdir().unwrap();
    let project = tmp.path().join("a b$c%d\"e'f;g#h{i}j\\k[1]*?:=@x ü");
    let example = common::example("flask-hello");
    std::fs::create_dir_all(project.join("st $x%{y}")).unwrap();
    std::fs::copy(example.join("app.py"), project.join("app.py")).unwrap();
    std::fs::write(project.join("st $x%{y}/style.css"), "h1 { color: teal; }\n").unwrap();
    let venv = example.join(".venv").display().to_string();
    let toml = format!(
        "[app]\nname = \"{name}\"\nentry = \"app:app\"\nvenv = {venv:?}\nenv = {{ A = \"x \\\"y\\\" $HOME 50% \\\\ ;#\" }}\n\
         [server]\nnames = [\"localhost\", \"bücher.example\", \"*.{long}.example\"]\n\
         [[static]]\nurl = \"/static/\"\ndir = \"st $x%{{y}}\"\n\
         [systemd]\nread_write_paths = [\"/var/lib/a b:c$d%e\"]\n",
        name = "n".repeat(64),
        long = "a".repeat(60),
    );
    std::fs::write(project.join("deploy.toml"), toml).unwrap();
    let run = common::Cli::new(&project)
        .args(["check", "--all-targets", "--require-validators"])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    for tool in [
        "nginx -t",
        "gixy",
        "uwsgi --strict",
        "gunicorn --check-config",
        "systemd-analyze verify",
        "kubernetes-validate --strict",
        "docker-compose config",
        "hadolint",
    ] {
        assert!(
            run.stderr
                .lines()
                .any(|l| l.trim_start().starts_with("ok") && l.contains(tool)),
            "{tool} did not run:\n{}",
            run.stderr
        );
    }
}
