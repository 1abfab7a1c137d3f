//! Serving one request: environ, calling the app, producing what it returns into the
//! response queue, `close()`.
//!
//! Split in three so that the event loop never waits on one client: `begin` builds the
//! environ and calls the app (a one-element list or a file is queued whole at once), `pump`
//! resumes the app's iterator until the queue holds `HIGH_WATER` bytes (the loop calls it
//! again as the socket drains, taking the GIL only around `next()`), and `end` calls
//! `close()`, settles the connection's fate and writes the access log. A pool thread runs the
//! same three steps, flushing with the GIL released between pumps.
//!
//! The rules are PEP 3333's server side (reference §3): lazy headers, streaming, `close()`
//! always called, Content-Length computed for a one-element list and enforced when the app
//! gives one, chunked framing otherwise, tracebacks logged and never sent, an error after the
//! head went out aborts the connection.

use std::os::fd::FromRawFd;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyIterator, PyList, PyString, PyTuple};

use crate::conn::{Conn, Next, PeerKeys, Pending};
use crate::http::body::Body;
use crate::http::outbox::COPY_MAX;
use crate::http::parse::{Head, Version};
use crate::http::response::{Data, Response, SendError};
use crate::net::Peer;
use crate::python::app::{App, format_exception};
use crate::python::environ::RequestInfo;
use crate::python::objects::{FileWrapper, Input, StartResponse};
use crate::{lock, log};

/// Most request-body bytes read and discarded after a response so the connection can be
/// reused; beyond that it is closed instead.
const DRAIN_LIMIT: u64 = 256 * 1024;
/// Queued response bytes past which the app's iterator is not resumed until the socket has
/// taken some: a streaming response costs at most this much memory per connection.
pub const HIGH_WATER: u64 = 256 * 1024;

/// How the response went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Done,
    /// The app raised (or broke the protocol); logged already.
    AppError,
    /// The client went away or stopped reading.
    ClientGone,
}

/// A request from the app call until its response is produced.
pub struct Exchange {
    body: Arc<Mutex<Body>>,
    environ: Option<Py<PyDict>>,
    /// What the app returned (its `close()` is called at the end).
    result: Option<Py<PyAny>>,
    /// Its iterator while there is more to take from it.
    iter: Option<Py<PyIterator>>,
    outcome: Option<Delivery>,
    /// When the app was called, for the access log's duration.
    started: Option<Instant>,
    access: Option<AccessFields>,
    version: Version,
    /// Where the request line is in the body's buffer (for the scoreboard when resumed).
    start: usize,
    method: std::ops::Range<usize>,
    target: std::ops::Range<usize>,
}

impl Exchange {
    /// Record this request as running Python on this thread (for `--timeout` and crash logs).
    pub fn busy(&self, response: &Arc<Mutex<Response>>) {
        let b = lock(&self.body);
        let hb = &b.buffer()[self.start..];
        crate::scoreboard::begin(&hb[self.method.clone()], &hb[self.target.clone()]);
        crate::watchdog::track(response);
    }
}

