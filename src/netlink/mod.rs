//! The kernel transport: every netlink socket of the crate, below `nft/` (nf_tables), `host/`
//! (rtnetlink) and `daemon/nftmon.rs` (nf_tables notifications and read-backs).
//!
//! - [`consts`]: every netlink number, once (`NLM_F_*`, `NFT_MSG_*`, `NFTA_*`, rtnetlink's).
//! - [`socket`]: open and bind ([`Port::Kernel`] for the nf_tables writer, [`Port::Private`] for readers
//!   and subscribers so that notifications of our own writes carry the process id), multicast groups,
//!   buffer sizes, extended ACKs; the only `unsafe` of the transport (one `setsockopt`).
//! - [`msg`]: one [`Writer`] for messages and attributes, one iterator over the messages of a datagram
//!   ([`messages`]) and one over (nested) attributes ([`attrs`], [`Attr::nested`]).
//! - [`error`]: the kernel's answers ([`Reply`], with the extended ACK's message and offset) and the typed
//!   [`Error`] ([`ErrorKind`]: socket, rejected, outcome unknown, timeout, interrupted dump).
//! - [`exchange`]: a batch in ONE `sendmsg` with its answers mapped to sequence numbers
//!   ([`send_batch`], [`BatchError`]); a request or dump ([`Conn::exchange`], with `NLM_F_DUMP_INTR`);
//!   a multicast [`Subscription`] whose receive can time out.
//!
//! # Adding a netfilter subsystem (issue 14: NFLOG, conntrack events)
//!
//! Nothing here is nf_tables-specific except the constants. NFLOG (`NFNL_SUBSYS_ULOG`): open a
//! [`Subscription`] of [`Protocol::Netfilter`] on [`Port::Private`] with no groups, send the config
//! messages (`NFULNL_MSG_CONFIG`: `NFULNL_CFG_CMD_PF_BIND`, `NFULNL_CFG_CMD_BIND` for the group, copy
//! mode) with [`Subscription::send`] (build them with [`Writer::begin_msg`]), then [`Subscription::recv`]
//! and iterate [`messages`]: each `NFULNL_MSG_PACKET` has the prefix, ifindex and payload as attributes
//! ([`Msg::attrs`]). Conntrack events (`NFNL_SUBSYS_CTNETLINK`): a [`Subscription`] with the bind mask of
//! `NFNLGRP_CONNTRACK_NEW` and `_DESTROY` ([`group_mask`]); each message's nested attributes (tuples,
//! mark, counters) are read with [`Attr::nested`]. Constants go into [`consts`], nowhere else.

pub mod conntrack;
pub mod consts;
pub mod error;
pub mod exchange;
pub mod msg;
pub mod nflog;
pub mod socket;

pub use consts::*;
pub use error::{describe_errno, parse_replies, Error, ErrorKind, Reply};
pub use exchange::{
    batch_socket, batch_time, send_batch, send_batch_on, Answer, BatchError, Conn, Delivery,
    Subscription, ANSWER_TIMEOUT,
};
pub use msg::{
    align4, attr_str, attrs, be32, be64, messages, msg_attrs, nft_type, request, udata_comment,
    udata_comment_of, udata_tlv, Attr, Msg, Writer,
};
pub use socket::{group_mask, Port, Protocol, Socket, PRIVATE_PORTS};
