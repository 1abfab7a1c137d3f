//! Building the WSGI `environ` dict for a request.
//!
//! Fast path by construction: a prebuilt dict of the constant entries is copied (`dict.copy()`
//! is a C loop over a small table), keys and common values are interned `str` objects made
//! once, common header names map to prebuilt `HTTP_*` keys, and `os.environ` is not copied.
//! Only values that differ per request are created.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::http::parse::{Head, Version};
use crate::proxy::{self, Forwarded};

/// Interned keys and values used on every request.
pub struct Template {
    base: Py<PyDict>,
    k: Keys,
    /// (lower-case header name, environ key) for common headers.
    headers: Vec<(&'static [u8], Py<PyString>)>,
    methods: Vec<(&'static [u8], Py<PyString>)>,
}

macro_rules! keys {
    ($($field:ident = $text:expr),* $(,)?) => {
        struct Keys { $($field: Py<PyString>,)* }
        impl Keys {
            fn new(py: Python<'_>) -> Keys {
                Keys { $($field: PyString::intern(py, $text).unbind(),)* }
            }
        }
    };
}

keys! {
    request_method = "REQUEST_METHOD",
    script_name = "SCRIPT_NAME",
    path_info = "PATH_INFO",
    query_string = "QUERY_STRING",
    content_type = "CONTENT_TYPE",
    content_length = "CONTENT_LENGTH",
    server_name = "SERVER_NAME",
    server_port = "SERVER_PORT",
    server_protocol = "SERVER_PROTOCOL",
    remote_addr = "REMOTE_ADDR",
    remote_port = "REMOTE_PORT",
    raw_uri = "RAW_URI",
    http_host = "HTTP_HOST",
    wsgi_input = "wsgi.input",
    url_scheme = "wsgi.url_scheme",
    http10 = "HTTP/1.0",
    http11 = "HTTP/1.1",
    https = "https",
    empty = "",
}

const COMMON_HEADERS: [&str; 24] = [
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "connection",
    "cookie",
    "referer",
    "cache-control",
    "origin",
    "authorization",
    "if-none-match",
    "if-modified-since",
    "upgrade-insecure-requests",
    "pragma",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "x-real-ip",
    "sec-fetch-site",
    "sec-fetch-mode",
    "sec-fetch-dest",
    "dnt",
];

/// What a listener contributes to each environ.
pub struct ListenerKeys {
    pub server_name: Py<PyString>,
    pub server_port: Py<PyString>,
    pub unix: bool,
}

/// Everything about the request that is not in the head bytes.
pub struct RequestInfo<'a> {
    /// `REMOTE_ADDR` and `REMOTE_PORT` of a TCP peer, made once per connection.
    pub remote: Option<&'a (Py<PyString>, Py<PyString>)>,
    pub listener: &'a ListenerKeys,
    pub trusted: bool,
    pub allow: &'a [deployctl_common::settings::AllowIp],
}

impl Template {
    pub fn new(py: Python<'_>, base: Bound<'_, PyDict>) -> Template {
        let headers = COMMON_HEADERS
            .iter()
            .map(|h| (h.as_bytes(), PyString::intern(py, &environ_key(h.as_bytes())).unbind()))
            .collect();
        let methods = ["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"]
            .iter()
            .map(|m| (m.as_bytes(), PyString::intern(py, m).unbind()))
            .collect();
        Template {
            base: base.unbind(),
            k: Keys::new(py),
            headers,
            methods,
        }
    }

