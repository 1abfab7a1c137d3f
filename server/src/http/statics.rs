//! Static files (`--static`, `[[static]]`) answered on the I/O thread, without Python, the way
//! the nginx site answers the same request: an `alias` per URL prefix, GET and HEAD only,
//! nginx's content types, `Last-Modified`, nginx's strong ETag (`"mtime-size"` in hex),
//! `If-None-Match`/`If-Modified-Since` (nginx's `exact`), one `Range`, `expires` as
//! `Cache-Control: max-age` and `Expires`, the site's security headers, dotfiles refused, a
//! missing file 404 from here (the app never sees a URL under a prefix).
//!
//! Owned here: which requests are static, the path's checks and the file's opening, the
//! status and header fields of the answer. Not owned: writing it (the connection's
//! `Response`, with `sendfile`, or `pread` over TLS) or the connection's fate (the loop).
//!
//! Nothing leaves a mount's directory: the path is percent-decoded before any check (so
//! `%2e%2e` and `%2f` are seen as what they mean), a `..` segment or a NUL is refused with 400,
//! and the file is opened relative to the directory's descriptor with `openat2(2)` and
//! `RESOLVE_BENEATH`, which makes the kernel refuse any resolution — a symlink included —
//! that leaves the directory. The directory is the one its path names when the request comes:
//! the descriptor opened last is reused while a `stat` of the path still gives its device and
//! inode, and the path is opened again when it does not — a deploy that renames a new
//! directory (or a new symlink) over the served one is served at once, not after a HUP; a
//! directory that is gone answers 404 until it is back. Where `openat2` is missing (Linux < 5.6, or a seccomp filter
//! that answers ENOSYS/EPERM), the fallback opens with `openat` and then reads where the
//! opened descriptor really is (`/proc/self/fd/N`) and refuses it unless it lies under the
//! directory's canonical path: the check is on the file actually opened, so a symlink
//! swapped in between cannot slip past it. The same checked open serves a path `openat2`
//! refused with EXDEV, so an absolute symlink pointing back inside still works, as in nginx.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use deployctl_common::settings::StaticMount;

use crate::http::parse::Head;
use crate::http::response::reason;
use crate::log;

/// The nginx site's security headers as header lines (on every static answer, as its
/// `add_header … always`), from deployctl's one list.
pub static SECURITY_HEADERS: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    deployctl_common::defaults::SECURITY_HEADERS
        .iter()
        .flat_map(|(name, value)| format!("{name}: {value}\r\n").into_bytes())
        .collect()
});

struct Mount {
    url: Vec<u8>,
    /// The directory as given (perhaps through a symlink): requests are served from whatever
    /// it names at the time.
    path: PathBuf,
    /// `path` for `stat(2)`, made once.
    path_c: CString,
    /// The directory `path` named at the last request, while it still does.
    dir: Option<Dir>,
    /// `None`: no Cache-Control or Expires (the ACME challenge).
    expires: Option<u64>,
    /// The type of a file whose extension names none.
    default_type: &'static str,
}

/// A mount's directory, opened `O_PATH`: files are opened relative to it.
struct Dir {
    fd: OwnedFd,
    /// Its device and inode, compared with what the mount's path names now.
    id: (u64, u64),
    /// Where it is, read from the descriptor itself (for the fallback's check).
    canonical: PathBuf,
}

impl Dir {
    fn open(path: &std::path::Path) -> std::io::Result<Dir> {
        let fd = open_dir(path)?;
        // SAFETY: fstat into a zeroed struct, on our descriptor.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let canonical =
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).or_else(|_| std::fs::canonicalize(path))?;
        Ok(Dir {
            fd,
            id: (st.st_dev as u64, st.st_ino as u64),
            canonical,
        })
    }
}

impl Mount {
    fn new(url: &str, path: &std::path::Path, expires: Option<u64>, default_type: &'static str) -> Mount {
        Mount {
            url: url.as_bytes().to_vec(),
            path: path.to_path_buf(),
            // A path with a NUL cannot name a directory: stat fails, its URLs answer 404.
            path_c: CString::new(path.as_os_str().as_bytes()).unwrap_or_default(),
            dir: None,
            expires,
            default_type,
        }
    }

