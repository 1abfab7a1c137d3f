//! Raw model → [`Spec`]: defaults (the values of [`crate::defaults`]), paths, and every rule
//! spanning keys.
//!
//! Problems are collected, not returned at the first one, so a user fixes a file in one pass.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::diag::{Diagnostic, SpecError};
use super::raw::{self, DurationOrInt, RawSpec, SizeOrInt, Workers};
use super::refusals;
use super::units::{Seconds, Size, parse_duration, parse_size};
use super::*;
use crate::defaults;
use crate::target::{Backend, Frontend, Target};

pub fn resolve(path: &Path, source: &str) -> Result<Spec, SpecError> {
    let fail = |diagnostics| SpecError {
        path: path.to_path_buf(),
        source: source.to_string(),
        diagnostics,
    };
    let raw: RawSpec = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => {
            let d = super::plain::diagnostic(source, e.span().unwrap_or(0..0), e.message());
            return Err(fail(vec![d]));
        }
    };
    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut r = Resolver {
        dir,
        problems: Vec::new(),
    };
    let spec = r.spec(path, raw);
    if r.problems.is_empty() {
        Ok(spec)
    } else {
        Err(fail(r.problems))
    }
}

/// Which configs a path goes into, each adding its own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PathUse {
    /// systemd units (and nginx): any UTF-8 without control characters.
    Units,
    /// Also uWSGI option values.
    Uwsgi,
    /// The app's directory: also Gunicorn's working directory.
    AppDir,
}

pub(super) struct Resolver {
    dir: PathBuf,
    problems: Vec<Diagnostic>,
}

impl Resolver {
    pub(super) fn problem(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.problems.push(Diagnostic::new(span, key, message));
    }

    pub(super) fn problem_hint(
        &mut self,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.problems.push(Diagnostic::new(span, key, message).hint(hint));
    }

