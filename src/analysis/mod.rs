//! Questions answered about a configuration without a kernel: what happens to one packet (`explain`),
//! what is valid but almost certainly not meant (`lint`), and whether a management flow stays open
//! (`lockout`). Pure: they read the validated model and the node's resolved view.

pub mod explain;
pub mod lint;
pub mod lockout;
pub mod staged;
