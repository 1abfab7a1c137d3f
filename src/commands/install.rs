//! `deployctl install` and `uninstall`: glue between the CLI and `crate::install`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cli::{InstallArgs, ListArgs, UninstallArgs};
use crate::install::apply::{self, Action, Change, Transaction};
use crate::install::host;
use crate::install::layout::{self, Content, Entry, under};
use crate::install::manifest::{Manifest, Recorded};
use crate::install::services::{self, Mode, Step};
use crate::install::{clash, modules, ports};
use crate::plan::{Address, Assigned, Chain, Environment, INNER_WEB_PORT, Plan, Role};
use crate::printer::{Printer, hinted};
use crate::render;
use crate::target::Frontend;
use crate::validate::{self, Policy};

use super::{Status, load, parse_target, probed};

/// How long install's placeholder certificate is valid: until `NAME-cert.service`, started
/// right after, replaces it.
const PLACEHOLDER_DAYS: u32 = 7;

pub fn install(args: &InstallArgs, printer: &Printer) -> anyhow::Result<Status> {
    let (spec, templates) = load(&args.spec)?;
    let target = parse_target(&spec, args.target.as_deref())?;
    if target.frontend == Frontend::None {
        return Err(hinted(
            format!("install places a site for nginx or Apache, and target `{target}` has neither"),
            "install a target with a front (nginx+…, apache+…); `deployctl render` writes the files of the others",
        ));
    }
    let name = spec.app.name.clone();
    let root = std::path::absolute(args.root.as_deref().unwrap_or(Path::new("/")))?;
    let all = Manifest::all(&root)?;
    let old = all.get(&name);
    // A web server behind another listens on a loopback port of its own on this host.
    let behind = Chain::from(target)
        .tiers()
        .iter()
        .skip(1)
        .any(|t| t.role() == Role::WebServer);
    let assigned = Assigned {
        inner_web_port: if behind {
            let mut edge = vec![spec.server.listen.to_string()];
            edge.extend(spec.tls.as_ref().map(|t| t.listen.to_string()));
            Some(ports::inner_web_port(
                &root,
                (&name, &edge),
                old,
                &all.values().collect::<Vec<_>>(),
            )?)
        } else {
            None
        },
    };
    let plan = probed(Plan::resolve_assigned(
        &spec,
        target,
        Environment::Production {
            out: layout::conf_dir(&name),
        },
        assigned,
    ));
    let steps = services::after_install(&plan);
    let mode = services::mode(args.root.as_deref(), services::systemd_is_pid1());
    if mode == Mode::Unavailable && !args.dry_run {
        return Err(hinted(
            format!(
                "nothing was installed: systemd is not PID 1 on this machine (a container?), so these steps cannot run:\n{}",
                services::as_lines(&steps).trim_end()
            ),
            "place the files without touching services with `deployctl install --root /` (or a staged root for an image), \
             then run the steps above where systemd runs",
        ));
    }
    let tree = render::render_plan(&plan, &templates)?;
    let entries = layout::entries(&plan, &tree)?;
    // The project behind the name: another project's deploy.toml under an installed app's
    // name would replace that app as if it were a reinstall.
    let project = std::fs::canonicalize(&args.spec.config)
        .with_context(|| format!("cannot resolve {}", args.spec.config.display()))?;
    if let Some(other) = old.and_then(|m| m.project.as_ref()).filter(|p| **p != project) {
        if !args.force {
            return Err(hinted(
                format!(
                    "nothing was installed: `{name}` is installed from another project: {} (this one is {})",
                    other.display(),
                    project.display()
                ),
                "give one of them another [app].name, uninstall the other first, or pass `--force` to replace it with this project",
            ));
        }
        printer.warn(&format!("`{name}` from {} is replaced (--force)", other.display()));
    }
    let others: BTreeMap<&String, &Manifest> = all.iter().filter(|(n, _)| **n != name).collect();

    let listen = plan.edge().listen.as_ref().map(Address::bind).unwrap_or_default();
    let mut names: Vec<String> = spec.server.names.iter().map(|n| format!("{listen} {n}")).collect();
    if let Some(tls) = &plan.tls {
        names.extend(spec.server.names.iter().map(|n| format!("{} {n}", tls.listen)));
    }
    let listeners = clash::listeners(&plan);
    for (other, m) in &others {
        if let Some(why) = clash::find(&name, &names, &listeners, other, &m.names, &m.listeners) {
            return Err(hinted(
                why,
                "give one of them another name in [server].names or another port, or uninstall the other first",
            ));
        }
    }
    // What the files declare once per host, as rendered: names the renderer maps to one
    // (`a-b` and `a_b`) meet here rather than in a generic `nginx -t` failure.
    let declared: Vec<String> = entries
        .iter()
        .filter_map(|e| match &e.content {
            Content::File { text, .. } => Some(clash::declared(&e.path, text)),
            Content::Link(_) => None,
        })
        .flatten()
        .collect();
    for (other, m) in &others {
        let theirs: Vec<String> = m
            .files
            .iter()
            .filter(|(_, r)| matches!(r, Recorded::Sha256(_)))
            .flat_map(|(p, _)| {
                let text = std::fs::read_to_string(under(&root, p)).unwrap_or_default();
                clash::declared(p, &text)
            })
            .collect();
        if let Some(why) = clash::find_declared(&name, &declared, other, &theirs) {
            return Err(hinted(
                why,
                "give one of them another [app].name (names that differ only in `-`, `_` or `.` render the same nginx upstream)",
            ));
        }
    }
    let has_nginx = plan.output(crate::plan::OutputKind::NginxSite).is_some();
    let shared = has_nginx && !plan.site_has_default_server();
    let default_listens: Vec<String> = if shared { vec![listen.clone()] } else { Vec::new() };
    let default_tls = layout::TlsCatchAll::of(&plan).filter(|_| shared);
    if let Some(t) = &default_tls {
        // One address has one default server: its profile is every handshake's there.
        for (other, m) in &others {
            if let Some(o) = m
                .default_tls
                .as_ref()
                .filter(|o| o.listen == t.listen && o.differs_for_clients(t))
            {
                return Err(hinted(
                    format!(
                        "apps `{name}` and `{other}` both serve HTTPS on {} with different TLS settings (`{}` and `{}`)",
                        t.listen, t.protocols, o.protocols
                    ),
                    "nginx answers every handshake on one address with its default server's protocols: give both apps the same [tls].profile, or another [tls].listen",
                ));
            }
        }
    }

    // The secrets file is the user's: checked, never written. Where install starts the service,
    // one it could not start with stops the install before anything is written.
    for f in crate::install::secrets::check(&root, &plan) {
        if f.blocks_start && mode == Mode::Run && !args.dry_run {
            return Err(hinted(format!("nothing was installed: {}", f.message), f.hint));
        }
        printer.warn(&format!("{}\nhint: {}", f.message, f.hint));
    }
    if let Some(Err(why)) = plan.secrets_steps() {
        printer.warn(&why);
    }
    if let Some(why) = plan.static_warning() {
        printer.warn(&why);
    }
    for why in apache_warnings(&root, &plan) {
        printer.warn(&why);
    }
    let (mut changes, kept) = apply::changes(&root, &entries, old, args.force)?;
    let (shared, shared_kept) = shared_default(
        &templates,
        &root,
        &all,
        &name,
        (&default_listens, default_tls.as_ref()),
        args.force,
    )?;
    changes.extend(shared);
    let needed: Vec<&str> = plan.apache.as_ref().map(|a| a.modules.clone()).unwrap_or_default();
    let (module_changes, modules_enabled) = modules::changes(&root, &all, &name, &needed, args.force)?;
    changes.extend(module_changes);
    for k in &kept {
        printer.warn(&format!(
            "{} is no longer rendered but was changed by hand since install placed it: kept",
            k.display()
        ));
    }
    for k in &shared_kept {
        printer.warn(&format!(
            "{} (shared by every app) was changed by hand since install placed it: kept as it is",
            k.display()
        ));
    }

    if args.dry_run {
        let diff = apply::diff(&root, &changes);
        if diff.is_empty() {
            printer.status(
                "Up to date",
                &format!("{name} is installed as rendered under {}", root.display()),
            );
        } else {
            print!("{diff}");
            printer.status("Dry run", "nothing was written");
        }
        return Ok(Status::Success);
    }

    let report = validate::gate(&plan, &tree, Policy::from_env(), None)?;
    report.print(printer, false);
    if !report.is_ok() {
        printer.error(&anyhow::anyhow!("nothing was installed under {}", root.display()));
        return Ok(Status::Failed);
    }

    // With ACME, the front cannot load the site before a certificate exists, and without the
    // site it cannot answer the challenge: a self-signed placeholder goes in first (as
    // `deployctl cert` does on a first run), and `NAME-cert.service`, started after the
    // front's reload, replaces it. Removed again if this install fails and made its directory.
    let acme = plan.tls.as_ref().and_then(|t| {
        t.cert_dir
            .as_ref()
            .map(|d| (under(&root, d), under(&root, &t.webroot), t))
    });
    let made_cert_dir = acme.as_ref().map(|(d, _, _)| d.clone()).filter(|d| !d.exists());
    let mut tx = Transaction::default();
    let result = (|| {
        tx.ensure_dir(&under(&root, &layout::state_dir(&name)))?;
        if let Some((dir, webroot, tls)) = &acme {
            tx.ensure_dir(webroot)?;
            if crate::acme::live(dir)?.is_none() {
                crate::acme::install_self_signed(dir, &tls.cert_names, PLACEHOLDER_DAYS)?;
                printer.status(
                    "Placeholder",
                    &format!(
                        "a self-signed certificate in {} until {} obtains one",
                        dir.join(crate::acme::LIVE).display(),
                        tls.cert_units
                            .as_ref()
                            .map_or("`deployctl cert`", |u| u.service.as_str())
                    ),
                );
            }
        }
        tx.apply(&root, &changes)?;
        // A file no longer rendered (another target's config) leaves no empty directory.
        let conf_dir = layout::conf_dir(&name);
        let emptied: Vec<PathBuf> = changes
            .iter()
            .filter(|c| c.action == Action::Remove)
            .filter_map(|c| c.path.parent().filter(|p| p.starts_with(&conf_dir) && *p != conf_dir))
            .map(|p| under(&root, p))
            .collect();
        tx.remove_empty_dirs(&emptied);
        let units: Vec<PathBuf> = entries
            .iter()
            .filter(|e| e.path.starts_with(layout::SYSTEMD_UNITS))
            .map(|e| e.path.clone())
            .collect();
        let checked = host::check(
            &root,
            &units,
            has_nginx,
            plan.apache.is_some(),
            Policy::from_env().require_all,
        )?;
        let manifest = Manifest {
            app: name.clone(),
            project: Some(project.clone()),
            target: target.to_string(),
            files: entries
                .iter()
                .map(|e| (e.path.clone(), Recorded::of(&e.content)))
                .collect(),
            names: names.clone(),
            default_listens,
            default_tls,
            modules_enabled,
            listeners,
            inner_web_port: assigned.inner_web_port,
        };
        tx.place(
            &under(&root, &layout::manifest_path(&name)),
            &Content::File {
                text: manifest.to_json(),
                mode: 0o644,
            },
        )?;
        if mode == Mode::Run {
            services::run(&steps)?;
        }
        anyhow::Ok(checked)
    })();
    let checked = match result {
        Ok(c) => c,
        Err(e) => {
            if let Some(d) = &made_cert_dir {
                let _ = std::fs::remove_dir_all(d);
            }
            tx.rollback();
            if mode == Mode::Run {
                // The services read the files as they were again (best effort: the error
                // already says what failed).
                let _ = services::run(&services::undo_install(&steps, old.is_none()));
            }
            return Err(e.context(format!(
                "nothing was installed: every file under {} is as it was",
                root.display()
            )));
        }
    };
    for p in &checked.passed {
        printer.status("Checked", p);
    }
    for s in &checked.skipped {
        printer.warn(&format!("not checked: {s}"));
    }
    let placed = changes.iter().filter(|c| c.action != Action::Unchanged).count();
    printer.status(
        "Installed",
        &format!("{name} ({target}) under {}: {placed} paths changed", root.display()),
    );
    if let Some(port) = assigned.inner_web_port.filter(|p| *p != INNER_WEB_PORT) {
        printer.status(
            "Port",
            &format!("{name}'s Apache listens for nginx on 127.0.0.1:{port}, a port no other app on this host uses"),
        );
    }
    match mode {
        Mode::Run => printer.status("Started", &format!("{name}: {}", shells(&steps))),
        Mode::Print | Mode::Unavailable => {
            printer.status("Next", "no service was touched; on the host, run:");
            print!("{}", services::as_lines(&steps));
        }
    }
    Ok(Status::Success)
}

