//! The configuration stage: files → YAML nodes with positions (`yaml`) → validated model (`validate`,
//! `model`), with every problem as a [`diag::Diagnostic`] (`FILE:LINE:COL: error: …`). `load` is the only
//! module that reads files; everything else here is pure.

pub mod cache;
pub mod diag;
pub mod load;
pub mod model;
pub mod validate;
pub mod yaml;
