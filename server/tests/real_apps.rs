//! Real frameworks nobody here wrote, on the embedded server: Flask (the example app and a
//! fixture with routes), Django (a project generated at test time, with its admin), Bottle and
//! Falcon. Each is used the way nginx's upstream pool or a browser uses connections: requests
//! on one keep-alive connection with short pauses, then idle pauses longer than
//! `--keep-alive 1`, after which the old connection is reused (a whole response or a clean
//! close, never a hang) and a new one is opened; a large download is abandoned midway; the
//! worker must end idle with no descriptor left behind. Flask runs with `--threads 4` too.
//!
//! The frameworks live in `server/tests/.venv-apps` (made by `scripts/setup.sh`). Without it
//! the tests skip, saying so, unless `DEPLOYCTL_REQUIRE_VALIDATORS=1` (CI), where they fail.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Client, Response, Server, server};

const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// A pause under `--keep-alive` between requests on one connection.
const SHORT_PAUSE: Duration = Duration::from_millis(300);
/// An idle pause over `--keep-alive`.
const LONG_PAUSE: Duration = Duration::from_millis(1500);
/// How much later than `--keep-alive` an idle connection may be closed (deadlines are
/// checked once a second).
const SLACK: Duration = Duration::from_secs(2);
/// How long a client waits on a reused connection before calling it a hang.
const HANG: Duration = Duration::from_secs(5);
/// An idle worker uses next to no CPU in this window.
const IDLE_WINDOW: Duration = Duration::from_secs(1);
const IDLE_CPU_LIMIT: Duration = Duration::from_millis(150);
/// The size of the file the apps send: larger than the socket buffers, not a round number.
const DATA_LEN: usize = 3 * 1024 * 1024 + 17;

fn required() -> bool {
    std::env::var("DEPLOYCTL_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1" || v == "true")
}

/// The virtualenv at `venv` if its Python imports `modules`. Otherwise the test fails with
/// `DEPLOYCTL_REQUIRE_VALIDATORS=1` (CI) or skips, printing why (`None`).
fn venv_with(venv: PathBuf, modules: &[&str]) -> Option<PathBuf> {
    let python = venv.join("bin/python3");
    let imports = format!("import {}", modules.join(", "));
    let ok = python.exists()
        && Command::new(&python)
            .args(["-c", &imports])
            .env_remove("PYTHONPATH")
            .output()
            .is_ok_and(|o| o.status.success());
    if ok {
        return Some(venv);
    }
    let why = format!("{} cannot `{imports}`: run scripts/setup.sh", venv.display());
    assert!(!required(), "{why} (DEPLOYCTL_REQUIRE_VALIDATORS=1 requires it)");
    eprintln!("skipped: {why}");
    None
}

/// The test virtualenv with the frameworks.
fn apps_venv(modules: &[&str]) -> Option<PathBuf> {
    venv_with(common::repo_root().join("server/tests/.venv-apps"), modules)
}

/// Bytes that are not all alike, so a misplaced or missing range shows.
fn data() -> Vec<u8> {
    (0..DATA_LEN).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A directory holding `data.bin` (`data()`).
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("data.bin"), data()).expect("write data.bin");
    dir
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// One request of an app's tour and what its response must be.
struct Step {
    what: String,
    request: Vec<u8>,
    head: bool,
    check: Box<dyn Fn(&Response)>,
}

fn get(path: &str, check: impl Fn(&Response) + 'static) -> Step {
    Step {
        what: format!("GET {path}"),
        request: format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes(),
        head: false,
        check: Box::new(check),
    }
}

fn head(path: &str, check: impl Fn(&Response) + 'static) -> Step {
    Step {
        what: format!("HEAD {path}"),
        request: format!("HEAD {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes(),
        head: true,
        check: Box::new(check),
    }
}

/// A form POST with extra header lines (each ending in CRLF).
fn post_form(path: &str, form: &str, extra: &str, check: impl Fn(&Response) + 'static) -> Step {
    Step {
        what: format!("POST {path}"),
        request: format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n{extra}\r\n{form}",
            form.len()
        )
        .into_bytes(),
        head: false,
        check: Box::new(check),
    }
}

