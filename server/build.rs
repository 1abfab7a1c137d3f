//! Links libpython with a RUNPATH to the build interpreter's library directory (so the binary
//! starts without `LD_LIBRARY_PATH`, which still overrides it), and records the Python it was
//! built for: the server refuses a virtualenv of another minor version before loading it.

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    let config = pyo3_build_config::get();
    let version = config.version();
    println!(
        "cargo:rustc-env=DEPLOYCTL_PYTHON_VERSION={}.{}",
        version.major, version.minor
    );
    println!(
        "cargo:rustc-env=DEPLOYCTL_PYTHON_EXECUTABLE={}",
        config.executable().unwrap_or_default()
    );
    // For the tests: the interpreter to make throw-away virtualenvs with, and its version.
    println!(
        "cargo:rustc-env=DEPLOYCTL_TEST_PYTHON={}",
        config.executable().unwrap_or("python3")
    );
    println!(
        "cargo:rustc-env=DEPLOYCTL_TEST_PYTHON_VERSION={}.{}",
        version.major, version.minor
    );
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
