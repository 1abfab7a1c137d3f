//! uWSGI has no `--check`: `--strict` rejects unknown options, and `--get` makes it parse the
//! file and exit without importing the app (reference deploy-configs.md §2).

use super::{Job, Outcome, Scratch, find_tool, run, verdict};
use crate::spec::UwsgiBuild;

pub fn jobs<'a>(s: &'a Scratch) -> Vec<Job<'a>> {
    let found = match s.spec.backend.uwsgi_build {
        UwsgiBuild::Debian => find_tool(
            "uwsgi",
            "install Debian's uWSGI: `apt-get install uwsgi uwsgi-plugin-python3`",
        ),
        UwsgiBuild::Pip => {
            let p = s.spec.app.venv.join("bin/uwsgi");
            if p.is_file() {
                Ok(p)
            } else {
                Err(Outcome::Missing {
                    hint: format!(
                        "install uWSGI into the virtualenv: `{}/bin/pip install uwsgi`",
                        s.spec.app.venv.display()
                    ),
                })
            }
        }
    };
    s.files_ending(".ini")
        .into_iter()
        .map(|(rel, path)| {
            let found = found.clone();
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
        })
        .collect()
}
