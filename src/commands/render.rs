//! `deployctl render`: render a target; validate; write atomically, print, or diff.

use crate::cli::RenderArgs;
use crate::plan::{Environment, Plan};
use crate::printer::Printer;
use crate::render;
use crate::validate::{self, Policy};

use super::{Requested, Status, cluster_plan, load, probed, requested, shown};

pub fn run(args: &RenderArgs, printer: &Printer) -> anyhow::Result<Status> {
    let (spec, templates) = load(&args.spec)?;
    let requested = requested(&spec, args.target.as_deref())?;
    let target = requested.name();
    let out = match &args.out {
        Some(dir) => std::path::absolute(dir)?,
        None => spec.render.out.join(&target),
    };
    let plan = match requested {
        Requested::Chain(t) => probed(Plan::resolve(&spec, t, Environment::Production { out: out.clone() })),
        Requested::Cluster(kind) => cluster_plan(&spec, kind)?,
    };
    let tree = render::render_plan(&plan, &templates)?;
    if !args.stdout && !args.check {
        // Before the validators run: a refused directory is the first thing to know.
        tree.check_replaceable(&out, spec.dir(), args.force)?;
    }
    if let Some(warning) = plan.static_warning() {
        printer.warn(&warning);
    }
    if args.stdout {
        print!("{}", tree.listing());
        return Ok(Status::Success);
    }
    if args.check {
        return match tree.diff_against(&out)? {
            None => {
                printer.status("Up to date", &format!("{} matches {}", shown(&out), spec.app.name));
                Ok(Status::Success)
            }
            Some(diff) => {
                print!("{diff}");
                printer.error(&anyhow::anyhow!(
                    "{} differs from what {} renders; run `deployctl render` to update it",
                    shown(&out),
                    shown(&spec.path)
                ));
                Ok(Status::Failed)
            }
        };
    }
    if !args.no_validate {
        let report = validate::gate(&plan, &tree, Policy::from_env(), None)?;
        report.print(printer, true);
        if !report.is_ok() {
            printer.error(&anyhow::anyhow!("nothing was written to {}", shown(&out)));
            return Ok(Status::Failed);
        }
    }
    tree.write_atomic(&out)?;
    printer.status(
        "Rendered",
        &format!("{} files for {target} into {}", tree.files.len(), shown(&out)),
    );
    if let Some(steps) = plan.apache_install_steps() {
        printer.status("Install", &steps);
    }
    match plan.secrets_steps() {
        Some(Ok(steps)) => printer.status("Install", &steps),
        Some(Err(warning)) => printer.warn(&warning),
        None => {}
    }
    if let Some(steps) = plan.tls_install_steps() {
        printer.status("Install", &steps);
    }
    if let Some(steps) = plan.cluster_steps(&shown(&out)) {
        printer.status("Next", &steps);
    }
    Ok(Status::Success)
}
