//! `docker-compose config -q` (Debian's `docker-compose`): the Compose file parsed and checked
//! against the Compose schema, with no Docker daemon (nothing is created or pulled).

use super::{Job, Outcome, Scratch, one_file_job};

pub const HINT: &str = "install Debian's docker-compose: `apt-get install docker-compose`";

/// `docker-compose config -q` on the Compose file `rel`; the files it mounts (the nginx site)
/// are beside it in the scratch directory.
pub(super) fn job<'a>(s: &'a Scratch, rel: &str) -> Job<'a> {
    one_file_job(
        s,
        rel,
        "docker-compose config",
        ("docker-compose", HINT),
        (&["--file"], &["config", "-q"]),
        |ok, out| {
            if ok {
                Outcome::Ok("valid Compose file".into())
            } else {
                Outcome::Failed(out)
            }
        },
    )
}
