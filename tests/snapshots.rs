//! One snapshot per example × target holding every rendered file (paths of this machine
//! replaced by `[REPO]` and `[DEPLOYCTL]`). A template change shows up here as a reviewable diff.

mod common;

use common::{Cli, TARGETS, examples, filter_paths};

#[test]
fn every_example_every_target() {
    for ex in examples() {
        let name = ex.file_name().unwrap().to_string_lossy().into_owned();
        for target in TARGETS {
            let run = Cli::new(&ex)
                .args(["render", "--stdout", "--target", target])
                .run()
                .success();
            insta::assert_snapshot!(
                format!("{name}__{}", target.replace('+', "-")),
                filter_paths(&run.stdout)
            );
        }
    }
}

/// The cluster targets, one snapshot each holding every file (manifests or Compose file, the
/// Containerfile, the nginx site).
#[test]
fn every_example_cluster_targets() {
    for ex in examples() {
        let name = ex.file_name().unwrap().to_string_lossy().into_owned();
        for target in ["kubernetes", "compose"] {
            let run = Cli::new(&ex)
                .args(["render", "--stdout", "--target", target])
                .run()
                .success();
            insta::assert_snapshot!(format!("{name}__{target}"), filter_paths(&run.stdout));
        }
    }
}

#[test]
fn check_show_prints_every_default() {
    let ex = common::example("flask-hello");
    let run = Cli::new(&ex).args(["check", "--show"]).run().success();
    let shown: toml::Table = toml::from_str(&run.stdout).expect("--show prints TOML");
    assert_eq!(
        shown["backend"]["graceful_timeout"].as_str(),
        Some("30s"),
        "a default filled in"
    );
    assert_eq!(shown["frontend"]["group"].as_str(), Some("www-data"));
    insta::assert_snapshot!("flask-hello__show", filter_paths(&run.stdout));
}