/// What Debian's own Apache configuration under `root` does to the plan's site that no check
/// fails on: its `000-default` site answers names no site has before the site's own refusing
/// one; behind nginx, `Listen 80` in ports.conf takes nginx's port when Apache starts.
fn apache_warnings(root: &Path, plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    if plan.apache.is_none() {
        return out;
    }
    let apache = under(root, Path::new("/etc/apache2"));
    if std::fs::symlink_metadata(apache.join("sites-enabled/000-default.conf")).is_ok() {
        out.push(
            "Debian's 000-default site is enabled: it answers host names no site has, before this site's own \
             refusing virtual host; run `a2dissite 000-default`"
                .into(),
        );
    }
    let edge_is_nginx = plan.output(crate::plan::OutputKind::NginxSite).is_some();
    let ports = std::fs::read_to_string(apache.join("ports.conf")).unwrap_or_default();
    if edge_is_nginx && ports.lines().any(|l| l.trim() == "Listen 80") {
        out.push(
            "/etc/apache2/ports.conf has `Listen 80`, nginx's port: Apache and nginx cannot both start; \
             remove it (Apache listens on loopback for nginx)"
                .into(),
        );
    }
    out
}

/// Steps in one line, `; `-separated.
fn shells(steps: &[Step]) -> String {
    steps.iter().map(Step::shell).collect::<Vec<_>>().join("; ")
}

