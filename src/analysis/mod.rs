//! Questions answered about a configuration without a kernel: what happens to one packet (`explain`),
//! what is valid but almost certainly not meant (`lint`), whether a management flow stays open
//! (`lockout`), and which packets a change of configuration treats differently (`plan`). Pure: they
//! read the validated model and the node's resolved view.

pub mod explain;
pub mod lint;
pub mod lockout;
pub mod plan;
pub mod staged;