impl Step {
    /// Send it on `c` and check the answer.
    fn run(&self, c: &mut Client, app: &str, when: &str) -> Response {
        c.send(&self.request);
        let r = c
            .try_response_to(self.head)
            .unwrap_or_else(|| panic!("{app}: {} ({when}): closed without a response", self.what));
        self.check_response(&r, app, when);
        r
    }

    fn check_response(&self, r: &Response, app: &str, when: &str) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.check)(r)));
        if outcome.is_err() {
            panic!(
                "{app}: {} ({when}): unexpected response {} {} {:?}\n{}",
                self.what,
                r.status,
                r.reason,
                r.headers,
                r.text().chars().take(2000).collect::<String>()
            );
        }
    }
}

fn status(r: &Response, code: u16) {
    assert_eq!(r.status, code);
}

/// A 200 whose body is `expected` whole, with a Content-Length saying so.
fn whole(r: &Response, expected: &[u8]) {
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(expected.len().to_string().as_str()));
    assert_eq!(r.body.len(), expected.len());
    assert!(r.body == expected, "the bytes differ");
}

/// A 200 streamed in chunks whose body is `expected`.
fn streamed(r: &Response, expected: &str) {
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), expected);
}

/// What a client sees when it uses a connection again after an idle pause.
enum Reuse {
    Answered,
    Closed,
}

/// Send `step` on a connection that may have been closed meanwhile: a whole, correct response
/// or a clean close (EOF or reset, before any byte of a response) are fine; a hang is not.
fn reuse(c: &mut Client, step: &Step, app: &str) -> Reuse {
    // A write to a connection the server closed may fail (EPIPE, reset): that is a close too.
    if c.stream.write_all(&step.request).is_err() {
        return Reuse::Closed;
    }
    c.stream.set_read_timeout(Some(HANG)).expect("read timeout");
    let mut b = [0u8; 1];
    match c.stream.peek(&mut b) {
        Ok(0) => Reuse::Closed,
        Ok(_) => {
            let r = c
                .try_response_to(step.head)
                .unwrap_or_else(|| panic!("{app}: {}: cut before a whole response", step.what));
            step.check_response(&r, app, "on a connection reused after an idle pause");
            Reuse::Answered
        }
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => panic!(
            "{app}: {}: a connection reused after an idle pause hung for {HANG:?} (neither answered nor closed)",
            step.what
        ),
        Err(_) => Reuse::Closed,
    }
}

/// The server closes the idle connection (last used at `since`) at its keep-alive timeout.
fn assert_idle_closed(c: &mut Client, since: Instant, app: &str) {
    match c.end_by(since + KEEP_ALIVE + SLACK) {
        common::End::Closed(_) => {}
        other => panic!(
            "{app}: an idle keep-alive connection, {:?} after its last response: {other:?} instead of a close",
            since.elapsed()
        ),
    }
}

