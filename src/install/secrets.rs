//! The secrets file `[app].secret_env` needs on a host (`/etc/deployctl/NAME/secrets.env`, the
//! unit's `EnvironmentFile=`), checked before install writes anything: it is the user's file,
//! never rendered, placed or removed by deployctl, and the service does not start without it.
//!
//! Owns: what install says about that file — missing, missing a key, readable by others.
//! Does not own: where it is (the plan's `Units::secrets_file`) or what `render` prints about
//! it (`Plan::secrets_steps`). Values are never read into a message: only the keys are parsed.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::plan::Plan;

use super::layout::under;

/// One thing wrong with the secrets file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub message: String,
    pub hint: String,
    /// The service would not start, or start without a variable: on a host where install
    /// starts it, an error before anything is written; under `--root`, a warning (an image
    /// build may add the file later).
    pub blocks_start: bool,
}

/// What is wrong with the secrets file of `plan` under `root` (nothing when the plan has none).
pub fn check(root: &Path, plan: &Plan) -> Vec<Finding> {
    let Some(file) = plan.units.as_ref().and_then(|u| u.secrets_file.as_ref()) else {
        return Vec::new();
    };
    let keys = &plan.spec.app.secret_env;
    let path = under(root, file);
    let create = format!(
        "create it as root with `install -D -m 600 /dev/null {}`, then add one KEY=value line for each of {}",
        file.display(),
        keys.join(", ")
    );
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(_) => {
            return vec![Finding {
                message: format!(
                    "[app].secret_env ({}) is read from {}, which does not exist: the service does not start without it",
                    keys.join(", "),
                    path.display()
                ),
                hint: create,
                blocks_start: true,
            }];
        }
    };
    let mut found = Vec::new();
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let present = environment_keys(&text);
    let missing: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .filter(|k| !present.iter().any(|p| p == k))
        .collect();
    if !missing.is_empty() {
        found.push(Finding {
            message: format!(
                "{} sets no {} (listed in [app].secret_env): the app would start without it",
                path.display(),
                missing.join(", ")
            ),
            hint: format!("add a `{}=value` line to {}", missing[0], file.display()),
            blocks_start: true,
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        found.push(Finding {
            message: format!(
                "{} holds secrets and is mode {mode:04o}: other users can read or change it",
                path.display()
            ),
            hint: format!("`chmod 600 {}` (systemd reads it as root)", file.display()),
            blocks_start: false,
        });
    }
    found
}

/// The keys an `EnvironmentFile=` sets, as systemd's `parse_env_file_internal` reads them:
/// leading whitespace skipped, `#` and `;` start a comment, the key ends at the first `=` with
/// its trailing whitespace cut, a line without `=` sets nothing. A shell's `export KEY=…`
/// makes the key `export KEY`, which is no valid variable name: systemd drops it, and so it
/// does not count here.
fn environment_keys(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::environment_keys;

    #[test]
    fn keys_are_read_as_systemd_reads_an_environment_file() {
        let text = "# a comment\n; another\n\nSECRET_KEY=a=b\n  DB_URL = postgres://x\nexport TOKEN=1\nnot a line\n";
        assert_eq!(environment_keys(text), ["SECRET_KEY", "DB_URL", "export TOKEN"]);
    }
}
