//! `deployctl cert`: obtain or renew the certificate of `[tls].acme`, checked before `live/`
//! switches to it (`orchestrate::tls::obtain`), and reload the
//! front gracefully — the nginx (HUP) or Apache (USR1) of a running `up` stack of the target
//! (its certificates are in the run directory), or the server's (`/var/lib/deployctl/NAME/tls/`,
//! `systemctl reload nginx` or `apache2`; when systemd is not PID 1, what to run is printed).
//! The lone embedded server is its own front: the running stack's server is HUPed, a
//! server's `NAME.service` reloaded.

use std::time::SystemTime;

use anyhow::Context as _;

use crate::acme;
use crate::cli::CertArgs;
use crate::orchestrate::state::{Condition, Found, State};
use crate::plan::{Environment, Plan, RunFiles, Tier};
use crate::printer::{Printer, hinted};
use crate::spec::CertificateSource;

use super::{Status, default_out, load, parse_target, probed, run_root};

/// How long the first run's placeholder is valid: until the issuance that follows at once.
const PLACEHOLDER_DAYS: u32 = 7;

pub fn run(args: &CertArgs, printer: &Printer) -> anyhow::Result<Status> {
    let (spec, _) = load(&args.spec)?;
    let target = parse_target(&spec, args.target.as_deref())?;
    match spec.tls.as_ref().map(|t| &t.source) {
        Some(CertificateSource::Acme { .. }) => {}
        Some(_) | None => {
            return Err(hinted(
                format!(
                    "{} has no [tls].acme: `deployctl cert` obtains certificates from an ACME server",
                    crate::spec::display_path(&spec.path)
                ),
                "add `acme = { email = \"you@example.com\" }` to [tls] (Let's Encrypt by default)",
            ));
        }
    }
    // A stack of this target run by `up`: its certificate directory and its front.
    let files = RunFiles::of(&run_root(spec.dir(), args.run_dir.dir.as_deref()), target);
    let stack = match State::read(&files.dir) {
        Some(Found::State(st)) if st.inspect().condition() == Condition::Supervised => Some(st),
        _ => None,
    };
    let environment = match &stack {
        Some(_) => Environment::Local {
            conf_dir: files.conf_link(),
            socket_dir: files.dir.clone(),
        },
        None => Environment::Production {
            out: default_out(&spec, target),
        },
    };
    let plan = probed(Plan::resolve(&spec, target, environment));
    if let Some(why) = plan.tls_refusal() {
        anyhow::bail!(why);
    }
    let tls = plan.tls.as_ref().context("the plan has no [tls]")?;
    let dir = tls.cert_dir.as_deref().context("ACME keeps a certificate directory")?;
    let renewal = acme::renewal(
        dir,
        &tls.cert_names,
        crate::orchestrate::tls::RENEW_MARGIN,
        SystemTime::now(),
    )?;
    if !renewal.needed() && !args.force {
        printer.status(
            "Valid",
            &format!(
                "{}: {renewal}; it is renewed when fewer than 30 days are left (`--force` renews now)",
                crate::spec::display_path(dir)
            ),
        );
        return Ok(Status::Success);
    }
    // On a server, nginx cannot load the site before a certificate exists, and without the
    // site it does not answer the challenge: the first run installs a placeholder and reloads
    // nginx onto it first (as `up` starts on one).
    if renewal == acme::Renewal::Missing {
        acme::install_self_signed(dir, &tls.cert_names, PLACEHOLDER_DAYS)?;
        printer.status(
            "Placeholder",
            &format!(
                "a self-signed certificate in {} so that {} loads the site and answers the challenge",
                crate::spec::display_path(&dir.join(acme::LIVE)),
                plan.tls_front_name()
            ),
        );
        if !args.no_reload {
            reload_front(&plan, stack.as_ref(), printer)?;
        }
    }
    let why = if args.force && !renewal.needed() {
        "--force".to_string()
    } else {
        renewal.to_string()
    };
    let progress = printer.progress(&format!(
        "obtaining a certificate for {} ({why})",
        tls.cert_names.join(", ")
    ));
    let obtained = crate::orchestrate::tls::obtain(&plan);
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    let cert = obtained.context("cannot obtain a certificate; the one in use is unchanged")?;
    printer.status(
        "Obtained",
        &format!(
            "a certificate for {} into {}",
            cert.names.join(", "),
            crate::spec::display_path(&dir.join(acme::LIVE))
        ),
    );
    if !args.no_reload {
        reload_front(&plan, stack.as_ref(), printer)?;
    }
    Ok(Status::Success)
}

/// The front reloaded gracefully onto the certificate: the running stack's (nginx: HUP to its
/// master; Apache: a graceful restart, USR1), or the server's (`systemctl reload nginx` or
/// `apache2`), or what to run when systemd does not run this machine.
fn reload_front(plan: &Plan, stack: Option<&State>, printer: &Printer) -> anyhow::Result<()> {
    // The lone embedded server terminates TLS itself: its master is HUPed (new workers read
    // the pair), as nginx is.
    let (component, signal, manual) = match plan.edge().tier {
        Tier::Apache => (
            crate::orchestrate::apache::NAME,
            libc::SIGUSR1,
            "`apachectl graceful` (or USR1 to its parent process)",
        ),
        Tier::Embedded if plan.tiers.len() == 1 => ("app", libc::SIGHUP, "a HUP to its master process"),
        _ => ("nginx", libc::SIGHUP, "`nginx -s reload` (or HUP its master process)"),
    };
    let command = crate::plan::front_reload(plan);
    let front = plan.tls_front_name();
    match stack {
        Some(st) => {
            let c = st
                .components
                .iter()
                .find(|c| c.name == component)
                .with_context(|| format!("the running stack has no {front}"))?;
            if !c.process.signal(signal) {
                anyhow::bail!(
                    "{} of the running stack (pid {}) is gone; the certificate is installed and is used \
                     when the stack starts again",
                    the_front(front),
                    c.process.pid
                );
            }
            printer.status(
                "Reloaded",
                &format!("{front} of the running `up` stack (pid {}), gracefully", c.process.pid),
            );
        }
        None if systemd_runs_this_machine() => {
            let out = std::process::Command::new(&command[0])
                .args(&command[1..])
                .output()
                .with_context(|| format!("running {}", command.join(" ")))?;
            if !out.status.success() {
                anyhow::bail!(
                    "`{}` failed: {}",
                    command.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            printer.status("Reloaded", &format!("{front} (`{}`)", command[1..].join(" ")));
        }
        None => printer.status(
            "Reload",
            &format!("systemd does not run this machine: reload {front} onto the certificate with {manual}"),
        ),
    }
    Ok(())
}

/// "the nginx", "the Apache", but "the embedded server" once.
fn the_front(front: &str) -> String {
    if front.starts_with("the ") {
        front.to_string()
    } else {
        format!("the {front}")
    }
}

/// Whether systemd is PID 1 (`sd_booted`'s test).
fn systemd_runs_this_machine() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}
