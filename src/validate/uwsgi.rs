//! uWSGI has no `--check`: `--strict` rejects unknown options, and `--get` makes it parse the
//! file and exit without importing the app (reference deploy-configs.md §2).

use super::{Job, Outcome, Scratch, find_tool, run, verdict};
use crate::plan::Tier;
use crate::spec::UwsgiBuild;

/// `uwsgi --strict` on the ini `rel`, with the uWSGI the plan runs: Debian's (on `PATH`) or
/// the virtualenv's.
pub(super) fn job<'a>(s: &'a Scratch, rel: &str) -> Job<'a> {
    let spec = &s.plan.spec;
    let program = s
        .plan
        .tier(Tier::Uwsgi)
        .and_then(|t| t.process.as_ref())
        .and_then(|p| p.program.path())
        .map(std::path::Path::to_path_buf);
    let found = match (spec.backend.uwsgi_build, program) {
        (UwsgiBuild::Debian, _) => find_tool(
            "uwsgi",
            "install Debian's uWSGI: `apt-get install uwsgi uwsgi-plugin-python3`",
        ),
        (UwsgiBuild::Pip, Some(p)) if p.is_file() => Ok(p),
        (UwsgiBuild::Pip, _) => Err(Outcome::Missing {
            hint: format!(
                "install uWSGI into the virtualenv: `{}/bin/pip install uwsgi`",
                spec.app.venv.display()
            ),
        }),
    };
    let path = s.path(rel);
    let rel = rel.to_string();
    // The strict parse reads the ini alone; the plugin comes with the binary's package.
    let extra = found.as_ref().ok().map(|t| super::tool_identity(t));
    Job::new("uwsgi --strict", &rel.clone(), vec![rel.clone()], extra, move || {
        let outcome = match found {
            Ok(uwsgi) => run(
                &uwsgi,
                &[
                    "--strict".as_ref(),
                    "--ini".as_ref(),
                    crate::render::quote::uwsgi_ini_arg(&path.display().to_string()).as_ref(),
                    "--get".as_ref(),
                    "need-app".as_ref(),
                ],
                &[],
            )
            .map(|(ok, out)| {
                // uWSGI echoes "getting INI configuration from …" even on success.
                let problems: Vec<&str> = out
                    .lines()
                    .filter(|l| !l.contains("getting INI configuration"))
                    .filter(|l| l.trim() != "true")
                    .collect();
                if ok && problems.is_empty() {
                    Outcome::Ok("strict parse ok".into())
                } else {
                    Outcome::Failed(out)
                }
            }),
            Err(missing) => Ok(missing),
        };
        verdict("uwsgi --strict", &rel, outcome)
    })
}
