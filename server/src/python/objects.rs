//! The Python objects a WSGI app sees from the server: `start_response` (and the `write()`
//! it returns), `wsgi.input`, `wsgi.errors` and `wsgi.file_wrapper`.
//!
//! Each holds only `Send + Sync` state shared with the request handler. Locks are taken with
//! `try_lock`: a thread that holds the GIL must never wait on a lock whose holder is waiting
//! for the GIL, so contention (two threads using one request's objects) is a Python error.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use pyo3::exceptions::{PyAssertionError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::http::body::{Body, BodyError, Progress};
use crate::http::outbox::COPY_MAX;
use crate::http::parse::is_tchar;
use crate::http::response::{Data, Response, SendError};
use crate::log;

/// Bytes the legacy `write()` may leave queued before it waits (GIL released) for the client
/// to take them: PEP 3333 lets it buffer, this bounds how much.
const WRITE_BUFFER: u64 = 256 * 1024;

/// The request's state, if its connection still exists: Python objects hold only weak
/// references, so an app that keeps them (a reference cycle through the environ) cannot keep
/// the connection's socket open.
fn upgrade<T>(w: &Weak<Mutex<T>>, what: &str) -> PyResult<Arc<Mutex<T>>> {
    w.upgrade()
        .ok_or_else(|| PyRuntimeError::new_err(format!("{what}: its request is over")))
}

fn lock<'a, T>(m: &'a Mutex<T>, what: &str) -> PyResult<MutexGuard<'a, T>> {
    match m.try_lock() {
        Ok(g) => Ok(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => {
            Err(PyRuntimeError::new_err(format!("{what} is in use by another thread")))
        }
    }
}

/// `start_response(status, headers, exc_info=None)` for one request.
#[pyclass(frozen, module = "deployctl")]
pub struct StartResponse {
    pub response: Weak<Mutex<Response>>,
    pub generation: u64,
}

/// Hop-by-hop headers belong to the connection, which is the server's (PEP 3333).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