    /// The environ for `head` parsed from `buf` (ranges in `head` are relative to `buf`).
    pub fn build<'py>(
        &self,
        py: Python<'py>,
        buf: &[u8],
        head: &Head,
        info: &RequestInfo<'_>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let k = &self.k;
        let env = self.base.bind(py).copy()?;
        let method = &buf[head.method.clone()];
        match self.methods.iter().find(|(m, _)| *m == method) {
            Some((_, s)) => env.set_item(k.request_method.bind(py), s.bind(py))?,
            None => env.set_item(k.request_method.bind(py), latin1(py, method))?,
        }
        let target = &buf[head.target.clone()];
        let mut absolute_host = None;
        let origin = match target
            .strip_prefix(b"http://")
            .or_else(|| target.strip_prefix(b"https://"))
        {
            Some(rest) => {
                // RFC 9112 §3.2.2: the target's authority replaces the Host line, for HTTP_HOST
                // and SERVER_NAME alike. parse.rs has checked it is `host[:port]` (userinfo is
                // refused there, so none can reach the app).
                let end = rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len());
                absolute_host = Some(&rest[..end]);
                &rest[end..]
            }
            None => target,
        };
        let (path, query) = match origin.iter().position(|&b| b == b'?') {
            Some(i) => (&origin[..i], &origin[i + 1..]),
            None => (origin, &origin[origin.len()..]),
        };
        let path = if target == b"*" {
            // `OPTIONS *` (the only method parse.rs lets through with it): RFC 9112 §3.3
            // makes the target URI's path empty, and PEP 3333 wants PATH_INFO to be empty or
            // start with `/`. RAW_URI keeps the `*`.
            b"".as_slice()
        } else if path.is_empty() {
            b"/".as_slice()
        } else {
            path
        };
        env.set_item(k.path_info.bind(py), latin1(py, &percent_decode(path)))?;
        if query.is_empty() {
            env.set_item(k.query_string.bind(py), k.empty.bind(py))?;
        } else {
            env.set_item(k.query_string.bind(py), latin1(py, query))?;
        }
        env.set_item(k.raw_uri.bind(py), latin1(py, target))?;
        env.set_item(
            k.server_protocol.bind(py),
            match head.version {
                Version::Http10 => k.http10.bind(py),
                Version::Http11 => k.http11.bind(py),
            },
        )?;
        if let Some((addr, port)) = info.remote {
            env.set_item(k.remote_addr.bind(py), addr.bind(py))?;
            env.set_item(k.remote_port.bind(py), port.bind(py))?;
        }