    pub(super) fn abs(&self, p: &str) -> PathBuf {
        let joined = self.dir.join(p);
        // Lexical normalisation: `./static` and `static/` name the same directory in output.
        let mut out = PathBuf::new();
        for c in joined.components() {
            match c {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    out.pop();
                }
                c => out.push(c),
            }
        }
        out
    }

    /// A path that goes into config files must be UTF-8 and hold nothing the configs that
    /// read it cannot represent ([`refusals`] has each rule).
    /// The message shows the value as written when the problem is in it, else the whole path.
    fn renderable_path(&mut self, span: Range<usize>, key: &str, written: Option<&str>, p: &Path, used: PathUse) {
        let Some(full) = p.to_str() else {
            self.problem(span, key, format!("{} is not valid UTF-8", p.display()));
            return;
        };
        let problem = |text: &str| {
            refusals::control_char_problem(text)
                .or_else(|| {
                    (used >= PathUse::Uwsgi)
                        .then(|| refusals::uwsgi_problem(text))
                        .flatten()
                })
                .or_else(|| {
                    (used == PathUse::AppDir)
                        .then(|| refusals::gunicorn_problem(text))
                        .flatten()
                })
        };
        let found = written
            .and_then(|w| problem(w).map(|why| (w, why)))
            .or_else(|| problem(full).map(|why| (full, why)));
        if let Some((text, why)) = found {
            self.problem_hint(
                span,
                key,
                format!("{text:?} {why}"),
                "rename the directory, or move the project to a path without it",
            );
        }
    }

    /// An absolute path given as written: systemd refuses `..` in it ("path is not
    /// normalized"), and it must be renderable.
    pub(super) fn absolute_path(&mut self, span: Range<usize>, key: &str, p: &Path) {
        if p.components().any(|c| c == std::path::Component::ParentDir) {
            self.problem(
                span,
                key,
                format!("{:?} must not contain `..`", p.display().to_string()),
            );
        } else {
            self.renderable_path(span, key, p.to_str(), p, PathUse::Units);
        }
    }

    fn existing_dir(&mut self, v: &Spanned<String>, key: &str) -> PathBuf {
        let p = self.abs(v.get_ref());
        if !p.is_dir() {
            let what = if p.exists() {
                "is not a directory"
            } else {
                "does not exist"
            };
            self.problem_hint(
                v.span(),
                key,
                format!("{:?} {what}", v.get_ref()),
                "relative paths are resolved against the directory holding deploy.toml",
            );
        }
        p
    }

    fn spec(&mut self, path: &Path, raw: RawSpec) -> Spec {
        let venv_raw = raw.app.venv.as_ref().map(|v| (v.span(), v.get_ref().clone()));
        let deployctl_raw = raw
            .systemd
            .as_ref()
            .and_then(|s| s.deployctl.as_ref())
            .map(|d| (d.span(), d.get_ref().clone()));
        let app = self.app(raw.app);
        let server = self.server(raw.server);
        let statics = self.statics(raw.statics);
        let backend = self.backend(raw.backend.as_ref());
        let frontend = self.frontend(raw.frontend.as_ref());
        self.pair(&raw.frontend, &raw.backend, frontend.kind, backend.kind);
        let health = self.health(raw.health);
        let systemd = self.systemd(raw.systemd);
        let render = self.render(raw.render);
        let tls = self.tls(raw.tls, &server);
        let cluster = super::cluster::resolve(raw.cluster, &app.name, &mut self.problems);
        // The program the units of this backend start: systemd cannot start every path.
        let (key, program, written) = match (backend.kind, backend.uwsgi_build) {
            (Backend::Gunicorn, _) => ("app.venv", Some(crate::venv::bin(&app.venv, "gunicorn")), venv_raw),
            (Backend::Uwsgi, UwsgiBuild::Pip) => ("app.venv", Some(crate::venv::bin(&app.venv, "uwsgi")), venv_raw),
            (Backend::Uwsgi, UwsgiBuild::Debian) => ("", None, None),
            (Backend::Embedded | Backend::ModWsgi, _) => {
                ("systemd.deployctl", Some(systemd.deployctl.clone()), deployctl_raw)
            }
        };
        if let Some(program) = program.as_ref().and_then(|p| p.to_str()) {
            // Shown as written when the problem is there, else the whole path.
            let (span, shown) = match &written {
                Some((span, w)) if refusals::systemd_executable_problem(w).is_some() => (span.clone(), w.as_str()),
                Some((span, _)) => (span.clone(), program),
                None => (0..0, program),
            };
            if let Some(why) = refusals::systemd_executable_problem(program) {
                self.problem_hint(
                    span,
                    key,
                    format!("{shown:?} {why}"),
                    format!(
                        "the units of the {} backend start it: use a path without them",
                        backend.kind.name()
                    ),
                );
            }
        }
        Spec {
            path: path.to_path_buf(),
            app,
            server,
            statics,
            backend,
            frontend,
            health,
            systemd,
            render,
            tls,
            cluster,
        }
    }

    fn app(&mut self, a: raw::RawApp) -> App {
        let name = match &a.name {
            Some(n) => {
                let len = n.get_ref().chars().count();
                if len > MAX_NAME {
                    self.problem(
                        n.span(),
                        "app.name",
                        format!("{:?} is {len} characters long; the limit is {MAX_NAME}", n.get_ref()),
                    );
                } else if !is_unit_name(n.get_ref()) {
                    self.problem(n.span(), "app.name", format!("{:?} is not a valid name: use letters, digits, `-`, `_` and `.`, starting with a letter or digit", n.get_ref()));
                }
                n.get_ref().clone()
            }
            None => {
                let dir_name = self.dir.file_name().and_then(|s| s.to_str()).unwrap_or("app");
                let name = sanitize_name(dir_name);
                if !is_unit_name(&name) {
                    let why = if name.len() > MAX_NAME {
                        format!(" (the limit is {MAX_NAME} characters)")
                    } else {
                        String::new()
                    };
                    self.problem_hint(
                        0..0,
                        "app.name",
                        format!("cannot derive a name from directory {dir_name:?}{why}"),
                        "set `name` in [app]",
                    );
                }
                name
            }
        };
        let entry = match parse_entry(a.entry.get_ref()) {
            Ok(e) => e,
            Err(msg) => {
                self.problem_hint(
                    a.entry.span(),
                    "app.entry",
                    msg,
                    "write `module:attr` (e.g. \"app:app\") or `module:factory()` (e.g. \"app:create_app()\")",
                );
                Entry {
                    module: String::new(),
                    attr: String::new(),
                    factory: false,
                }
            }
        };
        // Every backend reads the root and the virtualenv, uWSGI among them.
        let root = match &a.root {
            Some(r) => {
                let p = self.existing_dir(r, "app.root");
                self.renderable_path(r.span(), "app.root", Some(r.get_ref()), &p, PathUse::AppDir);
                p
            }
            None => {
                let dir = self.dir.clone();
                self.renderable_path(0..0, "app.root", None, &dir, PathUse::AppDir);
                dir
            }
        };
        let venv = match &a.venv {
            Some(v) => {
                let p = self.abs(v.get_ref());
                self.renderable_path(v.span(), "app.venv", Some(v.get_ref()), &p, PathUse::Uwsgi);
                p
            }
            None => {
                let p = self.abs(defaults::VENV);
                if a.root.is_some() {
                    // Otherwise the directory was checked as the root.
                    self.renderable_path(0..0, "app.venv", None, &p, PathUse::Uwsgi);
                }
                p
            }
        };
        let requirements = match &a.requirements {
            Some(r) => {
                let p = self.abs(r.get_ref());
                if !p.is_file() {
                    self.problem(r.span(), "app.requirements", format!("{} does not exist", p.display()));
                }
                Some(p)
            }
            None => Some(self.abs(defaults::REQUIREMENTS)).filter(|p| p.is_file()),
        };
        let mut env = BTreeMap::new();
        if let Some(e) = a.env {
            let span = e.span();
            for (k, v) in e.into_inner() {
                if !is_env_name(&k) {
                    self.problem(
                        span.clone(),
                        "app.env",
                        format!("{k:?} is not a valid environment variable name"),
                    );
                } else if let Some(why) = refusals::control_char_problem(&v) {
                    self.problem(span.clone(), "app.env", format!("the value of {k} {why}"));
                }
                env.insert(k, v);
            }
        }
        let secret_env = self.secret_env(a.secret_env, &env);
        App {
            name,
            entry,
            root,
            venv,
            requirements,
            env,
            secret_env,
        }
    }

    /// `[app].secret_env`: names only, each a valid name, once, and not also in `env` (a
    /// value there would be inlined in the output).
    fn secret_env(&mut self, raw: Option<Spanned<Vec<String>>>, env: &BTreeMap<String, String>) -> Vec<String> {
        let Some(raw) = raw else { return Vec::new() };
        let span = raw.span();
        let mut out: Vec<String> = Vec::new();
        for name in raw.into_inner() {
            if !is_env_name(&name) {
                self.problem(
                    span.clone(),
                    "app.secret_env",
                    format!("{name:?} is not a valid environment variable name"),
                );
            } else if env.contains_key(&name) {
                self.problem_hint(
                    span.clone(),
                    "app.secret_env",
                    format!("{name} is also in app.env, with its value"),
                    "a secret's value is never written in deploy.toml: remove it from env",
                );
            } else if out.contains(&name) {
                self.problem(span.clone(), "app.secret_env", format!("{name} is listed twice"));
            }
            out.push(name);
        }
        out
    }

    fn server(&mut self, s: Option<raw::RawServer>) -> Server {
        let s = s.unwrap_or(raw::RawServer {
            names: None,
            listen: None,
            max_body: None,
            timeout: None,
            forwarded_allow_ips: None,
        });
        let names = match s.names {
            Some(n) => {
                if n.get_ref().is_empty() {
                    self.problem(n.span(), "server.names", "must name at least one host");
                }
                // Kept as nginx compares them: lower case, internationalised names in punycode.
                // Each as written and as nginx sees it, to name duplicates.
                let mut names: Vec<(&String, String)> = Vec::new();
                for h in n.get_ref() {
                    match refusals::nginx_server_name(h) {
                        Ok(ascii) => match names.iter().find(|(_, a)| *a == ascii) {
                            Some((first, _)) => {
                                let message = if *first == h {
                                    format!("{h:?} is listed twice")
                                } else {
                                    format!("{h:?} is listed twice: {first:?} is the same host ({ascii})")
                                };
                                self.problem(n.span(), "server.names", message);
                            }
                            None => names.push((h, ascii)),
                        },
                        Err(why) => self.problem_hint(
                            n.span(),
                            "server.names",
                            why,
                            "write host names (`example.com`, `bücher.example`), wildcards (`*.example.com`, \
                             `.example.com`, `example.*`) or IP addresses",
                        ),
                    }
                }
                names.into_iter().map(|(_, ascii)| ascii).collect()
            }
            None => defaults::SERVER_NAMES.map(String::from).to_vec(),
        };
        let listen = match &s.listen {
            Some(l) => match parse_listen(l.get_ref()) {
                Ok(l) => l,
                Err(msg) => {
                    self.problem_hint(
                        l.span(),
                        "server.listen",
                        msg,
                        "write `host:port`, e.g. \"0.0.0.0:80\" or \"[::]:8080\"",
                    );
                    defaults::listen()
                }
            },
            None => defaults::listen(),
        };
        let max_body = self.size(s.max_body.as_ref(), "server.max_body", defaults::MAX_BODY);
        let timeout = self.duration(s.timeout.as_ref(), "server.timeout", defaults::TIMEOUT);
        let forwarded_allow_ips = match s.forwarded_allow_ips {
            Some(ips) => {
                for ip in ips.get_ref() {
                    if ip != "*" && ip.parse::<IpAddr>().is_err() {
                        self.problem(
                            ips.span(),
                            "server.forwarded_allow_ips",
                            format!("{ip:?} is not an IP address or \"*\""),
                        );
                    }
                }
                ips.into_inner()
            }
            None => defaults::FORWARDED_ALLOW_IPS.map(String::from).to_vec(),
        };
        Server {
            names,
            listen,
            max_body,
            timeout,
            forwarded_allow_ips,
        }
    }

    fn size(&mut self, v: Option<&Spanned<SizeOrInt>>, key: &str, default: Size) -> Size {
        let Some(v) = v else { return default };
        let parsed = match v.get_ref() {
            SizeOrInt::Text(t) => parse_size(t),
            SizeOrInt::Int(n) => u64::try_from(*n).map(Size).map_err(|_| format!("{n} is negative")),
        };
        self.positive(parsed.map(|s| s.0), v.span(), key).map_or(default, Size)
    }

    fn duration(&mut self, v: Option<&Spanned<DurationOrInt>>, key: &str, default: Seconds) -> Seconds {
        let Some(v) = v else { return default };
        let parsed = match v.get_ref() {
            DurationOrInt::Text(t) => parse_duration(t),
            DurationOrInt::Int(n) => u64::try_from(*n).map(Seconds).map_err(|_| format!("{n} is negative")),
        };
        self.positive(parsed.map(|s| s.0), v.span(), key)
            .map_or(default, Seconds)
    }

    /// A parsed amount that must be above zero; problems are recorded and give `None`.
    fn positive(&mut self, parsed: Result<u64, String>, span: Range<usize>, key: &str) -> Option<u64> {
        match parsed {
            Ok(0) => {
                self.problem(span, key, "must be greater than zero");
                None
            }
            Ok(n) => Some(n),
            Err(msg) => {
                self.problem(span, key, msg);
                None
            }
        }
    }

    fn statics(&mut self, raw: Vec<Spanned<raw::RawStatic>>) -> Vec<Static> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut out = Vec::new();
        for (i, s) in raw.into_iter().enumerate() {
            let s = s.into_inner();
            let key = |k: &str| format!("static[{i}].{k}");
            let url = s.url.get_ref().clone();
            if let Some(why) = refusals::url_prefix_problem(&url) {
                self.problem_hint(s.url.span(), &key("url"), why, "e.g. url = \"/static/\"");
            } else if let Some(first) = seen.insert(url.clone(), i) {
                self.problem(
                    s.url.span(),
                    &key("url"),
                    format!("{url:?} is already mounted by static[{first}]"),
                );
            }
            let dir = self.existing_dir(&s.dir, &key("dir"));
            // nginx serves it, and uWSGI when it serves static files itself.
            self.renderable_path(s.dir.span(), &key("dir"), Some(s.dir.get_ref()), &dir, PathUse::Uwsgi);
            let expires = self.duration(s.expires.as_ref(), &key("expires"), defaults::STATIC_EXPIRES);
            out.push(Static { url, dir, expires });
        }
        out
    }

    fn backend(&mut self, b: Option<&raw::RawBackend>) -> BackendSettings {
        let kind = match b.and_then(|b| b.kind.as_ref()) {
            Some(k) => k.get_ref().parse().unwrap_or_else(|msg: String| {
                self.problem(k.span(), "backend.kind", msg);
                defaults::BACKEND
            }),
            None => defaults::BACKEND,
        };
        let workers = match b.and_then(|b| b.workers.as_ref()) {
            Some(w) => match *w.get_ref() {
                Workers::Auto => None,
                Workers::Count(n) if (1..=1024).contains(&n) => Some(n as u32),
                Workers::Count(n) => {
                    self.problem(
                        w.span(),
                        "backend.workers",
                        format!("{n} is out of range (1 to 1024, or \"auto\")"),
                    );
                    None
                }
            },
            None => None,
        };
        let threads = match b.and_then(|b| b.threads.as_ref()) {
            Some(t) if (1..=256).contains(t.get_ref()) => *t.get_ref() as u32,
            Some(t) => {
                self.problem(
                    t.span(),
                    "backend.threads",
                    format!("{} is out of range (1 to 256)", t.get_ref()),
                );
                defaults::THREADS
            }
            None => defaults::THREADS,
        };
        let graceful_timeout = self.duration(
            b.and_then(|b| b.graceful_timeout.as_ref()),
            "backend.graceful_timeout",
            defaults::GRACEFUL_TIMEOUT,
        );
        let uwsgi_build = match b.and_then(|b| b.uwsgi_build.as_ref()) {
            Some(u) => match u.get_ref().as_str() {
                "debian" => UwsgiBuild::Debian,
                "pip" => UwsgiBuild::Pip,
                other => {
                    self.problem(
                        u.span(),
                        "backend.uwsgi_build",
                        format!("unknown uWSGI build {other:?}; expected \"debian\" or \"pip\""),
                    );
                    defaults::UWSGI_BUILD
                }
            },
            None => defaults::UWSGI_BUILD,
        };
        BackendSettings {
            kind,
            workers,
            threads,
            graceful_timeout,
            uwsgi_build,
        }
    }

    fn frontend(&mut self, f: Option<&raw::RawFrontend>) -> FrontendSettings {
        let kind = match f.and_then(|f| f.kind.as_ref()) {
            Some(k) => k.get_ref().parse().unwrap_or_else(|msg: String| {
                self.problem(k.span(), "frontend.kind", msg);
                defaults::FRONTEND
            }),
            None => defaults::FRONTEND,
        };
        let group = match f.and_then(|f| f.group.as_ref()) {
            Some(g) => {
                let len = g.get_ref().chars().count();
                if len > MAX_ACCOUNT {
                    self.problem(
                        g.span(),
                        "frontend.group",
                        format!("{:?} is {len} characters long; the limit is {MAX_ACCOUNT}", g.get_ref()),
                    );
                } else if !is_user_name(g.get_ref()) {
                    self.problem(
                        g.span(),
                        "frontend.group",
                        format!("{:?} is not a valid group name", g.get_ref()),
                    );
                }
                g.get_ref().clone()
            }
            None => defaults::FRONTEND_GROUP.into(),
        };
        FrontendSettings { kind, group }
    }

    /// The frontend/backend pair must be a chain design.md lists, and one this build renders.
    fn pair(&mut self, f: &Option<raw::RawFrontend>, b: &Option<raw::RawBackend>, fe: Frontend, be: Backend) {
        let target = Target::new(fe, be);
        if target.is_implemented() {
            return;
        }
        let fe_span = f.as_ref().and_then(|f| f.kind.as_ref().map(|k| k.span()));
        let be_span = b.as_ref().and_then(|b| b.kind.as_ref().map(|k| k.span()));
        // Blame the key that makes the chain impossible: a frontend no implemented target
        // uses (apache) is wrong whatever the backend; otherwise the backend is.
        let frontend_unbuilt = !Target::implemented().any(|t| t.frontend == fe);
        let (span, key, message) = match (fe_span, be_span) {
            (Some(span), _) if frontend_unbuilt => (
                span,
                "frontend.kind",
                format!("frontend {:?} is planned but not implemented yet", fe.name()),
            ),
            (_, Some(span)) | (Some(span), None) => {
                let what = if target.is_designed() {
                    "is planned but not implemented yet"
                } else {
                    "is not a possible chain"
                };
                let key = if b.as_ref().is_some_and(|b| b.kind.is_some()) {
                    "backend.kind"
                } else {
                    "frontend.kind"
                };
                (
                    span,
                    key,
                    format!("frontend {:?} with backend {:?} {what}", fe.name(), be.name()),
                )
            }
            (None, None) => (0..0, "backend.kind", format!("target `{target}` is not implemented")),
        };
        self.problem_hint(
            span,
            key,
            message,
            format!("valid targets: {}", Target::implemented_list()),
        );
    }

    fn health(&mut self, h: Option<raw::RawHealth>) -> Health {
        let path = match h.as_ref().and_then(|h| h.path.as_ref()) {
            Some(p) => {
                if !p.get_ref().starts_with('/') || p.get_ref().contains(char::is_whitespace) {
                    self.problem(
                        p.span(),
                        "health.path",
                        format!("{:?} must be a path starting with `/`", p.get_ref()),
                    );
                }
                p.get_ref().clone()
            }
            None => defaults::HEALTH_PATH.into(),
        };
        let expect = match h.as_ref().and_then(|h| h.expect.as_ref()) {
            Some(e) if (100..=599).contains(e.get_ref()) => Some(*e.get_ref() as u16),
            Some(e) => {
                self.problem(
                    e.span(),
                    "health.expect",
                    format!("{} is not an HTTP status (100 to 599)", e.get_ref()),
                );
                None
            }
            None => None,
        };
        let timeout = self.duration(
            h.as_ref().and_then(|h| h.timeout.as_ref()),
            "health.timeout",
            defaults::HEALTH_TIMEOUT,
        );
        Health { path, expect, timeout }
    }

    fn systemd(&mut self, s: Option<raw::RawSystemd>) -> Systemd {
        let s = s.unwrap_or(raw::RawSystemd {
            user: None,
            group: None,
            deployctl: None,
            memory_deny_write_execute: None,
            private_users: None,
            deny_resource_syscalls: None,
            localhost_only: None,
            read_write_paths: None,
        });
        let mut account = |v: &Option<Spanned<String>>, key: &str| match v {
            Some(u) => {
                let len = u.get_ref().chars().count();
                if len > MAX_ACCOUNT {
                    self.problem(
                        u.span(),
                        key,
                        format!("{:?} is {len} characters long; the limit is {MAX_ACCOUNT}", u.get_ref()),
                    );
                } else if !is_user_name(u.get_ref()) {
                    self.problem(
                        u.span(),
                        key,
                        format!("{:?} is not a valid user or group name", u.get_ref()),
                    );
                }
                u.get_ref().clone()
            }
            None => defaults::SYSTEMD_ACCOUNT.to_string(),
        };
        let user = account(&s.user, "systemd.user");
        let group = account(&s.group, "systemd.group");
        let deployctl = match &s.deployctl {
            Some(p) if Path::new(p.get_ref()).is_absolute() => {
                let path = PathBuf::from(p.get_ref());
                self.absolute_path(p.span(), "systemd.deployctl", &path);
                path
            }
            Some(p) => {
                self.problem(
                    p.span(),
                    "systemd.deployctl",
                    format!("{:?} must be an absolute path", p.get_ref()),
                );
                PathBuf::new()
            }
            None => std::env::current_exe().unwrap_or_else(|_| PathBuf::from(defaults::DEPLOYCTL_BIN)),
        };
        let read_write_paths = match &s.read_write_paths {
            Some(ps) => ps
                .get_ref()
                .iter()
                .map(|p| {
                    let path = PathBuf::from(p);
                    if path.is_absolute() {
                        self.absolute_path(ps.span(), "systemd.read_write_paths", &path);
                    } else {
                        self.problem(
                            ps.span(),
                            "systemd.read_write_paths",
                            format!("{p:?} must be an absolute path"),
                        );
                    }
                    path
                })
                .collect(),
            None => Vec::new(),
        };
        Systemd {
            user,
            group,
            deployctl,
            memory_deny_write_execute: s
                .memory_deny_write_execute
                .unwrap_or(defaults::MEMORY_DENY_WRITE_EXECUTE),
            private_users: s.private_users.unwrap_or(defaults::PRIVATE_USERS),
            deny_resource_syscalls: s.deny_resource_syscalls.unwrap_or(defaults::DENY_RESOURCE_SYSCALLS),
            localhost_only: s.localhost_only.unwrap_or(defaults::LOCALHOST_ONLY),
            read_write_paths,
        }
    }

    fn render(&mut self, r: Option<raw::RawRender>) -> RenderSettings {
        let templates = r
            .as_ref()
            .and_then(|r| r.templates.as_ref())
            .map(|t| self.existing_dir(t, "render.templates"));
        let out = match r.as_ref().and_then(|r| r.out.as_ref()) {
            Some(o) => {
                // Units name the rendered files by path.
                let p = self.abs(o.get_ref());
                self.renderable_path(o.span(), "render.out", Some(o.get_ref()), &p, PathUse::Units);
                p
            }
            None => self.abs(defaults::RENDER_OUT),
        };
        RenderSettings { templates, out }
    }
}

