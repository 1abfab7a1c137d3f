//! Detecting what a `deploy.toml` needs from an existing project directory.
//!
//! Owns: finding the WSGI entry (a framework's app object — Flask, Bottle, Falcon, Pyramid's
//! `make_wsgi_app()` —, a `create_app()` factory, Django's `get_wsgi_application()`, a
//! module-level `application`) and the directory it imports from (`src/` layouts), the
//! virtualenv, the dependencies (`requirements.txt`, or `pyproject.toml`'s
//! `[project].dependencies`) and static directories (Flask's `static/`, Django's
//! `STATIC_ROOT`). Reads files; the one thing it may create is an empty `STATIC_ROOT` inside
//! the project (see [`Detected::create_dirs`]); the `init` command writes `deploy.toml`.

use std::path::{Path, PathBuf};

/// What was found; every field can be overridden by a flag.
#[derive(Debug, Default)]
pub struct Detected {
    pub entry: Option<String>,
    /// The import directory, relative to the project, when it is not the project itself
    /// (`src` for a `src/` layout).
    pub root: Option<String>,
    /// Every place looked at for an entry, for the error when none is found.
    pub looked_in: Vec<String>,
    /// Entries found where a server never sees them (`app = Flask(…)` under
    /// `if __name__ == "__main__":`), for the error when none is found.
    pub near_misses: Vec<String>,
    pub venv: Option<String>,
    /// `requirements.txt`, or `pyproject.toml` when its `[project].dependencies` is the list.
    pub requirements: Option<String>,
    pub statics: Vec<(String, String)>,
    /// Static mounts the project will need but cannot have yet, written commented out, each
    /// with the lines that say why.
    pub pending_statics: Vec<PendingStatic>,
    /// Directories to create so a `[[static]]` entry is valid (an empty Django `STATIC_ROOT`
    /// inside the project, which `collectstatic` fills).
    pub create_dirs: Vec<PathBuf>,
    /// What the user should know or do, each a message and a hint.
    pub notes: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct PendingStatic {
    pub url: String,
    pub dir: String,
    pub why: Vec<String>,
}

/// How sure a candidate entry is; lower wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A framework's app object: `Flask(…)`, `Bottle()`, `falcon.App()`, `make_wsgi_app()`.
    App,
    Factory,
    Django,
    Application,
}

#[derive(Debug)]
struct Candidate {
    kind: Kind,
    depth: usize,
    rel: String,
    attr: String,
    factory: bool,
    path: PathBuf,
}

const SKIP_DIRS: [&str; 9] = [
    "node_modules",
    "__pycache__",
    "site-packages",
    "deploy",
    "tests",
    "test",
    "migrations",
    "docs",
    "build",
];

/// How far below the project `.py` files are read (`src/pkg/sub/app.py` is 3).
const DEPTH: usize = 3;

