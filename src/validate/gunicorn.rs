//! `gunicorn --check-config`: loads the config file and imports the app, with the app's
//! environment, using the Gunicorn of the app's virtualenv (the one the unit runs).

use super::{Outcome, Scratch, Verdict, run, verdict};

pub fn check(s: &Scratch) -> Vec<Verdict> {
    s.files_ending("gunicorn.conf.py")
        .into_iter()
        .map(|(rel, path)| {
            let gunicorn = s.spec.app.venv.join("bin/gunicorn");
            let outcome = if gunicorn.is_file() {
                let env: Vec<(String, String)> = s.spec.app.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                run(
                    &gunicorn,
                    &["--config".as_ref(), path.as_os_str(), "--check-config".as_ref()],
                    &env,
                )
                .map(|(ok, out)| {
                    if ok {
                        Outcome::Ok("config loads, app imports".into())
                    } else {
                        Outcome::Failed(out)
                    }
                })
            } else {
                Ok(Outcome::Missing {
                    hint: format!(
                        "install Gunicorn into the app's virtualenv: `{}/bin/pip install gunicorn`",
                        s.spec.app.venv.display()
                    ),
                })
            };
            verdict("gunicorn --check-config", &rel, outcome)
        })
        .collect()
}
