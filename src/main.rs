use std::process::ExitCode;

use clap::Parser;
use deployctl::cli::Cli;
use deployctl::commands::{self, Status};
use deployctl::printer::Printer;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let printer = Printer::new(cli.quiet);
    match commands::run(cli, &printer) {
        Ok(Status::Success) => ExitCode::SUCCESS,
        Ok(Status::Failed) => ExitCode::from(1),
        Err(err) => {
            printer.error(&err);
            ExitCode::from(if deployctl::printer::is_usage(&err) { 2 } else { 1 })
        }
    }
}