/// The changes to the shared catch-all site: its entries for the listen addresses of every
/// installed app once app `name` needs `needs` (none: it is uninstalled), against the file
/// as the apps before rendered it. A shared file changed by hand since is kept as it is,
/// still needed or not (and listed), unless `force`.
fn shared_default(
    templates: &render::Templates,
    root: &Path,
    all: &BTreeMap<String, Manifest>,
    name: &str,
    (needs, needs_tls): (&[String], Option<&layout::TlsCatchAll>),
    force: bool,
) -> anyhow::Result<(Vec<Change>, Vec<PathBuf>)> {
    let before: BTreeSet<String> = all.values().flat_map(|m| m.default_listens.clone()).collect();
    let tls_of = |ms: &mut dyn Iterator<Item = &Manifest>| -> BTreeMap<String, layout::TlsCatchAll> {
        ms.filter_map(|m| m.default_tls.clone())
            .map(|t| (t.listen.clone(), t))
            .collect()
    };
    let tls_before = tls_of(&mut all.values());
    let mut after: BTreeSet<String> = all
        .iter()
        .filter(|(n, _)| n.as_str() != name)
        .flat_map(|(_, m)| m.default_listens.clone())
        .collect();
    after.extend(needs.iter().cloned());
    let mut tls_after = tls_of(&mut all.iter().filter(|(n, _)| n.as_str() != name).map(|(_, m)| m));
    if let Some(t) = needs_tls {
        tls_after.insert(t.listen.clone(), t.clone());
    }
    let recorded = Manifest {
        files: layout::default_site(templates, &before, &tls_before)?
            .iter()
            .map(|e| (e.path.clone(), Recorded::of(&e.content)))
            .collect(),
        ..Manifest::default()
    };
    let file = Path::new(layout::NGINX_AVAILABLE).join(layout::DEFAULT_SITE);
    let on_disk = Recorded::on_disk(&under(root, &file))?;
    let edited = on_disk.is_some() && on_disk.as_ref() != recorded.files.get(&file);
    let entries: Vec<Entry> = layout::default_site(templates, &after, &tls_after)?;
    if edited && !force {
        let rendered = entries
            .iter()
            .find(|e| e.path == file)
            .map(|e| Recorded::of(&e.content));
        if rendered != on_disk {
            // Hand-edited: neither rewritten nor removed; its link stays with it.
            return Ok((Vec::new(), vec![file]));
        }
    }
    apply::changes(root, &entries, Some(&recorded), force)
}

