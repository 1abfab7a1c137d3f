//! The error log (server messages, app tracebacks, `wsgi.errors`) and the access log.
//!
//! Both are plain files (or stdout/stderr) written with one `write(2)` per record, so lines
//! from several threads never interleave and a line is never half-written before a crash. The
//! access log line is built in Rust from data the request handler already has, with the GIL
//! released (the caller makes sure of that).

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deployctl_common::settings::{AccessLogFormat, LogLevel};

enum Sink {
    Stderr,
    Stdout,
    File(String, File),
}

impl Sink {
    fn open(target: Option<&str>, default: Sink) -> anyhow::Result<Sink> {
        Ok(match target {
            None => default,
            Some("-") => default,
            Some(path) => Sink::File(path.to_string(), open_append(path)?),
        })
    }

    fn write(&self, bytes: &[u8]) {
        // One write call per record; errors (a full disk) cannot be reported anywhere better.
        let fd = match self {
            Sink::Stderr => 2,
            Sink::Stdout => 1,
            Sink::File(_, f) => f.as_raw_fd(),
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            // SAFETY: writing from a valid slice to an open fd.
            let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
            if n <= 0 {
                if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            rest = &rest[n as usize..];
        }
    }

    /// Reopen a file sink (log rotation); std streams stay.
    fn reopen(&mut self) -> anyhow::Result<()> {
        if let Sink::File(path, file) = self {
            *file = open_append(path)?;
        }
        Ok(())
    }
}

fn open_append(path: &str) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open log file {path}: {e}"))
}

static ERROR_LOG: OnceLock<Mutex<Sink>> = OnceLock::new();
static ACCESS_LOG: OnceLock<(Mutex<Sink>, AccessLogFormat)> = OnceLock::new();
/// The least important level written (`--log-level`, `--quiet`), as a `Level`'s number.
static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

pub fn init(
    error_log: Option<&str>,
    access_log: Option<&str>,
    format: AccessLogFormat,
    level: LogLevel,
) -> anyhow::Result<()> {
    let level = match level {
        LogLevel::Debug => Level::Debug,
        LogLevel::Info => Level::Info,
        LogLevel::Warning => Level::Warning,
        LogLevel::Error => Level::Error,
    };
    LEVEL.store(level as u8, Ordering::Relaxed);
    let _ = ERROR_LOG.set(Mutex::new(Sink::open(error_log, Sink::Stderr)?));
    if let Some(a) = access_log {
        let _ = ACCESS_LOG.set((Mutex::new(Sink::open(Some(a), Sink::Stdout)?), format));
    }
    Ok(())
}

/// Reopen log files in place (for SIGUSR1 after rotation).
pub fn reopen() -> anyhow::Result<()> {
    if let Some(l) = ERROR_LOG.get() {
        crate::lock(l).reopen()?;
    }
    if let Some((l, _)) = ACCESS_LOG.get() {
        crate::lock(l).reopen()?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warning = 2,
    Error = 3,
}

pub fn enabled(level: Level) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

/// `[2026-11-23 10:00:00 +0000] [pid] [ERROR] message` (Gunicorn's shape).
pub fn log(level: Level, message: &str) {
    if !enabled(level) {
        return;
    }
    let mut line = String::with_capacity(message.len() + 48);
    let (date, time) = civil(SystemTime::now());
    let pid = std::process::id();
    let lvl = match level {
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warning => "WARNING",
        Level::Error => "ERROR",
    };
    use std::fmt::Write as _;
    let _ = write!(
        line,
        "[{:04}-{:02}-{:02} {:02}:{:02}:{:02} +0000] [{pid}] [{lvl}] {}",
        date.0, date.1, date.2, time.0, time.1, time.2, message
    );
    if !line.ends_with('\n') {
        line.push('\n');
    }
    write_error_raw(line.as_bytes());
}

pub fn debug(message: &str) {
    if enabled(Level::Debug) {
        log(Level::Debug, message)
    }
}
pub fn info(message: &str) {
    log(Level::Info, message)
}
pub fn warning(message: &str) {
    log(Level::Warning, message)
}
pub fn error(message: &str) {
    log(Level::Error, message)
}

/// Bytes as they are, for `wsgi.errors`.
pub fn write_error_raw(bytes: &[u8]) {
    match ERROR_LOG.get() {
        Some(l) => crate::lock(l).write(bytes),
        None => {
            let _ = std::io::stderr().write_all(bytes);
        }
    }
}

pub fn access_enabled() -> bool {
    ACCESS_LOG.get().is_some()
}

/// What the access log needs from one request.
pub struct AccessEntry<'a> {
    pub remote: Option<SocketAddr>,
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub version: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub referer: &'a [u8],
    pub user_agent: &'a [u8],
    pub duration: Duration,
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

pub fn access(e: &AccessEntry<'_>) {
    let Some((sink, format)) = ACCESS_LOG.get() else {
        return;
    };
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        line.clear();
        format_access(&mut line, e, *format, SystemTime::now());
        crate::lock(sink).write(&line);
    });
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