pub fn parse_entry(s: &str) -> Result<Entry, String> {
    let Some((module, attr)) = s.split_once(':') else {
        return Err(format!(
            "{s:?} is not `module:attr` or `module:factory()`: there is no `:`"
        ));
    };
    let (attr, factory) = match attr.strip_suffix("()") {
        Some(a) => (a, true),
        None => (attr, false),
    };
    if module.is_empty() || !module.split('.').all(is_identifier) {
        return Err(format!("{module:?} in {s:?} is not a Python module path"));
    }
    if !is_identifier(attr) {
        return Err(format!(
            "{attr:?} in {s:?} is not a Python name (factories take no arguments: `module:factory()`)"
        ));
    }
    Ok(Entry {
        module: module.into(),
        attr: attr.into(),
        factory,
    })
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_') && chars.all(|c| c.is_alphanumeric() || c == '_')
}

pub fn parse_listen(s: &str) -> Result<Listen, String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("{s:?} is not `[ipv6]:port`"))?;
        h.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{h:?} in {s:?} is not an IPv6 address"))?;
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} has no port"))?;
        if h.is_empty() || h.contains(':') || !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
            return Err(format!("{h:?} in {s:?} is not a host"));
        }
        (h, p)
    };
    let port: u64 = port
        .parse()
        .map_err(|_| format!("{port:?} in {s:?} is not a port number"))?;
    if !(1..=65535).contains(&port) {
        return Err(format!("port {port} is out of range (1 to 65535)"));
    }
    Ok(Listen {
        host: host.to_string(),
        port: port as u16,
    })
}

