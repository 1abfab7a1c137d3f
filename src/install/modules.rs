//! Apache's modules as `a2enmod` enables them, shared between apps: a module's links are made
//! by the first install that needs it, recorded in every manifest of an app that needs it
//! while install owns it, and removed with the last of those apps. A module enabled before
//! any install (by Debian or by hand) is never recorded, so it stays. A module's `# Depends:`
//! are enabled with it, as `a2enmod` does. Does not own: which
//! modules a site needs (the plan's `ApacheFiles::modules`) or the links' shape
//! (`layout::module_links`).

use std::collections::BTreeMap;
use std::path::Path;

use super::apply::{self, Action, Change};
use super::layout::{self, under};
use super::manifest::Manifest;

/// The module links to change for app `name` now needing `needed` (none: it is uninstalled),
/// given every installed app's manifest `all`; and the modules its manifest records.
pub fn changes(
    root: &Path,
    all: &BTreeMap<String, Manifest>,
    name: &str,
    needed: &[&str],
    force: bool,
) -> anyhow::Result<(Vec<Change>, Vec<String>)> {
    let owned_by_others = |m: &str| {
        all.iter()
            .any(|(n, man)| n != name && man.modules_enabled.iter().any(|x| x == m))
    };
    let owned_before = |m: &str| {
        all.get(name)
            .is_some_and(|man| man.modules_enabled.iter().any(|x| x == m))
    };
    let needed = with_dependencies(root, needed);
    let needed: Vec<&str> = needed.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    let mut enabled = Vec::new();
    for m in &needed {
        let load = under(root, &Path::new(layout::APACHE_MODS_ENABLED).join(format!("{m}.load")));
        let present = std::fs::symlink_metadata(&load).is_ok();
        if present && !owned_by_others(m) && !owned_before(m) {
            // Enabled before install: not ours to remove.
            continue;
        }
        let (c, _) = apply::changes(root, &layout::module_links(root, m)?, None, force)?;
        out.extend(c);
        enabled.push(m.to_string());
    }
    // Modules this app enabled and no longer needs, unless another app still owns them.
    if let Some(man) = all.get(name) {
        for m in &man.modules_enabled {
            if needed.contains(&m.as_str()) || owned_by_others(m) {
                continue;
            }
            for ext in ["load", "conf"] {
                let path = Path::new(layout::APACHE_MODS_ENABLED).join(format!("{m}.{ext}"));
                let expected = Path::new("../mods-available").join(format!("{m}.{ext}"));
                if std::fs::read_link(under(root, &path)).is_ok_and(|t| t == expected) {
                    out.push(Change {
                        path,
                        action: Action::Remove,
                        new: None,
                    });
                }
            }
        }
    }
    Ok((out, enabled))
}

/// `modules` with what their `.load` files under `root` say they depend on (`# Depends: a b`,
/// as `a2enmod` reads it), each dependency before the module, each once.
fn with_dependencies(root: &Path, modules: &[&str]) -> Vec<String> {
    fn visit(root: &Path, m: &str, out: &mut Vec<String>, depth: usize) {
        if out.iter().any(|x| x == m) || depth > 8 {
            return;
        }
        let load = under(
            root,
            &Path::new(layout::APACHE_MODS_AVAILABLE).join(format!("{m}.load")),
        );
        let text = std::fs::read_to_string(load).unwrap_or_default();
        for line in text.lines() {
            if let Some(deps) = line.trim_start().strip_prefix("# Depends:") {
                for d in deps.split_whitespace() {
                    visit(root, d, out, depth + 1);
                }
            }
        }
        if !out.iter().any(|x| x == m) {
            out.push(m.to_string());
        }
    }
    let mut out = Vec::new();
    for m in modules {
        visit(root, m, &mut out, 0);
    }
    out
}
