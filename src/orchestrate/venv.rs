//! The app's virtualenv for `up`: made with the interpreter the target needs, holding the
//! app's dependencies and the target's backend, before anything that needs it runs (the
//! validators included: `gunicorn --check-config` imports the app, `systemd-analyze verify`
//! wants the unit's `ExecStart` to exist).
//!
//! - **Interpreter**: the one `deployctl-server` links (found from the libpython it loads) for
//!   the embedded server, and for Gunicorn or a pip-built uWSGI too when the server is
//!   installed, so one virtualenv serves every target; Debian's uWSGI plugin needs the
//!   distribution's Python of its version. Never merely the first `python3` on PATH.
//! - **What is installed**: `[app].requirements` (a requirements file, or `pyproject.toml`'s
//!   `[project].dependencies`) and the backend's package (`gunicorn`; `uwsgi` with
//!   `uwsgi_build = "pip"`), in one `pip install`. pip leaves what is already satisfied alone,
//!   so a virtualenv the user made only gets what it is missing.
//! - **Record**: `VENV/.deployctl-installed` lists what the last successful install covered
//!   (each requirements source with its SHA-256, each package). It is removed before an install
//!   and written only after one succeeds: a failed install leaves no record, and the next `up`
//!   installs again instead of trusting a half-filled virtualenv. It also keeps the verdict of
//!   the same-install check (`same-install sha256:…`, keyed by the virtualenv's `pyvenv.cfg`,
//!   its interpreter and the libpython directory the server loads), so a start whose inputs
//!   did not change skips starting the virtualenv's Python to ask it.
//! - **Concurrency**: one `up` at a time works on a project's virtualenv
//!   (`.deployctl/venv.lock`, or under `--run-dir`), and on a virtualenv that projects share
//!   (a `flock` on its directory).

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::plan::{Plan, Tier};
use crate::printer::{Printer, hinted};
use crate::spec::{Spec, UwsgiBuild, display_path};
use crate::target::Target;

/// What the last successful install covered, one item a line.
pub const RECORD: &str = ".deployctl-installed";
/// The record's key of a passed same-install check; its value is [`same_install_key`]'s.
const SAME_INSTALL: &str = "same-install";
/// The record of earlier versions (the requirements text only); replaced by [`RECORD`].
const OLD_RECORD: &str = ".deployctl-requirements.txt";
/// Debian's uWSGI Python plugin.
const UWSGI_PLUGIN: &str = "/usr/lib/uwsgi/plugins/python3_plugin.so";

/// A Python interpreter, as it describes itself.
#[derive(Debug, Clone)]
pub struct Python {
    pub path: PathBuf,
    /// `X.Y`.
    pub version: String,
    /// `sysconfig.get_config_var("LIBDIR")`: where its libpython lives.
    libdir: String,
}

/// What a target needs of the virtualenv.
#[derive(Debug)]
pub struct Needs {
    /// The `X.Y` its Python must be, and why.
    pub version: Option<(String, String)>,
    /// Interpreters to create it with, best first (each with why it is chosen).
    candidates: Vec<(PathBuf, String)>,
    /// Packages the backend needs in it.
    pub packages: Vec<&'static str>,
    /// `deployctl-server` and its `X.Y`: the interpreter it links is the first candidate, found
    /// only when a virtualenv is created (it takes running that interpreter).
    server: Option<(PathBuf, String)>,
    /// The app runs inside `deployctl-server`: an existing virtualenv must come from the very
    /// Python install whose libpython the server loads, not only the same `X.Y`.
    same_install: bool,
}

