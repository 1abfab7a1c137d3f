//! `deployctl init`: write a commented `deploy.toml` for an existing app.

use anyhow::Context as _;
use serde::Serialize;

use crate::cli::InitArgs;
use crate::init::detect;
use crate::printer::{Printer, hinted, usage};
use crate::render::Templates;
use crate::spec::{FILE_NAME, Spec, display_path};
use crate::target::{Backend, Frontend};

use super::Status;

#[derive(Serialize)]
struct InitView {
    name: String,
    entry: String,
    detected_entry: bool,
    root: Option<String>,
    venv: Option<String>,
    requirements: Option<String>,
    statics: Vec<StaticView>,
    pending_statics: Vec<PendingView>,
    backend: String,
    frontend: String,
}

#[derive(Serialize)]
struct StaticView {
    url: String,
    dir: String,
}

#[derive(Serialize)]
struct PendingView {
    url: String,
    dir: String,
    why: Vec<String>,
}

/// A TOML string literal.
fn lit(s: &str) -> String {
    crate::render::quote::toml(s)
}

pub fn run(args: &InitArgs, printer: &Printer) -> anyhow::Result<Status> {
    let dir = std::path::absolute(&args.dir)?;
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", display_path(&dir));
    let path = dir.join(FILE_NAME);
    if path.exists() && !args.force {
        return Err(hinted(
            format!("{} already exists", display_path(&path)),
            "pass --force to overwrite it",
        ));
    }
    // Flags first: a malformed one is a usage error, before anything is looked at.
    let backend = args.backend.as_deref().unwrap_or("embedded");
    backend
        .parse::<Backend>()
        .map_err(|e| usage(format!("--backend: {e}"), None))?;
    let frontend = args.frontend.as_deref().unwrap_or("nginx");
    frontend
        .parse::<Frontend>()
        .map_err(|e| usage(format!("--frontend: {e}"), None))?;
    let flag_statics: Vec<StaticView> = args
        .statics
        .iter()
        .map(|s| {
            let (u, d) = s.split_once('=').ok_or_else(|| {
                usage(
                    format!("--static {s:?} is not URL=DIR"),
                    Some("e.g. `--static /static/=static`".into()),
                )
            })?;
            Ok(StaticView {
                url: lit(u),
                dir: lit(d),
            })
        })
        .collect::<anyhow::Result<_>>()?;

    let found = detect(&dir);
    let detected_entry = args.entry.is_none();
    let entry = match (&args.entry, &found.entry) {
        (Some(e), _) | (None, Some(e)) => e.clone(),
        (None, None) => {
            let looked = if found.looked_in.is_empty() {
                "no Python files".to_string()
            } else {
                found.looked_in.join(", ")
            };
            let mut hint = "pass it as `--entry module:attr` (or `module:factory()`); init looks for a module-level \
                            `app = Flask(…)`, `Bottle()`, `falcon.App()` or `config.make_wsgi_app()`, \
                            `def create_app()`, Django's `get_wsgi_application()` and `application = …`"
                .to_string();
            for miss in &found.near_misses {
                hint.push_str(&format!("\n      {miss}: move it to module level"));
            }
            return Err(hinted(
                format!(
                    "no WSGI entry point found in {}; looked in: {looked}",
                    display_path(&dir)
                ),
                hint,
            ));
        }
    };
    let name = args.name.clone().unwrap_or_else(|| {
        let raw = dir.file_name().and_then(|n| n.to_str()).unwrap_or("app");
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect()
    });
    let (statics, pending_statics) = if flag_statics.is_empty() {
        (
            found
                .statics
                .iter()
                .map(|(u, d)| StaticView {
                    url: lit(u),
                    dir: lit(d),
                })
                .collect(),
            found
                .pending_statics
                .iter()
                .map(|p| PendingView {
                    url: lit(&p.url),
                    dir: lit(&p.dir),
                    why: p.why.clone(),
                })
                .collect(),
        )
    } else {
        (flag_statics, Vec::new())
    };
    // The root only matters with the detected entry (a flag's entry says nothing of it).
    let root = args
        .root
        .clone()
        .or(if args.entry.is_none() { found.root.clone() } else { None });
    let view = InitView {
        name: lit(&name),
        entry: lit(&entry),
        detected_entry,
        root: root.map(|r| lit(&r)),
        venv: args.venv.clone().or(found.venv).map(|v| lit(&v)),
        requirements: args.requirements.clone().or(found.requirements).map(|r| lit(&r)),
        statics,
        pending_statics,
        backend: lit(backend),
        frontend: lit(frontend),
    };
    let templates = Templates::load(None)?;
    let text = templates.render("init/deploy.toml.tera", &tera::Context::from_serialize(&view)?)?;
    // Directories the detected `[[static]]` entries name and that only need to exist (an
    // empty Django STATIC_ROOT inside the project): made before the check below needs them.
    let uses_found_statics = args.statics.is_empty();
    let mut created = Vec::new();
    if uses_found_statics {
        for d in &found.create_dirs {
            if !d.exists() {
                std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", display_path(d)))?;
                created.push(d.clone());
            }
        }
    }
    // What init writes must load: validate before touching the disk.
    if let Err(e) = Spec::from_source(&path, &text) {
        for d in created.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        return Err(anyhow::anyhow!(e)).context("the detected values do not make a valid deploy.toml");
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", display_path(&path)))?;
    printer.status("Wrote", &format!("{} (entry {entry})", display_path(&path)));
    for (message, hint) in &found.notes {
        if !uses_found_statics && message.contains("STATIC") {
            continue;
        }
        printer.warn(&format!("{message}\nhint: {hint}"));
    }
    Ok(Status::Success)
}
