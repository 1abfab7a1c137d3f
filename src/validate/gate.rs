//! The one validation gate of `render`, `check` and `up`, its policy for missing tools and
//! its report.

use std::path::Path;

use super::{Outcome, Scratch, Verdict, jobs};
use crate::plan::Plan;
use crate::printer::Printer;
use crate::render::FileTree;

/// What a validator that is not installed means. In CI `DEPLOYCTL_REQUIRE_VALIDATORS=1`
/// (or `check --require-validators`) makes it a failure; otherwise it is reported as skipped
/// and never counted as passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub require_all: bool,
}

impl Policy {
    pub const ENV: &'static str = "DEPLOYCTL_REQUIRE_VALIDATORS";

    /// From `DEPLOYCTL_REQUIRE_VALIDATORS`, read as clap reads a boolean flag's variable
    /// (`1`, `true`, `yes`, `on`, …).
    pub fn from_env() -> Policy {
        let v = std::env::var(Self::ENV).unwrap_or_default().to_ascii_lowercase();
        Policy {
            require_all: matches!(v.as_str(), "1" | "true" | "t" | "yes" | "y" | "on"),
        }
    }
}

/// Every verdict of one gate, with what the policy makes of them.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target as the user names it (`nginx+uwsgi`, `kubernetes`).
    pub target: String,
    /// In a fixed order: by validator, then by file.
    pub verdicts: Vec<Verdict>,
    /// How many came from the cache of earlier successes.
    pub cached: usize,
    pub policy: Policy,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.verdicts
            .iter()
            .filter(|v| matches!(v.outcome, Outcome::Ok(_)))
            .count()
    }

    /// Validators not installed, when the policy lets them be skipped.
    pub fn skipped(&self) -> Vec<&Verdict> {
        self.verdicts
            .iter()
            .filter(|v| matches!(v.outcome, Outcome::Missing { .. }) && !self.policy.require_all)
            .collect()
    }

    /// Failed verdicts, and missing tools when the policy requires every validator.
    pub fn failures(&self) -> usize {
        self.verdicts
            .iter()
            .filter(|v| v.is_failure(self.policy.require_all))
            .count()
    }

    pub fn is_ok(&self) -> bool {
        self.failures() == 0
    }

    /// One line per verdict (with the tool's message on a failure); only the problems
    /// (failures and skipped tools) unless `all`.
    /// Each verdict; a tool that is not installed once, with every file it would have read
    /// (kubernetes-validate has one run per manifest).
    pub fn print(&self, printer: &Printer, all: bool) {
        let target = &self.target;
        let mut missing: Vec<(&str, &str, Vec<&str>)> = Vec::new();
        for v in &self.verdicts {
            let head = format!("{target}: {} {}", v.validator, v.subject);
            match &v.outcome {
                Outcome::Ok(detail) => {
                    if all {
                        printer.status("ok", &format!("{head}: {detail}"))
                    }
                }
                Outcome::Failed(msg) => printer.error(&anyhow::anyhow!("{head} failed:\n{}", indent(msg))),
                Outcome::Missing { hint } => match missing.iter_mut().find(|(tool, _, _)| *tool == v.validator) {
                    Some((_, _, files)) => files.push(&v.subject),
                    None => missing.push((&v.validator, hint, vec![&v.subject])),
                },
            }
        }
        for (tool, hint, files) in missing {
            let head = format!("{target}: {tool} {}", files.join(", "));
            if self.policy.require_all {
                printer.error(&anyhow::anyhow!(
                    "{head}: the tool is not installed ({} is set)\nhint: {hint}",
                    Policy::ENV
                ));
            } else {
                printer.warn(&format!("{head}: skipped, the tool is not installed\nhint: {hint}"));
            }
        }
    }

    /// `6 checks passed (2 unchanged since their last success, not rerun); 1 skipped (gixy:
    /// not installed)`.
    pub fn summary(&self) -> String {
        let mut s = format!("{} checks passed", self.passed());
        if self.cached > 0 {
            s.push_str(&format!(
                " ({} unchanged since their last success, not rerun)",
                self.cached
            ));
        }
        let skipped = self.skipped();
        if !skipped.is_empty() {
            let names: Vec<String> = skipped
                .iter()
                .map(|v| format!("{} {}", v.validator, v.subject))
                .collect();
            s.push_str(&format!(
                "; {} skipped, not installed: {}",
                skipped.len(),
                names.join(", ")
            ));
        }
        s
    }

    /// The failures in one message: each validator, file and the tool's own words.
    pub fn failure_message(&self) -> String {
        let lines: Vec<String> = self
            .verdicts
            .iter()
            .filter(|v| v.is_failure(self.policy.require_all))
            .map(|v| match &v.outcome {
                Outcome::Missing { hint } => {
                    format!(
                        "{} {}: not installed ({} is set); {hint}",
                        v.validator,
                        v.subject,
                        Policy::ENV
                    )
                }
                Outcome::Failed(msg) | Outcome::Ok(msg) => format!("{} {}: {}", v.validator, v.subject, msg.trim()),
            })
            .collect();
        format!("the rendered configs do not validate:\n{}", lines.join("\n"))
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// The gate: `tree` (rendered from `plan`) written to a scratch directory, every validator
/// that the plan's outputs name run on its file, concurrently — the ones unchanged since
/// their last success in `cache` (a file, e.g. under `up`'s run directory) taken from it.
pub fn gate(plan: &Plan, tree: &FileTree, policy: Policy, cache: Option<&Path>) -> anyhow::Result<Report> {
    let dir = tempfile::Builder::new().prefix("deployctl-validate-").tempdir()?;
    tree.write_into(dir.path())?;
    let s = Scratch {
        plan,
        tree,
        dir: dir.path(),
    };
    let jobs = jobs::for_plan(&s);
    let (verdicts, cached) = match cache {
        Some(path) => jobs::run_cached(&s, jobs, path),
        None => (jobs::run(jobs, tree), 0),
    };
    Ok(Report {
        target: plan.target_name(),
        verdicts,
        cached,
        policy,
    })
}
