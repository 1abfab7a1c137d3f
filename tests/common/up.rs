//! Running `deployctl up` from tests: free loopback ports, the stack as a child that is
//! stopped when dropped, raw HTTP requests with parsed answers, and process-group checks that
//! nothing is left behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::repo;

/// A free port whose number does not contain "443": gixy's TLS checks (run by `up` on the
/// rendered nginx config) take such a `listen` for an HTTPS server and ask for TLS settings.
pub fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !port.to_string().contains("443") {
            return port;
        }
    }
}

/// (pid, process group, command line) of every process.
/// Every descendant of `pid` as `PID STATE WCHAN CMDLINE` lines (for a failure's message).
pub fn descendants_described(pid: u32) -> String {
    let field = |p: u32, f: &str| std::fs::read_to_string(format!("/proc/{p}/{f}")).unwrap_or_default();
    let ppid = |p: u32| -> Option<u32> {
        field(p, "stat")
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|x| x.parse().ok())
    };
    let all = all_processes();
    let mut tree = vec![pid];
    let mut out = String::new();
    let mut i = 0;
    while i < tree.len() {
        for (p, _, cmd) in &all {
            if ppid(*p) == Some(tree[i]) && !tree.contains(p) {
                tree.push(*p);
                let state = field(*p, "stat")
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next().map(String::from));
                out.push_str(&format!(
                    "  {p} {} {} {cmd}\n",
                    state.unwrap_or_default(),
                    field(*p, "wchan")
                ));
            }
        }
        i += 1;
    }
    out
}

pub fn all_processes() -> Vec<(u32, u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let (Ok(cmd), Ok(stat)) = (
            std::fs::read(e.path().join("cmdline")),
            std::fs::read_to_string(e.path().join("stat")),
        ) else {
            continue;
        };
        // The fields after the parenthesised name: state, ppid, pgrp, ...
        let pgrp = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(2))
            .and_then(|g| g.parse().ok());
        if let Some(pgrp) = pgrp {
            found.push((pid, pgrp, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    found
}

/// Every process still running in one of `groups` (nginx workers and server workers
/// included). A zombie has exited: one whose parent died is left to init, which may never reap
/// it (the killed supervisor's components in `tests/supervision.rs`).
pub fn left_in(groups: &[u32]) -> Vec<String> {
    let zombie = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next())
                    .map(|st| st == "Z")
            })
            .unwrap_or(true)
    };
    all_processes()
        .into_iter()
        .filter(|(p, g, _)| groups.contains(g) && !zombie(*p))
        .map(|(p, _, c)| format!("{p}: {c}"))
        .collect()
}

pub fn request(port: u16, req: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}

pub type Log = std::sync::Arc<std::sync::Mutex<String>>;

/// A running `deployctl up`; dropped (also when a test fails) it is stopped by SIGTERM, then
/// SIGKILL after 30 s, so no stack outlives its test.
pub struct Up(pub Child);