/// The virtualenv needs of `target`. `server` is `deployctl-server` when it is installed (its
/// Python is preferred for every target, and required for the embedded one).
pub fn needs(plan: &Plan, server: Option<(&Path, &str)>) -> Needs {
    let spec = &plan.spec;
    let app = plan.app().tier;
    let mut version = None;
    let mut candidates: Vec<(PathBuf, String)> = Vec::new();
    if app == Tier::Embedded
        && let Some((_, v)) = server
    {
        version = Some((v.to_string(), "the embedded server links Python".to_string()));
    }
    if app == Tier::Uwsgi
        && spec.backend.uwsgi_build == UwsgiBuild::Debian
        && let Some(v) = plugin_version(Path::new(UWSGI_PLUGIN))
    {
        candidates.push((
            PathBuf::from(format!("/usr/bin/python{v}")),
            "the distribution's, which Debian's uWSGI plugin runs".into(),
        ));
        version = Some((v, "Debian's uWSGI plugin runs Python".to_string()));
    }
    if let Some(wsgi) = plan.apache.as_ref().and_then(|a| a.wsgi.as_ref()) {
        // Debian's mod_wsgi runs the Python it is built against: the virtualenv is made with
        // that interpreter (`crate::validate::mod_wsgi` checks one made otherwise).
        candidates.push((
            wsgi.python.clone(),
            "the distribution's, which Debian's mod_wsgi runs".into(),
        ));
        if let Some(v) = plugin_version(&wsgi.module) {
            version = Some((v, "Debian's mod_wsgi runs Python".to_string()));
        }
    }
    let wanted = version.as_ref().map(|(v, _)| v.clone());
    if let Some(v) = &wanted {
        for name in [
            format!("python{v}"),
            format!("/usr/bin/python{v}"),
            format!("/usr/local/bin/python{v}"),
        ] {
            if let Ok(p) = which::which(&name) {
                candidates.push((p, format!("Python {v}")));
            }
        }
    }
    if let Ok(p) = which::which("python3") {
        candidates.push((p, "python3 on PATH".into()));
    }
    let packages = match app {
        Tier::Gunicorn => vec!["gunicorn"],
        Tier::Uwsgi => match spec.backend.uwsgi_build {
            UwsgiBuild::Pip => vec!["uwsgi"],
            UwsgiBuild::Debian => vec![],
        },
        // The embedded server is deployctl's own; mod_wsgi comes with Apache (its issue
        // decides how); a web server is never the app's tier.
        Tier::Embedded | Tier::ModWsgi | Tier::Nginx | Tier::Apache => vec![],
    };
    Needs {
        version,
        candidates,
        packages,
        // mod_wsgi's interpreter, not the server's, even of the same version.
        server: server
            .filter(|_| app != Tier::ModWsgi)
            .map(|(b, v)| (b.to_path_buf(), v.to_string())),
        same_install: app == Tier::Embedded,
    }
}

/// Makes the virtualenv hold what `needs` says: created if missing, checked against the
/// required Python, the requirements and packages installed unless the record says they are.
pub fn ensure(spec: &Spec, target: Target, needs: &Needs, run_root: &Path, printer: &Printer) -> anyhow::Result<()> {
    let venv = &spec.app.venv;
    let _lock = lock(run_root)?;
    // Projects may share one virtualenv (the tests' copies of the example do): their installs
    // and records are serialised on the virtualenv itself, a lock that needs no write access.
    let _venv_lock = lock_dir(venv)?;
    let python = deployctl_common::venv::python(venv);
    if python.exists() {
        if let Some((want, why)) = &needs.version {
            // pyvenv.cfg says it without starting Python; asked of Python when it does not.
            let found = deployctl_common::venv::venv_python_version(venv)
                .ok()
                .or_else(|| query(&python).map(|p| p.version));
            if found.as_deref() != Some(want.as_str()) {
                return Err(hinted(
                    format!(
                        "the virtualenv {} is Python {}, but target `{target}` needs Python {want} ({why} {want})",
                        display_path(venv),
                        found.as_deref().unwrap_or("of an unknown version")
                    ),
                    format!(
                        "move {} away and run `deployctl up` again: it creates one with Python {want}",
                        display_path(venv)
                    ),
                ));
            }
        }
        if needs.same_install
            && let Some((server, _)) = &needs.server
        {
            check_same_install(venv, &python, server)?;
        }
    } else {
        create(venv, needs, printer)?;
    }

    let sources = sources(spec)?;
    let wanted: BTreeSet<Item> = sources
        .iter()
        .map(|s| Item {
            key: format!("requirements {}", s.path.display()),
            value: s.sha256.clone(),
        })
        .chain(needs.packages.iter().map(|p| Item {
            key: format!("package {p}"),
            value: String::new(),
        }))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let record_path = venv.join(RECORD);
    let recorded = read_record(&record_path);
    if wanted.is_subset(&recorded) {
        printer.status("venv", &format!("{} is up to date", display_path(venv)));
        return Ok(());
    }
    let changed = wanted
        .iter()
        .any(|w| recorded.iter().any(|r| r.key == w.key && r.value != w.value));
    if changed {
        printer.status("venv", "requirements changed since the last install");
    }
    // No record while installing: an install that fails (or is interrupted) leaves none.
    match std::fs::remove_file(&record_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", display_path(&record_path))),
    }
    install(spec, &sources, &needs.packages, printer)?;
    let mut record: Vec<Item> = recorded
        .into_iter()
        .filter(|r| !wanted.iter().any(|w| w.key == r.key))
        .collect();
    record.extend(wanted);
    record.sort();
    write_record(&record_path, &record)?;
    let _ = std::fs::remove_file(venv.join(OLD_RECORD));
    Ok(())
}