/// The tour every app gets:
/// 1. every step on one keep-alive connection, with short pauses (under `--keep-alive`);
/// 2. a connection used once, left idle longer than `--keep-alive`, then reused: a whole
///    response or a clean close, never a hang;
/// 3. a new connection after the pause serves every step again;
/// 4. the first connection, idle since step 1, was closed at its timeout, and a request
///    sent on it anyway sees the close;
/// 5. with `cancelled`, a download of that path abandoned after its first 256 KiB (a reset);
/// 6. the worker is left idle (no spinning), its descriptors back to their count before.
fn tour(s: &Server, app: &str, steps: &[Step], cancelled: Option<&str>) {
    let worker = common::the_worker(s);
    // Once through, so what the first requests load is loaded before descriptors are counted.
    {
        let mut c = s.connect();
        for step in steps {
            step.run(&mut c, app, "warm-up");
        }
    }
    let idle_fds = common::settled_fd_count(worker);

    let mut first = s.connect();
    for (n, step) in steps.iter().enumerate() {
        if n > 0 {
            std::thread::sleep(SHORT_PAUSE);
        }
        step.run(&mut first, app, "on one keep-alive connection with pauses");
    }
    let first_done = Instant::now();

    let mut idle = s.connect();
    steps[0].run(&mut idle, app, "before an idle pause");
    std::thread::sleep(LONG_PAUSE);
    let reused = reuse(&mut idle, &steps[0], app);
    drop(idle);

    let mut fresh = s.connect();
    for step in steps {
        step.run(&mut fresh, app, "on a new connection after an idle pause");
    }
    drop(fresh);

    assert_idle_closed(&mut first, first_done, app);
    match reuse(&mut first, &steps[0], app) {
        Reuse::Closed => {}
        Reuse::Answered => panic!("{app}: a connection the server had closed answered a request"),
    }
    drop(first);

    if let Some(path) = cancelled {
        let mut c = s.connect();
        c.send(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
        let got = c.read_raw(256 * 1024);
        assert!(got >= 256 * 1024, "{app}: only {got} bytes of {path}");
        c.reset();
        let mut c = s.connect();
        steps[0].run(&mut c, app, "after a cancelled download");
    }

    if let Err(n) = common::fds_back_to(worker, idle_fds, 5) {
        panic!("{app}: the worker holds {n} descriptors 5 s after its connections closed, {idle_fds} before");
    }
    let cpu = common::cpu_used_over(worker, IDLE_WINDOW);
    assert!(
        cpu < IDLE_CPU_LIMIT,
        "{app}: the worker used {cpu:?} of CPU in {IDLE_WINDOW:?} with nothing to do"
    );
    eprintln!(
        "{app}: reusing a connection idle for {LONG_PAUSE:?} was {}",
        match reused {
            Reuse::Answered => "answered (the server had not closed it yet)",
            Reuse::Closed => "met with a clean close",
        }
    );
}

// --- Flask ----------------------------------------------------------------------------------

#[test]
fn flask_example_app_over_keep_alive_with_idle_pauses() {
    let root = common::repo_root().join("examples/flask-hello");
    let Some(venv) = apps_venv(&["flask"]) else { return };
    let css = std::fs::read(root.join("static/style.css")).expect("the example's stylesheet");
    let s = server("app:app")
        .args(&[
            "--chdir",
            path_str(&root),
            "--venv",
            path_str(&venv),
            "--keep-alive",
            "1",
        ])
        .start();
    let steps = vec![
        get("/", |r| {
            assert_eq!(r.status, 200);
            assert!(r.text().contains("<h1>Hello from flask-hello</h1>"));
        }),
        get("/json", |r| assert_eq!(r.json()["app"], "flask-hello")),
        get("/missing", |r| {
            assert_eq!(r.status, 404);
            assert!(r.text().contains("Not Found"));
        }),
        post_form("/echo", "name=deployctl", "", |r| {
            assert_eq!(r.status, 200);
            assert_eq!(r.json()["hello"], "deployctl");
        }),
        get("/static/style.css", move |r| whole(r, &css)),
    ];
    tour(&s, "flask-hello", &steps, None);
}

fn flask_fixture(venv: &Path, data: &Path, threads: u32) -> Server {
    server("flask_routes:app")
        .args(&["--venv", path_str(venv), "--keep-alive", "1"])
        .args(&["--threads", &threads.to_string()])
        .args(&["--env", &format!("DATA_FILE={}", path_str(&data.join("data.bin")))])
        .start()
}

#[test]
fn flask_404_redirect_stream_send_file_and_json_over_keep_alive_with_idle_pauses() {
    flask_fixture_tour(1);
}

#[test]
fn flask_with_python_threads_over_keep_alive_with_idle_pauses() {
    flask_fixture_tour(4);
}

fn flask_fixture_tour(threads: u32) {
    let Some(venv) = apps_venv(&["flask"]) else { return };
    let dir = data_dir();
    let s = flask_fixture(&venv, dir.path(), threads);
    let app = &format!("flask (--threads {threads})");
    let lines: String = (0..200).map(|i| format!("line {i} of /stream\n")).collect();
    let steps = vec![
        // Werkzeug's 404: the response that shipped the bug (an iterable with close() held
        // in a reference cycle through the environ).
        get("/nope", |r| {
            assert_eq!(r.status, 404);
            assert!(r.header("content-type").is_some_and(|t| t.starts_with("text/html")));
            assert!(r.text().contains("<h1>Not Found</h1>"));
        }),
        get("/redirect", |r| {
            status(r, 302);
            assert_eq!(r.header("location"), Some("/json"));
        }),
        get("/stream?n=200", move |r| streamed(r, &lines)),
        get("/file", |r| whole(r, &data())),
        head("/file", |r| {
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-length"), Some(DATA_LEN.to_string().as_str()));
        }),
        get("/json?x=1", |r| {
            assert_eq!(r.status, 200);
            assert_eq!(r.json()["ok"], true);
            assert_eq!(r.json()["args"]["x"], "1");
        }),
        // A 405 that leaves the request body unread: the server drains it and goes on.
        post_form("/json", "a=b&c=d", "", |r| status(r, 405)),
    ];
    tour(&s, app, &steps, Some("/file"));
}

#[test]
fn a_date_header_from_the_app_is_not_duplicated() {
    // Werkzeug's send_file (like Bottle's static_file) sets Date; RFC 9110 §5.3: a sender
    // must not generate a field line twice unless the field is a list, and Date is not.
    let Some(venv) = apps_venv(&["flask"]) else { return };
    let dir = data_dir();
    let s = flask_fixture(&venv, dir.path(), 1);
    let mut c = s.connect();
    c.send(b"HEAD /file HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let r = c.try_response_to(true).expect("a response");
    let dates: Vec<&String> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("date"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(dates.len(), 1, "Date fields: {dates:?}");
}

// --- Django ---------------------------------------------------------------------------------

/// A project made with the venv's `django-admin startproject`: DEBUG off (the realistic
/// default, so `/` is a 404), hosts allowed, the admin's tables migrated into sqlite there.
fn django_project(venv: &Path, dir: &Path) -> PathBuf {
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let project = dir.join("site");
    std::fs::create_dir(&project).expect("project dir");
    run(
        Command::new(venv.join("bin/django-admin"))
            .args(["startproject", "mysite"])
            .arg(&project),
        "django-admin startproject",
    );
    let settings = project.join("mysite/settings.py");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&settings)
        .expect("settings.py");
    writeln!(f, "\nDEBUG = False\nALLOWED_HOSTS = [\"localhost\", \"127.0.0.1\"]").expect("settings.py");
    drop(f);
    run(
        Command::new(venv.join("bin/python3"))
            .args(["manage.py", "migrate", "-v", "0"])
            .current_dir(&project)
            .env("DJANGO_SETTINGS_MODULE", "mysite.settings"),
        "manage.py migrate",
    );
    project
}

/// The value of cookie `name` in the response's Set-Cookie fields.
fn cookie(r: &Response, name: &str) -> Option<String> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, v)| v.trim().split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().to_string())
}

