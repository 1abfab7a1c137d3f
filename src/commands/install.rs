//! `deployctl install` and `uninstall`: glue between the CLI and `crate::install`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::cli::{InstallArgs, ListArgs, UninstallArgs};
use crate::install::apply::{self, Action, Change, Transaction};
use crate::install::host;
use crate::install::layout::{self, Content, Entry, under};
use crate::install::manifest::{Manifest, Recorded};
use crate::plan::{Address, Environment, Plan};
use crate::printer::{Printer, hinted};
use crate::render;
use crate::target::Frontend;
use crate::validate::{self, Policy};

use super::{Status, load, parse_target, probed};

pub fn install(args: &InstallArgs, printer: &Printer) -> anyhow::Result<Status> {
    let (spec, templates) = load(&args.spec)?;
    let target = parse_target(&spec, args.target.as_deref())?;
    if target.frontend != Frontend::Nginx {
        return Err(hinted(
            format!("install does not place target `{target}` yet"),
            "install places nginx+embedded, nginx+uwsgi and nginx+gunicorn; `deployctl render` writes the files of the others",
        ));
    }
    let name = spec.app.name.clone();
    let plan = probed(Plan::resolve(
        &spec,
        target,
        Environment::Production {
            out: layout::conf_dir(&name),
        },
    ));
    let Some(root) = &args.root else {
        return no_root(&plan);
    };
    let root = std::path::absolute(root)?;
    let tree = render::render_plan(&plan, &templates)?;
    let entries = layout::entries(&plan, &tree)?;
    let all = Manifest::all(&root)?;
    let old = all.get(&name);
    let others: BTreeMap<&String, &Manifest> = all.iter().filter(|(n, _)| **n != name).collect();

    let listen = plan.edge().listen.as_ref().map(Address::bind).unwrap_or_default();
    let names: Vec<String> = spec.server.names.iter().map(|n| format!("{listen} {n}")).collect();
    for (other, m) in &others {
        if let Some(clash) = names.iter().find(|n| m.names.contains(n)) {
            let (addr, server) = clash.split_once(' ').unwrap_or(("", clash));
            return Err(hinted(
                format!("apps `{name}` and `{other}` both claim the server name {server} on {addr}"),
                "give one of them another name in [server].names, or uninstall the other first",
            ));
        }
    }
    let default_listens: Vec<String> = if plan.site_has_default_server() {
        Vec::new()
    } else {
        vec![listen.clone()]
    };

    if let Some(why) = plan.static_warning() {
        printer.warn(&why);
    }
    let (mut changes, kept) = apply::changes(&root, &entries, old, args.force)?;
    let (shared, shared_kept) = shared_default(&root, &all, &name, &default_listens, args.force)?;
    changes.extend(shared);
    for k in kept.iter().chain(&shared_kept) {
        printer.warn(&format!(
            "{} is no longer rendered but was changed by hand since install placed it: kept",
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

    let mut tx = Transaction::default();
    let result = (|| {
        tx.ensure_dir(&under(&root, &layout::state_dir(&name)))?;
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
        let checked = host::check(&root, &units, Policy::from_env().require_all)?;
        let manifest = Manifest {
            app: name.clone(),
            target: target.to_string(),
            files: entries
                .iter()
                .map(|e| (e.path.clone(), Recorded::of(&e.content)))
                .collect(),
            names: names.clone(),
            default_listens,
        };
        tx.place(
            &under(&root, &layout::manifest_path(&name)),
            &Content::File {
                text: manifest.to_json(),
                mode: 0o644,
            },
        )?;
        anyhow::Ok(checked)
    })();
    let checked = match result {
        Ok(c) => c,
        Err(e) => {
            tx.rollback();
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
    if let Some(units) = &plan.units {
        printer.status(
            "Next",
            &format!(
                "on the host: `systemctl daemon-reload && systemctl enable --now {} && systemctl reload nginx`",
                units.socket
            ),
        );
    }
    Ok(Status::Success)
}

/// Without `--root`: starting services is not done by this build, and where systemd is not
/// PID 1 it cannot be; say which steps would run and what to run instead.
fn no_root(plan: &Plan) -> anyhow::Result<Status> {
    let systemd = std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd");
    let socket = plan.units.as_ref().map_or(String::new(), |u| u.socket.clone());
    let why = if systemd {
        "install does not start services yet"
    } else {
        "systemd is not PID 1 on this machine (a container?), so the steps `systemctl daemon-reload`, \
         `systemctl enable --now` of the socket and `systemctl reload nginx` cannot run"
    };
    Err(hinted(
        format!("nothing was installed: {why}"),
        format!(
            "place the files with `deployctl install --root /` (or a staged root for an image), then run \
             `systemctl daemon-reload && systemctl enable --now {socket} && systemctl reload nginx` where systemd runs"
        ),
    ))
}

/// The changes to the shared catch-all site: its entries for the listen addresses of every
/// installed app once app `name` needs `needs` (none: it is uninstalled), against the file
/// as the apps before rendered it. A shared file changed by hand is kept (and listed).
fn shared_default(
    root: &Path,
    all: &BTreeMap<String, Manifest>,
    name: &str,
    needs: &[String],
    force: bool,
) -> anyhow::Result<(Vec<Change>, Vec<PathBuf>)> {
    let before: BTreeSet<String> = all.values().flat_map(|m| m.default_listens.clone()).collect();
    let mut after: BTreeSet<String> = all
        .iter()
        .filter(|(n, _)| n.as_str() != name)
        .flat_map(|(_, m)| m.default_listens.clone())
        .collect();
    after.extend(needs.iter().cloned());
    let recorded = Manifest {
        files: layout::default_site(&before)
            .iter()
            .map(|e| (e.path.clone(), Recorded::of(&e.content)))
            .collect(),
        ..Manifest::default()
    };
    let entries: Vec<Entry> = layout::default_site(&after);
    apply::changes(root, &entries, Some(&recorded), force)
}

pub fn uninstall(args: &UninstallArgs, printer: &Printer) -> anyhow::Result<Status> {
    let name = match &args.app {
        Some(n) => n.clone(),
        None => load(&args.spec)?.0.app.name,
    };
    let Some(root) = &args.root else {
        return Err(hinted(
            "uninstall only works on a staged root yet (it does not stop services)",
            format!(
                "run `systemctl disable --now {name}.socket {name}.service` on the host, then `deployctl uninstall --root /`"
            ),
        ));
    };
    let root = std::path::absolute(root)?;
    let all = Manifest::all(&root)?;
    let Some(m) = all.get(&name) else {
        return Err(hinted(
            format!("`{name}` is not installed under {}", root.display()),
            "install records what it placed in /var/lib/deployctl/NAME/installed.json; there is none for this app",
        ));
    };
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
    let (shared, shared_kept) = shared_default(&root, &all, &name, &[], false)?;
    changes.extend(shared);
    kept.extend(shared_kept);
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
        apps.push(serde_json::json!({
            "app": name,
            "target": m.target,
            "state": state,
            "files": m.files.len(),
            "names": m.names,
            "changed": changed,
            "missing": missing,
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
