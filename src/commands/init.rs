//! `deployctl init`: write a commented `deploy.toml` for an existing app.

use anyhow::Context as _;
use serde::Serialize;

use crate::cli::InitArgs;
use crate::init::detect;
use crate::printer::{Printer, hinted};
use crate::render::Templates;
use crate::spec::{FILE_NAME, Spec, display_path};

use super::Status;

#[derive(Serialize)]
struct InitView {
    name: String,
    entry: String,
    detected_entry: bool,
    venv: Option<String>,
    requirements: Option<String>,
    statics: Vec<StaticView>,
    backend: String,
    frontend: String,
}

#[derive(Serialize)]
struct StaticView {
    url: String,
    dir: String,
}

/// A TOML string literal.
fn lit(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
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
            return Err(hinted(
                format!(
                    "no WSGI entry point found in {}; looked in: {looked}",
                    display_path(&dir)
                ),
                "pass it as `--entry module:attr` (or `module:factory()`); init looks for `app = Flask(…)`, `def create_app()`, \
                 Django's `*/wsgi.py` and a module-level `application`",
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
    let statics: Vec<StaticView> = if args.statics.is_empty() {
        found
            .statics
            .iter()
            .map(|(u, d)| StaticView {
                url: lit(u),
                dir: lit(d),
            })
            .collect()
    } else {
        args.statics
            .iter()
            .map(|s| {
                let (u, d) = s
                    .split_once('=')
                    .with_context(|| format!("--static {s:?} is not URL=DIR"))?;
                Ok(StaticView {
                    url: lit(u),
                    dir: lit(d),
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let view = InitView {
        name: lit(&name),
        entry: lit(&entry),
        detected_entry,
        venv: args.venv.clone().or(found.venv).map(|v| lit(&v)),
        requirements: args
            .requirements
            .clone()
            .or(found.requirements)
            .filter(|r| r.ends_with(".txt"))
            .map(|r| lit(&r)),
        statics,
        backend: lit(args.backend.as_deref().unwrap_or("embedded")),
        frontend: lit(args.frontend.as_deref().unwrap_or("nginx")),
    };
    let templates = Templates::load(None)?;
    let text = templates.render("init/deploy.toml.tera", &tera::Context::from_serialize(&view)?)?;
    // What init writes must load: validate before touching the disk.
    Spec::from_source(&path, &text)
        .map_err(|e| anyhow::anyhow!(e))
        .context("the detected values do not make a valid deploy.toml")?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", display_path(&path)))?;
    printer.status("Wrote", &format!("{} (entry {entry})", display_path(&path)));
    Ok(Status::Success)
}
