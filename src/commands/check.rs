//! `deployctl check`: validate the spec, render each target to a scratch directory and run
//! every validator that applies; one verdict per validator and file.

use crate::cli::CheckArgs;
use crate::plan::{Environment, Plan};
use crate::printer::Printer;
use crate::render;
use crate::target::Target;
use crate::validate::{self, Outcome, Policy};

use super::{Requested, Status, cluster_plan, default_out, load, probed, requested};

pub fn run(args: &CheckArgs, printer: &Printer) -> anyhow::Result<Status> {
    let (spec, templates) = load(&args.spec)?;
    if args.show {
        print!("{}", spec.to_toml());
        return Ok(Status::Success);
    }
    let targets: Vec<Requested> = if args.all_targets {
        Target::implemented()
            .map(Requested::Chain)
            .chain(crate::plan::ClusterKind::ALL.map(Requested::Cluster))
            .collect()
    } else if args.target.is_empty() {
        vec![Requested::Chain(spec.default_target())]
    } else {
        args.target
            .iter()
            .map(|t| requested(&spec, Some(t)))
            .collect::<anyhow::Result<_>>()?
    };
    // `--require-validators` or DEPLOYCTL_REQUIRE_VALIDATORS: the gate's one policy.
    let policy = Policy {
        require_all: args.require_validators,
    };
    let (mut failed, mut passed, mut skipped) = (0, 0, 0);
    let mut json = Vec::new();
    for requested in targets {
        let target = requested.name();
        let plan = match requested {
            Requested::Chain(t) => probed(Plan::resolve(
                &spec,
                t,
                Environment::Production {
                    out: default_out(&spec, t),
                },
            )),
            Requested::Cluster(kind) => cluster_plan(&spec, kind)?,
        };
        // --all-targets with [tls]: the targets that cannot serve it (no front, or the lone
        // embedded server with acme) are not this spec's; said, not failed.
        if let (true, Some(why)) = (args.all_targets, plan.tls_refusal()) {
            printer.warn(&format!("{target}: skipped: {why}"));
            continue;
        }
        let tree = render::render_plan(&plan, &templates)?;
        let bar = printer.progress(&format!("checking {target}"));
        let report = validate::gate(&plan, &tree, policy, None);
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let report = report?;
        report.print(printer, true);
        failed += report.failures();
        passed += report.passed();
        skipped += report.skipped().len();
        json.extend(
            report
                .verdicts
                .iter()
                .map(|v| VerdictJson::of(&target, v, policy.require_all)),
        );
        if let Some(warning) = plan.static_warning() {
            printer.warn(&warning);
        }
    }
    if args.json {
        let out = CheckJson {
            config: std::path::absolute(&spec.path)
                .unwrap_or_else(|_| spec.path.clone())
                .display()
                .to_string(),
            ok: failed == 0,
            verdicts: json,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    if failed == 0 && skipped > 0 {
        printer.status(
            "Checked",
            &format!("{passed} validator runs passed, {skipped} skipped (not installed)"),
        );
        Ok(Status::Success)
    } else if failed == 0 {
        printer.status("Checked", "every validator passed");
        Ok(Status::Success)
    } else {
        printer.error(&anyhow::anyhow!("{failed} validator run(s) failed"));
        Ok(Status::Failed)
    }
}

/// `check --json`: one object; see the README for the schema.
#[derive(serde::Serialize)]
struct CheckJson {
    config: String,
    /// No verdict failed: what exit status 0 means.
    ok: bool,
    verdicts: Vec<VerdictJson>,
}

#[derive(serde::Serialize)]
struct VerdictJson {
    target: String,
    /// The validator as one would run it: `nginx -t`, `gixy`, `apache2 -t`, `uwsgi --strict`,
    /// `gunicorn --check-config`, `systemd-analyze verify`, `systemd-analyze security`,
    /// `kubernetes-validate --strict`, `docker-compose config`, `hadolint`.
    tool: String,
    /// The rendered file it checked, relative to the target's output directory.
    file: String,
    /// `passed`, `failed`, or `missing` (the tool is not installed).
    outcome: &'static str,
    /// Passed, or missing without `--require-validators`.
    ok: bool,
    /// What it said: the detail when it passed, its own message when it failed, how to
    /// install it when missing.
    message: String,
}

impl VerdictJson {
    fn of(target: &str, v: &validate::Verdict, require_all: bool) -> VerdictJson {
        let (outcome, message) = match &v.outcome {
            Outcome::Ok(d) => ("passed", d.clone()),
            Outcome::Failed(m) => ("failed", m.clone()),
            Outcome::Missing { hint } => ("missing", hint.clone()),
        };
        VerdictJson {
            target: target.to_string(),
            tool: v.validator.clone(),
            file: v.subject.clone(),
            outcome,
            ok: !v.is_failure(require_all),
            message,
        }
    }
}