    /// The directory the path names now: the one open while it is still that (one `stat`),
    /// else opened again. `None` when there is none (removed, renamed away, not made yet).
    fn current(&mut self) -> Option<&Dir> {
        // SAFETY: stat of a NUL-terminated path into a zeroed struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if self.path_c.is_empty() || unsafe { libc::stat(self.path_c.as_ptr(), &mut st) } != 0 {
            self.dir = None;
            return None;
        }
        let id = (st.st_dev as u64, st.st_ino as u64);
        if self.dir.as_ref().is_none_or(|d| d.id != id) {
            self.dir = Dir::open(&self.path).ok();
        }
        self.dir.as_ref()
    }
}

/// The mounts of one worker, their directories open.
pub struct Statics {
    mounts: Vec<Mount>,
    /// The nginx site's security headers on every answer (not on the HTTP listener of a TLS
    /// site, which adds none).
    security_headers: bool,
}

/// The request's fields that decide a static answer.
struct Conditions<'a> {
    if_none_match: Option<&'a [u8]>,
    if_modified_since: Option<&'a [u8]>,
    if_range: Option<&'a [u8]>,
    range: Option<&'a [u8]>,
}

/// What a static request is answered with.
pub struct Answer {
    pub status: u16,
    /// `Name: value\r\n` lines (no Content-Length: the response adds it).
    pub fields: Vec<u8>,
    pub body: Body,
}

pub enum Body {
    None,
    Text(String),
    /// `len` bytes of the file from `offset`.
    File(OwnedFd, i64, u64),
}

/// Set once `openat2` has answered ENOSYS or EPERM: use the fallback from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

impl Statics {
    /// Open every mount's directory. One that cannot be opened is logged and answers 404
    /// until it can (the spec checked it existed; it may have gone since).
    pub fn open(mounts: &[StaticMount]) -> Option<Statics> {
        if mounts.is_empty() {
            return None;
        }
        let mounts = mounts
            .iter()
            .map(|m| {
                let mut mount = Mount::new(&m.url, &m.dir, Some(m.expires_secs), crate::http::mime::DEFAULT);
                if mount.current().is_none() {
                    let why = open_dir(&m.dir)
                        .err()
                        .map_or_else(|| "not a directory".to_string(), |e| e.to_string());
                    log::warning(&format!(
                        "static files {}: cannot open {}: {why}; its URLs answer 404 until it can be",
                        m.url,
                        m.dir.display()
                    ));
                }
                mount
            })
            .collect();
        Some(Statics {
            mounts,
            security_headers: true,
        })
    }

    /// The ACME HTTP-01 answers: `webroot/.well-known/acme-challenge/` under the same URL, as
    /// the nginx site's `location ^~ /.well-known/acme-challenge/ { root …; default_type
    /// text/plain; }` (no expiry, no security headers). The directory may be made after the
    /// start.
    pub fn acme(webroot: &std::path::Path) -> Statics {
        let dir = webroot.join(".well-known/acme-challenge");
        Statics {
            mounts: vec![Mount::new("/.well-known/acme-challenge/", &dir, None, "text/plain")],
            security_headers: false,
        }
    }

    /// The answer to a request under one of the prefixes, `None` for the app's requests.
    /// `buf` is what `head`'s ranges index.
    pub fn answer(&mut self, buf: &[u8], head: &Head) -> Option<Answer> {
        let target = &buf[head.target.clone()];
        let path = path_of(target)?;
        let decoded = match percent_decode(path) {
            Some(d) => d,
            // Only a request that would have been static is refused here.
            None => {
                return self
                    .mounts
                    .iter()
                    .any(|m| path.starts_with(&m.url))
                    .then(|| error(self.security_headers, 400, "bad percent-encoding in the path", None));
            }
        };
        let security_headers = self.security_headers;
        let mount = self.mounts.iter_mut().find(|m| decoded.starts_with(&m.url))?;
        let header = |name: &[u8]| -> Option<&[u8]> {
            head.headers
                .iter()
                .find(|(n, _)| buf[n.clone()].eq_ignore_ascii_case(name))
                .map(|(_, v)| &buf[v.clone()])
        };
        let conditions = Conditions {
            if_none_match: header(b"if-none-match"),
            if_modified_since: header(b"if-modified-since"),
            if_range: header(b"if-range"),
            range: header(b"range"),
        };
        let skip = mount.url.len();
        Some(mount.file(
            security_headers,
            &decoded[skip..],
            &buf[head.method.clone()],
            &conditions,
        ))
    }
}

