//! Plan → an in-memory tree of config files.
//!
//! Owns: the template set (built-in, or replaced file by file from a user directory), the
//! typed view of each template, and quoting per config language (`quote`). Which files a
//! target produces, and every path, name and command line in them, is the plan's
//! (`crate::plan`): each output names its template, and the view reads the plan.
//! Does not own: checking the output with real tools (`validate`) or writing it to disk
//! (`tree::FileTree::write_atomic`). Deterministic: the same plan and templates give
//! byte-identical files (design.md invariant 2).

mod cluster_view;
pub mod quote;
mod templates;
pub(crate) mod tls_view;
mod tree;
mod view;

use std::path::Path;

use anyhow::Context as _;

pub use templates::Templates;
pub use tree::{FileTree, RenderedFile};

use crate::plan::{Environment, Plan};
use crate::spec::Spec;
use crate::target::Target;

/// Renders every output of `plan`.
pub fn render_plan(plan: &Plan, templates: &Templates) -> anyhow::Result<FileTree> {
    let target = plan.target;
    if plan.outputs.is_empty() {
        match plan.environment {
            Environment::Container => anyhow::bail!(
                "nothing renders `{target}` for a container yet (the cluster targets will); valid targets: {}",
                Target::implemented_list()
            ),
            Environment::Production { .. } | Environment::Local { .. } => anyhow::bail!(
                "target `{target}` is not implemented yet; valid targets: {}",
                Target::implemented_list()
            ),
        }
    }
    if let Some(why) = plan.tls_refusal() {
        anyhow::bail!(why);
    }
    let mut tree = FileTree::default();
    for out in &plan.outputs {
        let template = out.kind.template();
        let context = view::context(plan, out.kind).context("cannot build the template context")?;
        let text = templates
            .render(template, &context)
            .with_context(|| format!("cannot render {} from template `{template}`", out.path))?;
        tree.insert(out.path.clone(), text, out.mode);
    }
    Ok(tree)
}

/// Renders every file of `target` for a server, as it will be installed in `out_dir`
/// (units refer to configs by absolute path).
pub fn render(spec: &Spec, target: Target, out_dir: &Path, templates: &Templates) -> anyhow::Result<FileTree> {
    let plan = Plan::resolve(
        spec,
        target,
        Environment::Production {
            out: out_dir.to_path_buf(),
        },
    );
    render_plan(&plan, templates)
}

/// The configs of a local run (`deployctl up`), rendered for `out_dir`: sockets in
/// `socket_dir`, and the front answering the address it listens on and `localhost` besides
/// `[server].names` (`plan::local_names`).
pub fn render_local(
    spec: &Spec,
    target: Target,
    out_dir: &Path,
    socket_dir: &Path,
    templates: &Templates,
) -> anyhow::Result<FileTree> {
    let plan = Plan::resolve(
        spec,
        target,
        Environment::Local {
            conf_dir: out_dir.to_path_buf(),
            socket_dir: socket_dir.to_path_buf(),
        },
    );
    render_plan(&plan, templates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_without_outputs_is_refused_with_the_valid_targets() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec::from_source(&dir.path().join("deploy.toml"), "[app]\nentry = \"app:app\"\n").unwrap();
        let templates = Templates::load(None).unwrap();
        let target: Target = "nginx+gunicorn".parse().unwrap();
        let plan = Plan::resolve(&spec, target, Environment::Container);
        let e = render_plan(&plan, &templates).unwrap_err().to_string();
        assert!(
            e.contains("for a container") && e.contains("valid targets: embedded"),
            "{e}"
        );
        let apache = Target::new(crate::target::Frontend::NginxApache, crate::target::Backend::Gunicorn);
        let plan = Plan::resolve(&spec, apache, Environment::Production { out: dir.path().into() });
        let e = render_plan(&plan, &templates).unwrap_err().to_string();
        assert!(
            e.starts_with("target `nginx+apache+gunicorn` is not implemented yet"),
            "{e}"
        );
    }
}
