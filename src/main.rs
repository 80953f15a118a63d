//! The command line only: parse flags, resolve settings, run one command, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

use hostpolicyd::cli::Cli;
use hostpolicyd::exit;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap's own exit code for usage errors is 2, which our contract reserves for "apply failed".
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(exit::USAGE),
            };
        }
    };
    ExitCode::from(hostpolicyd::cli::run(cli))
}