impl Mount {
    fn file(&mut self, security_headers: bool, rest: &[u8], method: &[u8], c: &Conditions<'_>) -> Answer {
        let error = |status, message, extra| error(security_headers, status, message, extra);
        if method != b"GET" && method != b"HEAD" {
            return error(405, "only GET and HEAD are served here", Some(b"Allow: GET, HEAD\r\n"));
        }
        if rest.contains(&0) {
            return error(400, "NUL in the path", None);
        }
        let mut rel: Vec<u8> = Vec::with_capacity(rest.len());
        for seg in rest.split(|b| *b == b'/') {
            match seg {
                b"" | b"." => continue,
                b".." => return error(400, "`..` in a static path", None),
                // The nginx site's `location ~ /\.(?!well-known/)`: dotfiles are denied.
                s if s.starts_with(b".") && s != b".well-known" => {
                    return error(403, "dotfiles are not served", None);
                }
                s => {
                    if !rel.is_empty() {
                        rel.push(b'/');
                    }
                    rel.extend_from_slice(s);
                }
            }
        }
        let trailing_slash = rest.ends_with(b"/") || rest.is_empty();
        let Some(dir) = self.current() else {
            return error(404, "no such file", None);
        };
        if rel.is_empty() {
            return error(403, "directories are not listed", None);
        }
        let fd = match open_beneath(&dir.fd, &dir.canonical, &rel) {
            Ok(fd) => fd,
            Err(Opened::Missing) => return error(404, "no such file", None),
            Err(Opened::Outside) => return error(403, "the path leaves the static directory", None),
            Err(Opened::Denied) => return error(403, "the file cannot be read", None),
        };
        // SAFETY: fstat into a zeroed struct, on our descriptor.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return error(404, "no such file", None);
        }
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => return error(403, "directories are not listed", None),
            libc::S_IFREG if !trailing_slash => {}
            _ => return error(404, "no such file", None),
        }
        let size = st.st_size.max(0) as u64;
        let mtime = st.st_mtime.max(0) as u64;
        let etag = format!("\"{mtime:x}-{size:x}\"");
        let last_modified = http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime));

        let mut fields = Vec::with_capacity(512);
        let mut cache = Vec::with_capacity(128);
        cache.extend_from_slice(format!("Last-Modified: {last_modified}\r\nETag: {etag}\r\n").as_bytes());
        if let Some(expires) = self.expires {
            cache.extend_from_slice(
                format!(
                    "Expires: {}\r\nCache-Control: max-age={expires}\r\n",
                    http_date(SystemTime::now() + Duration::from_secs(expires)),
                )
                .as_bytes(),
            );
        }
        let not_modified = match (c.if_none_match, c.if_modified_since) {
            (Some(inm), _) => etag_matches(inm, &etag),
            (None, Some(ims)) => ims == last_modified.as_bytes(),
            (None, None) => false,
        };
        if not_modified {
            fields.extend_from_slice(&cache);
            common(security_headers, &mut fields);
            return Answer {
                status: 304,
                fields,
                body: Body::None,
            };
        }
        fields.extend_from_slice(b"Content-Type: ");
        let ty = match crate::http::mime::of(&rel) {
            crate::http::mime::DEFAULT => self.default_type,
            t => t,
        };
        fields.extend_from_slice(ty.as_bytes());
        fields.extend_from_slice(b"\r\n");
        let if_range_ok = c
            .if_range
            .is_none_or(|v| v == etag.as_bytes() || v == last_modified.as_bytes());
        let range = c.range.filter(|_| if_range_ok).map(|r| parse_range(r, size));
        // Accept-Ranges on full answers only (nginx's range filter leaves it out of a 206).
        let (status, offset, len) = match range {
            None | Some(Range::Ignored) => {
                fields.extend_from_slice(b"Accept-Ranges: bytes\r\n");
                (200, 0, size)
            }
            Some(Range::Unsatisfiable) => {
                let extra = format!("Content-Range: bytes */{size}\r\n");
                return error(416, "the range is not in the file", Some(extra.as_bytes()));
            }
            Some(Range::Bytes(a, b)) => {
                fields.extend_from_slice(format!("Content-Range: bytes {a}-{b}/{size}\r\n").as_bytes());
                (206, a, b - a + 1)
            }
        };
        fields.extend_from_slice(&cache);
        common(security_headers, &mut fields);
        Answer {
            status,
            fields,
            body: Body::File(fd, offset as i64, len),
        }
    }
}