/// Call the app for a request whose head (and perhaps body) the loop has read.
pub fn begin(py: Python<'_>, app: &App, conn: &mut Conn, p: Pending) -> Exchange {
    let s = &app.settings;
    if p.head.expect_continue && !lock(&conn.response).out.is_empty() {
        // `100 Continue` (sent when the app reads the body) must follow the responses queued
        // before it: a rare pipelining case, which waits for the client (GIL released).
        let response = conn.response.clone();
        let _ = py.detach(|| lock(&response).flush_blocking());
    }
    let Pending { head, start, body } = p;
    let peer = conn.peer;
    let keys = conn.peer_keys.get_or_insert_with(|| match peer {
        Peer::Unix => PeerKeys {
            trusted: true,
            remote: None,
        },
        Peer::Ip(a) => PeerKeys {
            trusted: s.forwarded_allow_ips.iter().any(|n| n.contains(a.ip())),
            remote: Some((
                PyString::new(py, &a.ip().to_string()).unbind(),
                PyString::new(py, &a.port().to_string()).unbind(),
            )),
        },
    });
    let info = RequestInfo {
        remote: keys.remote.as_ref(),
        listener: &app.listeners[conn.listener],
        trusted: keys.trusted,
        allow: &s.forwarded_allow_ips,
    };
    let (built, access, method_is_head) = {
        let b = lock(&body);
        let hb = &b.buffer()[start..];
        let method_is_head = &hb[head.method.clone()] == b"HEAD";
        // Only copied when an access log will need them after the buffer moved on.
        let access = log::access_enabled().then(|| AccessFields::new(hb, &head));
        let built = match &head.uwsgi_vars {
            Some(vars) => app.template.build_uwsgi(py, hb, vars),
            None => app.template.build(py, hb, &head, &info),
        };
        (built, access, method_is_head)
    };
    let generation = {
        let mut r = lock(&conn.response);
        // uwsgi fronts read the body until the connection closes; they do not decode chunked
        // framing, so answer as to HTTP/1.0.
        let version = if head.uwsgi_vars.is_some() {
            Version::Http10
        } else {
            head.version
        };
        r.reset(
            version,
            method_is_head,
            head.keep_alive && !crate::event_loop::stopping(),
        );
        r.awaiting_continue = lock(&body).continue_flag();
        r.generation
    };
    let mut ex = Exchange {
        body,
        environ: None,
        result: None,
        iter: None,
        outcome: None,
        started: access.as_ref().map(|_| Instant::now()),
        access,
        version: head.version,
        start,
        method: head.method.clone(),
        target: head.target.clone(),
    };
    ex.busy(&conn.response);
    match built {
        Ok(environ) => {
            call_app(py, app, conn, &environ, &mut ex, generation);
            ex.environ = Some(environ.unbind());
        }
        Err(e) => {
            log::error(&format!("building the environ failed:\n{}", format_exception(py, &e)));
            ex.outcome = Some(Delivery::AppError);
        }
    }
    ex
}

/// Resume the app's iterator until the queue is full or the response is complete. `true`
/// when the response is complete (or failed): call `end`.
pub fn pump(py: Python<'_>, response: &Mutex<Response>, ex: &mut Exchange) -> bool {
    if ex.outcome.is_some() {
        return true;
    }
    let Some(mut iter) = ex.iter.as_ref().map(|i| i.bind(py).clone()) else {
        ex.outcome = Some(Delivery::Done);
        return true;
    };
    let outcome = loop {
        if lock(response).out.queued() >= HIGH_WATER {
            return false;
        }
        let step = match iter.next() {
            None => finish(response),
            Some(Err(e)) => Err(Failure::Python(e)),
            Some(Ok(item)) => send_item(response, &item),
        };
        match step {
            Ok(None) => {}
            Ok(Some(d)) => break d,
            Err(f) => {
                report(py, ex, response, f);
                break Delivery::AppError;
            }
        }
    };
    ex.iter = None;
    ex.outcome = Some(outcome);
    true
}