pub fn detect(dir: &Path) -> Detected {
    let mut d = Detected::default();
    let mut candidates: Vec<Candidate> = Vec::new();
    for (rel, path) in python_files(dir, DEPTH) {
        d.looked_in.push(rel.clone());
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let depth = rel.matches('/').count();
        let asgi_file = rel.ends_with("asgi.py");
        for line in logical_lines(&text) {
            let found = match entry_on(&line.code, &text) {
                Some(f) if !(asgi_file && f.0 == Kind::Application) => f,
                _ => continue,
            };
            let (kind, attr, factory) = found;
            match line.scope {
                Scope::Module => candidates.push(Candidate {
                    kind,
                    depth,
                    rel: rel.clone(),
                    attr,
                    factory,
                    path: path.clone(),
                }),
                Scope::MainGuard if kind != Kind::Factory => d.near_misses.push(format!(
                    "{rel}:{}: `{}` runs only under `if __name__ == \"__main__\":`, which a server never runs",
                    line.number,
                    line.code.trim()
                )),
                _ => {}
            }
        }
    }
    candidates.sort_by(|a, b| (a.kind, a.depth, &a.rel).cmp(&(b.kind, b.depth, &b.rel)));
    if let Some(c) = candidates.into_iter().next() {
        let (root, module) = match c.kind {
            Kind::Django => django_root(dir, &c.rel, &c.path),
            _ => None,
        }
        .unwrap_or_else(|| import_root(dir, &c.rel));
        d.entry = Some(format!("{module}:{}{}", c.attr, if c.factory { "()" } else { "" }));
        d.root = (root != Path::new("")).then(|| root.to_string_lossy().into_owned());
        if c.kind == Kind::Django {
            django_static(dir, &dir.join(&root), &c.path, &mut d);
        } else if let Some(parent) = c.path.parent() {
            // Static files next to the app's module (Flask's default `static_folder`).
            let s = parent.join("static");
            if s.is_dir()
                && let Ok(rel) = s.strip_prefix(dir)
            {
                d.statics.push(("/static/".into(), rel.to_string_lossy().into_owned()));
            }
        }
    }
    if d.statics.is_empty() && d.pending_statics.is_empty() && dir.join("static").is_dir() {
        d.statics.push(("/static/".into(), "static".into()));
    }
    d.venv = [".venv", "venv"]
        .into_iter()
        .find(|v| dir.join(v).join(deployctl_common::venv::PYVENV_CFG).is_file())
        .map(String::from)
        .or_else(|| {
            let v = PathBuf::from(std::env::var_os("VIRTUAL_ENV")?);
            Some(
                v.strip_prefix(dir)
                    .map(|r| r.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| v.to_string_lossy().into_owned()),
            )
        });
    dependencies(dir, &mut d);
    d
}

/// `requirements.txt`, else `pyproject.toml` when it lists `[project].dependencies`.
fn dependencies(dir: &Path, d: &mut Detected) {
    if dir.join("requirements.txt").is_file() {
        d.requirements = Some("requirements.txt".into());
        return;
    }
    let pyproject = dir.join("pyproject.toml");
    if !pyproject.is_file() {
        return;
    }
    match crate::pyproject::dependencies(&pyproject) {
        Ok(_) => d.requirements = Some("pyproject.toml".into()),
        Err(e) => d.notes.push((
            format!("`deployctl up` will install no dependencies: {}", e.message),
            e.hint,
        )),
    }
}

/// The import directory of a file and its module name. The project directory, except in a
/// `src/` layout (PyPA's): there the packages live in `src/`, which is not one itself, so
/// `src/myapp/__init__.py` gives (`src`, `myapp`), not `src.myapp`. Directories without
/// `__init__.py` elsewhere stay part of the module path (namespace packages).
fn import_root(project: &Path, rel: &str) -> (PathBuf, String) {
    let rel = Path::new(rel);
    let mut top = rel.parent().unwrap_or(Path::new("")).to_path_buf();
    while top != Path::new("") && project.join(&top).join("__init__.py").is_file() {
        top = top.parent().unwrap_or(Path::new("")).to_path_buf();
    }
    let root = if top.file_name().is_some_and(|n| n == "src") {
        top
    } else {
        PathBuf::new()
    };
    module_in(rel, &root)
}

/// Django's root is where its settings module imports from: `os.environ.setdefault(
/// "DJANGO_SETTINGS_MODULE", "mysite.settings")` in `x/mysite/wsgi.py` means `x`.
fn django_root(project: &Path, rel: &str, wsgi: &Path) -> Option<(PathBuf, String)> {
    let module = settings_module(&std::fs::read_to_string(wsgi).ok()?)?;
    let settings = module.replace('.', "/");
    let rel = Path::new(rel);
    let root = rel.ancestors().skip(1).find(|dir| {
        let base = project.join(dir).join(&settings);
        base.with_extension("py").is_file() || base.join("__init__.py").is_file()
    })?;
    Some(module_in(rel, root))
}

fn module_in(rel: &Path, root: &Path) -> (PathBuf, String) {
    let inside = rel.strip_prefix(root).unwrap_or(rel);
    let module = inside
        .to_string_lossy()
        .trim_end_matches(".py")
        .trim_end_matches("/__init__")
        .replace('/', ".");
    (root.to_path_buf(), module)
}

