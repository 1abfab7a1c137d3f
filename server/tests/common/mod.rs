//! Test support: start the real `deployctl-server` on 127.0.0.1 with a fixture app, and talk
//! to it over raw sockets with a small HTTP/1.1 response reader.
//!
//! Every server is stopped by PID when its handle drops; every read has a timeout.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_deployctl-server");

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub struct Builder {
    entry: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    nofile: Option<(u64, u64)>,
}

pub fn server(entry: &str) -> Builder {
    Builder {
        entry: entry.to_string(),
        args: Vec::new(),
        env: Vec::new(),
        nofile: None,
    }
}

impl Builder {
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    pub fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Start under this open-file limit (soft, hard), as `prlimit --nofile` would.
    pub fn nofile(mut self, soft: u64, hard: u64) -> Self {
        self.nofile = Some((soft, hard));
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg(&self.entry)
            .args(&self.args)
            .env_remove("VIRTUAL_ENV")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !self.args.iter().any(|a| a == "--chdir") {
            cmd.arg("--chdir").arg(fixtures());
        }
        if !self.args.iter().any(|a| a == "--workers") {
            cmd.args(["--workers", "1"]);
        }
        if !self.args.iter().any(|a| a == "--bind") {
            cmd.args(["--bind", "127.0.0.1:0"]);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some((soft, hard)) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; it runs in the child before exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd
    }

    /// Spawn with stderr (the log) and stdout captured line by line; the receiver gets the
    /// address of every "listening on" line.
    fn spawn_captured(&self) -> Captured {
        let mut child = self.command().spawn().expect("spawn deployctl-server");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let addr = addr.split(' ').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let out = Arc::new(Mutex::new(String::new()));
        let out_sink = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut l = out_sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Captured { child, log, out, rx }
    }

    /// Start and wait for the "listening on" line (at most 15 s).
    pub fn start(self) -> Server {
        let Captured {
            mut child,
            log,
            out,
            rx,
        } = self.spawn_captured();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(50)) {
                return Server {
                    child,
                    addr,
                    log,
                    stdout: out,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!("server exited with {status} before listening:\n{}", log.lock().unwrap());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not listen within 15 s:\n{}", log.lock().unwrap());
            }
        }
    }

