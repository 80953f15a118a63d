//! The command line only: parse flags, resolve settings, run one command, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

use std::io::IsTerminal;

use hostpolicyd::cli::{output, Cli};
use hostpolicyd::exit;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap's own exit code for usage errors is 2, which our contract reserves for "apply failed".
            // Printed through cli::output as every command's output (`--help | head -1`,
            // `--help >/dev/full`; clap's own print reports no error for the latter).
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::OK
                }
                _ => exit::USAGE,
            };
            let text = e.render();
            if e.use_stderr() {
                let terminal = std::io::stderr().is_terminal();
                let text = if terminal {
                    text.ansi().to_string()
                } else {
                    text.to_string()
                };
                output::write_err(format_args!("{text}"), false);
            } else {
                let terminal = std::io::stdout().is_terminal();
                let text = if terminal {
                    text.ansi().to_string()
                } else {
                    text.to_string()
                };
                output::write_out(format_args!("{text}"), false);
            }
            return ExitCode::from(output::finish(code));
        }
    };
    ExitCode::from(hostpolicyd::cli::run(cli))
}