/// Append the latin-1 bytes of a native string (PEP 3333) to `out`: an ASCII `str` is its
/// own UTF-8, read in place; other code points up to U+00FF are one byte each; anything else
/// is not a native string.
/// One of `HOP_BY_HOP`, whatever its case (by length first: most names are none of them).
fn is_hop_by_hop(name: &[u8]) -> bool {
    matches!(name.len(), 2 | 7 | 8 | 10 | 17 | 18 | 19)
        && HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

fn push_latin1(out: &mut Vec<u8>, s: &Bound<'_, PyAny>, what: &str) -> PyResult<()> {
    let s = s
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a str, not {}", type_name(s))))?;
    let latin1_error = || {
        PyValueError::new_err(format!(
            "{what} {:?} is not latin-1 (PEP 3333 native strings)",
            s.to_string_lossy()
        ))
    };
    let text = s.to_str().map_err(|_| latin1_error())?;
    if text.is_ascii() {
        out.extend_from_slice(text.as_bytes());
        return Ok(());
    }
    for c in text.chars() {
        out.push(u8::try_from(u32::from(c)).map_err(|_| latin1_error())?);
    }
    Ok(())
}

pub(crate) fn type_name(o: &Bound<'_, PyAny>) -> String {
    o.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// What `start_response` was given, checked: the status line is `buf[..line]`, the header
/// lines (`Name: value\r\n`) follow it.
struct Checked {
    code: u16,
    line: usize,
    content_length: Option<u64>,
    /// The app sent its own Date (then the server adds none: one Date per response).
    date: bool,
}

thread_local! {
    /// Where `start_response` checks a status and headers before they replace the response's
    /// (a call that fails must leave them as they were); reused, so no allocation per call.
    static STAGED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn check_status_headers(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>, buf: &mut Vec<u8>) -> PyResult<Checked> {
    buf.clear();
    push_latin1(buf, status, "status")?;
    let line = buf.len();
    let l = &buf[..line];
    let valid = l.len() >= 4
        && l[..3].iter().all(u8::is_ascii_digit)
        && l[3] == b' '
        && l[4..].iter().all(|&b| b == b'\t' || b >= 0x20 && b != 0x7f);
    if !valid {
        return Err(PyValueError::new_err(format!(
            "status {:?} is not \"NNN Reason\"",
            String::from_utf8_lossy(l)
        )));
    }
    let code = (l[0] - b'0') as u16 * 100 + (l[1] - b'0') as u16 * 10 + (l[2] - b'0') as u16;
    if code < 100 {
        return Err(PyValueError::new_err(format!("status code {code} is below 100")));
    }
    let list = headers
        .cast::<PyList>()
        .map_err(|_| PyTypeError::new_err(format!("headers must be a list, not {}", type_name(headers))))?;
    let mut length = None;
    let mut date = false;
    for item in list.iter() {
        let pair = item
            .cast::<PyTuple>()
            .ok()
            .filter(|t| t.len() == 2)
            .ok_or_else(|| PyTypeError::new_err(format!("header {item} is not a (name, value) tuple")))?;
        let start = buf.len();
        push_latin1(buf, &pair.get_item(0)?, "header name")?;
        let colon = buf.len();
        buf.extend_from_slice(b": ");
        push_latin1(buf, &pair.get_item(1)?, "header value")?;
        let (name, value) = (&buf[start..colon], &buf[colon + 2..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(PyValueError::new_err(format!(
                "header name {:?} is not a token",
                String::from_utf8_lossy(name)
            )));
        }
        if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(PyValueError::new_err(format!(
                "header {} has CR, LF or NUL in its value",
                String::from_utf8_lossy(name)
            )));
        }
        if is_hop_by_hop(name) {
            return Err(PyValueError::new_err(format!(
                "hop-by-hop header {} is not allowed from an application (PEP 3333)",
                String::from_utf8_lossy(name)
            )));
        }
        date |= name.eq_ignore_ascii_case(b"date");
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = value.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) || v.len() > 18 {
                return Err(PyValueError::new_err(format!(
                    "Content-Length {:?} is not a number",
                    String::from_utf8_lossy(value)
                )));
            }
            length = Some(v.iter().fold(0u64, |a, d| a * 10 + u64::from(d - b'0')));
        }
        buf.extend_from_slice(b"\r\n");
    }
    Ok(Checked {
        code,
        line,
        content_length: length,
        date,
    })
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let exc_info = exc_info.filter(|e| !e.is_none());
        let response = upgrade(&this.response, "start_response")?;
        {
            let r = lock(&response, "start_response")?;
            if r.generation != this.generation {
                return Err(PyRuntimeError::new_err("start_response called after its request ended"));
            }
            if r.status.is_some() && exc_info.is_none() {
                return Err(PyAssertionError::new_err(
                    "start_response called a second time without exc_info (PEP 3333)",
                ));
            }
            if let Some(exc) = exc_info
                && r.headers_sent
            {
                // PEP 3333: with the head already on the wire, re-raise the app's error.
                let value = exc.get_item(1)?;
                return Err(PyErr::from_value(value));
            }
        }
        STAGED.with(|staged| -> PyResult<()> {
            // (A fresh buffer if a header's __str__ in an error message re-entered us.)
            let mut fresh = Vec::new();
            let mut held = staged.try_borrow_mut();
            let buf = match held.as_deref_mut() {
                Ok(b) => b,
                Err(_) => &mut fresh,
            };
            let checked = check_status_headers(status, headers, buf)?;
            let mut r = lock(&response, "start_response")?;
            r.status = Some(checked.code);
            r.status_line.clear();
            r.status_line.extend_from_slice(&buf[..checked.line]);
            r.fields.clear();
            r.fields.extend_from_slice(&buf[checked.line..]);
            r.content_length = checked.content_length;
            r.app_date = checked.date;
            Ok(())
        })?;
        slf.getattr(pyo3::intern!(slf.py(), "write"))
    }

    /// The legacy `write()` callable: queues the data (the head first); waits for the
    /// client only when more than `WRITE_BUFFER` bytes are queued.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err(format!("write() takes bytes, not {}", type_name(data))))?;
        let response = upgrade(&self.response, "write()")?;
        let mut guard = lock(&response, "write()")?;
        if guard.generation != self.generation {
            return Err(PyRuntimeError::new_err("write() called after its request ended"));
        }
        if guard.status.is_none() {
            return Err(PyAssertionError::new_err("write() called before start_response"));
        }
        let r: &mut Response = &mut guard;
        let d = if bytes.as_bytes().len() > COPY_MAX {
            Data::Shared(bytes.clone().into())
        } else {
            Data::Slice(bytes.as_bytes())
        };
        let sent = match r.send(d, None) {
            Ok(()) if r.out.queued() > WRITE_BUFFER => py.detach(|| r.flush_blocking()),
            other => other,
        };
        match sent {
            Ok(()) => Ok(()),
            Err(SendError::Overrun) => {
                log::error("app wrote more bytes than its Content-Length; the excess was not sent");
                Ok(())
            }
            Err(SendError::Closed | SendError::TimedOut) => Err(PyOSError::new_err("client disconnected")),
            Err(SendError::Short) => Ok(()),
        }
    }
}