fn common(security_headers: bool, fields: &mut Vec<u8>) {
    if security_headers {
        fields.extend_from_slice(&SECURITY_HEADERS);
    }
}

/// An answer of the server's own under a static prefix (a refusal, a missing file), in text.
fn error(security_headers: bool, status: u16, message: &str, extra: Option<&[u8]>) -> Answer {
    let mut fields = b"Content-Type: text/plain; charset=utf-8\r\n".to_vec();
    if let Some(e) = extra {
        fields.extend_from_slice(e);
    }
    common(security_headers, &mut fields);
    Answer {
        status,
        fields,
        body: Body::Text(format!("{status} {}: {message}\n", reason(status))),
    }
}

/// The path of an origin-form target (before `?`), or of an absolute-form one.
fn path_of(target: &[u8]) -> Option<&[u8]> {
    let t = if target.starts_with(b"/") {
        target
    } else {
        let after = target.windows(3).position(|w| w == b"://")? + 3;
        let rest = &target[after..];
        &rest[rest.iter().position(|b| *b == b'/')?..]
    };
    Some(t.split(|b| *b == b'?').next().unwrap_or(t))
}

fn percent_decode(p: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        if p[i] == b'%' {
            let hi = hex(*p.get(i + 1)?)?;
            let lo = hex(*p.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(p[i]);
            i += 1;
        }
    }
    Some(out)
}

