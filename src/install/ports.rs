//! The loopback port install assigns the web server behind another (`nginx+apache+*`'s
//! Apache), one per app on a host: what the app's last install recorded while no other app
//! claims it, else the lowest from [`INNER_WEB_PORT`] up that neither the app's own edge nor
//! another installed app listens on, nor a `Listen` of the root's Apache configuration that
//! install did not place declares.
//!
//! Per-app ports rather than one shared `Listen` with name-based virtual hosts: Apache refuses
//! the same `Listen` in two site files, so a shared one would be a host-wide file every such
//! app needs (placed with the first, removed with the last, kept when edited, as the nginx
//! catch-all is), and one app's virtual host would answer the names of none; a port of its
//! own keeps each app's site self-contained and its removal local. Does not own: the
//! addresses an app claims (`clash::listeners`) or the plan's use of the port (the plan's).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::clash;
use super::layout::under;
use super::manifest::Manifest;
use crate::plan::INNER_WEB_PORT;

/// Where on the host the inner web server listens.
const LOOPBACK: &str = "127.0.0.1";

/// Apache's configuration on a Debian host that may declare `Listen`.
const APACHE_LISTEN_FILES: &str = "/etc/apache2/ports.conf";
const APACHE_LISTEN_DIRS: [&str; 2] = ["/etc/apache2/sites-enabled", "/etc/apache2/conf-enabled"];

/// The port for app `name`'s inner web server under `root`, given its manifest from the
/// last install (`old`), every installed app's (`all`, its own among them) and the addresses
/// its own edge listens on (`edge`: `HOST:PORT`, which its Apache cannot take either).
pub fn inner_web_port(
    root: &Path,
    (name, edge): (&str, &[String]),
    old: Option<&Manifest>,
    all: &[&Manifest],
) -> anyhow::Result<u16> {
    let mut taken: Vec<String> = edge.to_vec();
    taken.extend(
        all.iter()
            .filter(|m| m.app != name)
            .flat_map(|m| m.listeners.iter())
            .filter_map(|l| l.split_once(' ').map(|(_, addr)| addr.to_string())),
    );
    taken.extend(apache_listens(root, all));
    let free = |port: u16| !taken.iter().any(|a| clash::overlap(a, &format!("{LOOPBACK}:{port}")));
    if let Some(port) = old.and_then(|m| m.inner_web_port).filter(|p| free(*p)) {
        return Ok(port);
    }
    (INNER_WEB_PORT..=u16::MAX).find(|p| free(*p)).ok_or_else(|| {
        anyhow::anyhow!("no loopback port from {INNER_WEB_PORT} up is free of the installed apps' listeners")
    })
}

/// The addresses of the `Listen` directives in the root's Apache configuration
/// (`ports.conf`, enabled sites and configuration) outside the files an install placed
/// (those are their apps' listeners).
fn apache_listens(root: &Path, all: &[&Manifest]) -> Vec<String> {
    let placed: BTreeSet<&PathBuf> = all.iter().flat_map(|m| m.files.keys()).collect();
    let mut files = vec![PathBuf::from(APACHE_LISTEN_FILES)];
    for dir in APACHE_LISTEN_DIRS {
        let Ok(entries) = std::fs::read_dir(under(root, Path::new(dir))) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| Path::new(dir).join(e.file_name()))
            .collect();
        names.sort();
        files.extend(names);
    }
    files
        .iter()
        .filter(|f| !placed.contains(f))
        .filter_map(|f| std::fs::read_to_string(under(root, f)).ok())
        .flat_map(|text| text.lines().filter_map(listen_address).collect::<Vec<_>>())
        .collect()
}

/// `HOST:PORT` of an Apache `Listen [IP:]PORT [PROTOCOL]` line (a bare port listens on every
/// address).
fn listen_address(line: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("Listen") {
        return None;
    }
    let arg = words.next()?;
    match arg.rsplit_once(':') {
        Some((host, port)) => port.parse::<u16>().ok().map(|p| format!("{host}:{p}")),
        None => arg.parse::<u16>().ok().map(|p| format!("0.0.0.0:{p}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, listeners: &[&str], inner: Option<u16>) -> Manifest {
        Manifest {
            app: name.into(),
            listeners: listeners.iter().map(|l| l.to_string()).collect(),
            inner_web_port: inner,
            ..Manifest::default()
        }
    }

    #[test]
    fn the_lowest_port_no_other_app_listens_on_and_a_reinstall_keeps_its_own() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let r = root.path();
        let one = app("one", &["nginx 0.0.0.0:80", "apache-listen 127.0.0.1:8081"], Some(8081));
        // Every listener counts, a wildcard one too.
        let other = app("other", &["apache-listen 0.0.0.0:8082"], None);
        let port = |name: &str, old: Option<&Manifest>, all: &[&Manifest]| {
            inner_web_port(r, (name, &[]), old, all).expect("a free port")
        };
        assert_eq!(port("two", None, &[]), INNER_WEB_PORT);
        assert_eq!(port("two", None, &[&one]), 8082);
        assert_eq!(port("two", None, &[&one, &other]), 8083);
        // Its own listener is no clash with itself.
        assert_eq!(port("one", Some(&one), &[&one, &other]), 8081);
        // A reinstall keeps its port when 8081 was freed since, and moves when it was taken.
        let two = app("two", &["nginx 0.0.0.0:80", "apache-listen 127.0.0.1:8083"], Some(8083));
        assert_eq!(port("two", Some(&two), &[&two]), 8083);
        let taker = app("taker", &["apache-listen 127.0.0.1:8083"], None);
        assert_eq!(port("two", Some(&two), &[&two, &taker]), 8081);
    }

    #[test]
    fn apaches_own_listen_lines_are_taken_and_an_installed_sites_are_its_apps() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let r = root.path();
        let apache = r.join("etc/apache2");
        std::fs::create_dir_all(apache.join("sites-enabled")).expect("a directory");
        std::fs::write(
            apache.join("ports.conf"),
            "Listen 8081\n<IfModule ssl_module>\n\tListen 443\n</IfModule>\n",
        )
        .expect("ports.conf");
        std::fs::write(apache.join("sites-enabled/hand.conf"), "Listen 127.0.0.1:8082 http\n").expect("a site");
        std::fs::write(apache.join("sites-enabled/one.conf"), "Listen 127.0.0.1:8083\n").expect("a site");
        let mut one = app("one", &["apache-listen 127.0.0.1:8083"], Some(8083));
        one.files.insert(
            PathBuf::from("/etc/apache2/sites-enabled/one.conf"),
            crate::install::manifest::Recorded::Sha256(String::new()),
        );
        // one.conf is `one`'s: its port is free for `one` again.
        assert_eq!(inner_web_port(r, ("one", &[]), Some(&one), &[&one]).ok(), Some(8083));
        assert_eq!(inner_web_port(r, ("two", &[]), None, &[&one]).ok(), Some(8084));
        // Nor its own edge's port.
        let edge = ["0.0.0.0:8084".to_string()];
        assert_eq!(inner_web_port(r, ("two", &edge), None, &[&one]).ok(), Some(8085));
        assert_eq!(listen_address("Listen [::1]:8090"), Some("[::1]:8090".into()));
        assert_eq!(listen_address("# Listen 8090"), None);
    }
}
