//! Serving one request: environ, calling the app, sending what it returns, `close()`.
//!
//! Runs on a thread attached to the interpreter; every socket or file wait goes through
//! `py.detach`. The rules it implements are PEP 3333's server side (reference §3): lazy
//! headers, streaming, `close()` always called, Content-Length computed for a one-element
//! list and enforced when the app gives one, chunked framing otherwise, tracebacks logged and
//! never sent, an error after the head went out aborts the connection.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::conn::{Conn, Next};
use crate::http::body::Body;
use crate::http::parse::{Framing, Head, Version};
use crate::http::response::{Response, SendError};
use crate::net::Peer;
use crate::python::app::{App, format_exception};
use crate::python::environ::RequestInfo;
use crate::python::objects::{FileWrapper, Input, StartResponse};
use crate::{lock, log};

/// Most request-body bytes read and discarded after a response so the connection can be
/// reused; beyond that it is closed instead.
const DRAIN_LIMIT: u64 = 256 * 1024;

/// How the response went.
enum Delivery {
    Done,
    /// The app raised (or broke the protocol); logged already.
    AppError,
    /// The client went away or stopped reading.
    ClientGone,
}

/// Serve the request whose head is at the start of `conn.buf[conn.pos..]`.
pub fn serve(py: Python<'_>, app: &App, conn: &mut Conn, head: Head) -> Next {
    let started = Instant::now();
    let s = &app.settings;
    if let Framing::Length(n) = head.framing
        && n > s.max_body
    {
        log::warning(&format!("refused a {n}-byte body (over --max-body {})", s.max_body));
        conn.refuse(
            413,
            "request body larger than the server accepts",
            Duration::from_secs(s.body_timeout),
        );
        return Next::Close;
    }
    if head.expect_continue {
        // `100 Continue` goes straight to the socket: earlier responses must be out first.
        py.detach(|| conn.flush());
    }
    let buf = std::mem::take(&mut conn.buf);
    let start = conn.pos;
    let hb = &buf[start..];
    let method_is_head = &hb[head.method.clone()] == b"HEAD";
    let trusted = match conn.peer {
        Peer::Unix => true,
        Peer::Ip(a) => s.forwarded_allow_ips.iter().any(|n| n.contains(a.ip())),
    };
    let info = RequestInfo {
        peer: conn.peer,
        listener: &app.listeners[conn.listener],
        trusted,
        allow: &s.forwarded_allow_ips,
    };
    // Only copied when an access log will need them after the buffer moved on.
    let access = log::access_enabled().then(|| AccessFields::new(hb, &head));
    let built = match &head.uwsgi_vars {
        Some(vars) => app.template.build_uwsgi(py, hb, vars),
        None => app.template.build(py, hb, &head, &info),
    };
    let environ = match built {
        Ok(e) => e,
        Err(e) => {
            log::error(&format!("building the environ failed:\n{}", format_exception(py, &e)));
            conn.buf = buf;
            conn.refuse(500, "internal error", Duration::from_secs(s.body_timeout));
            return Next::Close;
        }
    };
    let body = Arc::new(Mutex::new(Body::new(
        conn.stream.clone(),
        buf,
        start + head.len,
        head.framing,
        s.max_body,
        head.expect_continue,
        Duration::from_secs(s.body_timeout),
    )));
    let awaiting_continue = lock(&body).continue_flag();
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
        r.awaiting_continue = Some(awaiting_continue);
        r.generation
    };
    let delivery = call_app(py, app, conn, environ, &body, generation);

    // The response is over (or abandoned); decide about the connection.
    let (status, sent, mut keep_alive) = {
        let r = lock(&conn.response);
        (r.status.as_ref().map_or(500, |s| s.0), r.body_sent, r.keep_alive)
    };
    let mut status = status;
    match delivery {
        Delivery::Done => {}
        Delivery::ClientGone => keep_alive = false,
        Delivery::AppError => {
            let headers_sent = lock(&conn.response).headers_sent;
            keep_alive = false;
            if headers_sent {
                // The head is on the wire: the only honest signal left is an aborted connection
                // (after what was already produced, so the client sees where it stopped).
                py.detach(|| conn.flush());
                conn.stream.shutdown();
            } else {
                let b = lock(&body);
                let (code, msg) = match b.error() {
                    Some(e) => (e.status(), e.message()),
                    None => (500, "the application failed; the error is in the server log"),
                };
                drop(b);
                status = code;
                let timeout = Duration::from_secs(s.body_timeout);
                py.detach(|| conn.refuse_as(code, msg, method_is_head, timeout));
            }
        }
    }
    let mut guard = lock(&body);
    let b: &mut Body = &mut guard;
    if keep_alive && !b.is_done() {
        keep_alive = py.detach(|| b.drain(DRAIN_LIMIT));
    }
    let (buf, pos) = b.finish();
    drop(guard);
    conn.buf = buf;
    conn.pos = pos;
    if let Some(a) = access {
        let remote = match conn.peer {
            Peer::Ip(addr) => Some(addr),
            Peer::Unix => None,
        };
        py.detach(|| {
            log::access(&log::AccessEntry {
                remote,
                method: &a.method,
                target: &a.target,
                version: head.version.as_str(),
                status,
                bytes: sent,
                referer: &a.referer,
                user_agent: &a.user_agent,
                duration: started.elapsed(),
            })
        });
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

fn call_app(
    py: Python<'_>,
    app: &App,
    conn: &Conn,
    environ: Bound<'_, pyo3::types::PyDict>,
    body: &Arc<Mutex<Body>>,
    generation: u64,
) -> Delivery {
    let what = || request_line(&environ);
    let prepared = (|| -> PyResult<_> {
        environ.set_item(
            app.template.input_key(py),
            Bound::new(py, Input { body: body.clone() })?,
        )?;
        Bound::new(
            py,
            StartResponse {
                response: conn.response.clone(),
                generation,
            },
        )
    })();
    let start_response = match prepared {
        Ok(s) => s,
        Err(e) => {
            log::error(&format!(
                "{}: preparing the call failed:\n{}",
                what(),
                format_exception(py, &e)
            ));
            return Delivery::AppError;
        }
    };
    let result = match app.callable.bind(py).call1((environ.clone(), start_response)) {
        Ok(r) => r,
        Err(e) => {
            log::error(&format!(
                "{}: exception in the app:\n{}",
                what(),
                format_exception(py, &e)
            ));
            return Delivery::AppError;
        }
    };
    let delivery = send_result(py, conn, &result).unwrap_or_else(|failure| {
        match failure {
            Failure::Python(e) => log::error(&format!(
                "{}: exception in the app:\n{}",
                what(),
                format_exception(py, &e)
            )),
            Failure::Protocol(m) => log::error(&format!("{}: {m}", what())),
        }
        Delivery::AppError
    });
    // PEP 3333: close() is called whatever happened, including a client that went away.
    let is_builtin = result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>();
    if !is_builtin {
        match result.getattr(pyo3::intern!(py, "close")) {
            Ok(close) => {
                if let Err(e) = close.call0() {
                    log::error(&format!(
                        "{}: the response's close() raised:\n{}",
                        what(),
                        format_exception(py, &e)
                    ));
                    return Delivery::AppError;
                }
            }
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) => {}
            Err(e) => log::error(&format!("{}: reading close():\n{}", what(), format_exception(py, &e))),
        }
    }
    delivery
}

