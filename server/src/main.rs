use std::process::ExitCode;

use clap::Parser;
use deployctl_common::error;
use deployctl_common::settings::{HANDOFF_ENV, Handoff, ServeArgs, ServeSettings};

/// The embedded WSGI server of deployctl; normally started as `deployctl serve`.
#[derive(Parser)]
#[command(name = "deployctl-server", version)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
    /// Print the Python version this server was built for and exit (used by `deployctl serve`).
    #[arg(long, hide = true)]
    probe: bool,
    /// Only warnings and errors (`--log-level warning`).
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.probe {
        println!("{}", deployctl_server::python::init::BUILT_FOR);
        return ExitCode::SUCCESS;
    }
    let result = start(cli).and_then(|(args, settings)| deployctl_server::run::run(args, settings));
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("{}", error::report(&e, error::stderr_color()));
            let failed = e.downcast_ref::<deployctl_server::master::WorkerFailed>().is_some();
            ExitCode::from(if failed {
                deployctl_server::master::EXIT_WORKER_FAILED as u8
            } else {
                1
            })
        }
    }
}

/// The flags, and the settings when `deployctl serve` resolved them already and handed both
/// over in `$DEPLOYCTL_SERVE_HANDOFF` (then the command line is empty).
fn start(cli: Cli) -> anyhow::Result<(ServeArgs, Option<ServeSettings>)> {
    if let Some(json) = std::env::var_os(HANDOFF_ENV) {
        // SAFETY: no other thread exists yet. Neither the workers nor the app must see it.
        unsafe { std::env::remove_var(HANDOFF_ENV) };
        if std::env::args_os().len() > 1 {
            anyhow::bail!("${HANDOFF_ENV} is set and flags are given: the server takes one or the other");
        }
        let json = json
            .into_string()
            .map_err(|_| anyhow::anyhow!("${HANDOFF_ENV} is not UTF-8"))?;
        let handoff = Handoff::from_json(&json)?;
        return Ok((handoff.args, Some(handoff.settings)));
    }
    let mut args = cli.serve;
    if cli.quiet {
        // In the flags, not the settings: the master resolves them again on HUP.
        args.quiet();
    }
    Ok((args, None))
}
