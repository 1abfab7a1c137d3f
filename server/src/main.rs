use std::process::ExitCode;

use clap::Parser;
use deployctl_common::error;
use deployctl_common::settings::ServeArgs;

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
    let mut args = cli.serve;
    if cli.quiet && args.log_level.is_none() {
        // In the arguments, not the settings: the master resolves them again on HUP.
        args.log_level = Some(deployctl_common::settings::LogLevel::Warning);
    }
    let result = deployctl_server::run::run(args);
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