/// Longest `[app].name`: unit, socket and log names are built from it.
const MAX_NAME: usize = 64;
/// Longest user or group name (`useradd`'s limit).
const MAX_ACCOUNT: usize = 32;

fn is_unit_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.len() <= MAX_NAME
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn sanitize_name(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

fn is_env_name(s: &str) -> bool {
    is_identifier(s) && s.is_ascii()
}

fn is_user_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.len() <= MAX_ACCOUNT
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        assert_eq!(parse_entry("app:app").unwrap().to_string(), "app:app");
        let f = parse_entry("pkg.mod:create_app()").unwrap();
        assert!(f.factory);
        assert_eq!(f.module, "pkg.mod");
        assert!(parse_entry("app").is_err());
        assert!(parse_entry("app:create_app(1)").is_err());
        assert!(parse_entry("my-app:app").is_err());
    }

    #[test]
    fn listens() {
        assert_eq!(parse_listen("0.0.0.0:80").unwrap().to_string(), "0.0.0.0:80");
        assert_eq!(parse_listen("[::1]:8080").unwrap().to_string(), "[::1]:8080");
        assert!(parse_listen("0.0.0.0:70000").unwrap_err().contains("out of range"));
        assert!(parse_listen("0.0.0.0").is_err());
        assert!(parse_listen("::1:80").is_err());
    }
}