/// The value of the hidden `csrfmiddlewaretoken` input in a page.
fn csrf_token(html: &str) -> Option<String> {
    let at = html.find("name=\"csrfmiddlewaretoken\"")?;
    let rest = &html[at..];
    let value = rest.split("value=\"").nth(1)?;
    Some(value.split('"').next()?.to_string())
}

fn login_form(r: &Response) {
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("text/html")));
    let html = r.text();
    assert!(html.contains("id=\"login-form\""), "no login form");
    assert!(
        csrf_token(&html).is_some_and(|t| !t.is_empty()),
        "no csrfmiddlewaretoken"
    );
}

#[test]
fn django_admin_login_with_csrf_over_keep_alive_with_idle_pauses() {
    let Some(venv) = apps_venv(&["django"]) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let project = django_project(&venv, dir.path());
    let s = server("mysite.wsgi:application")
        .args(&[
            "--chdir",
            path_str(&project),
            "--venv",
            path_str(&venv),
            "--keep-alive",
            "1",
        ])
        .args(&["--env", "DJANGO_SETTINGS_MODULE=mysite.settings"])
        .start();

    // The login page gives the CSRF cookie and the form's token.
    let mut c = s.connect();
    let page = get("/admin/login/", login_form).run(&mut c, "django", "the login page");
    let token = csrf_token(&page.text()).expect("csrfmiddlewaretoken");
    let csrf_cookie = cookie(&page, "csrftoken").expect("a csrftoken cookie");
    drop(c);

    let form = format!("csrfmiddlewaretoken={token}&username=admin&password=wrong&next=/admin/");
    let extra = format!("Cookie: csrftoken={csrf_cookie}\r\nOrigin: http://localhost\r\n");
    let steps = vec![
        // DEBUG off: no URL at `/`, Django's 404 page.
        get("/", |r| {
            assert_eq!(r.status, 404);
            assert!(r.text().contains("<h1>Not Found</h1>"));
        }),
        get("/admin/login/", login_form),
        // CSRF passes (a 403 otherwise); the wrong password is the form's error.
        post_form("/admin/login/", &form, &extra, |r| {
            assert_eq!(r.status, 200);
            assert!(r.text().contains("Please enter the correct username and password"));
        }),
        get("/admin/", |r| {
            assert_eq!(r.status, 302);
            assert_eq!(r.header("location"), Some("/admin/login/?next=/admin/"));
        }),
        // The same POST without the cookie is refused by the CSRF check: the check is real.
        post_form("/admin/login/", &form, "Origin: http://localhost\r\n", |r| {
            status(r, 403)
        }),
    ];
    tour(&s, "django", &steps, None);
}