/// The entry a statement defines: its kind, the attribute and whether it is a factory.
fn entry_on(code: &str, file: &str) -> Option<(Kind, String, bool)> {
    if let Some(f) = factory(code) {
        return Some((Kind::Factory, f.to_string(), true));
    }
    let (var, rhs) = assignment(code)?;
    let call = rhs.trim();
    let kind = if app_object(call, file) {
        Kind::App
    } else if call.contains("get_wsgi_application(") {
        Kind::Django
    } else if var == "application" && !call.contains("asgi") {
        Kind::Application
    } else {
        return None;
    };
    Some((kind, var.to_string(), false))
}

/// A framework's WSGI app being made: `Flask(…)`, `Bottle()`, `bottle.default_app()`,
/// `falcon.App()` (not `falcon.asgi.App()`), Pyramid's `config.make_wsgi_app()`.
fn app_object(call: &str, file: &str) -> bool {
    let callee = call.split('(').next().unwrap_or("").trim();
    let last = callee.rsplit('.').next().unwrap_or(callee);
    match last {
        "Flask" => callee == "Flask" || callee == "flask.Flask",
        "Bottle" => callee == "Bottle" || callee == "bottle.Bottle",
        "default_app" => callee == "default_app" || callee == "bottle.default_app",
        "App" | "API" => {
            let falcon_wsgi = callee == "falcon.App" || callee == "falcon.API";
            let imported = callee == last && file.contains("from falcon import") && !file.contains("falcon.asgi");
            falcon_wsgi || imported
        }
        "make_wsgi_app" => callee.contains('.'),
        _ => false,
    }
}

/// `NAME = RHS` (one plain name on the left).
fn assignment(code: &str) -> Option<(&str, &str)> {
    let (var, rhs) = code.split_once('=')?;
    let var = var.trim();
    if rhs.starts_with('=') || var.ends_with(['!', '<', '>', '+', '-', '*', '/', '%', '|', '&', '^', ':']) {
        return None;
    }
    is_name(var).then_some((var, rhs))
}

/// `def create_app(` / `def make_app(` with no required arguments.
fn factory(code: &str) -> Option<&str> {
    let rest = code.strip_prefix("def ")?;
    let (name, args) = rest.split_once('(')?;
    let args = args.split(')').next().unwrap_or("");
    let no_required = args.split(',').all(|a| {
        let a = a.trim();
        a.is_empty() || a.contains('=') || a.starts_with('*')
    });
    (matches!(name.trim(), "create_app" | "make_app") && no_required).then_some(name.trim())
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_') && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Where a statement is: what an import runs (`Module`, including inside `with`, `if`, `try`
/// blocks), inside a function or class body, or under `if __name__ == "__main__":`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Module,
    Nested,
    MainGuard,
}

#[derive(Debug)]
struct LogicalLine {
    /// 1-based number of its first physical line.
    number: usize,
    /// The statement without its indentation and comments; continuation lines joined.
    code: String,
    scope: Scope,
}

/// The statements of a Python file with the scope each is in, from indentation, brackets and
/// strings (enough of Python's tokenizer to not be fooled by a docstring or a wrapped call).
fn logical_lines(text: &str) -> Vec<LogicalLine> {
    let mut out = Vec::new();
    let mut blocks: Vec<(usize, Scope)> = Vec::new();
    let mut depth = 0usize;
    let mut triple: Option<&str> = None;
    let mut current: Option<(usize, usize, String)> = None; // (number, indent, code)
    for (i, raw) in text.lines().enumerate() {
        let starts_statement = depth == 0 && triple.is_none() && current.is_none();
        let code = strip_line(raw, &mut depth, &mut triple);
        if starts_statement {
            if code.trim().is_empty() {
                continue;
            }
            let indent = raw.len() - raw.trim_start().len();
            current = Some((i + 1, indent, code.trim().to_string()));
        } else if let Some((_, _, c)) = current.as_mut() {
            c.push(' ');
            c.push_str(code.trim());
        }
        let continued = depth > 0 || triple.is_some() || raw.trim_end().ends_with('\\');
        if continued {
            continue;
        }
        let Some((number, indent, code)) = current.take() else {
            continue;
        };
        while blocks.last().is_some_and(|(i, _)| *i >= indent) {
            blocks.pop();
        }
        let scope = if blocks.iter().any(|(_, s)| *s == Scope::Nested) {
            Scope::Nested
        } else if blocks.iter().any(|(_, s)| *s == Scope::MainGuard) {
            Scope::MainGuard
        } else {
            Scope::Module
        };
        if code.ends_with(':') {
            let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
            let kind = if code.starts_with("def ") || code.starts_with("async def ") || code.starts_with("class ") {
                Scope::Nested
            } else if compact == "if__name__=='__main__':" || compact == "if__name__==\"__main__\":" {
                Scope::MainGuard
            } else {
                Scope::Module
            };
            blocks.push((indent, kind));
        }
        out.push(LogicalLine { number, code, scope });
    }
    out
}

