//! The kernel below the dataplane: sending one encoded transaction and turning the kernel's answer into
//! a [`DataplaneError`] that names the rejected object.

use std::fmt::Write as _;

use super::batch::EncodedBatch;
use super::DataplaneError;
use crate::netlink::{self as nl, BatchError, Reply};

/// Sends a batch and turns the kernel's answers into a result; `describe(seq, reply)` names the object
/// of a rejected message.
pub(crate) fn send_batch(
    batch: &EncodedBatch,
    describe: impl Fn(u32, &Reply) -> String,
) -> Result<(), DataplaneError> {
    match nl::send_batch(&batch.bytes, batch.objs.len(), batch.last_seq()) {
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