        let mut host: Option<Vec<u8>> = absolute_host.map(<[u8]>::to_vec);
        let mut forwarded = Forwarded::default();
        let hs = &head.headers;
        for (i, (n, v)) in hs.iter().enumerate() {
            let name = &buf[n.clone()];
            if name.contains(&b'_') {
                // `X_Forwarded_For` and `X-Forwarded-For` would both become HTTP_X_FORWARDED_FOR:
                // drop the ambiguous spelling rather than let a client shadow a proxy's header.
                continue;
            }
            if hs[..i].iter().any(|(m, _)| buf[m.clone()].eq_ignore_ascii_case(name)) {
                continue; // merged into the first occurrence below
            }
            let value = &buf[v.clone()];
            // Later fields of the same name are joined into this one (one scan; most
            // requests have none).
            let mut dups = hs[i + 1..]
                .iter()
                .filter(|(m, _)| buf[m.clone()].eq_ignore_ascii_case(name))
                .peekable();
            let joined;
            let value = if dups.peek().is_some() {
                let sep: &[u8] = if name.eq_ignore_ascii_case(b"cookie") {
                    b"; "
                } else {
                    b","
                };
                let mut all = value.to_vec();
                for (_, dv) in dups {
                    all.extend_from_slice(sep);
                    all.extend_from_slice(&buf[dv.clone()]);
                }
                joined = all;
                joined.as_slice()
            } else {
                value
            };
            if info.trusted {
                forwarded.note(name, value);
            }
            if name.eq_ignore_ascii_case(b"host") {
                if host.is_none() {
                    host = Some(value.to_vec());
                }
                continue;
            }
            if name.eq_ignore_ascii_case(b"content-type") {
                env.set_item(k.content_type.bind(py), latin1(py, value))?;
            } else if name.eq_ignore_ascii_case(b"content-length") {
                env.set_item(k.content_length.bind(py), latin1(py, value))?;
            } else {
                let vs = latin1(py, value);
                match self.headers.iter().find(|(h, _)| h.eq_ignore_ascii_case(name)) {
                    Some((_, key)) => env.set_item(key.bind(py), vs)?,
                    None => env.set_item(environ_key(name), vs)?,
                }
            }
        }
        let fwd = if info.trusted {
            forwarded.resolve(info.allow)
        } else {
            proxy::Resolved::default()
        };
        if let Some(ip) = fwd.remote_addr {
            env.set_item(k.remote_addr.bind(py), ip.to_string())?;
            env.del_item(k.remote_port.bind(py)).ok();
        }
        if let Some(scheme) = &fwd.scheme {
            if scheme == "https" {
                env.set_item(k.url_scheme.bind(py), k.https.bind(py))?;
            }
        }
        if let Some(prefix) = &fwd.prefix {
            env.set_item(k.script_name.bind(py), prefix.as_str())?;
        }
        let host = fwd.host.as_deref().map(str::as_bytes).or(host.as_deref());
        if let Some(h) = host {
            env.set_item(k.http_host.bind(py), latin1(py, h))?;
        }
        let https = fwd.scheme.as_deref() == Some("https");
        if info.listener.unix || fwd.host.is_some() {
            // Behind a proxy on a unix socket there is no meaningful local address; the
            // name the client used is the Host header (PEP 3333's URL reconstruction).
            let (name, port) = split_host(host.unwrap_or(b"localhost"), if https { "443" } else { "80" });
            env.set_item(k.server_name.bind(py), latin1(py, name))?;
            env.set_item(k.server_port.bind(py), port)?;
        } else {
            env.set_item(k.server_name.bind(py), info.listener.server_name.bind(py))?;
            env.set_item(k.server_port.bind(py), info.listener.server_port.bind(py))?;
        }
        Ok(env)
    }

    /// The environ of a uwsgi packet: the front's variables as they are (uWSGI's semantics),
    /// with empty CONTENT_TYPE/CONTENT_LENGTH dropped and the scheme taken from
    /// `REQUEST_SCHEME`/`UWSGI_SCHEME` or `HTTPS`.
    pub fn build_uwsgi<'py>(
        &self,
        py: Python<'py>,
        buf: &[u8],
        vars: &[(std::ops::Range<usize>, std::ops::Range<usize>)],
    ) -> PyResult<Bound<'py, PyDict>> {
        let k = &self.k;
        let env = self.base.bind(py).copy()?;
        let mut https = false;
        let mut has_path = false;
        for (kr, vr) in vars {
            let key = &buf[kr.clone()];
            let value = &buf[vr.clone()];
            match key {
                b"CONTENT_TYPE" | b"CONTENT_LENGTH" if value.is_empty() => continue,
                b"HTTPS" => https |= value.eq_ignore_ascii_case(b"on") || value == b"1",
                b"REQUEST_SCHEME" | b"UWSGI_SCHEME" => https |= value.eq_ignore_ascii_case(b"https"),
                b"PATH_INFO" => has_path = true,
                _ => {}
            }
            env.set_item(latin1(py, key), latin1(py, value))?;
        }
        if !has_path {
            if let Some((_, v)) = vars.iter().find(|(kr, _)| &buf[kr.clone()] == b"REQUEST_URI") {
                let uri = &buf[v.clone()];
                let path = uri.split(|&b| b == b'?').next().unwrap_or(b"/");
                env.set_item(k.path_info.bind(py), latin1(py, &percent_decode(path)))?;
            }
        }
        // PEP 3333 requires these; a front that leaves them out gets neutral values.
        for (key, default) in [
            (&k.query_string, k.empty.bind(py).clone()),
            (&k.server_protocol, k.http11.bind(py).clone()),
            (&k.server_name, PyString::intern(py, "localhost")),
            (&k.server_port, PyString::intern(py, if https { "443" } else { "80" })),
        ] {
            if env.get_item(key.bind(py))?.is_none() {
                env.set_item(key.bind(py), default)?;
            }
        }
        if https {
            env.set_item(k.url_scheme.bind(py), k.https.bind(py))?;
        }
        Ok(env)
    }

    pub fn input_key<'py>(&self, py: Python<'py>) -> &Bound<'py, PyString> {
        self.k.wsgi_input.bind(py)
    }
}

/// `host[:port]` or `[v6][:port]` → (name, port).
fn split_host<'a>(h: &'a [u8], default_port: &'a str) -> (&'a [u8], String) {
    if h.starts_with(b"[") {
        if let Some(end) = h.iter().position(|&b| b == b']') {
            let port = h[end + 1..]
                .strip_prefix(b":")
                .map(|p| String::from_utf8_lossy(p).into_owned());
            return (&h[..=end], port.unwrap_or_else(|| default_port.to_string()));
        }
        return (h, default_port.to_string());
    }
    match h.iter().rposition(|&b| b == b':') {
        Some(i) => (&h[..i], String::from_utf8_lossy(&h[i + 1..]).into_owned()),
        None => (h, default_port.to_string()),
    }
}