/// `If-None-Match`: `*`, or one of the listed tags equal to ours (weak comparison, as nginx).
fn etag_matches(header: &[u8], etag: &str) -> bool {
    header.split(|b| *b == b',').any(|t| {
        let t = t.trim_ascii();
        let t = t.strip_prefix(b"W/").unwrap_or(t);
        t == b"*" || t == etag.as_bytes()
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// Not one byte range we answer (several ranges, another unit, bad syntax): 200, whole.
    Ignored,
    Unsatisfiable,
    /// First and last byte, inclusive.
    Bytes(u64, u64),
}

fn parse_range(v: &[u8], size: u64) -> Range {
    let Some(spec) = v.trim_ascii().strip_prefix(b"bytes=") else {
        return Range::Ignored;
    };
    if spec.contains(&b',') {
        return Range::Ignored;
    }
    let Ok(spec) = std::str::from_utf8(spec) else {
        return Range::Ignored;
    };
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Ignored;
    };
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (a, b) {
        ("", n) => match num(n) {
            Some(0) => Range::Unsatisfiable,
            Some(n) if size > 0 => Range::Bytes(size.saturating_sub(n), size - 1),
            Some(_) => Range::Unsatisfiable,
            None => Range::Ignored,
        },
        (a, "") => match num(a) {
            Some(a) if a < size => Range::Bytes(a, size - 1),
            Some(_) => Range::Unsatisfiable,
            None => Range::Ignored,
        },
        (a, b) => match (num(a), num(b)) {
            (Some(a), Some(b)) if a > b => Range::Ignored,
            (Some(a), Some(b)) if a < size => Range::Bytes(a, b.min(size - 1)),
            (Some(_), Some(_)) => Range::Unsatisfiable,
            _ => Range::Ignored,
        },
    }
}

fn open_dir(dir: &std::path::Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: open with a NUL-terminated path; the descriptor is ours.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

enum Opened {
    Missing,
    Outside,
    Denied,
}

/// Open `rel` (no `..`, no leading `/`) beneath `dir`, never outside it.
fn open_beneath(dir: &OwnedFd, canonical: &std::path::Path, rel: &[u8]) -> Result<OwnedFd, Opened> {
    let c = CString::new(rel).map_err(|_| Opened::Missing)?;
    // O_NONBLOCK: a FIFO put in the directory must not block the loop on open.
    let flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY) as u64;
    let classify = |e: std::io::Error| match e.raw_os_error() {
        Some(libc::EXDEV) | Some(libc::ELOOP) => Opened::Outside,
        Some(libc::EACCES) | Some(libc::EPERM) => Opened::Denied,
        _ => Opened::Missing,
    };
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = flags;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: openat2 with a valid `open_how` of the size passed; the descriptor is ours.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a new descriptor we own.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EPERM) => NO_OPENAT2.store(true, Ordering::Relaxed),
            // RESOLVE_BENEATH refuses every absolute symlink, even one that points back inside
            // (`ln -s /srv/app/static/a.js b.js`), which nginx follows: such a path gets the
            // checked open below, which accepts it only if the file opened is inside.
            Some(libc::EXDEV) => {}
            _ => return Err(classify(e)),
        }
    }
    // SAFETY: openat relative to our directory descriptor; the descriptor is ours.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags as libc::c_int) };
    if fd < 0 {
        return Err(classify(std::io::Error::last_os_error()));
    }
    // SAFETY: a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|_| Opened::Outside)?;
    if real.starts_with(canonical) && real != canonical {
        Ok(fd)
    } else {
        Err(Opened::Outside)
    }
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// IMF-fixdate (RFC 9110 §5.6.7), as nginx writes `Last-Modified` and `Expires`.
pub fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let ((y, mo, d), (h, mi, s)) = log::civil(t);
    format!(
        "{}, {d:02} {} {y:04} {h:02}:{mi:02}:{s:02} GMT",
        DAYS[(secs / 86_400 % 7) as usize],
        MONTHS[(mo as usize).saturating_sub(1) % 12]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(b"bytes=0-9", 100), Range::Bytes(0, 9));
        assert_eq!(parse_range(b"bytes=90-", 100), Range::Bytes(90, 99));
        assert_eq!(parse_range(b"bytes=-10", 100), Range::Bytes(90, 99));
        assert_eq!(parse_range(b"bytes=-500", 100), Range::Bytes(0, 99));
        assert_eq!(parse_range(b"bytes=50-500", 100), Range::Bytes(50, 99));
        assert_eq!(parse_range(b"bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 100), Range::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=0-1,5-6", 100), Range::Ignored);
        assert_eq!(parse_range(b"items=0-1", 100), Range::Ignored);
        assert_eq!(parse_range(b"bytes=9-1", 100), Range::Ignored);
        assert_eq!(parse_range(b"bytes=x-1", 100), Range::Ignored);
    }

    #[test]
    fn paths_and_tags() {
        assert_eq!(path_of(b"/static/a.css?v=1"), Some(&b"/static/a.css"[..]));
        assert_eq!(path_of(b"http://h:1/static/a"), Some(&b"/static/a"[..]));
        assert_eq!(percent_decode(b"/a%2e%2E%2f").as_deref(), Some(&b"/a../"[..]));
        assert_eq!(percent_decode(b"/a%2"), None);
        assert!(etag_matches(b"\"x\", W/\"1-2\"", "\"1-2\""));
        assert!(etag_matches(b"*", "\"1-2\""));
        assert!(!etag_matches(b"\"1-3\"", "\"1-2\""));
        assert_eq!(
            http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }
}
