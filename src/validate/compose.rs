//! `docker-compose config -q` (Debian's `docker-compose`): the Compose file parsed and checked
//! against the Compose schema, with no Docker daemon (nothing is created or pulled).

use super::{Job, Outcome, Scratch, find_tool, run, verdict};

pub const HINT: &str = "install Debian's docker-compose: `apt-get install docker-compose`";

/// `docker-compose config -q` on the Compose file `rel`; the files it mounts (the nginx site)
/// are beside it in the scratch directory.
pub(super) fn job<'a>(s: &'a Scratch, rel: &str) -> Job<'a> {
    let tool = find_tool("docker-compose", HINT);
    let path = s.path(rel);
    let rel = rel.to_string();
    let extra = tool.as_ref().ok().map(|t| super::tool_identity(t));
    Job::new(
        "docker-compose config",
        &rel.clone(),
        vec![rel.clone()],
        extra,
        move || {
            let outcome = match tool {
                Ok(tool) => run(
                    &tool,
                    &["--file".as_ref(), path.as_os_str(), "config".as_ref(), "-q".as_ref()],
                    &[],
                )
                .map(|(ok, out)| {
                    if ok {
                        Outcome::Ok("valid Compose file".into())
                    } else {
                        Outcome::Failed(out)
                    }
                }),
                Err(missing) => Ok(missing),
            };
            verdict("docker-compose config", &rel, outcome)
        },
    )
}