/// Finish the request: `close()`, the connection's fate, the body's rest, the access log.
/// `can_wait`: this thread may wait for the client (a pool thread; not the event loop),
/// to drain an unread body.
pub fn end(py: Python<'_>, conn: &mut Conn, mut ex: Exchange, can_wait: bool) -> Next {
    // A request abandoned mid-response (the client went away, or a deadline) has no outcome.
    let mut delivery = ex.outcome.unwrap_or(Delivery::ClientGone);
    ex.iter = None;
    // PEP 3333: close() is called whatever happened, including a client that went away.
    if let Some(result) = ex.result.take() {
        let result = result.bind(py);
        let is_builtin = result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>();
        if !is_builtin {
            match result.getattr(pyo3::intern!(py, "close")) {
                Ok(close) => {
                    if let Err(e) = close.call0() {
                        log::error(&format!(
                            "{}: the response's close() raised:\n{}",
                            what(py, &ex),
                            format_exception(py, &e)
                        ));
                        delivery = Delivery::AppError;
                    }
                }
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) => {}
                Err(e) => log::error(&format!(
                    "{}: reading close():\n{}",
                    what(py, &ex),
                    format_exception(py, &e)
                )),
            }
        }
    }
    let mut r = lock(&conn.response);
    let mut status = r.status.unwrap_or(500);
    let mut keep_alive = r.keep_alive;
    match delivery {
        Delivery::Done => {}
        Delivery::ClientGone => keep_alive = false,
        Delivery::AppError => {
            keep_alive = false;
            if r.headers_sent {
                // The head is queued: the only honest signal left is an aborted connection
                // (after what was already produced, so the client sees where it stopped).
                conn.abort = true;
            } else {
                let (code, msg) = match lock(&ex.body).error() {
                    Some(e) => (e.status(), e.message()),
                    None => (500, "the application failed; the error is in the server log"),
                };
                status = code;
                let body = format!("{code} {}: {msg}\n", crate::http::response::reason(code));
                r.push_simple(code, &body);
            }
        }
    }
    let sent = r.body_sent;
    drop(r);
    let mut guard = lock(&ex.body);
    let b: &mut Body = &mut guard;
    if keep_alive && !b.is_done() {
        keep_alive = if can_wait {
            py.detach(|| b.drain(DRAIN_LIMIT, true))
        } else {
            b.drain(DRAIN_LIMIT, false)
        };
    }
    let (buf, pos) = b.finish();
    drop(guard);
    conn.buf = buf;
    conn.pos = pos;
    if let Some(a) = &ex.access {
        let remote = match conn.peer {
            Peer::Ip(addr) => Some(addr),
            Peer::Unix => None,
        };
        let entry = log::AccessEntry {
            remote,
            method: &a.method,
            target: &a.target,
            version: ex.version.as_str(),
            status,
            bytes: sent,
            referer: &a.referer,
            user_agent: &a.user_agent,
            duration: ex.started.map(|t| t.elapsed()).unwrap_or_default(),
        };
        py.detach(|| log::access(&entry));
    }
    if keep_alive { Next::KeepAlive } else { Next::Close }
}

struct AccessFields {
    method: Vec<u8>,
    target: Vec<u8>,
    referer: Vec<u8>,
    user_agent: Vec<u8>,
}

impl AccessFields {
    fn new(buf: &[u8], head: &Head) -> AccessFields {
        let header = |name: &[u8], var: &[u8]| match &head.uwsgi_vars {
            Some(vars) => vars
                .iter()
                .find(|(k, _)| &buf[k.clone()] == var)
                .map(|(_, v)| buf[v.clone()].to_vec())
                .unwrap_or_default(),
            None => head
                .headers
                .iter()
                .find(|(n, _)| buf[n.clone()].eq_ignore_ascii_case(name))
                .map(|(_, v)| buf[v.clone()].to_vec())
                .unwrap_or_default(),
        };
        AccessFields {
            method: buf[head.method.clone()].to_vec(),
            target: buf[head.target.clone()].to_vec(),
            referer: header(b"referer", b"HTTP_REFERER"),
            user_agent: header(b"user-agent", b"HTTP_USER_AGENT"),
        }
    }
}

fn call_app(py: Python<'_>, app: &App, conn: &Conn, environ: &Bound<'_, PyDict>, ex: &mut Exchange, generation: u64) {
    let prepared = (|| -> PyResult<_> {
        environ.set_item(
            app.template.input_key(py),
            Bound::new(
                py,
                Input {
                    body: Arc::downgrade(&ex.body),
                },
            )?,
        )?;
        Bound::new(
            py,
            StartResponse {
                response: Arc::downgrade(&conn.response),
                generation,
            },
        )
    })();
    let start_response = match prepared {
        Ok(s) => s,
        Err(e) => {
            log::error(&format!(
                "{}: preparing the call failed:\n{}",
                request_line(environ),
                format_exception(py, &e)
            ));
            ex.outcome = Some(Delivery::AppError);
            return;
        }
    };
    let result = match app.callable.bind(py).call1((environ.clone(), start_response)) {
        Ok(r) => r,
        Err(e) => {
            log_failure(py, &request_line(environ), &ex.body, &conn.response, Failure::Python(e));
            ex.outcome = Some(Delivery::AppError);
            return;
        }
    };
    match start_result(py, &conn.response, &result) {
        Ok(Started::Complete(d)) => ex.outcome = Some(d),
        Ok(Started::Iterate(it)) => ex.iter = Some(it.unbind()),
        Err(f) => {
            log_failure(py, &request_line(environ), &ex.body, &conn.response, f);
            ex.outcome = Some(Delivery::AppError);
        }
    }
    ex.result = Some(result.unbind());
}

