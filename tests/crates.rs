//! The crates match the architecture: the embedded server depends on what it shares with the
//! CLI (`deployctl-common`), never on rendering, templates, validation or orchestration —
//! a template edit must not relink the server, and the server must not carry the CLI's
//! dependencies.

use std::process::Command;

/// Packages of the CLI's side that must not be in the server's tree: rendering, progress,
/// diffs, running tools, scratch files, and ACME.
const CLI_ONLY: [&str; 11] = [
    "tera",
    "include_dir",
    "indicatif",
    "similar",
    "duct",
    "which",
    "tempfile",
    "instant-acme",
    "rcgen",
    "x509-parser",
    "tokio",
];

#[test]
fn the_server_depends_on_nothing_of_rendering_or_orchestration() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(&cargo)
        .args(["tree", "--offline", "--manifest-path", manifest])
        .args(["-p", "deployctl-server", "-e", "normal", "--prefix", "none"])
        .output()
        .expect("running cargo tree");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One package per line: `name vX.Y.Z (path)`, `(*)` when shown before.
    let packages: Vec<&str> = stdout.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(
        packages.first() == Some(&"deployctl-server"),
        "the tree does not start at deployctl-server:\n{stdout}"
    );
    assert!(packages.contains(&"deployctl-common"), "{stdout}");
    assert!(
        !packages.contains(&"deployctl"),
        "the server depends on the CLI crate:\n{stdout}"
    );
    let found: Vec<&str> = CLI_ONLY.into_iter().filter(|p| packages.contains(p)).collect();
    assert!(found.is_empty(), "deployctl-server depends on {found:?}:\n{stdout}");
}
