//! Apache httpd as a front of `up`: started in the foreground from the plan's self-contained
//! configuration (`apache2 -f RUN/apache/httpd.conf -D FOREGROUND`, its errors on stderr),
//! ready when its port answers, reloaded gracefully (SIGUSR1) onto another generation's
//! configuration, stopped gracefully (SIGWINCH).
//!
//! The file Apache runs from is a link in its runtime directory to the `apache/httpd.conf` of
//! one generation (`conf-N/`): a graceful restart reads again the file it was started with,
//! so a reload switches the link first, and a rollback switches it back.
//!
//! Apache switches user only when started as root, and then never to root: as root its
//! children (and mod_wsgi's daemon processes) run as Debian's `www-data`, which is given the
//! app server's socket by group (it stays 0660); the project's static files and virtualenv
//! must be readable by it. Unprivileged, Apache runs as the user of `up`.
//!
//! Does not own: the configuration's text or paths (the plan's `ApacheFiles`, `RunFiles`),
//! the decision to reload or roll back (`stack`), the health check (`stack`).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::process::{Component, MakeCommand};
use super::stack::RunPlan;
use crate::plan::{RunFiles, Tier};
use crate::printer::hinted;

/// The component's name in `up`'s output, the state file and `logs`.
pub const NAME: &str = "apache";

/// Graceful stop: the parent stops accepting, lets its children finish their requests, then
/// exits (`apachectl graceful-stop`).
pub const STOP: i32 = libc::SIGWINCH;
/// Stop now: children are killed at once.
pub const STOP_NOW: i32 = libc::SIGTERM;
/// Graceful restart: the configuration is read again, new children start, old ones finish.
const GRACEFUL: i32 = libc::SIGUSR1;

/// Debian's user for Apache's children (`APACHE_RUN_USER` in /etc/apache2/envvars).
const DEBIAN_USER: &str = "www-data";

/// How long the old children get to finish their requests after a graceful restart before
/// the health check (one still busy then answers no new connection anyway).
const OLD_CHILDREN_WAIT: Duration = Duration::from_secs(10);

/// Who Apache's children run as when `up` runs as root: a user and group that exist.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: String,
    pub group: String,
    pub gid: u32,
}

/// `None` when `up` is not root (Apache then keeps the user it was started as); as root,
/// Debian's `www-data`, or an error saying why Apache cannot run.
pub fn identity() -> anyhow::Result<Option<Identity>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new(DEBIAN_USER).context("a user name")?;
    // SAFETY: getpwnam with a valid C string; the record is read at once, before any other
    // call that could overwrite it.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(hinted(
            format!("Apache httpd cannot serve as root and there is no user `{DEBIAN_USER}` for its children"),
            "install Debian's apache2 package (it creates www-data), or run `deployctl up` as an ordinary user",
        ));
    }
    // SAFETY: pw is a valid passwd record (checked above).
    let gid = unsafe { (*pw).pw_gid };
    // SAFETY: getgrgid on a gid just read; the record is read at once.
    let gr = unsafe { libc::getgrgid(gid) };
    let group = if gr.is_null() {
        format!("#{gid}")
    } else {
        // SAFETY: gr is a valid group record whose name is a C string.
        unsafe { std::ffi::CStr::from_ptr((*gr).gr_name) }
            .to_string_lossy()
            .into_owned()
    };
    Ok(Some(Identity {
        user: DEBIAN_USER.into(),
        group,
        gid,
    }))
}

/// Lets Apache's children connect to the app server's socket `path` (created by `up`, 0660):
/// as root, the socket's group becomes theirs.
pub fn grant_socket(identity: Option<&Identity>, path: &Path) -> anyhow::Result<()> {
    if let Some(id) = identity {
        std::os::unix::fs::chown(path, None, Some(id.gid))
            .with_context(|| format!("giving {} to group {}", path.display(), id.group))?;
    }
    Ok(())
}

/// Points the configuration Apache runs from at generation `generation`'s, by one rename.
pub fn link_conf(plan: &RunPlan<'_>, generation: u32) -> anyhow::Result<()> {
    let apache = plan.plan.apache.as_ref().context("the plan has no Apache tier")?;
    let files: &RunFiles = &plan.files;
    let dir = files.apache_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let target = files.config_of(generation, &apache.httpd_conf);
    let link = files.apache_conf();
    let tmp = dir.join(".httpd.conf.link");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp).with_context(|| format!("linking {}", tmp.display()))?;
    std::fs::rename(&tmp, &link).with_context(|| format!("replacing {}", link.display()))?;
    Ok(())
}

/// Apache's command: the plan's arguments, and as root the user its children run as.
pub fn command(plan: &RunPlan<'_>, bin: &Path, identity: Option<&Identity>) -> anyhow::Result<MakeCommand> {
    let mut args = plan
        .plan
        .tier(Tier::Apache)
        .and_then(|t| t.process.as_ref())
        .map(|p| p.args.clone())
        .context("the plan runs no Apache")?;
    if let Some(id) = identity {
        args.extend([
            "-c".into(),
            format!("User {}", id.user),
            "-c".into(),
            format!("Group {}", id.group),
        ]);
    }
    let bin: PathBuf = bin.to_path_buf();
    Ok(Box::new(move || {
        let mut cmd = Command::new(&bin);
        cmd.args(&args);
        super::interrupt::unblock_in_child(&mut cmd);
        cmd
    }))
}

/// Starts Apache on generation 1's configuration; ready when the port answers.
pub fn start(plan: &RunPlan<'_>, bin: &Path, identity: Option<&Identity>, quiet: bool) -> anyhow::Result<Component> {
    link_conf(plan, 1)?;
    Component::spawn(NAME, command(plan, bin, identity)?, quiet)
}

/// A graceful restart onto generation `generation`'s configuration (validated by `apache2 -t`
/// already): done once a child of the new configuration runs and the old ones have finished
/// (bounded). Apache exits when it cannot read the configuration: that is an error here.
pub fn switch(c: &mut Component, plan: &RunPlan<'_>, generation: u32) -> anyhow::Result<()> {
    link_conf(plan, generation)?;
    let before = super::stack::children(c.pid());
    let mark = c.lines_seen();
    c.signal(GRACEFUL);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = super::stack::children(c.pid());
        if now.iter().any(|p| !before.contains(p)) {
            let until = Instant::now() + OLD_CHILDREN_WAIT;
            while Instant::now() < until && super::stack::children(c.pid()).iter().any(|p| before.contains(p)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            return Ok(());
        }
        if let Some(status) = c.exited() {
            bail!(
                "Apache exited ({status}) on its graceful restart:\n{}",
                c.tail_since(mark).trim_end()
            );
        }
        if Instant::now() > deadline {
            bail!("Apache did not start children with the new configuration within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