fn request_line(environ: &Bound<'_, PyDict>) -> String {
    let get = |k: &str| {
        environ
            .get_item(k)
            .ok()
            .flatten()
            .and_then(|v| v.extract::<String>().ok())
            .unwrap_or_default()
    };
    format!("{} {}", get("REQUEST_METHOD"), get("RAW_URI"))
}

fn what(py: Python<'_>, ex: &Exchange) -> String {
    ex.environ
        .as_ref()
        .map(|e| request_line(e.bind(py)))
        .unwrap_or_default()
}

fn report(py: Python<'_>, ex: &Exchange, response: &Mutex<Response>, f: Failure) {
    log_failure(py, &what(py, ex), &ex.body, response, f);
}

/// Log why the app failed. When it failed because its request body could not be read (too
/// large, cut short, too slow: the `OSError` its `wsgi.input` raised) or because its client
/// went away (the `OSError` of `write()`), that is the client's doing: one debug line, not a
/// traceback.
fn log_failure(py: Python<'_>, line: &str, body: &Mutex<Body>, response: &Mutex<Response>, f: Failure) {
    let body_error = lock(body)
        .error()
        .filter(|e| *e != crate::http::body::BodyError::Finished);
    let client_gone = lock(response).broken;
    match (f, body_error) {
        (Failure::Python(e), Some(b)) if e.is_instance_of::<pyo3::exceptions::PyOSError>(py) => {
            log::debug(&format!("{line}: {} (answered {})", b.message(), b.status()));
        }
        (Failure::Python(e), None) if client_gone && e.is_instance_of::<pyo3::exceptions::PyOSError>(py) => {
            log::debug(&format!(
                "{line}: the client went away while the app wrote its response"
            ));
        }
        (Failure::Python(e), _) => log::error(&format!("{line}: exception in the app:\n{}", format_exception(py, &e))),
        (Failure::Protocol(m), _) => log::error(&format!("{line}: {m}")),
    }
}

enum Failure {
    Python(PyErr),
    Protocol(String),
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Failure::Python(e)
    }
}

/// Queue one piece of body (or nothing but the head). `Ok(Some(_))`: the response is over.
fn send(response: &Mutex<Response>, data: Data<'_>, known: Option<u64>) -> Result<Option<Delivery>, Failure> {
    let mut r = lock(response);
    if r.status.is_none() {
        return Err(Failure::Protocol(
            "the app returned body data without calling start_response first".into(),
        ));
    }
    match r.send(data, known) {
        Ok(()) => Ok(None),
        Err(SendError::Overrun) => Err(Failure::Protocol(format!(
            "the app sent more bytes than its Content-Length ({}); the response was cut there",
            r.content_length.unwrap_or(0)
        ))),
        Err(SendError::Closed | SendError::TimedOut) => Ok(Some(Delivery::ClientGone)),
        Err(SendError::Short) => Ok(None),
    }
}

fn finish(response: &Mutex<Response>) -> Result<Option<Delivery>, Failure> {
    let mut r = lock(response);
    if r.status.is_none() {
        return Err(Failure::Protocol(
            "the app returned without calling start_response".into(),
        ));
    }
    match r.finish() {
        Ok(()) => Ok(Some(Delivery::Done)),
        Err(SendError::Short) => Err(Failure::Protocol(format!(
            "the app sent {} bytes but its Content-Length said {}; the connection was closed",
            r.body_sent,
            r.content_length.unwrap_or(0)
        ))),
        Err(_) => Ok(Some(Delivery::ClientGone)),
    }
}