// --- Bottle and Falcon ----------------------------------------------------------------------

#[test]
fn bottle_str_generator_and_static_file_over_keep_alive_with_idle_pauses() {
    let Some(venv) = apps_venv(&["bottle"]) else { return };
    let dir = data_dir();
    let s = server("bottle_routes:application")
        .args(&["--venv", path_str(&venv), "--keep-alive", "1"])
        .args(&["--env", &format!("DATA_DIR={}", path_str(dir.path()))])
        .start();
    let lines: String = (0..300).map(|i| format!("line {i}\n")).collect();
    let steps = vec![
        get("/hello/world", |r| whole(r, b"hello world")),
        get("/gen?n=300", move |r| streamed(r, &lines)),
        get("/static/data.bin", |r| whole(r, &data())),
        get("/nope", |r| {
            assert_eq!(r.status, 404);
            assert!(r.text().contains("Error: 404 Not Found"));
        }),
        head("/static/data.bin", |r| {
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-length"), Some(DATA_LEN.to_string().as_str()));
        }),
    ];
    tour(&s, "bottle", &steps, Some("/static/data.bin"));
}

#[test]
fn falcon_media_stream_and_static_route_over_keep_alive_with_idle_pauses() {
    let Some(venv) = apps_venv(&["falcon"]) else { return };
    let dir = data_dir();
    let s = server("falcon_routes:application")
        .args(&["--venv", path_str(&venv), "--keep-alive", "1"])
        .args(&["--env", &format!("DATA_DIR={}", path_str(dir.path()))])
        .start();
    let lines: String = (0..300).map(|i| format!("line {i}\n")).collect();
    let steps = vec![
        get("/hello/x", |r| {
            assert_eq!(r.status, 200);
            assert_eq!(r.json()["hello"], "x");
        }),
        get("/stream?n=300", move |r| streamed(r, &lines)),
        get("/static/data.bin", |r| whole(r, &data())),
        get("/nope", |r| {
            assert_eq!(r.status, 404);
            assert_eq!(r.json()["title"], "404 Not Found");
        }),
    ];
    tour(&s, "falcon", &steps, Some("/static/data.bin"));
}
