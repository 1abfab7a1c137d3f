//! Starting CPython inside the server: the app's virtualenv as `sys.prefix`, no Python signal
//! handlers (the server owns signals), and the version check that comes before any of it.
//!
//! Without `PyConfig`, an embedded interpreter takes its prefix from whichever libpython was
//! loaded and `sys.executable` from the first `python3` on `PATH`: the venv would not be used
//! and `multiprocessing` would start the wrong interpreter. Setting `program_name` to the
//! venv's `bin/python3` makes CPython find `pyvenv.cfg` next to it, exactly as running that
//! interpreter would.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use pyo3::ffi;

/// The Python the server was built for and links (`X.Y`).
pub const BUILT_FOR: &str = env!("DEPLOYCTL_PYTHON_VERSION");
/// The interpreter the build used; the program name when there is no virtualenv.
pub const BUILD_EXECUTABLE: &str = env!("DEPLOYCTL_PYTHON_EXECUTABLE");

/// Initialise the interpreter. Returns with the GIL released (saved thread state discarded on
/// purpose: every thread, the main one included, attaches through PyO3 from here on).
pub fn initialize(venv: Option<&Path>, argv: &[String]) -> anyhow::Result<()> {
    if let Some(v) = venv {
        deployctl_common::settings::check_venv_version(v, BUILT_FOR)?;
    }
    let program: PathBuf = match venv {
        Some(v) => {
            let p = deployctl_common::venv::python(v);
            if !p.exists() {
                anyhow::bail!("{} does not exist: {} is not a virtualenv", p.display(), v.display());
            }
            p
        }
        None => PathBuf::from(BUILD_EXECUTABLE),
    };
    let program = CString::new(program.to_string_lossy().as_bytes())?;
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let mut arg_ptrs: Vec<*const std::ffi::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    // SAFETY: the documented PyConfig sequence (init, set fields, initialize, clear) on a
    // zeroed struct that CPython fills in; every string is copied by CPython.
    unsafe {
        let mut config: ffi::PyConfig = std::mem::zeroed();
        ffi::PyConfig_InitPythonConfig(&mut config);
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        let status = ffi::PyConfig_SetBytesString(&mut config, &mut config.program_name, program.as_ptr());
        check(status, &mut config)?;
        let status = ffi::PyConfig_SetBytesArgv(&mut config, arg_ptrs.len() as ffi::Py_ssize_t, arg_ptrs.as_mut_ptr());
        check(status, &mut config)?;
        let status = ffi::Py_InitializeFromConfig(&config);
        check(status, &mut config)?;
        ffi::PyConfig_Clear(&mut config);
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

unsafe fn check(status: ffi::PyStatus, config: &mut ffi::PyConfig) -> anyhow::Result<()> {
    // SAFETY: status came from CPython; err_msg is a static C string or null.
    unsafe {
        if ffi::PyStatus_Exception(status) == 0 {
            return Ok(());
        }
        let msg = if status.err_msg.is_null() {
            "unknown error".to_string()
        } else {
            CStr::from_ptr(status.err_msg).to_string_lossy().into_owned()
        };
        ffi::PyConfig_Clear(config);
        anyhow::bail!("initialising Python failed: {msg}")
    }
}