fn bytes_of<'a, 'py>(item: &'a Bound<'py, PyAny>) -> Result<&'a Bound<'py, PyBytes>, Failure> {
    item.cast::<PyBytes>().map_err(|_| {
        let kind = if item.is_instance_of::<PyString>() {
            "str (encode it: WSGI bodies are bytes)".to_string()
        } else {
            item.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        };
        Failure::Python(pyo3::exceptions::PyTypeError::new_err(format!(
            "the app yielded a {kind}, not bytes"
        )))
    })
}

/// Small data is copied into the queue; large data is queued as the app's object.
fn data_of<'a>(bytes: &'a Bound<'_, PyBytes>) -> Data<'a> {
    let data = bytes.as_bytes();
    if data.len() > COPY_MAX {
        Data::Shared(PyBackedBytes::from(bytes.clone()))
    } else {
        Data::Slice(data)
    }
}

fn send_item(response: &Mutex<Response>, item: &Bound<'_, PyAny>) -> Result<Option<Delivery>, Failure> {
    let bytes = bytes_of(item)?;
    if bytes.as_bytes().is_empty() {
        return Ok(None); // lazy headers: an empty chunk does not send the head
    }
    send(response, data_of(bytes), None)
}

enum Started<'py> {
    /// Queued whole: a one-element list, or a file.
    Complete(Delivery),
    Iterate(Bound<'py, PyIterator>),
}

fn start_result<'py>(
    py: Python<'py>,
    response: &Mutex<Response>,
    result: &Bound<'py, PyAny>,
) -> Result<Started<'py>, Failure> {
    // The common case: a list with one bytes object; its length is the Content-Length and the
    // head and body leave in one write.
    if let Ok(list) = result.cast_exact::<PyList>()
        && list.len() == 1
    {
        let item = list.get_item(0)?;
        let bytes = bytes_of(&item)?;
        let len = bytes.as_bytes().len() as u64;
        if let Some(d) = send(response, data_of(bytes), Some(len))? {
            return Ok(Started::Complete(d));
        }
        return finish(response).map(|d| Started::Complete(d.unwrap_or(Delivery::Done)));
    }
    if let Ok(wrapper) = result.cast::<FileWrapper>()
        && let Some(d) = send_file(py, response, wrapper.get())?
    {
        return Ok(Started::Complete(d));
    }
    Ok(Started::Iterate(result.try_iter()?))
}

/// A `wsgi.file_wrapper` around a real file: queued for `sendfile(2)` from its current
/// position to its end. `Ok(None)` when it is not a regular file (then it is iterated).
fn send_file(py: Python<'_>, response: &Mutex<Response>, w: &FileWrapper) -> Result<Option<Delivery>, Failure> {
    let f = w.filelike.bind(py);
    let Ok(fd) = f
        .call_method0(pyo3::intern!(py, "fileno"))
        .and_then(|n| n.extract::<i32>())
    else {
        return Ok(None);
    };
    // Buffered Python files may have read ahead; their logical position is what tell() says.
    let offset: i64 = match f.call_method0(pyo3::intern!(py, "tell")).and_then(|t| t.extract()) {
        Ok(o) => o,
        Err(_) => return Ok(None),
    };
    // SAFETY: fstat on an fd the app gave us, into a zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 || (st.st_mode & libc::S_IFMT) != libc::S_IFREG {
        return Ok(None);
    }
    let len = (st.st_size - offset).max(0) as u64;
    let mut r = lock(response);
    if r.status.is_none() {
        return Err(Failure::Protocol(
            "the app returned without calling start_response".into(),
        ));
    }
    // Our own descriptor: the app's close() may close its file before the queue is written.
    // SAFETY: duplicating a descriptor the app gave us; the copy is owned below.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Ok(None);
    }
    let dup = unsafe { std::os::fd::OwnedFd::from_raw_fd(dup) };
    if r.send_file(dup, offset, len).is_err() {
        return Ok(Some(Delivery::ClientGone));
    }
    drop(r);
    finish(response)
}
