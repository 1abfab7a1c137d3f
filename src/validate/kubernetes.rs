//! kubernetes-validate (PyPI): a manifest checked against the Kubernetes API's OpenAPI
//! schemas, which the package bundles (it runs offline, no cluster needed); `--strict`
//! refuses properties the schema does not define, so a misspelt or misplaced key fails.

use super::{Job, Outcome, Scratch, find_tool, run, verdict};

pub const HINT: &str = "install kubernetes-validate: `pip install kubernetes-validate` (into a virtualenv on PATH)";

/// `kubernetes-validate --strict` on the manifest `rel`.
pub(super) fn job<'a>(s: &'a Scratch, rel: &str) -> Job<'a> {
    let tool = find_tool("kubernetes-validate", HINT);
    let path = s.path(rel);
    let rel = rel.to_string();
    let extra = tool.as_ref().ok().map(|t| super::tool_identity(t));
    Job::new(
        "kubernetes-validate --strict",
        &rel.clone(),
        vec![rel.clone()],
        extra,
        move || {
            let outcome = match tool {
                Ok(tool) => run(
                    &tool,
                    &["--strict".as_ref(), "--no-warn".as_ref(), path.as_os_str()],
                    &[],
                )
                .map(|(ok, out)| verdict_of(ok, &out)),
                Err(missing) => Ok(missing),
            };
            verdict("kubernetes-validate --strict", &rel, outcome)
        },
    )
}

/// Passed when the tool exits 0 and says `passed` for every resource (`INFO FILE passed for
/// resource deployment/hello against version 1.37`); the detail names them.
fn verdict_of(ok: bool, out: &str) -> Outcome {
    let passed: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(" passed for resource ").map(|(_, r)| r))
        .collect();
    if ok && !passed.is_empty() && !out.contains("ERROR") {
        Outcome::Ok(passed.join("; "))
    } else {
        Outcome::Failed(out.to_string())
    }
}
