//! gixy (PyPI `gixy-ng`): nginx security analysis; zero findings pass.
//!
//! `nginx_cves` is skipped: it matches the version string and ignores Debian's backports.

use serde::Deserialize;

use super::{Job, Outcome, Scratch, find_tool, run, verdict};

pub const HINT: &str = "install gixy-ng: `pip install gixy-ng` (into a virtualenv on PATH)";

#[derive(Debug, Deserialize)]
struct Finding {
    #[serde(default)]
    plugin: String,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    config: String,
}

/// gixy on the site `rel`.
pub(super) fn job<'a>(s: &'a Scratch, rel: &str) -> Job<'a> {
    let tool = find_tool("gixy", HINT);
    let nginx = which::which("nginx").unwrap_or_else(|_| "nginx".into());
    let path = s.path(rel);
    let rel = rel.to_string();
    let extra = tool
        .as_ref()
        .ok()
        .map(|t| format!("{}\n{}", super::tool_identity(t), super::tool_identity(&nginx)));
    Job::new("gixy", &rel.clone(), vec![rel.clone()], extra, move || {
        let outcome = match tool {
            Ok(gixy) => (|| {
                // gixy reads a whole configuration: give it the same wrapper `nginx -t` gets.
                let (_prefix, conf) = super::nginx::wrapper(&nginx, &path)?;
                let args = [
                    "-f".as_ref(),
                    "json".as_ref(),
                    "--skips".as_ref(),
                    "nginx_cves".as_ref(),
                    conf.as_os_str(),
                ];
                let (_, out) = run(&gixy, &args, &[])?;
                Ok(findings(&out))
            })(),
            Err(missing) => Ok(missing),
        };
        verdict("gixy", &rel, outcome)
    })
}

/// Parses gixy's JSON report (a list of findings, possibly after log lines).
fn findings(out: &str) -> Outcome {
    let json = out.find('[').map(|i| &out[i..]).unwrap_or(out);
    match serde_json::from_str::<Vec<Finding>>(json) {
        Ok(list) if list.is_empty() => Outcome::Ok("0 findings".into()),
        Ok(list) => Outcome::Failed(
            list.iter()
                .map(|f| {
                    format!(
                        "[{}] {}: {} ({})",
                        f.severity,
                        f.plugin,
                        f.summary,
                        f.config.lines().next().unwrap_or("").trim()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Err(e) => Outcome::Failed(format!("cannot read gixy's report ({e}):\n{out}")),
    }
}
