//! How long rendering every target of each example takes (no validators).
//!
//! `cargo bench --bench render`; prints the median and p90 of many runs per example.
//! Target (issue: core): well under 50 ms for all targets of an example.

use std::path::Path;
use std::time::Instant;

use deployctl::render::{Templates, render};
use deployctl::spec::Spec;
use deployctl::target::Target;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut examples: Vec<_> = std::fs::read_dir(&root)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("deploy.toml").is_file())
        .collect();
    examples.sort();
    let templates = Templates::load(None)?;
    for ex in examples {
        let spec = Spec::load(&ex.join("deploy.toml"))?;
        let mut samples = Vec::new();
        let mut files = 0;
        for _ in 0..200 {
            let start = Instant::now();
            files = 0;
            for target in Target::implemented() {
                files += render(&spec, target, &ex.join("deploy").join(target.to_string()), &templates)?
                    .files
                    .len();
            }
            samples.push(start.elapsed());
        }
        samples.sort();
        let load_start = Instant::now();
        let _ = Templates::load(None)?;
        let load = load_start.elapsed();
        println!(
            "{}: all {} targets ({files} files): median {:.3} ms, p90 {:.3} ms; template set load {:.3} ms",
            ex.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
            Target::implemented().count(),
            samples[samples.len() / 2].as_secs_f64() * 1e3,
            samples[samples.len() * 9 / 10].as_secs_f64() * 1e3,
            load.as_secs_f64() * 1e3,
        );
    }
    Ok(())
}