pub fn uninstall(args: &UninstallArgs, printer: &Printer) -> anyhow::Result<Status> {
    let (name, templates) = match &args.app {
        // The built-in templates when no deploy.toml is at hand: a catch-all rendered from
        // others is kept as changed by hand.
        Some(n) => (
            n.clone(),
            load(&args.spec).map_or_else(|_| render::Templates::load(None), |(_, t)| Ok(t))?,
        ),
        None => {
            let (spec, templates) = load(&args.spec)?;
            (spec.app.name, templates)
        }
    };
    let mode = services::mode(args.root.as_deref(), services::systemd_is_pid1());
    let root = std::path::absolute(args.root.as_deref().unwrap_or(Path::new("/")))?;
    let all = Manifest::all(&root)?;
    let Some(m) = all.get(&name) else {
        return Err(hinted(
            format!("`{name}` is not installed under {}", root.display()),
            "install records what it placed in /var/lib/deployctl/NAME/installed.json; there is none for this app",
        ));
    };
    // Named by a deploy.toml, the app must be that project's: another project under the
    // same name is not this one to remove.
    if args.app.is_none() {
        let project = std::fs::canonicalize(&args.spec.config)
            .with_context(|| format!("cannot resolve {}", args.spec.config.display()))?;
        if let Some(other) = m.project.as_ref().filter(|p| **p != project) {
            return Err(hinted(
                format!(
                    "nothing was removed: `{name}` is installed from another project: {} (this one is {})",
                    other.display(),
                    project.display()
                ),
                format!("to remove it anyway, name it: `deployctl uninstall --app {name}`"),
            ));
        }
    }
    let (before, after) = services::around_uninstall(m);
    if mode == Mode::Unavailable {
        return Err(hinted(
            format!(
                "nothing was removed: systemd is not PID 1 on this machine (a container?), so these steps cannot run:\n{}",
                services::as_lines(&[before.clone(), after.clone()].concat()).trim_end()
            ),
            "run the first where systemd runs, then `deployctl uninstall --root /` to remove the files, then the others",
        ));
    }
    if mode == Mode::Run {
        services::run(&before)?;
    }
    let mut changes = Vec::new();
    let mut kept = Vec::new();
    for (path, recorded) in &m.files {
        match Recorded::on_disk(&under(&root, path))? {
            None => {}
            Some(r) if &r == recorded => changes.push(Change {
                path: path.clone(),
                action: Action::Remove,
                new: None,
            }),
            Some(_) => kept.push(path.clone()),
        }
    }
    changes.push(Change {
        path: layout::manifest_path(&name),
        action: Action::Remove,
        new: None,
    });
    let (shared, shared_kept) = shared_default(&templates, &root, &all, &name, (&[], None), false)?;
    changes.extend(shared);
    kept.extend(shared_kept);
    changes.extend(modules::changes(&root, &all, &name, &[], false)?.0);
    let mut tx = Transaction::default();
    tx.apply(&root, &changes)?;
    // The directories install made for the app, deepest first, when nothing is left in them.
    let mut dirs: Vec<PathBuf> = Vec::new();
    for base in [layout::conf_dir(&name), layout::state_dir(&name)] {
        for p in m.files.keys().chain([&layout::manifest_path(&name)]) {
            let mut d = p.parent();
            while let Some(x) = d {
                if !x.starts_with(&base) {
                    break;
                }
                dirs.push(under(&root, x));
                d = x.parent();
            }
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    tx.remove_empty_dirs(&dirs);
    for k in &kept {
        printer.warn(&format!("{} was changed by hand since install: kept", k.display()));
    }
    printer.status(
        "Uninstalled",
        &format!("{name} from {}: {} paths removed", root.display(), changes.len()),
    );
    match mode {
        Mode::Run => {
            services::run(&after)?;
            printer.status("Stopped", &format!("{name}: {}", shells(&[before, after].concat())));
        }
        Mode::Print | Mode::Unavailable => {
            printer.status("Next", "no service was touched; on the host, run:");
            print!("{}", services::as_lines(&[before, after].concat()));
        }
    }
    Ok(Status::Success)
}

pub fn list(args: &ListArgs, printer: &Printer) -> anyhow::Result<Status> {
    let root = std::path::absolute(&args.root)?;
    let mut apps = Vec::new();
    for (name, m) in Manifest::all(&root)? {
        let (mut changed, mut missing) = (Vec::new(), Vec::new());
        for (path, recorded) in &m.files {
            match Recorded::on_disk(&under(&root, path))? {
                None => missing.push(path.display().to_string()),
                Some(r) if &r == recorded => {}
                Some(_) => changed.push(path.display().to_string()),
            }
        }
        let state = if changed.is_empty() && missing.is_empty() {
            "installed"
        } else {
            "changed"
        };
        // The app's socket (or, without one, its service) as systemd sees it, when it can tell.
        let units: Vec<String> = m
            .files
            .keys()
            .filter(|p| p.starts_with(layout::SYSTEMD_UNITS))
            .filter_map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .collect();
        let unit = units
            .iter()
            .find(|u| u.ends_with(".socket"))
            .or_else(|| units.iter().find(|u| u.ends_with(".service")));
        let (enabled, running) = match unit.and_then(|u| services::unit_state(&root, u)) {
            Some((e, r)) => (serde_json::json!(e), serde_json::json!(r)),
            None => (serde_json::Value::Null, serde_json::Value::Null),
        };
        apps.push(serde_json::json!({
            "app": name,
            "target": m.target,
            "state": state,
            "files": m.files.len(),
            "names": m.names,
            "changed": changed,
            "missing": missing,
            "enabled": enabled,
            "running": running,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&apps)?);
        return Ok(Status::Success);
    }
    if apps.is_empty() {
        printer.status("Nothing", &format!("is installed under {}", root.display()));
    }
    for a in &apps {
        println!(
            "{}\t{}\t{}\t{} files",
            a["app"].as_str().unwrap_or(""),
            a["target"].as_str().unwrap_or(""),
            a["state"].as_str().unwrap_or(""),
            a["files"]
        );
        for key in ["changed", "missing"] {
            for p in a[key].as_array().into_iter().flatten() {
                println!("  {key}: {}", p.as_str().unwrap_or(""));
            }
        }
    }
    Ok(Status::Success)
}
