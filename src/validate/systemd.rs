//! `systemd-analyze verify` and `systemd-analyze security --offline` on the rendered units.
//!
//! `verify` exits 0 on many warnings (an unknown key is "ignoring"), so any line it prints
//! counts as a failure. `security` takes a threshold of exposure × 10; every service must
//! score at most [`MAX_EXPOSURE`].

use super::{Job, Outcome, Scratch, find_tool, run, verdict};

pub const HINT: &str = "install systemd (for systemd-analyze): `apt-get install systemd`";

/// Highest accepted `systemd-analyze security` exposure ("OK" is below 2).
pub const MAX_EXPOSURE: f64 = 1.5;

/// `systemd-analyze verify` on the unit `rel`.
pub(super) fn verify<'a>(s: &'a Scratch, rel: &str) -> Job<'a> {
    let tool = find_tool("systemd-analyze", HINT);
    let identity = tool.as_ref().ok().map(|t| super::tool_identity(t));
    let path = s.path(rel);
    let rel = rel.to_string();
    // verify also checks that the program of ExecStart= exists and is executable.
    let extra = identity.as_ref().map(|id| {
        let text = s.tree.files.get(&rel).map(|f| f.text.as_str()).unwrap_or("");
        let programs: Vec<String> = exec_programs(text)
            .iter()
            .map(|p| super::tool_identity(std::path::Path::new(p)))
            .collect();
        format!("{id}\n{}", programs.join("\n"))
    });
    Job::new(
        "systemd-analyze verify",
        &rel.clone(),
        vec![rel.clone()],
        extra,
        move || {
            let outcome = match &tool {
                Ok(sa) => run(
                    sa,
                    &["verify".as_ref(), "--recursive-errors=one".as_ref(), path.as_os_str()],
                    &[],
                )
                .map(|(ok, text)| {
                    if ok && text.is_empty() {
                        Outcome::Ok("no errors or warnings".into())
                    } else {
                        Outcome::Failed(text)
                    }
                }),
                Err(missing) => Ok(missing.clone()),
            };
            verdict("systemd-analyze verify", &rel, outcome)
        },
    )
}

/// `systemd-analyze security --offline` on the service `rel`: its exposure must be at most
/// [`MAX_EXPOSURE`].
pub(super) fn security<'a>(s: &'a Scratch, rel: &str) -> Job<'a> {
    let tool = find_tool("systemd-analyze", HINT);
    let identity = tool.as_ref().ok().map(|t| super::tool_identity(t));
    let path = s.path(rel);
    let rel = rel.to_string();
    Job::new(
        "systemd-analyze security",
        &rel.clone(),
        vec![rel.clone()],
        identity,
        move || {
            let outcome = match &tool {
                Ok(sa) => {
                    let threshold = format!("--threshold={}", (MAX_EXPOSURE * 10.0).round() as u32);
                    run(
                        sa,
                        &[
                            "security".as_ref(),
                            "--offline=yes".as_ref(),
                            threshold.as_ref(),
                            path.as_os_str(),
                        ],
                        &[],
                    )
                    .map(|(ok, text)| match exposure(&text) {
                        Some(score) if ok && score <= MAX_EXPOSURE => Outcome::Ok(format!("exposure {score:.1}")),
                        Some(score) => Outcome::Failed(format!(
                            "exposure {score:.1} is above {MAX_EXPOSURE}:\n{}",
                            failing_lines(&text)
                        )),
                        None => Outcome::Failed(text),
                    })
                }
                Err(missing) => Ok(missing.clone()),
            };
            verdict("systemd-analyze security", &rel, outcome)
        },
    )
}

/// The programs of a unit's `Exec*=` lines: the first word, without systemd's prefixes
/// (`-@:+!`) and quotes.
fn exec_programs(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("Exec"))
        .filter_map(|l| l.split_once('=').map(|(_, v)| v.trim_start()))
        .map(|v| v.trim_start_matches(['-', '@', ':', '+', '!']))
        .filter_map(|v| {
            if let Some(rest) = v.strip_prefix('"') {
                let mut word = String::new();
                let mut chars = rest.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => return Some(word),
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
                None
            } else {
                v.split_whitespace().next().map(str::to_string)
            }
        })
        .collect()
}

/// The score from "→ Overall exposure level for NAME: 1.3 OK 🙂" (in the C locale the face is
/// ":-)", so the score is the first word after the unit's name, not after the last colon).
pub fn exposure(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains("Overall exposure level for "))?;
    let (_, rest) = line.split_once("Overall exposure level for ")?;
    rest.split_once(':')?.1.split_whitespace().next()?.parse().ok()
}

/// The lines of the report that cost exposure (marked ✗), for the failure message.
fn failing_lines(text: &str) -> String {
    text.lines()
        .filter(|l| l.trim_start().starts_with('✗'))
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::exposure;

    #[test]
    fn the_exposure_score_in_a_utf8_locale_and_in_the_c_locale() {
        assert_eq!(
            exposure("→ Overall exposure level for a.service: 1.4 OK 🙂\n"),
            Some(1.4)
        );
        assert_eq!(
            exposure("-> Overall exposure level for a.service: 1.4 OK :-)\n"),
            Some(1.4)
        );
        assert_eq!(exposure("no score here"), None);
    }
}
