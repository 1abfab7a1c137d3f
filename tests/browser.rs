//! The example page in a real browser: `deployctl up` for each target with a front that
//! serves the stylesheet (nginx before each backend, and the embedded server alone, where
//! Flask serves its own `static/`), then Debian's headless Chromium loads the printed URL.
//! Asserted from what Chromium reports over the DevTools protocol: no console error (a
//! stylesheet refused for its MIME type is one), no failed or 4xx/5xx resource, the
//! stylesheet served as `text/css` with one `Cache-Control`, and the heading's computed
//! colour is the stylesheet's.
//!
//! Chromium is driven over `--remote-debugging-pipe` (JSON messages ended by NUL on fds 3 and
//! 4), so no WebSocket client or driver is needed. Without Chromium the tests are skipped
//! with a message, and fail when DEPLOYCTL_REQUIRE_VALIDATORS=1 (as in CI).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::up::{example_copy, free_port, groups_of_dir, left_in, up_with};

const CHROMIUM: &str = "/usr/bin/chromium";
/// Every wait on the browser is bounded by this.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

fn chromium() -> Option<PathBuf> {
    let path = Path::new(CHROMIUM);
    if path.is_file() {
        return Some(path.to_path_buf());
    }
    if std::env::var("DEPLOYCTL_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1") {
        panic!("{CHROMIUM} is missing (DEPLOYCTL_REQUIRE_VALIDATORS=1): run scripts/setup.sh (apt package chromium)");
    }
    eprintln!("skipped: {CHROMIUM} is missing; run scripts/setup.sh (apt package chromium)");
    None
}

/// A headless Chromium and one DevTools session on a page, over pipes.
struct Browser {
    child: Child,
    to_browser: std::fs::File,
    from_browser: Receiver<Value>,
    next_id: u64,
    session: String,
    /// Every event of the page's session, in order.
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new descriptors, owned below.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// `fd` moved to a number above 10, so that placing descriptors on 3 and 4 in the child
/// cannot overwrite one another.
fn high(fd: OwnedFd) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor, owned below.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    assert!(n >= 10, "fcntl: {}", std::io::Error::last_os_error());
    // SAFETY: n is a new descriptor owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(n) }
}

impl Browser {
    fn launch(chromium: &Path) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("deployctl-chromium-")
            .tempdir()
            .unwrap();
        let (browser_reads, we_write) = pipe();
        let (we_read, browser_writes) = pipe();
        let (browser_reads, browser_writes) = (high(browser_reads), high(browser_writes));
        let (r, w) = (browser_reads.as_raw_fd(), browser_writes.as_raw_fd());
        let mut cmd = Command::new(chromium);
        // Root needs --no-sandbox; without the background-networking flags Chromium keeps
        // trying to reach Google's hosts, which this machine's closed network refuses.
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only dup2 between fork and exec; dup2 clears close-on-exec on 3 and 4.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start chromium");
        drop((browser_reads, browser_writes));
        let (tx, rx) = channel();
        let reader = std::fs::File::from(we_read);
        std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            loop {
                let mut msg = Vec::new();
                match r.read_until(0, &mut msg) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        msg.pop();
                        let v: Value = serde_json::from_slice(&msg).expect("DevTools sent JSON");
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to_browser: std::fs::File::from(we_write),
            from_browser: rx,
            next_id: 0,
            session: String::new(),
            events: Vec::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = b.call("Target.attachToTarget", json!({"targetId": target_id, "flatten": true}));
        b.session = attached["sessionId"].as_str().expect("sessionId").to_string();
        for domain in ["Page", "Network", "Log", "Runtime"] {
            b.call(&format!("{domain}.enable"), json!({}));
        }
        b
    }

    fn next(&mut self, deadline: Instant) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.from_browser.recv_timeout(left) {
            Ok(v) => v,
            Err(RecvTimeoutError::Timeout) => panic!("Chromium did not answer within {BROWSER_TIMEOUT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("Chromium closed its DevTools pipe"),
        }
    }

