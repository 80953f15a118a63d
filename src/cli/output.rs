//! Every command's standard output and standard error, through one writer that never panics.
//!
//! `print!`/`eprintln!` panic when the write fails (`render >/dev/full`, `status --json | head -c 10`:
//! exit 101 and a Rust backtrace hint). Commands write with [`outln!`]/[`out!`]/[`errln!`] instead
//! (clippy's `print_stdout`/`print_stderr` lints are denied in the library), and [`run`](super::run)
//! ends with [`finish`], which turns the first failed write into the exit status:
//!
//! - a closed pipe (`EPIPE` on either stream) ends quietly with [`BROKEN_PIPE`] (141, 128 + SIGPIPE:
//!   what a shell reports for `ls | head`), whatever the command was going to exit with;
//! - any other write error (`ENOSPC` on `/dev/full`, `EBADF` on a closed descriptor, `EIO`) is
//!   reported in one line on standard error (when it is the output that failed) and exits
//!   [`exit::INTERNAL`](crate::exit::INTERNAL) (70).
//!
//! After a failed write, later writes to the same stream are skipped: the command still runs to its
//! end (an `apply` must still save its state), it only stops talking.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

use crate::exit;

/// The exit status after a closed pipe: 128 + SIGPIPE, as a shell reports a process SIGPIPE killed.
pub const BROKEN_PIPE: u8 = 141;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Out => "standard output",
            Stream::Err => "standard error",
        }
    }
}

/// The first failed write of each stream.
#[derive(Debug, Default)]
struct Failures {
    out: Option<io::Error>,
    err: Option<io::Error>,
}

impl Failures {
    fn slot(&mut self, s: Stream) -> &mut Option<io::Error> {
        match s {
            Stream::Out => &mut self.out,
            Stream::Err => &mut self.err,
        }
    }
}

static FAILURES: Mutex<Failures> = Mutex::new(Failures {
    out: None,
    err: None,
});

fn failures() -> std::sync::MutexGuard<'static, Failures> {
    FAILURES.lock().unwrap_or_else(|p| p.into_inner())
}

fn write_to(stream: Stream, args: fmt::Arguments<'_>, newline: bool) {
    let mut f = failures();
    if f.slot(stream).is_some() {
        return;
    }
    let result = match stream {
        Stream::Out => {
            let mut w = io::stdout().lock();
            w.write_fmt(args)
                .and_then(|()| if newline { w.write_all(b"\n") } else { Ok(()) })
        }
        Stream::Err => {
            let mut w = io::stderr().lock();
            w.write_fmt(args)
                .and_then(|()| if newline { w.write_all(b"\n") } else { Ok(()) })
        }
    };
    if let Err(e) = result {
        *f.slot(stream) = Some(e);
    }
}

/// Writes to standard output (use [`out!`]/[`outln!`]).
pub fn write_out(args: fmt::Arguments<'_>, newline: bool) {
    write_to(Stream::Out, args, newline);
}

/// Whether a write to standard output failed (a command that streams, `flows --follow`, stops then).
pub fn out_failed() -> bool {
    failures().out.is_some()
}

/// Writes to standard error (use [`errln!`]).
pub fn write_err(args: fmt::Arguments<'_>, newline: bool) {
    write_to(Stream::Err, args, newline);
}

/// Flushes standard output and maps the first failed write to the exit status (see the module
/// documentation); `code` is the command's own status when every write went through.
pub fn finish(code: u8) -> u8 {
    let flushed = io::stdout().lock().flush();
    let mut f = failures();
    if let (Err(e), None) = (flushed, &f.out) {
        f.out = Some(e);
    }
    let (out, errs) = (f.out.take(), f.err.take());
    drop(f);
    let broken = |e: &Option<io::Error>| {
        e.as_ref()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    };
    if broken(&out) || broken(&errs) {
        return BROKEN_PIPE;
    }
    match (out, errs) {
        (Some(e), None) => {
            // One line; if standard error fails too there is no one left to tell.
            let _ = writeln!(
                io::stderr().lock(),
                "hostpolicyd: error: cannot write to {}: {e}",
                Stream::Out.name()
            );
            exit::INTERNAL
        }
        (Some(_), Some(_)) | (None, Some(_)) => exit::INTERNAL,
        (None, None) => code,
    }
}

/// `print!` that never panics ([`output`](self)).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write_out(format_args!($($arg)*), false)
    };
}

/// `println!` that never panics ([`output`](self)).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::write_out(format_args!($($arg)*), true)
    };
}

/// `eprintln!` that never panics ([`output`](self)).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::write_err(format_args!($($arg)*), true)
    };
}
