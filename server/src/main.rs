use std::process::ExitCode;

use clap::Parser;
use deployctl::printer::Printer;
use deployctl::serve::ServeArgs;

/// The embedded WSGI server of deployctl; normally started as `deployctl serve`.
#[derive(Parser)]
#[command(name = "deployctl-server", version)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
    /// Print the Python version this server was built for and exit (used by `deployctl serve`).
    #[arg(long, hide = true)]
    probe: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.probe {
        println!("{}", deployctl_server::python::init::BUILT_FOR);
        return ExitCode::SUCCESS;
    }
    let result = deployctl_server::run::run(cli.serve);
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            Printer::new(false).error(&e);
            let failed = e.downcast_ref::<deployctl_server::master::WorkerFailed>().is_some();
            ExitCode::from(if failed {
                deployctl_server::master::EXIT_WORKER_FAILED as u8
            } else {
                1
            })
        }
    }
}