/// `User-Agent` → `HTTP_USER_AGENT`.
fn environ_key(name: &[u8]) -> String {
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    for &b in name {
        key.push(if b == b'-' { '_' } else { b.to_ascii_uppercase() as char });
    }
    key
}

/// Bytes as a native string (PEP 3333: latin-1), without a decode call for ASCII.
pub fn latin1<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    // CPython decodes latin-1 itself, in one pass (ASCII is a copy), with no UTF-8 validation.
    // SAFETY: a pointer and length of a valid slice; latin-1 decoding cannot fail (every byte
    // is a code point), so the result is a new str or NULL only on memory exhaustion.
    let s = unsafe {
        pyo3::ffi::PyUnicode_DecodeLatin1(b.as_ptr().cast(), b.len() as pyo3::ffi::Py_ssize_t, std::ptr::null())
    };
    match unsafe { Bound::from_owned_ptr_or_opt(py, s) } {
        Some(s) => s.cast_into::<PyString>().unwrap_or_else(|_| PyString::new(py, "")),
        None => PyString::new(py, ""),
    }
}

/// `%XX` decoded; malformed escapes are kept as they are (as Gunicorn and uWSGI do).
fn percent_decode(path: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !path.contains(&b'%') {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%'
            && i + 2 < path.len()
            && let (Some(h), Some(l)) = (hex(path[i + 1]), hex(path[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(path[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Keys an environ is sized for: the constant ones, the ~11 of each request, and room for a
/// browser's headers (CPython sizes the table for this many entries at two thirds full).
const ENVIRON_KEYS: pyo3::ffi::Py_ssize_t = 40;

unsafe extern "C" {
    /// CPython's own presized dict (declared in `cpython/dictobject.h`, exported by libpython
    /// since 3.x; PyO3 does not bind it).
    fn _PyDict_NewPresized(minused: pyo3::ffi::Py_ssize_t) -> *mut pyo3::ffi::PyObject;
}

/// The constant part of every environ.
pub fn base<'py>(
    py: Python<'py>,
    multithread: bool,
    multiprocess: bool,
    tls: bool,
    errors: Bound<'py, PyAny>,
    file_wrapper: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    // Sized for a whole environ: `copy()` keeps the size of the table it copies, so each
    // request's dict takes its ~20 keys and a browser's headers without being resized (two
    // resizes per request otherwise: a third of the dict work of a hello-world request).
    // SAFETY: `_PyDict_NewPresized` returns a new reference to an empty dict, or NULL with an
    // exception set.
    let d = unsafe { Bound::from_owned_ptr_or_err(py, _PyDict_NewPresized(ENVIRON_KEYS))? }.cast_into::<PyDict>()?;
    d.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
    d.set_item(
        "wsgi.url_scheme",
        PyString::intern(py, if tls { "https" } else { "http" }),
    )?;
    if tls {
        // As CGI servers (and Gunicorn over TLS) say it.
        d.set_item("HTTPS", PyString::intern(py, "on"))?;
    }
    d.set_item("wsgi.multithread", multithread)?;
    d.set_item("wsgi.multiprocess", multiprocess)?;
    d.set_item("wsgi.run_once", false)?;
    d.set_item("wsgi.input_terminated", true)?;
    d.set_item("wsgi.errors", errors)?;
    d.set_item("wsgi.file_wrapper", file_wrapper)?;
    d.set_item("SCRIPT_NAME", PyString::intern(py, ""))?;
    d.set_item("SERVER_SOFTWARE", concat!("deployctl/", env!("CARGO_PKG_VERSION")))?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode() {
        assert_eq!(&*percent_decode(b"/a%20b%2Fc"), b"/a b/c");
        assert_eq!(&*percent_decode(b"/a%2"), b"/a%2");
        assert_eq!(&*percent_decode(b"/a%zz"), b"/a%zz");
        assert_eq!(&*percent_decode(b"/%e9"), b"/\xe9");
    }

    #[test]
    fn hosts() {
        assert_eq!(
            split_host(b"example.com:8080", "80"),
            (b"example.com".as_slice(), "8080".into())
        );
        assert_eq!(split_host(b"[::1]:81", "80"), (b"[::1]".as_slice(), "81".into()));
        assert_eq!(
            split_host(b"example.com", "443"),
            (b"example.com".as_slice(), "443".into())
        );
    }
}