    /// Start a server that does not log its address (`-q`) on a free port chosen here, and
    /// wait until it accepts connections (at most 15 s).
    pub fn start_quiet(self) -> Server {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .to_string();
        let Captured {
            mut child, log, out, ..
        } = self.args(&["--bind", &addr]).spawn_captured();
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(&addr).is_err() {
            if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                panic!("server did not listen on {addr}:\n{}", log.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Server {
            child,
            addr,
            log,
            stdout: out,
        }
    }

    /// Start with `--error-log FILE`: the "listening on" line is read from the file.
    pub fn start_logging_to(self, file: &Path) -> Server {
        let mut child = self.command().spawn().expect("spawn deployctl-server");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let ready = text.matches(" ready").count();
            let workers = self
                .args
                .iter()
                .position(|a| a == "--workers")
                .and_then(|i| self.args.get(i + 1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            if let Some(addr) = text
                .split("listening on ")
                .nth(1)
                .map(|r| r.split(' ').next().unwrap_or("").to_string())
                && ready >= workers
            {
                let log = Arc::new(Mutex::new(String::new()));
                let stdout = Arc::new(Mutex::new(String::new()));
                return Server {
                    child,
                    addr,
                    log,
                    stdout,
                };
            }
            if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not start:
{text}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Run to completion (for start-up failures): (exit code, stderr).
    pub fn run_to_exit(self) -> (i32, String) {
        let mut child = self.command().spawn().expect("spawn deployctl-server");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .expect("stderr")
                    .read_to_string(&mut err)
                    .expect("stderr");
                return (status.code().unwrap_or(-1), err);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Captured {
    child: Child,
    log: Arc<Mutex<String>>,
    out: Arc<Mutex<String>>,
    rx: std::sync::mpsc::Receiver<String>,
}

pub struct Server {
    child: Child,
    pub addr: String,
    log: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The master has not exited.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Wait (at most `secs`) for `needle` to appear in the error log.
    pub fn wait_log(&self, needle: &str, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn connect(&self) -> Client {
        let stream = TcpStream::connect(&self.addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// One request on a fresh connection.
    pub fn get(&self, path: &str) -> Response {
        let mut c = self.connect();
        c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        c.response()
    }

    /// The master's worker processes.
    pub fn worker_pids(&self) -> Vec<u32> {
        let pid = self.pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Peak resident memory (VmHWM) of the largest worker, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.worker_pids()
            .into_iter()
            .map(|p| proc_status_kib(p, "VmHWM:"))
            .max()
            .unwrap_or(0)
    }

    /// SIGTERM, wait for the exit, and give back the status and the whole log.
    pub fn terminate_with_log(mut self) -> (i32, String) {
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        let code = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        // The log reader finishes once the pipe closes.
        std::thread::sleep(Duration::from_millis(100));
        (code, self.log())
    }

    /// SIGTERM and wait for the exit status (at most 10 s).
    pub fn terminate(mut self) -> i32 {
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sequential requests on fresh connections until `stop` (or 4000 requests / 60 s):
/// (answered with 200, failed, the JSON bodies).
pub fn load_loop(
    addr: String,
    path: &'static str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize, Vec<serde_json::Value>)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed, mut bodies) = (0, 0, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..4000 {
            if stop.load(std::sync::atomic::Ordering::Relaxed) || Instant::now() > deadline {
                break;
            }
            let result = std::net::TcpStream::connect(&addr).ok().and_then(|s| {
                let mut c = Client::from(s);
                c.stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
                c.send(format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").as_bytes());
                c.try_response_to(false)
            });
            match result {
                Some(r) if r.status == 200 => {
                    ok += 1;
                    bodies.push(r.json());
                }
                _ => failed += 1,
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (ok, failed, bodies)
    })
}

pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM line")
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a child we started.
    unsafe { libc::kill(pid as i32, sig) };
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl From<TcpStream> for Client {
    fn from(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }
}

impl Client {
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Send one byte per write, with a tiny pause, to split the request across many packets.
    pub fn send_trickle(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.stream.write_all(&[*b]).expect("send");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("read: {e}"),
        }
    }

    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill() > 0, "connection closed inside a body");
        }
        self.buf.drain(..n).collect()
    }

    /// Read one response; `None` if the server closed the connection first.
    pub fn try_response_to(&mut self, head_request: bool) -> Option<Response> {
        let status_line = self.line()?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        assert!(version.starts_with("HTTP/1."), "bad status line {status_line:?}");
        let status: u16 = parts.next().and_then(|s| s.parse().ok()).expect("status code");
        let reason = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        loop {
            let line = self.line().expect("head cut short");
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':').expect("header line");
            headers.push((n.to_string(), v.trim().to_string()));
        }
        let mut r = Response {
            status,
            reason,
            headers,
            body: Vec::new(),
        };
        if status == 100 {
            return Some(r);
        }
        if head_request || status == 204 || status == 304 {
            return Some(r);
        }
        if r.header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let size_line = self.line().expect("chunk size");
                let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                    .expect("chunk size hex");
                if size == 0 {
                    while !self.line().expect("trailer").is_empty() {}
                    break;
                }
                let data = self.exact(size);
                r.body.extend_from_slice(&data);
                assert_eq!(self.exact(2), b"\r\n");
            }
        } else if let Some(cl) = r.header("content-length") {
            let n: usize = cl.parse().expect("content-length");
            r.body = self.exact(n);
        } else {
            while self.fill() > 0 {}
            r.body = std::mem::take(&mut self.buf);
        }
        Some(r)
    }

    pub fn response(&mut self) -> Response {
        self.try_response_to(false)
            .expect("the server closed the connection without a response")
    }

    /// True if the server closes the connection (EOF or reset) within `secs`.
    pub fn closed_within(&mut self, secs: u64) -> bool {
        self.stream.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
        let mut b = [0u8; 1024];
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }
}

// --- processes and connection ends (lifecycle and real-app tests) ---------------------------

/// The only worker of a `--workers 1` server, once it says it is ready (at most 15 s).
pub fn the_worker(s: &Server) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let pids = s.worker_pids();
        if let [pid] = pids[..]
            && s.log().contains(&format!("worker {pid} ready"))
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no single ready worker within 15 s (children {pids:?}):\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time (user + system, all threads) a process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces): state is field 3, so utime (14)
    // and stime (15) are the 12th and 13th after the closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

/// CPU time a process uses while this thread sleeps for `window`.
pub fn cpu_used_over(pid: u32, window: Duration) -> Duration {
    let before = cpu_time(pid);
    std::thread::sleep(window);
    cpu_time(pid).saturating_sub(before)
}

/// Descriptors a process has open.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The descriptor count once it has not changed for 300 ms (at most 5 s of waiting).
pub fn settled_fd_count(pid: u32) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = fd_count(pid);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = fd_count(pid);
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Wait (at most `secs`) for the process to be back to `idle` descriptors; the last count
/// seen if it is not.
pub fn fds_back_to(pid: u32, idle: usize, secs: u64) -> Result<(), usize> {
    let mut last = 0;
    if wait_until(secs, || {
        last = fd_count(pid);
        last <= idle
    }) {
        Ok(())
    } else {
        Err(last)
    }
}

/// How a connection ended, seen from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// EOF from the server after this long.
    Closed(Duration),
    /// A reset after this long.
    Reset(Duration),
    /// The server sent bytes nobody asked for.
    Bytes(Vec<u8>),
    /// Still open when the wait ran out.
    Open,
}

impl Client {
    /// Connect with a 15 s read timeout and no Nagle delay.
    pub fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut c = Client::from(stream);
        c.stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("read timeout");
        c.buf.clear();
        c
    }

    /// Bytes read past the last response and not consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Wait until `deadline` for the server to end the connection; bytes it sends instead
    /// are returned as `End::Bytes`.
    pub fn end_by(&mut self, deadline: Instant) -> End {
        let start = Instant::now();
        if !self.buf.is_empty() {
            return End::Bytes(std::mem::take(&mut self.buf));
        }
        let mut b = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return End::Open;
            }
            if self.stream.set_read_timeout(Some(left)).is_err() {
                return End::Reset(start.elapsed());
            }
            match self.stream.read(&mut b) {
                Ok(0) => return End::Closed(start.elapsed()),
                Ok(n) => return End::Bytes(b[..n].to_vec()),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return End::Open;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return End::Reset(start.elapsed()),
            }
        }
    }

