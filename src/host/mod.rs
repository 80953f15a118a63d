//! The node itself, outside nftables: its interfaces and addresses (`iface`, rtnetlink) and the
//! connectivity checks run around a swap (`probe`). The engine sees them through the `Prober` trait and
//! plain data, so it is tested without them.

pub mod iface;
pub mod probe;
