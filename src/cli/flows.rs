//! `hostpolicyd flows [--json] [--follow] [--denied] [--limit N]`: the running daemon's flow records
//! (issue 14), one per line, newest last.

use clap::Args;

use crate::daemon::control::{self, ClientError, FlowsRequest};
use crate::exit;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// JSON Lines: one object per flow.
    #[arg(long)]
    pub json: bool,
    /// Then stream new and updated records until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// Denied flows only.
    #[arg(long)]
    pub denied: bool,
    /// The last N records only.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// Exit 0; 3 when no daemon runs; 70 when it answers something else (a closed pipe: 141, through
/// [`output::finish`](crate::cli::output::finish)).
pub fn run(settings: &Settings, args: &FlowsArgs) -> u8 {
    let request = FlowsRequest {
        denied: args.denied,
        limit: args.limit,
        follow: args.follow,
    };
    let result = control::flows(&settings.runtime_dir, &request, |r| {
        if args.json {
            match serde_json::to_string(&r) {
                Ok(line) => outln!("{line}"),
                Err(e) => {
                    errln!("hostpolicyd: error: a flow record: {e}");
                    return false;
                }
            }
        } else {
            outln!("{r}");
        }
        // Standard output is line-buffered: a follower sees each line as it comes. Stop at the first
        // failed write (the reader went away).
        !crate::cli::output::out_failed()
    });
    match result {
        Ok(()) => exit::OK,
        Err(e @ ClientError::NotRunning { .. }) => {
            errln!("hostpolicyd: {e}");
            exit::NOT_RUNNING
        }
        Err(e) => {
            errln!("hostpolicyd: error: {e}");
            exit::INTERNAL
        }
    }
}
