//! `mod_wsgi python`: whether the app's virtualenv can run inside Debian's mod_wsgi, which
//! runs the Python it is built against (`python-home` only points it at the virtualenv's
//! packages): the virtualenv must be of that Python's version, made with that interpreter.
//!
//! Does not own: creating the virtualenv (`orchestrate::venv`, which makes it with the plan's
//! `ModWsgi::python`), or Apache's configuration (`apache2 -t`).

use super::{Job, Outcome, Scratch, verdict};
use crate::plan::ModWsgi;
use crate::spec::display_path;

const NAME: &str = "mod_wsgi python";

/// The check of the virtualenv for the mod_wsgi script `rel`.
pub(super) fn job<'a>(s: &'a Scratch, rel: &str) -> Job<'a> {
    let wsgi = s.plan.apache.as_ref().and_then(|a| a.wsgi.clone());
    let rel = rel.to_string();
    // What it reads: the module and the virtualenv's pyvenv.cfg.
    let extra = wsgi.as_ref().map(|w| {
        format!(
            "{} {}",
            super::tool_identity(&w.module),
            std::fs::read_to_string(w.python_home.join(deployctl_common::venv::PYVENV_CFG)).unwrap_or_default()
        )
    });
    Job::new(NAME, &rel.clone(), vec![rel.clone()], extra, move || {
        let outcome = match wsgi {
            None => Outcome::Failed("the plan has no mod_wsgi".into()),
            Some(w) => check(&w),
        };
        verdict(NAME, &rel, Ok(outcome))
    })
}

/// The virtualenv of `w` against the module's Python.
fn check(w: &ModWsgi) -> Outcome {
    if !w.module.is_file() {
        return Outcome::Missing {
            hint: "install Debian's mod_wsgi: `apt-get install libapache2-mod-wsgi-py3`".into(),
        };
    }
    let Some(built_for) = crate::orchestrate::venv::plugin_version(&w.module) else {
        return Outcome::Failed(format!(
            "cannot tell which Python {} is built against (no libpython in it)",
            w.module.display()
        ));
    };
    let venv = &w.python_home;
    let fix = format!(
        "recreate it with the Python mod_wsgi runs: `rm -r {v} && {py} -m venv {v}` (then install the app's \
         requirements), or let `deployctl up --target apache+mod_wsgi` create it",
        v = crate::commands::shell_word(&venv.display().to_string()),
        py = w.python.display(),
    );
    // Not made yet (rendering on another machine than the server): not checked, as Gunicorn's
    // check is not without Gunicorn in the virtualenv.
    if !venv.join(deployctl_common::venv::PYVENV_CFG).is_file() && !deployctl_common::venv::python(venv).exists() {
        return Outcome::Missing {
            hint: format!(
                "create the virtualenv {} with the Python mod_wsgi runs: `{} -m venv {}`",
                display_path(venv),
                w.python.display(),
                crate::commands::shell_word(&venv.display().to_string())
            ),
        };
    }
    let found = match deployctl_common::venv::venv_python_version(venv) {
        Ok(v) => v,
        Err(e) => {
            return Outcome::Failed(format!(
                "the virtualenv {} cannot be read ({e:#}); mod_wsgi needs one of Python {built_for}\nhint: {fix}",
                display_path(venv)
            ));
        }
    };
    if found != built_for {
        return Outcome::Failed(format!(
            "the virtualenv {} is Python {found}, but {} runs Python {built_for}\nhint: {fix}",
            display_path(venv),
            w.module.display()
        ));
    }
    Outcome::Ok(format!("virtualenv of Python {found}, as {} runs", w.module.display()))
}