/// One line of the record: `requirements /abs/requirements.txt sha256:…` or `package gunicorn`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Item {
    key: String,
    value: String,
}

fn read_record(path: &Path) -> BTreeSet<Item> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| match l.rsplit_once(" sha256:") {
            Some((key, hash)) => Item {
                key: key.to_string(),
                value: hash.to_string(),
            },
            None => Item {
                key: l.to_string(),
                value: String::new(),
            },
        })
        .collect()
}

fn write_record(path: &Path, items: &[Item]) -> anyhow::Result<()> {
    let mut text = String::from(
        "# What `deployctl up` installed into this virtualenv and checked of it; delete this file to make it install and check again.\n",
    );
    for i in items {
        if i.value.is_empty() {
            text.push_str(&format!("{}\n", i.key));
        } else {
            text.push_str(&format!("{} sha256:{}\n", i.key, i.value));
        }
    }
    // Its own temporary name: another writer's rename cannot take it away.
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", display_path(&tmp)))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", display_path(path)))
}

/// A source of requirements, as pip reads it.
struct Source {
    /// The file named in deploy.toml.
    path: PathBuf,
    /// What pip gets with `-r`: the file itself, or a list made from `pyproject.toml`.
    pip_file: PathBuf,
    /// SHA-256 of what is installed from it (for pyproject.toml, of the dependency list only).
    sha256: String,
    /// Kept alive while pip runs.
    _temp: Option<tempfile::NamedTempFile>,
}