/// `wsgi.input`: the request body, read through bounded buffers with the GIL released while
/// waiting for the socket.
#[pyclass(frozen, module = "deployctl")]
pub struct Input {
    pub body: Weak<Mutex<Body>>,
}

fn body_error(e: BodyError) -> PyErr {
    PyOSError::new_err(e.message())
}

fn limit(size: Option<isize>) -> usize {
    match size {
        Some(n) if n >= 0 => n as usize,
        _ => usize::MAX,
    }
}

impl Input {
    fn read_bytes(&self, py: Python<'_>, max: usize, line: bool) -> PyResult<Vec<u8>> {
        let body = upgrade(&self.body, "wsgi.input")?;
        let mut guard = lock(&body, "wsgi.input")?;
        let body: &mut Body = &mut guard;
        let mut out = Vec::new();
        while out.len() < max {
            let room = max - out.len();
            match body.take(&mut out, room, line).map_err(body_error)? {
                Progress::Got(0) => break,
                Progress::Got(_) if line && out.last() == Some(&b'\n') => break,
                Progress::Got(_) => {}
                Progress::NeedMore => py.detach(|| body.fill()).map_err(body_error)?,
            }
        }
        Ok(out)
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size = None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.read_bytes(py, limit(size), false)?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.read_bytes(py, limit(size), true)?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = limit(hint);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.read_bytes(py, usize::MAX, true)?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            lines.append(PyBytes::new(py, &line))?;
            if total >= hint {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.read_bytes(py, usize::MAX, true)?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }
}

/// `wsgi.errors`: a text stream into the server's error log.
#[pyclass(frozen, module = "deployctl")]
pub struct ErrorStream;

#[pymethods]
impl ErrorStream {
    fn write(&self, s: &Bound<'_, PyAny>) -> PyResult<usize> {
        let s = s
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err(format!("wsgi.errors.write() takes str, not {}", type_name(s))))?;
        let text = s.to_cow()?;
        log::write_error_raw(text.as_bytes());
        Ok(text.chars().count())
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(&line?)?;
        }
        Ok(())
    }

    fn flush(&self) {}
}

/// `wsgi.file_wrapper(filelike, blksize=8192)`. Returned from an app, a wrapped real file is
/// sent by the server with `sendfile(2)` and the GIL released; anything else is iterated.
#[pyclass(frozen, module = "deployctl")]
pub struct FileWrapper {
    pub filelike: Py<PyAny>,
    pub blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1(pyo3::intern!(py, "read"), (self.blksize,))?;
        Ok((data.len()? > 0).then_some(data))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr(pyo3::intern!(py, "close"))? {
            f.call_method0(pyo3::intern!(py, "close"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_in_any_case() {
        for h in HOP_BY_HOP {
            assert!(is_hop_by_hop(h.as_bytes()), "{h}");
            assert!(is_hop_by_hop(h.to_ascii_uppercase().as_bytes()), "{h}");
        }
        for other in ["content-type", "x-te", "tes", "upgrades", "date"] {
            assert!(!is_hop_by_hop(other.as_bytes()), "{other}");
        }
    }
}