    /// Sends a command (to the page's session once attached) and returns its result; events
    /// that arrive meanwhile are kept.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to_browser.write_all(&bytes).expect("write to Chromium");
        let deadline = Instant::now() + BROWSER_TIMEOUT;
        loop {
            let v = self.next(deadline);
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
            self.keep(v);
        }
    }

    fn keep(&mut self, v: Value) {
        if v.get("method").is_some() && v["sessionId"].as_str() == Some(self.session.as_str()) {
            self.events.push(v);
        }
    }

    /// Navigates and waits for the load event (stylesheets in the head delay it, so by then
    /// the stylesheet was applied or refused), then for the network to be quiet.
    fn load(&mut self, url: &str) {
        let nav = self.call("Page.navigate", json!({"url": url}));
        assert!(nav.get("errorText").is_none(), "navigating to {url}: {nav}");
        let deadline = Instant::now() + BROWSER_TIMEOUT;
        while !self.events.iter().any(|e| e["method"] == "Page.loadEventFired") {
            let v = self.next(deadline);
            self.keep(v);
        }
        // Late console messages or requests (a favicon, say) get half a second to show up.
        let quiet = Instant::now() + Duration::from_millis(500);
        while let Ok(v) = self
            .from_browser
            .recv_timeout(quiet.saturating_duration_since(Instant::now()))
        {
            self.keep(v);
        }
    }

    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    fn events(&self, method: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["method"] == method).collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Browser.close goes to the browser, not the page's session.
        self.session.clear();
        self.next_id += 1;
        let mut bytes = serde_json::to_vec(&json!({"id": self.next_id, "method": "Browser.close"})).unwrap();
        bytes.push(0);
        let _ = self.to_browser.write_all(&bytes);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What Chromium saw of one page load.
struct PageLoad {
    /// Console and browser log entries of level "error" (with their URL).
    errors: Vec<String>,
    /// Resources that failed to load, or were answered 4xx/5xx.
    failed: Vec<String>,
    /// The `Network.loadingFailed` events' parameters (`type`, `errorText`, …).
    loading_failed: Vec<Value>,
    /// URL → (status, MIME type, headers) of every response.
    responses: BTreeMap<String, (u64, String, BTreeMap<String, String>)>,
    h1_color: String,
}

fn load_page(chromium: &Path, url: &str) -> PageLoad {
    let mut b = Browser::launch(chromium);
    b.load(url);
    let h1_color = b
        .eval("getComputedStyle(document.querySelector('h1')).color")
        .as_str()
        .expect("a colour string")
        .to_string();
    let mut errors = Vec::new();
    for e in b.events("Log.entryAdded") {
        let entry = &e["params"]["entry"];
        if entry["level"] == "error" {
            errors.push(format!("{} ({})", entry["text"], entry["url"]));
        }
    }
    for e in b.events("Runtime.exceptionThrown") {
        errors.push(e["params"]["exceptionDetails"].to_string());
    }
    for e in b.events("Runtime.consoleAPICalled") {
        if e["params"]["type"] == "error" {
            errors.push(e["params"]["args"].to_string());
        }
    }
    let loading_failed: Vec<Value> = b
        .events("Network.loadingFailed")
        .into_iter()
        .map(|e| e["params"].clone())
        .collect();
    let mut failed: Vec<String> = loading_failed.iter().map(Value::to_string).collect();
    let mut responses = BTreeMap::new();
    for e in b.events("Network.responseReceived") {
        let r = &e["params"]["response"];
        let url = r["url"].as_str().unwrap().to_string();
        let status = r["status"].as_u64().unwrap();
        if status >= 400 {
            failed.push(format!("{url} answered {status}"));
        }
        // DevTools joins repeated header fields with "\n".
        let headers = r["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        responses.insert(url, (status, r["mimeType"].as_str().unwrap().to_string(), headers));
    }
    PageLoad {
        errors,
        failed,
        loading_failed,
        responses,
        h1_color,
    }
}

/// `rgb(r, g, b)` as getComputedStyle writes the `h1 { color: #rrggbb }` of a stylesheet.
fn h1_color_of(css: &str) -> String {
    let rule = css
        .split('}')
        .find(|r| r.trim_start().starts_with("h1"))
        .expect("an h1 rule");
    let hex = rule
        .split(';')
        .chain(rule.split('{'))
        .find_map(|d| d.trim().strip_prefix("color:"))
        .map(|v| v.trim().trim_start_matches('#').to_string())
        .expect("an h1 colour");
    let c = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).unwrap();
    format!("rgb({}, {}, {})", c(0), c(2), c(4))
}