impl Up {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling the child we started.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// SIGTERM and the exit status (bounded).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                // What `up` was waiting for: its descendants, their state and kernel wait.
                let left = descendants_described(self.0.id());
                let _ = self.0.kill();
                panic!("up did not stop on SIGTERM within 30 s; still running under it:\n{left}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.terminate()));
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn up_with(config: &std::path::Path, target: &str, port: u16) -> (Up, String, Log) {
    up_with_args(config, target, port, &[])
}

/// [`up_with`], with more arguments for `up`.
#[allow(clippy::zombie_processes)]
pub fn up_with_args(
    config: &std::path::Path,
    target: &str,
    port: u16,
    extra: &[&std::ffi::OsStr],
) -> (Up, String, Log) {
    let example = repo().join("examples/flask-hello");
    assert!(example.join(".venv/bin/python3").exists(), "run scripts/setup.sh first");
    let mut child = Command::new(env!("CARGO_BIN_EXE_deployctl"))
        .args(["up", "-c"])
        .arg(config)
        .args(["--target", target, "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("NO_COLOR", "1")
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut url = String::new();
    let read = stdout.read_line(&mut url);
    assert!(read.is_ok_and(|n| n > 0), "up printed no URL:\n{}", log.lock().unwrap());
    (Up(child), url.trim().to_string(), log)
}

/// Stop `up` and check that nothing is left in its components' process groups (each
/// component is a child of `up` leading its own group; uWSGI renames its processes, so
/// command lines cannot be relied on).
pub fn stop(mut up: Up, target: &str) {
    let pid = up.pid();
    let groups: Vec<u32> = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(!groups.is_empty(), "no component of {target} found running");
    assert!(
        groups
            .iter()
            .all(|g| all_processes().iter().any(|(p, pg, _)| p == g && pg == g)),
        "components lead their groups"
    );
    let status = up.terminate();
    assert!(status.success(), "{status}");
    assert!(left_in(&groups).is_empty(), "left behind: {:?}", left_in(&groups));
}

/// A copy of the example whose deploy.toml a test may change (the virtualenv stays shared).
pub fn example_copy() -> tempfile::TempDir {
    let example = repo().join("examples/flask-hello");
    let dir = tempfile::tempdir().unwrap();
    for f in ["app.py", "requirements.txt"] {
        std::fs::copy(example.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::create_dir(dir.path().join("static")).unwrap();
    for e in std::fs::read_dir(example.join("static")).unwrap().flatten() {
        std::fs::copy(e.path(), dir.path().join("static").join(e.file_name())).unwrap();
    }
    let toml = std::fs::read_to_string(example.join("deploy.toml")).unwrap().replace(
        "venv = \".venv\"",
        &format!("venv = {:?}", example.join(".venv").display().to_string()),
    );
    std::fs::write(dir.path().join("deploy.toml"), toml).unwrap();
    dir
}

pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn groups_of_dir(dir: &std::path::Path) -> Vec<u32> {
    let needle = dir.join(".deployctl").display().to_string();
    all_processes()
        .into_iter()
        .filter(|(_, _, c)| c.contains(&needle))
        .map(|(_, g, _)| g)
        .collect()
}

/// Runs `deployctl down` for a project when dropped, so a failing test does not leave a
/// detached stack running.
pub struct DownOnDrop(pub std::path::PathBuf);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if !super::Cli::new(&self.0).args(["status"]).run().stdout.is_empty() {
            let _ = super::Cli::new(&self.0).args(["down"]).run();
        }
    }
}

/// An HTTP answer with its head parsed; status 0 when the server closed without answering
/// (nginx's `return 444`).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// Every value of the header `name` (any case), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The one value of `name`; panics when it is missing or repeated.
    #[track_caller]
    pub fn one(&self, name: &str) -> &str {
        let v = self.all(name);
        assert_eq!(v.len(), 1, "expected one {name} header: {:?}", self.headers);
        v[0]
    }

    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// `GET target` on 127.0.0.1:`port` with `Host: host`, `extra` header lines and
/// `Connection: close`; the raw target is sent as given (`/static/../app.py` stays so).
pub fn get(port: u16, host: &str, target: &str, extra: &[(&str, &str)]) -> Reply {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    // A reset after nginx's 444 is an answerless close too.
    let _ = s.read_to_end(&mut raw);
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        assert!(raw.is_empty(), "a partial answer: {:?}", String::from_utf8_lossy(raw));
        return Reply {
            status: 0,
            headers: Vec::new(),
            body: Vec::new(),
        };
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert!(parts.next().unwrap().starts_with("HTTP/1."), "{status_line}");
    let status = parts.next().and_then(|c| c.parse().ok()).expect("status code");
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or_else(|| panic!("not a header line: {l:?}"));
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply { status, headers, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let line = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).expect("chunk size");
        b = &b[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// `deployctl up --target TARGET --listen 127.0.0.1:HTTP --tls-listen 127.0.0.1:HTTPS
/// --detach` in the project `p`.
pub fn up_tls(p: &std::path::Path, target: &str, http: u16, https: u16) -> super::Run {
    super::Cli::new(p)
        .args([
            "up",
            "--target",
            target,
            "--listen",
            &format!("127.0.0.1:{http}"),
            "--tls-listen",
            &format!("127.0.0.1:{https}"),
            "--detach",
        ])
        .run()
}

/// curl over HTTPS (HTTP/2 offered) to `localhost:PORT` (resolved to loopback), trusting `ca`
/// (or nothing checked with `None`), with curl's `extra` arguments: (status line and headers,
/// body), or curl's error.
pub fn curl_https(
    port: u16,
    path: &str,
    ca: Option<&std::path::Path>,
    extra: &[&str],
) -> Result<(String, String), String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--http2", "-D", "-"]).args(extra);
    match ca {
        Some(ca) => {
            cmd.arg("--cacert").arg(ca);
        }
        None => {
            cmd.arg("-k");
        }
    }
    let out = cmd
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((head.to_string(), body.to_string()))
}
