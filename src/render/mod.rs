//! Spec + target → an in-memory tree of config files.
//!
//! Owns: which files a target produces, the view models fed to the templates, and the
//! template set (built-in, or replaced file by file from a user directory).
//! Does not own: checking the output with real tools (`validate`) or writing it to disk
//! (`tree::FileTree::write_atomic`). Deterministic: the same spec, target, output directory
//! and templates give byte-identical files (design.md invariant 2).

pub mod quote;
mod templates;
mod tree;
mod view;

use std::path::Path;

use anyhow::Context as _;

pub use templates::Templates;
pub use tree::{FileTree, RenderedFile};
pub use view::View;

use crate::spec::Spec;
use crate::target::{Backend, Frontend, Target};

/// One file of a target: the template it comes from and where it goes.
struct Output {
    template: &'static str,
    path: String,
    mode: u32,
}

fn outputs(spec: &Spec, target: Target) -> Vec<Output> {
    let name = &spec.app.name;
    let file = |template, path: String| Output {
        template,
        path,
        mode: 0o644,
    };
    let mut files = Vec::new();
    match target.backend {
        Backend::Uwsgi => files.push(file("uwsgi/app.ini.tera", format!("uwsgi/{name}.ini"))),
        Backend::Gunicorn => files.push(file(
            "gunicorn/gunicorn.conf.py.tera",
            "gunicorn/gunicorn.conf.py".into(),
        )),
        Backend::Embedded | Backend::ModWsgi => {}
    }
    if target.frontend == Frontend::Nginx {
        files.push(file("nginx/site.conf.tera", format!("nginx/{name}.conf")));
    }
    files.push(file("systemd/app.service.tera", format!("systemd/{name}.service")));
    files.push(file("systemd/app.socket.tera", format!("systemd/{name}.socket")));
    files
}

/// Renders every file of `target`, as it will be installed in `out_dir`.
///
/// `out_dir` is where the files will live: units refer to configs by absolute path.
pub fn render(spec: &Spec, target: Target, out_dir: &Path, templates: &Templates) -> anyhow::Result<FileTree> {
    render_view(spec, target, View::new(spec, target, out_dir), templates)
}

/// The configs of a local run (`deployctl up`): sockets in `socket_dir`, not `/run`, and the
/// front answering the address it listens on and `localhost` besides `[server].names` (see
/// [`local_names`]).
pub fn render_local(
    spec: &Spec,
    target: Target,
    out_dir: &Path,
    socket_dir: &Path,
    templates: &Templates,
) -> anyhow::Result<FileTree> {
    let mut spec = spec.clone();
    spec.server.names = local_names(&spec);
    render_view(
        &spec,
        target,
        View::with_socket_dir(&spec, target, out_dir, socket_dir),
        templates,
    )
}

/// The names a local run answers: `[server].names`, then `localhost` and the host of the
/// listen address as a browser writes it (`127.0.0.1` for `--listen 127.0.0.1:8000`), so the
/// URL `up` prints is not refused by the default server.
pub fn local_names(spec: &Spec) -> Vec<String> {
    let mut names = spec.server.names.clone();
    for extra in ["localhost".to_string(), spec.server.listen.browser_host()] {
        if !names.contains(&extra) {
            names.push(extra);
        }
    }
    names
}

/// Whether `target` serves `[[static]]` itself: a front does, and so does uWSGI alone.
pub fn serves_statics(target: Target) -> bool {
    target.frontend != Frontend::None || target.backend == Backend::Uwsgi
}

/// The warning `render`, `check` and `up` print when `target` leaves `[[static]]` to the app:
/// Gunicorn and the embedded server serve no files (an app may serve the URLs itself, as
/// Flask does for its `static/` folder, but without the `expires` of deploy.toml).
pub fn static_warning(spec: &Spec, target: Target) -> Option<String> {
    if spec.statics.is_empty() || serves_statics(target) {
        return None;
    }
    let mounts: Vec<String> = spec
        .statics
        .iter()
        .map(|s| format!("{} ({})", s.url, crate::spec::display_path(&s.dir)))
        .collect();
    let server = match target.backend {
        Backend::Gunicorn => "Gunicorn",
        _ => "the embedded server",
    };
    Some(format!(
        "target `{target}` does not serve [[static]] {}: {server} serves no files, so these URLs go to \
         the app (404 unless it serves them itself, and without their `expires`); put a front before \
         it (`--target nginx+{}`) or use the `uwsgi` target, which serves them itself",
        mounts.join(", "),
        target.backend.name()
    ))
}

fn render_view(spec: &Spec, target: Target, view: View, templates: &Templates) -> anyhow::Result<FileTree> {
    anyhow::ensure!(
        target.is_implemented(),
        "target `{target}` is not implemented yet; valid targets: {}",
        Target::implemented_list()
    );
    let context = tera::Context::from_serialize(&view).context("cannot build the template context")?;
    let mut tree = FileTree::default();
    for out in outputs(spec, target) {
        let text = templates
            .render(out.template, &context)
            .with_context(|| format!("cannot render {} from template `{}`", out.path, out.template))?;
        tree.insert(out.path, text, out.mode);
    }
    Ok(tree)
}