/// `up --target T` on a copy of the example (with `--templates DIR` when given), the
/// printed URL loaded in Chromium, then the stack stopped with nothing left behind.
fn through_browser(target: &str, templates: Option<&Path>) -> Option<(PageLoad, String, String)> {
    let chromium = chromium()?;
    let project = example_copy();
    let config = project.path().join("deploy.toml");
    if let Some(dir) = templates {
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            format!("{text}\n[render]\ntemplates = {:?}\n", dir.display().to_string()),
        )
        .unwrap();
    }
    let port = free_port();
    let (mut up, url, log) = up_with(&config, target, port);
    let page = load_page(&chromium, &url);
    let css = std::fs::read_to_string(project.path().join("static/style.css")).unwrap();
    let groups = groups_of_dir(project.path());
    assert!(up.terminate().success());
    assert!(left_in(&groups).is_empty(), "left behind: {:?}", left_in(&groups));
    let log = log.lock().unwrap().clone();
    Some((page, css, format!("{url}\n{log}")))
}

fn page_is_styled(target: &str) {
    let Some((page, css, log)) = through_browser(target, None) else {
        return;
    };
    let context = format!(
        "{target}: errors {:?}, failed {:?}\nup: {log}",
        page.errors, page.failed
    );
    assert!(page.errors.is_empty(), "{context}");
    assert!(page.failed.is_empty(), "{context}");
    let (url, (status, mime, headers)) = page
        .responses
        .iter()
        .find(|(u, _)| u.ends_with("/static/style.css"))
        .unwrap_or_else(|| panic!("the stylesheet was never requested; {context}"));
    assert_eq!((*status, mime.as_str()), (200, "text/css"), "{url}");
    let cache = headers.get("cache-control").map(|c| c.split('\n').collect::<Vec<_>>());
    if target.starts_with("nginx+") {
        assert_eq!(cache, Some(vec!["max-age=604800"]), "{target}: one Cache-Control");
        assert_eq!(
            headers.get("x-content-type-options").map(String::as_str),
            Some("nosniff")
        );
    } else {
        assert_eq!(cache.map(|c| c.len()), Some(1), "{target}: one Cache-Control");
    }
    assert_eq!(
        page.h1_color,
        h1_color_of(&css),
        "{target}: the stylesheet was not applied"
    );
}

#[test]
fn nginx_embedded_page_is_styled_in_chromium() {
    page_is_styled("nginx+embedded");
}

#[test]
fn nginx_gunicorn_page_is_styled_in_chromium() {
    page_is_styled("nginx+gunicorn");
}

#[test]
fn nginx_uwsgi_page_is_styled_in_chromium() {
    page_is_styled("nginx+uwsgi");
}

#[test]
fn embedded_page_is_styled_in_chromium() {
    page_is_styled("embedded");
}

/// The check above can fail: with a site template whose server has no `include mime.types`
/// nor `default_type` (the bug this test guards against), nginx serves the stylesheet as text/plain next to
/// `nosniff`, and Chromium's refusal is seen as a console error and an unstyled heading.
#[test]
fn a_stylesheet_served_as_text_plain_is_caught() {
    let templates = tempfile::tempdir().unwrap();
    let site = std::fs::read_to_string(common::repo().join("templates/nginx/site.conf.tera")).unwrap();
    let without: String = site
        .lines()
        .filter(|l| !["include mime.types;", "default_type application/octet-stream;"].contains(&l.trim()))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(site, without, "the template includes mime.types");
    std::fs::create_dir_all(templates.path().join("nginx")).unwrap();
    std::fs::write(templates.path().join("nginx/site.conf.tera"), without).unwrap();
    let Some((page, css, log)) = through_browser("nginx+embedded", Some(templates.path())) else {
        return;
    };
    // Chromium aborts the refused stylesheet (no response event; sometimes twice, its preload
    // scanner and the parser each asking) and says why on the console.
    let stylesheets: Vec<&str> = page
        .loading_failed
        .iter()
        .filter(|f| f["type"] == "Stylesheet")
        .map(|f| f["errorText"].as_str().unwrap_or_default())
        .collect();
    assert!(
        !stylesheets.is_empty() && stylesheets.iter().all(|e| *e == "net::ERR_ABORTED"),
        "{:?}\n{log}",
        page.loading_failed
    );
    let refusals: Vec<&String> = page
        .errors
        .iter()
        .filter(|e| e.contains("Refused to apply style") && e.contains("MIME type ('text/plain')"))
        .collect();
    assert!(!refusals.is_empty(), "{:?}", page.errors);
    assert_ne!(page.h1_color, h1_color_of(&css));
}