    /// Read at least `n` raw bytes (or until EOF / the read timeout); how many were read.
    pub fn read_raw(&mut self, n: usize) -> usize {
        let mut total = std::mem::take(&mut self.buf).len();
        let mut b = vec![0u8; 65536];
        while total < n {
            match self.stream.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(k) => total += k,
            }
        }
        total
    }

    /// Hang up with a reset (SO_LINGER 0), as a client that crashed or timed out does.
    pub fn reset(self) {
        use std::os::fd::AsRawFd;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on our own socket with a valid linger struct.
        unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        drop(self);
    }
}

/// A self-signed P-256 pair for localhost and 127.0.0.1, with the given serial, in `dir`.
pub fn make_pair(dir: &Path, name: &str, serial: u32) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-set_serial", &serial.to_string()])
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// A plain-to-TLS bridge in front of a TLS server (`fixtures/tls_bridge.py`: Python's ssl,
/// that is OpenSSL, verifying `ca` for localhost): a `Client` connected to `addr` speaks to
/// the server over TLS, its raw requests arriving as written. Stopped by PID when dropped.
pub struct TlsBridge {
    child: Child,
    pub addr: String,
}

impl TlsBridge {
    pub fn start(server: &Server, ca: &Path) -> TlsBridge {
        let port = server.addr.rsplit(':').next().unwrap_or_default();
        let mut child = Command::new("python3")
            .arg(fixtures().join("tls_bridge.py"))
            .arg(port)
            .arg(ca)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 tls_bridge.py");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout).read_line(&mut line).expect("the bridge's port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the bridge said {line:?}"));
        TlsBridge {
            child,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(&self.addr)
    }
}

impl Drop for TlsBridge {
    fn drop(&mut self) {
        signal(self.child.id(), libc::SIGTERM);
        let _ = self.child.wait();
    }
}
