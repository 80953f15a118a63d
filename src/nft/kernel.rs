//! The seam below the [`super::Dataplane`]: the [`Kernel`] the swap talks to. It sends one transaction
//! (all or nothing) and reads our table back (its chains and sets, a set's elements, a comment).
//! [`NetlinkKernel`] is the real one (over `crate::netlink`); `fake.rs` models the kernel's objects
//! and transaction semantics for tests without root. Everything above it (planner, encoder, executor)
//! is the same code for both.

use std::fmt::Write as _;

use super::batch::EncodedBatch;
use super::inventory::{self, Inventory, KElem, KSet};
use super::DataplaneError;
use crate::netlink::{self as nl, BatchError, Reply};

/// What the swap needs from the kernel.
pub(crate) trait Kernel {
    /// Sends one transaction; the kernel commits all of it or nothing.
    fn send(&mut self, batch: &EncodedBatch) -> Result<(), BatchError>;
    /// The transactions sent until [`Kernel::release`] belong to one swap: the real kernel sends them
    /// on one socket (see [`NetlinkKernel`]). Nothing for the fake.
    fn hold(&mut self) {}
    /// The end of what [`Kernel::hold`] began.
    fn release(&mut self) {}
    /// Table inet `table` (chains, sets; no rules, no elements), None when it does not exist.
    fn read_table(&mut self, table: &str) -> Result<Option<Inventory>, DataplaneError>;
    /// The named sets and maps of table inet `table`.
    fn read_sets(&mut self, table: &str) -> Result<Vec<KSet>, DataplaneError>;
    /// The elements of set `set` of table inet `table`.
    fn read_elements(&mut self, table: &str, set: &str) -> Result<Vec<KElem>, DataplaneError>;
    /// The comment of table inet `table` (`chain` None) or of its chain `chain`: None when it does not
    /// exist, `Some("")` when it has no comment.
    fn read_comment(
        &mut self,
        table: &str,
        chain: Option<&str>,
    ) -> Result<Option<String>, DataplaneError>;
}

/// The kernel through netlink: every call opens its own socket, in the network namespace of the
/// calling thread, except the transactions of one swap (between [`Kernel::hold`] and
/// [`Kernel::release`], one call on one thread), which share one.
///
/// Why: closing a netfilter socket right after a commit waits for the kernel's clean-up of that commit
/// (~10 ms on 6.18, measured with `strace -T`, whatever the batch's size). With a socket per
/// transaction, that wait fell between the staging transaction and the switch of a two-transaction
/// swap; the held socket is closed on another thread, off the apply's path.
#[derive(Debug, Default)]
pub struct NetlinkKernel {
    held: Option<Held>,
}

#[derive(Debug)]
enum Held {
    /// Asked for; opened by the first transaction.
    Wanted,
    Open(nl::Socket),
}

impl Kernel for NetlinkKernel {
    fn send(&mut self, batch: &EncodedBatch) -> Result<(), BatchError> {
        let (bytes, messages, last) = (&batch.bytes, batch.objs.len(), batch.last_seq());
        let sock = match self.held.take() {
            None => return nl::send_batch(bytes, messages, last),
            Some(Held::Wanted) => nl::batch_socket()?,
            Some(Held::Open(sock)) => sock,
        };
        let sent = nl::send_batch_on(&sock, bytes, messages, last);
        // A socket whose batch failed is not used again: an answer may still come on it.
        self.held = Some(match sent {
            Ok(()) => Held::Open(sock),
            Err(_) => Held::Wanted,
        });
        sent
    }
    fn hold(&mut self) {
        if self.held.is_none() {
            self.held = Some(Held::Wanted);
        }
    }
    fn release(&mut self) {
        if let Some(Held::Open(sock)) = self.held.take() {
            close_in_background(sock);
        }
    }
    fn read_table(&mut self, table: &str) -> Result<Option<Inventory>, DataplaneError> {
        inventory::read(table)
    }
    fn read_sets(&mut self, table: &str) -> Result<Vec<KSet>, DataplaneError> {
        inventory::sets(table)
    }
    fn read_elements(&mut self, table: &str, set: &str) -> Result<Vec<KElem>, DataplaneError> {
        inventory::elements(table, set)
    }
    fn read_comment(
        &mut self,
        table: &str,
        chain: Option<&str>,
    ) -> Result<Option<String>, DataplaneError> {
        inventory::comment(table, chain)
    }
}

/// Closes `sock` on a short-lived thread: the close waits for the kernel's clean-up of the last commit
/// made on it, which nobody needs to wait for. Inline when no thread can be started.
fn close_in_background(sock: nl::Socket) {
    // When the thread cannot be started, the closure and the socket in it are dropped with the error:
    // closed inline.
    let _ = std::thread::Builder::new()
        .name("nl-close".into())
        .spawn(move || drop(sock));
}

/// Sends a batch and turns the kernel's answer into a result; `describe(seq, reply)` names the object
/// of a rejected message.
pub(crate) fn send_batch(
    kernel: &mut dyn Kernel,
    batch: &EncodedBatch,
    describe: impl Fn(u32, &Reply) -> String,
) -> Result<(), DataplaneError> {
    match kernel.send(batch) {
        Ok(()) => Ok(()),
        Err(BatchError::Socket(e)) => Err(e.into()),
        Err(BatchError::Unknown(e)) => Err(e.into()),
        Err(BatchError::Rejected { first, more, lost }) => {
            let mut message = format!(
                "{}: {}",
                describe(first.seq, &first),
                nl::describe_errno(first.errno)
            );
            if let Some(m) = first.msg.as_deref().filter(|m| !m.is_empty()) {
                let _ = write!(message, " (kernel: {m})");
            }
            if more > 0 {
                let _ = write!(message, "; {more} more objects rejected");
            }
            if lost {
                message.push_str("; some answers were lost (receive buffer full)");
            }
            Err(DataplaneError::os(message, first.errno))
        }
    }
}