pub fn format_access(out: &mut Vec<u8>, e: &AccessEntry<'_>, format: AccessLogFormat, now: SystemTime) {
    let host = e.remote.map(|a| a.ip().to_string()).unwrap_or_else(|| "-".into());
    let ((y, mo, d), (h, mi, s)) = civil(now);
    match format {
        AccessLogFormat::Common | AccessLogFormat::Combined => {
            let _ = write!(
                out,
                "{host} - - [{d:02}/{}/{y:04}:{h:02}:{mi:02}:{s:02} +0000] \"",
                MONTHS[(mo - 1) as usize]
            );
            escape_clf(out, e.method);
            out.push(b' ');
            escape_clf(out, e.target);
            let _ = write!(out, " {}\" {} ", e.version, e.status);
            if e.bytes == 0 {
                out.push(b'-');
            } else {
                let _ = write!(out, "{}", e.bytes);
            }
            if format == AccessLogFormat::Combined {
                out.extend_from_slice(b" \"");
                escape_clf(out, if e.referer.is_empty() { b"-" } else { e.referer });
                out.extend_from_slice(b"\" \"");
                escape_clf(out, if e.user_agent.is_empty() { b"-" } else { e.user_agent });
                out.push(b'"');
            }
            out.push(b'\n');
        }
        AccessLogFormat::Json => {
            let mut obj = serde_json::Map::new();
            let text = |b: &[u8]| serde_json::Value::String(String::from_utf8_lossy(b).into_owned());
            obj.insert(
                "time".into(),
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z").into(),
            );
            obj.insert("remote_addr".into(), host.into());
            obj.insert("method".into(), text(e.method));
            obj.insert("uri".into(), text(e.target));
            obj.insert("protocol".into(), e.version.into());
            obj.insert("status".into(), e.status.into());
            obj.insert("bytes".into(), e.bytes.into());
            obj.insert("referer".into(), text(e.referer));
            obj.insert("user_agent".into(), text(e.user_agent));
            obj.insert("duration_us".into(), (e.duration.as_micros() as u64).into());
            let _ = serde_json::to_writer(&mut *out, &obj);
            out.push(b'\n');
        }
    }
}

/// Quotes and control bytes would let a client forge log lines; escape them as nginx does.
fn escape_clf(out: &mut Vec<u8>, b: &[u8]) {
    for &c in b {
        if c == b'"' || c == b'\\' || !(0x20..0x7f).contains(&c) {
            let _ = write!(out, "\\x{c:02X}");
        } else {
            out.push(c);
        }
    }
}

/// UTC (year, month, day), (hour, minute, second) of a time.
pub fn civil(t: SystemTime) -> ((i64, u32, u32), (u32, u32, u32)) {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    ((y, m, d), (rem / 3600, rem / 60 % 60, rem % 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(UNIX_EPOCH), ((1970, 1, 1), (0, 0, 0)));
        let t = UNIX_EPOCH + Duration::from_secs(1_795_427_696); // 2026-11-23T09:54:56Z
        assert_eq!(civil(t), ((2026, 11, 23), (9, 54, 56)));
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(civil(leap).0, (2000, 2, 29));
    }

    #[test]
    fn common_line_escapes_quotes() {
        let e = AccessEntry {
            remote: Some("127.0.0.1:5000".parse().unwrap()),
            method: b"GET",
            target: b"/a\"b",
            version: "HTTP/1.1",
            status: 200,
            bytes: 13,
            referer: b"",
            user_agent: b"curl",
            duration: Duration::from_millis(1),
        };
        let mut out = Vec::new();
        format_access(&mut out, &e, AccessLogFormat::Combined, UNIX_EPOCH);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "127.0.0.1 - - [01/Jan/1970:00:00:00 +0000] \"GET /a\\x22b HTTP/1.1\" 200 13 \"-\" \"curl\"\n"
        );
    }
}