fn sources(spec: &Spec) -> anyhow::Result<Vec<Source>> {
    let Some(path) = &spec.app.requirements else {
        return Ok(Vec::new());
    };
    if path.file_name().is_some_and(|n| n == "pyproject.toml") {
        let deps = crate::pyproject::dependencies(path).map_err(|e| {
            hinted(
                format!(
                    "cannot install the dependencies of {}: {}",
                    display_path(path),
                    e.message
                ),
                e.hint,
            )
        })?;
        let list: String = deps.iter().map(|d| format!("{d}\n")).collect();
        let mut temp = tempfile::Builder::new()
            .prefix("deployctl-pyproject-")
            .suffix(".txt")
            .tempfile()?;
        std::io::Write::write_all(&mut temp, list.as_bytes())?;
        return Ok(vec![Source {
            path: path.clone(),
            pip_file: temp.path().to_path_buf(),
            sha256: sha256_hex(list.as_bytes()),
            _temp: Some(temp),
        }]);
    }
    let text = std::fs::read(path).with_context(|| format!("reading {}", display_path(path)))?;
    Ok(vec![Source {
        path: path.clone(),
        pip_file: path.clone(),
        sha256: sha256_hex(&text),
        _temp: None,
    }])
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `python -m venv`, with the first candidate interpreter of the right version. A virtualenv
/// directory this call made is removed again when the creation fails.
fn create(venv: &Path, needs: &Needs, printer: &Printer) -> anyhow::Result<()> {
    if venv.exists() && std::fs::read_dir(venv).is_ok_and(|mut d| d.next().is_some()) {
        return Err(hinted(
            format!(
                "{} exists but is not a virtualenv (it has no bin/python3)",
                display_path(venv)
            ),
            "point `[app].venv` at a virtualenv, or move the directory away so `deployctl up` can create one",
        ));
    }
    let python = choose(needs)?;
    let made_dir = !venv.exists();
    let what = format!(
        "{} with {} (Python {}, {})",
        display_path(venv),
        python.0.path.display(),
        python.0.version,
        python.1
    );
    let progress = printer.progress(&format!("creating {what}"));
    let mut cmd = Command::new(&python.0.path);
    cmd.args(["-m", "venv"]).arg(venv);
    let out = super::interrupt::output(cmd).with_context(|| format!("running {}", python.0.path.display()));
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    if let Err(e) = &out
        && super::interrupt::is_interrupted(e)
    {
        if made_dir {
            let _ = std::fs::remove_dir_all(venv);
        }
        return out.map(|_| ());
    }
    let failed = match &out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(o.text.trim().to_string()),
        Err(e) => Some(format!("{e:#}")),
    };
    if let Some(why) = failed {
        if made_dir {
            let _ = std::fs::remove_dir_all(venv);
        }
        return Err(hinted(
            format!("creating {what} failed:\n{why}"),
            "on Debian, `python3 -m venv` needs the python3-venv package",
        ));
    }
    printer.status("venv", &format!("created {what}"));
    Ok(())
}

/// The first candidate that exists and has the required version.
fn choose(needs: &Needs) -> anyhow::Result<(Python, String)> {
    let server_python = needs
        .server
        .as_ref()
        .and_then(|(bin, v)| server_interpreter(bin, v))
        .map(|p| (p.path, "the one deployctl-server links".to_string()));
    for (path, why) in server_python.iter().chain(&needs.candidates) {
        let Some(p) = query(path) else { continue };
        match &needs.version {
            Some((v, _)) if &p.version != v => continue,
            _ => return Ok((p, why.clone())),
        }
    }
    Err(match &needs.version {
        Some((v, why)) => hinted(
            format!("no Python {v} to create the virtualenv with ({why} {v})"),
            format!("install python{v}, or create the virtualenv yourself and set `[app].venv`"),
        ),
        None => hinted(
            "no python3 to create the virtualenv with",
            "install python3, or create the virtualenv yourself and set `[app].venv`",
        ),
    })
}

/// One `pip install` for every source and package, from the virtualenv's own Python.
fn install(spec: &Spec, sources: &[Source], packages: &[&str], printer: &Printer) -> anyhow::Result<()> {
    let venv = &spec.app.venv;
    let what: Vec<String> = sources
        .iter()
        .map(|s| display_path(&s.path))
        .chain(packages.iter().map(|p| p.to_string()))
        .collect();
    let what = what.join(", ");
    let python = deployctl_common::venv::python(venv);
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pip", "install", "--disable-pip-version-check", "-q"]);
    for s in sources {
        cmd.arg("-r").arg(&s.pip_file);
    }
    cmd.args(packages).current_dir(spec.dir());
    let progress = printer.progress(&format!("installing {what} into {}", display_path(venv)));
    // In a process group of its own, ended (with what it started) when `up` is asked to stop.
    let out = super::interrupt::output(cmd).with_context(|| format!("running {} -m pip", python.display()));
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    let out = out?;
    if !out.status.success() {
        let lines: Vec<&str> = out.text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        return Err(hinted(
            format!(
                "installing {what} into {} failed ({}):\n{tail}",
                display_path(venv),
                out.status
            ),
            "fix the requirements (or the network) and run `deployctl up` again: nothing was started, and the \
             next `up` installs again",
        ));
    }
    printer.status("venv", &format!("installed {what}"));
    Ok(())
}