fn request_line(environ: &Bound<'_, pyo3::types::PyDict>) -> String {
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

enum Failure {
    Python(PyErr),
    Protocol(String),
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Failure::Python(e)
    }
}

/// Send one piece of body (or nothing but the head) with the GIL released.
fn send(py: Python<'_>, conn: &Conn, data: &[u8], known: Option<u64>) -> Result<Option<Delivery>, Failure> {
    let mut guard = lock(&conn.response);
    if guard.status.is_none() {
        return Err(Failure::Protocol(
            "the app returned body data without calling start_response first".into(),
        ));
    }
    let r: &mut Response = &mut guard;
    match py.detach(|| r.send(data, known)) {
        Ok(()) => Ok(None),
        Err(SendError::Overrun) => Err(Failure::Protocol(format!(
            "the app sent more bytes than its Content-Length ({}); the response was cut there",
            r.content_length.unwrap_or(0)
        ))),
        Err(SendError::Closed | SendError::TimedOut) => Ok(Some(Delivery::ClientGone)),
        Err(SendError::Short) => Ok(None),
    }
}

fn finish(py: Python<'_>, conn: &Conn) -> Result<Delivery, Failure> {
    let mut guard = lock(&conn.response);
    if guard.status.is_none() {
        return Err(Failure::Protocol(
            "the app returned without calling start_response".into(),
        ));
    }
    let r: &mut Response = &mut guard;
    match py.detach(|| r.finish()) {
        Ok(()) => Ok(Delivery::Done),
        Err(SendError::Short) => Err(Failure::Protocol(format!(
            "the app sent {} bytes but its Content-Length said {}; the connection was closed",
            r.body_sent,
            r.content_length.unwrap_or(0)
        ))),
        Err(_) => Ok(Delivery::ClientGone),
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

fn send_result(py: Python<'_>, conn: &Conn, result: &Bound<'_, PyAny>) -> Result<Delivery, Failure> {
    // The common case: a list with one bytes object; its length is the Content-Length and the
    // head and body leave in one write.
    if let Ok(list) = result.cast_exact::<PyList>()
        && list.len() == 1
    {
        let item = list.get_item(0)?;
        let bytes = bytes_of(&item)?;
        let data = bytes.as_bytes();
        if let Some(d) = send(py, conn, data, Some(data.len() as u64))? {
            return Ok(d);
        }
        return finish(py, conn);
    }
    if let Ok(wrapper) = result.cast::<FileWrapper>()
        && let Some(d) = send_file(py, conn, wrapper.get())?
    {
        return Ok(d);
    }
    for item in result.try_iter()? {
        let item = item?;
        let bytes = bytes_of(&item)?;
        let data = bytes.as_bytes();
        if data.is_empty() {
            continue; // lazy headers: an empty chunk does not send the head
        }
        if let Some(d) = send(py, conn, data, None)? {
            return Ok(d);
        }
    }
    finish(py, conn)
}

/// A `wsgi.file_wrapper` around a real file: `sendfile(2)` from its current position to its
/// end. `Ok(None)` when it is not a regular file (then it is iterated like any iterable).
fn send_file(py: Python<'_>, conn: &Conn, w: &FileWrapper) -> Result<Option<Delivery>, Failure> {
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
    let mut guard = lock(&conn.response);
    if guard.status.is_none() {
        return Err(Failure::Protocol(
            "the app returned without calling start_response".into(),
        ));
    }
    let r: &mut Response = &mut guard;
    let file = f.clone().unbind();
    let sent = py.detach(|| r.send_file(fd, offset, len));
    drop(file);
    match sent {
        Ok(()) => {}
        Err(SendError::Closed | SendError::TimedOut) => return Ok(Some(Delivery::ClientGone)),
        Err(_) => {}
    }
    drop(guard);
    finish(py, conn).map(Some)
}
