//! `deployctl check`: validate the spec, render each target to a scratch directory and run
//! every validator that applies; one verdict per validator and file.

use crate::cli::CheckArgs;
use crate::printer::Printer;
use crate::render;
use crate::target::Target;
use crate::validate::{self, Outcome, Scratch};

use super::{Status, default_out, load, parse_target};

pub fn run(args: &CheckArgs, printer: &Printer) -> anyhow::Result<Status> {
    let (spec, templates) = load(&args.spec)?;
    if args.show {
        print!("{}", spec.to_toml());
        return Ok(Status::Success);
    }
    let targets: Vec<Target> = if args.all_targets {
        Target::implemented().collect()
    } else if args.target.is_empty() {
        vec![spec.default_target()]
    } else {
        args.target
            .iter()
            .map(|t| parse_target(&spec, Some(t)))
            .collect::<anyhow::Result<_>>()?
    };
    let mut failed = 0;
    let mut json = Vec::new();
    for target in targets {
        let tree = render::render(&spec, target, &default_out(&spec, target), &templates)?;
        let scratch_dir = tempfile::Builder::new().prefix("deployctl-check-").tempdir()?;
        tree.write_into(scratch_dir.path())?;
        let bar = printer.progress(&format!("checking {target}"));
        let verdicts = validate::run_all(&Scratch {
            spec: &spec,
            target,
            tree: &tree,
            dir: scratch_dir.path(),
        });
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        failed += report(printer, target, &verdicts, args.require_validators);
        json.extend(
            verdicts
                .iter()
                .map(|v| VerdictJson::of(target, v, args.require_validators)),
        );
        if let Some(warning) = render::static_warning(&spec, target) {
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
    if failed == 0 {
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
    /// The validator as one would run it: `nginx -t`, `gixy`, `uwsgi --strict`,
    /// `gunicorn --check-config`, `systemd-analyze verify`, `systemd-analyze security`.
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
    fn of(target: Target, v: &validate::Verdict, require_all: bool) -> VerdictJson {
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

/// Prints one line per verdict (and the tool's message on failure); returns the failures.
pub fn report(printer: &Printer, target: Target, verdicts: &[validate::Verdict], require_all: bool) -> usize {
    let mut failed = 0;
    for v in verdicts {
        let head = format!("{target}: {} {}", v.validator, v.subject);
        match &v.outcome {
            Outcome::Ok(detail) => printer.status("ok", &format!("{head}: {detail}")),
            Outcome::Failed(msg) => {
                failed += 1;
                printer.error(&anyhow::anyhow!("{head} failed:\n{}", indent(msg)));
            }
            Outcome::Missing { hint } if require_all => {
                failed += 1;
                printer.error(&anyhow::anyhow!(
                    "{head}: the tool is not installed (DEPLOYCTL_REQUIRE_VALIDATORS is set)\nhint: {hint}"
                ));
            }
            Outcome::Missing { hint } => {
                printer.warn(&format!("{head}: skipped, the tool is not installed\nhint: {hint}"))
            }
        }
    }
    failed
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}
