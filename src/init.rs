//! Detecting what a `deploy.toml` needs from an existing project directory.
//!
//! Owns: finding the WSGI entry (a Flask `app = Flask(…)`, a `create_app()` factory, Django's
//! `*/wsgi.py`, a module-level `application`), the virtualenv, the requirements file and
//! static directories. Reads files; writes nothing (the `init` command writes).

use std::path::{Path, PathBuf};

/// What was found; every field can be overridden by a flag.
#[derive(Debug, Default)]
pub struct Detected {
    pub entry: Option<String>,
    /// Every place looked at for an entry, for the error when none is found.
    pub looked_in: Vec<String>,
    pub venv: Option<String>,
    pub requirements: Option<String>,
    pub statics: Vec<(String, String)>,
}

/// How sure a candidate entry is; lower wins.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    FlaskApp,
    Factory,
    Django,
    Application,
}

const SKIP_DIRS: [&str; 6] = [
    "node_modules",
    "__pycache__",
    "site-packages",
    "deploy",
    "tests",
    "migrations",
];

pub fn detect(dir: &Path) -> Detected {
    let mut d = Detected::default();
    let mut candidates: Vec<(Kind, usize, String, PathBuf)> = Vec::new();
    for (rel, path) in python_files(dir, 2) {
        d.looked_in.push(rel.clone());
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let module = module_name(&rel);
        let depth = rel.matches('/').count();
        for line in text.lines() {
            if let Some(var) = flask_app(line) {
                candidates.push((Kind::FlaskApp, depth, format!("{module}:{var}"), path.clone()));
            } else if let Some(f) = factory(line) {
                candidates.push((Kind::Factory, depth, format!("{module}:{f}()"), path.clone()));
            } else if rel.ends_with("wsgi.py")
                && line.contains("get_wsgi_application()")
                && line.trim_start().starts_with("application")
            {
                candidates.push((Kind::Django, depth, format!("{module}:application"), path.clone()));
            } else if line.starts_with("application =") || line.starts_with("application=") {
                candidates.push((Kind::Application, depth, format!("{module}:application"), path.clone()));
            }
        }
    }
    candidates.sort();
    if let Some((_, _, entry, path)) = candidates.into_iter().next() {
        d.entry = Some(entry);
        // Static files next to the app's module (Flask's default `static_folder`).
        if let Some(parent) = path.parent() {
            let s = parent.join("static");
            if s.is_dir() {
                if let Ok(rel) = s.strip_prefix(dir) {
                    d.statics.push(("/static/".into(), rel.to_string_lossy().into_owned()));
                }
            }
        }
    }
    if d.statics.is_empty() && dir.join("static").is_dir() {
        d.statics.push(("/static/".into(), "static".into()));
    }
    d.venv = [".venv", "venv"]
        .into_iter()
        .find(|v| dir.join(v).join("pyvenv.cfg").is_file())
        .map(String::from)
        .or_else(|| {
            let v = PathBuf::from(std::env::var_os("VIRTUAL_ENV")?);
            Some(
                v.strip_prefix(dir)
                    .map(|r| r.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| v.to_string_lossy().into_owned()),
            )
        });
    d.requirements = ["requirements.txt", "pyproject.toml"]
        .into_iter()
        .find(|f| dir.join(f).is_file())
        .map(String::from);
    d
}

/// `NAME = Flask(` at the start of a line.
fn flask_app(line: &str) -> Option<&str> {
    let (var, rest) = line.split_once('=')?;
    let var = var.trim_end();
    (is_name(var) && !line.starts_with(' ') && rest.trim_start().starts_with("Flask(")).then_some(var)
}

/// `def create_app(` / `def make_app(` with no required arguments.
fn factory(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("def ")?;
    let (name, args) = rest.split_once('(')?;
    let no_required = args.starts_with(')')
        || args
            .split(',')
            .all(|a| a.contains('=') || a.trim().starts_with(')') || a.trim().is_empty());
    (matches!(name, "create_app" | "make_app") && no_required).then_some(name)
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_') && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn module_name(rel: &str) -> String {
    let no_ext = rel.trim_end_matches(".py");
    no_ext.trim_end_matches("/__init__").replace('/', ".")
}

/// `.py` files up to `depth` directories down, skipping virtualenvs and hidden directories,
/// sorted so detection does not depend on directory order.
fn python_files(dir: &Path, depth: usize) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, level)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                let skip =
                    name.starts_with('.') || SKIP_DIRS.contains(&name.as_str()) || path.join("pyvenv.cfg").exists();
                if !skip && level < depth {
                    stack.push((path, level + 1));
                }
            } else if name.ends_with(".py") {
                if let Ok(rel) = path.strip_prefix(dir) {
                    out.push((rel.to_string_lossy().into_owned(), path));
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(flask_app("app = Flask(__name__)"), Some("app"));
        assert_eq!(flask_app("    app = Flask(__name__)"), None);
        assert_eq!(factory("def create_app():"), Some("create_app"));
        assert_eq!(factory("def create_app(config=None):"), Some("create_app"));
        assert_eq!(factory("def create_app(config):"), None);
        assert_eq!(module_name("mysite/wsgi.py"), "mysite.wsgi");
        assert_eq!(module_name("pkg/__init__.py"), "pkg");
    }
}
