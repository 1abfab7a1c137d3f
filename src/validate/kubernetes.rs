//! kubernetes-validate (PyPI): a manifest checked against the Kubernetes API's OpenAPI
//! schemas, which the package bundles (it runs offline, no cluster needed); `--strict`
//! refuses properties the schema does not define, so a misspelt or misplaced key fails. It
//! has no schema for custom resources: it passes cert-manager's `Issuer` with a warning, so
//! the Issuer is checked by `cert_manager.rs` instead.

use super::{Job, Outcome, Scratch, one_file_job};

pub const HINT: &str = "install kubernetes-validate: `pip install kubernetes-validate` (into a virtualenv on PATH)";

/// `kubernetes-validate --strict` on the manifest `rel`.
pub(super) fn job<'a>(s: &'a Scratch, rel: &str) -> Job<'a> {
    one_file_job(
        s,
        rel,
        "kubernetes-validate --strict",
        ("kubernetes-validate", HINT),
        (&["--strict", "--no-warn"], &[]),
        verdict_of,
    )
}

/// Passed when the tool exits 0 and says `passed` for every resource (`INFO FILE passed for
/// resource deployment/hello against version 1.37`); the detail names them.
fn verdict_of(ok: bool, out: String) -> Outcome {
    let passed: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(" passed for resource ").map(|(_, r)| r))
        .collect();
    if ok && !passed.is_empty() && !out.contains("ERROR") {
        Outcome::Ok(passed.join("; "))
    } else {
        Outcome::Failed(out)
    }
}
