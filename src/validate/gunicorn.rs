//! `gunicorn --check-config`: loads the config file and imports the app, with the app's
//! environment, using the Gunicorn of the app's virtualenv (the one the unit runs).

use std::path::Path;

use super::{Job, Outcome, Scratch, run, verdict};
use crate::plan::Tier;

/// `gunicorn --check-config` on the config `rel`, with the Gunicorn the plan runs.
pub(super) fn job<'a>(s: &'a Scratch, rel: &str) -> Job<'a> {
    let spec = &s.plan.spec;
    let gunicorn = s
        .plan
        .tier(Tier::Gunicorn)
        .and_then(|t| t.process.as_ref())
        .and_then(|p| p.program.path())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let extra = gunicorn.is_file().then(|| app_inputs(s, &gunicorn)).flatten();
    let path = s.path(rel);
    let rel = rel.to_string();
    Job::new(
        "gunicorn --check-config",
        &rel.clone(),
        vec![rel.clone()],
        extra,
        move || {
            let outcome = if gunicorn.is_file() {
                let env: Vec<(String, String)> = spec.app.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                run(
                    &gunicorn,
                    &["--config".as_ref(), path.as_os_str(), "--check-config".as_ref()],
                    &env,
                )
                .map(|(ok, out)| {
                    if ok {
                        Outcome::Ok("config loads, app imports".into())
                    } else {
                        Outcome::Failed(out)
                    }
                })
            } else {
                Ok(Outcome::Missing {
                    hint: format!(
                        "install Gunicorn into the app's virtualenv: `{}/bin/pip install gunicorn`",
                        spec.app.venv.display()
                    ),
                })
            };
            verdict("gunicorn --check-config", &rel, outcome)
        },
    )
}

/// Most Python files a project may have for `--check-config` to be cached; past it, every run
/// imports the app.
const MAX_SOURCES: usize = 5000;

/// What `--check-config` reads besides the config file, since it imports the app: Gunicorn
/// and the interpreter, the virtualenv's install record and `pyvenv.cfg`, the app's
/// environment, and every Python file under the import directory (path, size, modification
/// time). `None` (never cached) for a tree too large to list quickly.
fn app_inputs(s: &Scratch, gunicorn: &Path) -> Option<String> {
    let venv = &s.plan.spec.app.venv;
    let mut parts = vec![
        super::tool_identity(gunicorn),
        super::tool_identity(&deployctl_common::venv::python(venv)),
        std::fs::read_to_string(venv.join(crate::orchestrate::venv::RECORD)).unwrap_or_default(),
        std::fs::read_to_string(venv.join(deployctl_common::venv::PYVENV_CFG)).unwrap_or_default(),
        format!("{:?}", s.plan.spec.app.env),
    ];
    let mut files = Vec::new();
    let venv_abs = std::fs::canonicalize(venv).unwrap_or_else(|_| venv.clone());
    sources(&s.plan.spec.app.root, &venv_abs, &mut files, 0)?;
    files.sort();
    parts.extend(files);
    Some(parts.join("\n"))
}

fn sources(dir: &Path, venv: &Path, out: &mut Vec<String>, depth: usize) -> Option<()> {
    use std::os::unix::fs::MetadataExt;
    if depth > 16 {
        return Some(());
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Some(());
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let path = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if name.starts_with('.') || name == "__pycache__" || name == "node_modules" || name == "site-packages" {
                continue;
            }
            if std::fs::canonicalize(&path).is_ok_and(|p| p == venv)
                || path.join(deployctl_common::venv::PYVENV_CFG).is_file()
            {
                continue;
            }
            sources(&path, venv, out, depth + 1)?;
        } else if name.ends_with(".py") || name.ends_with(".pth") {
            let m = std::fs::metadata(&path).ok()?;
            out.push(format!(
                "{} {} {}.{}",
                path.display(),
                m.len(),
                m.mtime(),
                m.mtime_nsec()
            ));
            if out.len() > MAX_SOURCES {
                return None;
            }
        }
    }
    Some(())
}
