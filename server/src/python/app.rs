//! Importing the app and the per-process Python state every request uses.

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use deployctl_common::settings::ServeSettings;

use crate::net::Listener;
use crate::python::environ::{self, ListenerKeys, Template};
use crate::python::objects::{ErrorStream, FileWrapper, type_name};

/// The loaded app and what requests share. Read-only after loading, so every Python thread
/// uses it without locks.
pub struct App {
    pub callable: Py<PyAny>,
    pub template: Template,
    pub listeners: Vec<ListenerKeys>,
    pub settings: ServeSettings,
}

/// Why the app could not be loaded; the traceback is already formatted.
#[derive(Debug)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// Import `settings.entry` on the calling (main) thread: apps may install signal handlers at
/// import, which CPython only allows there.
pub fn load(py: Python<'_>, settings: &ServeSettings, listeners: &[Listener]) -> Result<App, LoadError> {
    let entry = &settings.entry;
    let fail = |e: PyErr, what: String| LoadError(format!("{what}\n{}", format_exception(py, &e)));
    let sys = py.import("sys").map_err(|e| fail(e, "importing sys".into()))?;
    let path = sys
        .getattr("path")
        .and_then(|p| p.cast_into::<PyList>().map_err(PyErr::from))
        .map_err(|e| fail(e, "reading sys.path".into()))?;
    path.insert(0, settings.chdir.to_string_lossy().as_ref())
        .map_err(|e| fail(e, "extending sys.path".into()))?;
    let module = py
        .import(entry.module.as_str())
        .map_err(|e| fail(e, format!("cannot import module {:?} (ENTRY {entry})", entry.module)))?;
    let mut app = module.getattr(entry.attr.as_str()).map_err(|e| {
        fail(
            e,
            format!(
                "module {:?} has no attribute {:?} (ENTRY {entry})",
                entry.module, entry.attr
            ),
        )
    })?;
    if entry.factory {
        app = app
            .call0()
            .map_err(|e| fail(e, format!("calling the app factory {entry} failed")))?;
    }
    if !app.is_callable() {
        return Err(LoadError(format!(
            "ENTRY {entry} is not callable (got a {})",
            type_name(&app)
        )));
    }
    let build = || -> PyResult<App> {
        let errors = Bound::new(py, ErrorStream)?.into_any();
        let wrapper = py.get_type::<FileWrapper>().into_any();
        let base = environ::base(
            py,
            settings.threads > 1,
            settings.workers > 1,
            settings.tls.is_some(),
            errors,
            wrapper,
        )?;
        let listeners = listeners
            .iter()
            .map(|l| ListenerKeys {
                server_name: PyString::intern(py, &l.server_name).unbind(),
                server_port: PyString::intern(py, &l.server_port).unbind(),
                unix: matches!(l.bind, deployctl_common::settings::Bind::Unix(_)),
            })
            .collect();
        Ok(App {
            callable: app.clone().unbind(),
            template: Template::new(py, base),
            listeners,
            settings: settings.clone(),
        })
    };
    build().map_err(|e| fail(e, "preparing the environ".into()))
}

/// A Python exception with its traceback, as `traceback.format_exception` prints it.
pub fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        let lines = tb.call_method1("format_exception", (err.get_type(py), err.value(py), err.traceback(py)))?;
        let text: String = PyString::new(py, "").call_method1("join", (lines,))?.extract()?;
        Ok(text)
    });
    formatted.unwrap_or_else(|_| format!("{err}\n"))
}

/// Run the functions registered with `atexit` (PyO3 never finalises the interpreter, so
/// without this log handlers and error reporters would not flush on exit).
pub fn run_atexit(py: Python<'_>) {
    if let Err(e) = py.import("atexit").and_then(|m| m.call_method0("_run_exitfuncs")) {
        crate::log::error(&format!("atexit functions failed:\n{}", format_exception(py, &e)));
    }
}