/// One physical line with comments removed and string contents kept, updating the bracket
/// depth and whether a triple-quoted string is open.
fn strip_line(line: &str, depth: &mut usize, triple: &mut Option<&'static str>) -> String {
    let mut out = String::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut single: Option<u8> = None;
    while i < bytes.len() {
        let rest = &line[i..];
        if let Some(t) = *triple {
            if rest.starts_with(t) {
                *triple = None;
                out.push_str(t);
                i += 3;
            } else {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            continue;
        }
        let c = bytes[i];
        if let Some(q) = single {
            out.push(c as char);
            if c == b'\\' && i + 1 < bytes.len() {
                out.push(bytes[i + 1] as char);
                i += 2;
                continue;
            }
            if c == q {
                single = None;
            }
            i += 1;
            continue;
        }
        match c {
            b'#' => break,
            b'"' | b'\'' => {
                if rest.starts_with("\"\"\"") {
                    *triple = Some("\"\"\"");
                    out.push_str("\"\"\"");
                    i += 3;
                    continue;
                }
                if rest.starts_with("'''") {
                    *triple = Some("'''");
                    out.push_str("'''");
                    i += 3;
                    continue;
                }
                single = Some(c);
            }
            b'(' | b'[' | b'{' => *depth += 1,
            b')' | b']' | b'}' => *depth = depth.saturating_sub(1),
            _ => {}
        }
        // Multi-byte characters are copied whole.
        let ch = rest.chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Django: `STATIC_URL` and `STATIC_ROOT` from the settings module `wsgi.py` names.
fn django_static(project: &Path, root: &Path, wsgi: &Path, d: &mut Detected) {
    let Ok(wsgi_text) = std::fs::read_to_string(wsgi) else {
        return;
    };
    let Some(module) = settings_module(&wsgi_text) else {
        return;
    };
    let base = root.join(module.replace('.', "/"));
    let Some(settings) = [base.with_extension("py"), base.join("__init__.py")]
        .into_iter()
        .find(|p| p.is_file())
    else {
        return;
    };
    let Ok(text) = std::fs::read_to_string(&settings) else {
        return;
    };
    let shown = settings
        .strip_prefix(project)
        .unwrap_or(&settings)
        .to_string_lossy()
        .into_owned();
    let mut static_url = None;
    let mut static_root = None;
    let mut base_dir = None;
    for line in logical_lines(&text).into_iter().filter(|l| l.scope == Scope::Module) {
        let Some((var, rhs)) = assignment(&line.code) else {
            continue;
        };
        match var {
            "STATIC_URL" => static_url = string_literal(rhs),
            "STATIC_ROOT" => static_root = Some(rhs.trim().to_string()),
            "BASE_DIR" => base_dir = ancestor_of(rhs, &settings),
            _ => {}
        }
    }
    let url = match static_url.as_deref() {
        None => "/static/".to_string(),
        Some(u) if u.contains("://") || u.starts_with("//") => {
            d.notes.push((
                format!("{shown} serves static files from {u} (STATIC_URL), so deploy.toml mounts none"),
                "add a `[[static]]` entry by hand if this server should serve them too".into(),
            ));
            return;
        }
        Some(u) => format!("/{}/", u.trim_matches('/')),
    };
    let Some(expr) = static_root.filter(|e| e != "None") else {
        d.pending_statics.push(PendingStatic {
            url: url.clone(),
            dir: "staticfiles".into(),
            why: vec![
                format!("Django serves no static files itself: set STATIC_ROOT in {shown}"),
                "(e.g. STATIC_ROOT = BASE_DIR / \"staticfiles\"), run `python manage.py collectstatic`,".into(),
                "then uncomment (or run `deployctl init --force` again):".into(),
            ],
        });
        d.notes.push((
            format!("STATIC_ROOT is not set in {shown}: no static files will be served (the admin's CSS included)"),
            format!(
                "add `STATIC_ROOT = BASE_DIR / \"staticfiles\"` to {shown}, run `python manage.py collectstatic`, \
                 then `deployctl init --force`"
            ),
        ));
        return;
    };
    let Some(dir) = path_expr(&expr, base_dir.as_deref()) else {
        d.notes.push((
            format!("cannot tell which directory STATIC_ROOT = {expr} in {shown} is"),
            format!("pass it to init: `--static {url}=DIR`"),
        ));
        return;
    };
    let rel = dir
        .strip_prefix(project)
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_else(|_| dir.to_string_lossy().into_owned());
    if !dir.is_dir() {
        if dir.starts_with(project) {
            d.create_dirs.push(dir.clone());
            d.notes.push((
                format!("created {rel}/ (STATIC_ROOT of {shown}), empty for now"),
                "run `python manage.py collectstatic` to fill it; the front serves it at once".into(),
            ));
        } else {
            d.pending_statics.push(PendingStatic {
                url,
                dir: rel.clone(),
                why: vec![
                    format!("STATIC_ROOT ({rel}) does not exist yet: run `python manage.py collectstatic`,"),
                    "then uncomment:".into(),
                ],
            });
            d.notes.push((
                format!("STATIC_ROOT {rel} of {shown} does not exist yet, so its [[static]] entry is commented out"),
                "run `python manage.py collectstatic`, then `deployctl init --force`".into(),
            ));
            return;
        }
    }
    d.statics.push((url, rel));
}

/// `os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")`.
fn settings_module(wsgi: &str) -> Option<String> {
    let at = wsgi.find("DJANGO_SETTINGS_MODULE")?;
    let rest = &wsgi[at + "DJANGO_SETTINGS_MODULE".len()..];
    let rest = rest.trim_start_matches(['"', '\'']).trim_start();
    let rest = rest.strip_prefix(',')?.trim_start();
    string_literal(rest.split(')').next()?)
}

/// The text of a plain string literal (`'static/'`, `"x"`).
fn string_literal(s: &str) -> Option<String> {
    let s = s.trim();
    let q = s.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let inner = s.strip_prefix(q)?.strip_suffix(q)?;
    (!inner.contains(q)).then(|| inner.to_string())
}

/// `BASE_DIR` from `Path(__file__).resolve().parent.parent` or
/// `os.path.dirname(os.path.dirname(os.path.abspath(__file__)))`: that many levels above the
/// settings file.
fn ancestor_of(expr: &str, file: &Path) -> Option<PathBuf> {
    if !expr.contains("__file__") {
        return None;
    }
    let levels = expr.matches(".parent").count() + expr.matches("dirname(").count();
    let mut p = file.to_path_buf();
    for _ in 0..levels {
        p = p.parent()?.to_path_buf();
    }
    (levels > 0).then_some(p)
}

/// A path expression of a settings file: `BASE_DIR / "static"`, `os.path.join(BASE_DIR,
/// "a", "b")`, `str(BASE_DIR / "x")`, or an absolute string literal.
fn path_expr(expr: &str, base: Option<&Path>) -> Option<PathBuf> {
    let e = expr.trim();
    let e = e
        .strip_prefix("str(")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(e)
        .trim();
    if let Some(s) = string_literal(e) {
        return Path::new(&s).is_absolute().then(|| PathBuf::from(s));
    }
    let parts: Vec<&str> = if let Some(args) = e.strip_prefix("os.path.join(").and_then(|r| r.strip_suffix(')')) {
        args.split(',').map(str::trim).collect()
    } else {
        e.split('/').map(str::trim).collect()
    };
    let (first, rest) = parts.split_first()?;
    if *first != "BASE_DIR" {
        return None;
    }
    let mut p = base?.to_path_buf();
    for part in rest {
        p.push(string_literal(part)?);
    }
    Some(p)
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
                let skip = name.starts_with('.')
                    || SKIP_DIRS.contains(&name.as_str())
                    || path.join(deployctl_common::venv::PYVENV_CFG).exists();
                if !skip && level < depth {
                    stack.push((path, level + 1));
                }
            } else if name.ends_with(".py")
                && let Ok(rel) = path.strip_prefix(dir)
            {
                out.push((rel.to_string_lossy().into_owned(), path));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<(Kind, String, Scope)> {
        logical_lines(text)
            .into_iter()
            .filter_map(|l| entry_on(&l.code, text).map(|(k, a, _)| (k, a, l.scope)))
            .collect()
    }

    #[test]
    fn statements() {
        assert_eq!(factory("def create_app():"), Some("create_app"));
        assert_eq!(factory("def create_app(config=None):"), Some("create_app"));
        assert_eq!(factory("def create_app(*args, **kw) -> Flask:"), Some("create_app"));
        assert_eq!(factory("def create_app(config):"), None);
        assert_eq!(assignment("app == Flask(x)"), None);
        assert_eq!(assignment("app: Flask = Flask(x)"), None);
    }

    #[test]
    fn frameworks() {
        let e = entries("import bottle\napp = bottle.Bottle()\napplication = bottle.default_app()\n");
        assert_eq!(e[0], (Kind::App, "app".into(), Scope::Module));
        assert_eq!(e[1], (Kind::App, "application".into(), Scope::Module));
        let e = entries("import falcon\napp = falcon.App(middleware=[\n    X(),\n])\n");
        assert_eq!(e, [(Kind::App, "app".into(), Scope::Module)]);
        assert!(entries("import falcon.asgi\napp = falcon.asgi.App()\n").is_empty());
        assert!(entries("from falcon.asgi import App\napp = App()\n").is_empty());
        let e = entries("from falcon import App\napp = App()\n");
        assert_eq!(e, [(Kind::App, "app".into(), Scope::Module)]);
        let pyramid = "from pyramid.config import Configurator\n\
                       with Configurator() as config:\n    config.add_route('home', '/')\n    app = config.make_wsgi_app()\n";
        assert_eq!(entries(pyramid), [(Kind::App, "app".into(), Scope::Module)]);
        let e = entries("application = get_asgi_application()\n");
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn scopes() {
        let text = "\"\"\"Docs: app = Flask(x)\n\"\"\"\nif __name__ == '__main__':\n    app = Flask(__name__)\n\
                    def build():\n    app = Flask(__name__)\n    return app\napp = Flask(\n    __name__,\n)  # the app\n";
        assert_eq!(
            entries(text),
            [
                (Kind::App, "app".into(), Scope::MainGuard),
                (Kind::App, "app".into(), Scope::Nested),
                (Kind::App, "app".into(), Scope::Module),
            ]
        );
        let lines = logical_lines(text);
        assert_eq!(lines.last().unwrap().number, 8);
    }

    #[test]
    fn django_paths() {
        let settings = Path::new("/p/mysite/settings.py");
        let base = ancestor_of("Path(__file__).resolve().parent.parent", settings).unwrap();
        assert_eq!(base, Path::new("/p"));
        let base2 = ancestor_of("os.path.dirname(os.path.dirname(os.path.abspath(__file__)))", settings).unwrap();
        assert_eq!(base2, Path::new("/p"));
        assert_eq!(
            path_expr("BASE_DIR / 'staticfiles'", Some(&base)),
            Some(PathBuf::from("/p/staticfiles"))
        );
        assert_eq!(
            path_expr("os.path.join(BASE_DIR, \"var\", 'static')", Some(&base)),
            Some(PathBuf::from("/p/var/static"))
        );
        assert_eq!(
            path_expr("str(BASE_DIR / \"s\")", Some(&base)),
            Some(PathBuf::from("/p/s"))
        );
        assert_eq!(path_expr("'/srv/static'", None), Some(PathBuf::from("/srv/static")));
        assert_eq!(path_expr("env('STATIC_ROOT')", Some(&base)), None);
        assert_eq!(
            settings_module("os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n").as_deref(),
            Some("mysite.settings")
        );
    }
}