/// Serialises `up`s of one project on its virtualenv: `venv.lock` in the run root
/// (`.deployctl/` or `--run-dir`), held until dropped.
fn lock(dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", display_path(dir)))?;
    let path = dir.join("venv.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", display_path(&path)))?;
    // SAFETY: flock on a descriptor we own; released when the file is closed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("locking {}", display_path(&path)));
    }
    Ok(file)
}

/// An exclusive `flock` on a directory that exists (none when it does not yet), held until
/// dropped.
fn lock_dir(dir: &Path) -> anyhow::Result<Option<std::fs::File>> {
    let Ok(file) = std::fs::File::open(dir) else {
        return Ok(None);
    };
    // SAFETY: flock on a descriptor we own; released when the file is closed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("locking {}", display_path(dir)));
    }
    Ok(Some(file))
}

fn query(python: &Path) -> Option<Python> {
    let out = Command::new(python)
        .args([
            "-c",
            "import sys, sysconfig; print('%d.%d' % sys.version_info[:2]); print(sysconfig.get_config_var('LIBDIR') or '')",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let version = lines.next()?.trim().to_string();
    let libdir = lines.next().unwrap_or("").trim().to_string();
    (!version.is_empty()).then(|| Python {
        path: python.to_path_buf(),
        version,
        libdir,
    })
}

/// The interpreter whose libpython `deployctl-server` loads: the dynamic loader resolves it
/// (`LD_TRACE_LOADED_OBJECTS`, what `ldd` does), and the interpreter is the one whose
/// `LIBDIR` holds it — `PREFIX/bin/pythonX.Y` first, then `pythonX.Y` and `python3` on PATH.
fn server_interpreter(server: &Path, version: &str) -> Option<Python> {
    let libdir = &server_libdir(server)?;
    let mut candidates = vec![libdir.join(format!("../bin/python{version}"))];
    for name in [format!("python{version}"), "python3".into()] {
        if let Ok(p) = which::which(&name) {
            candidates.push(p);
        }
    }
    candidates.push(PathBuf::from(format!("/usr/bin/python{version}")));
    candidates.into_iter().filter(|c| c.exists()).find_map(|c| {
        let p = query(&c)?;
        let same_dir = std::fs::canonicalize(&p.libdir).ok()? == std::fs::canonicalize(libdir).ok()?;
        (p.version == version && same_dir).then(|| Python {
            // `PREFIX/lib/../bin/python3.11` → `PREFIX/bin/python3.11`.
            path: std::fs::canonicalize(&c)
                .ok()
                .filter(|r| r.file_name() == c.file_name())
                .unwrap_or(c),
            ..p
        })
    })
}

/// Refuses a virtualenv made by another install of the same Python `X.Y` than the one whose
/// libpython `deployctl-server` loads. The server finds the standard library through the
/// virtualenv's `home`, so it would pair its libpython with another build's standard library:
/// Debian's `/usr/bin/python3.11` has `math` and a dozen more modules built into its binary,
/// and a libpython from python.org or pyenv looks for them in `lib-dynload/` and fails the
/// app's first `import math` ("No module named 'math'"), after everything has started.
/// Skipped when either side cannot be told (a static libpython, a broken interpreter).
///
/// Asking the virtualenv's Python takes tens of milliseconds, the loader a few: a pass is
/// recorded in the virtualenv's [`RECORD`] under [`same_install_key`], and a start with the
/// same key skips the question (the loader still runs: the key holds its answer).
fn check_same_install(venv: &Path, python: &Path, server: &Path) -> anyhow::Result<()> {
    let Some(server_lib) = server_libdir(server) else {
        return Ok(());
    };
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    let key = canon(&server_lib).and_then(|lib| same_install_key(venv, python, &lib));
    let record_path = venv.join(RECORD);
    let passed = |k: &String| Item {
        key: SAME_INSTALL.into(),
        value: k.clone(),
    };
    if key
        .as_ref()
        .is_some_and(|k| read_record(&record_path).contains(&passed(k)))
    {
        return Ok(());
    }
    let Some(made_by) = query(python) else { return Ok(()) };
    let (Some(want), Some(found)) = (canon(&server_lib), canon(Path::new(&made_by.libdir))) else {
        return Ok(());
    };
    if want == found {
        if let Some(k) = &key {
            // Best effort: a virtualenv it cannot write to is checked at every start.
            let mut record: Vec<Item> = read_record(&record_path)
                .into_iter()
                .filter(|i| i.key != SAME_INSTALL)
                .collect();
            record.push(passed(k));
            record.sort();
            let _ = write_record(&record_path, &record);
        }
        return Ok(());
    }
    let home = deployctl_common::venv::venv_home(venv)
        .map(|h| format!(" (`home = {}` in its pyvenv.cfg)", h.display()))
        .unwrap_or_default();
    let fix = server_interpreter(server, &made_by.version)
        .map(|p| format!("`{} -m venv {}`", p.path.display(), display_path(venv)))
        .unwrap_or_else(|| format!("the Python whose libpython is in {}", want.display()));
    Err(hinted(
        format!(
            "the virtualenv {} was made by another Python {} install{home} than the one deployctl-server loads \
             (its libpython is in {}, the virtualenv's in {}): the app would run against another build's \
             standard library and fail on imports such as `math`",
            display_path(venv),
            made_by.version,
            want.display(),
            found.display()
        ),
        format!(
            "move {} away and run `deployctl up` again (it creates one with the right Python), or create it with {fix}",
            display_path(venv)
        ),
    ))
}

/// What the same-install verdict depends on, hashed: the virtualenv's `pyvenv.cfg` (device,
/// inode, size, modification time: a virtualenv made again, or its `home` edited, changes
/// them), the interpreter its `bin/python` resolves to, and the directory of the libpython
/// the server loads (`server_lib`, canonical). `None` when `pyvenv.cfg` cannot be read.
fn same_install_key(venv: &Path, python: &Path, server_lib: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let cfg = std::fs::metadata(venv.join(deployctl_common::venv::PYVENV_CFG)).ok()?;
    let interpreter = std::fs::canonicalize(python).ok()?;
    let key = format!(
        "pyvenv.cfg {} {} {} {}.{}\ninterpreter {}\nlibpython {}\n",
        cfg.dev(),
        cfg.ino(),
        cfg.size(),
        cfg.mtime(),
        cfg.mtime_nsec(),
        interpreter.display(),
        server_lib.display()
    );
    Some(sha256_hex(key.as_bytes()))
}

/// The directory of the libpython `server` loads, as the dynamic loader resolves it.
fn server_libdir(server: &Path) -> Option<PathBuf> {
    let out = Command::new(server).env("LD_TRACE_LOADED_OBJECTS", "1").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.trim_start().starts_with("libpython"))
        .find_map(|l| l.split("=>").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|lib| Path::new(lib).parent().map(Path::to_path_buf))
}

/// `X.Y` of the libpython a module links (`libpython3.11.so…` in its bytes): Debian's uWSGI
/// plugin, Debian's mod_wsgi.
pub(crate) fn plugin_version(plugin: &Path) -> Option<String> {
    let bytes = std::fs::read(plugin).ok()?;
    let needle = b"libpython";
    let at = bytes.windows(needle.len()).position(|w| w == needle)? + needle.len();
    let version: String = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .map(|b| *b as char)
        .collect();
    let version = version.trim_end_matches('.');
    (version.matches('.').count() == 1).then(|| version.to_string())
}
