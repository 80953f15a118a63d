//! SIGHUP reloads, SIGTERM and SIGINT stop (signal-hook: the handlers only write to a pipe; a thread
//! turns them into [`Event`]s for the writer loop).

use std::io;
use std::sync::mpsc::Sender;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::Event;

/// Installs the handlers (before anything else, so that an early SIGHUP does not kill the daemon) and
/// forwards each signal to the writer loop.
pub fn spawn(tx: Sender<Event>) -> io::Result<()> {
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(Event::Signal(sig)).is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}

pub fn name(sig: i32) -> &'static str {
    match sig {
        SIGHUP => "SIGHUP",
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        _ => "signal",
    }
}
