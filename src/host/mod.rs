//! The node itself, outside nftables: its interfaces and addresses (`iface`, rtnetlink), the
//! connectivity checks run around a swap (`probe`) and the process's memory (`mem`). The engine sees
//! them through the `Prober` trait and plain data, so it is tested without them.

#[deny(unsafe_code)]
pub mod iface;
pub mod mem;
#[deny(unsafe_code)]
pub mod probe;
