//! collie-placement: where data lives.
//!
//! Owns ids (vid, oid), node and zone types, the consistent-hash ring with vnodes
//! weighted by capacity, zone-aware target selection and erasure geometry. Every node
//! computes the same answers from the same epoch's node list (docs/placement.md).
//!
//! Must not: do I/O, spawn tasks, read clocks, or depend on any other crate of ours.
//! Erasure geometry and the Reed-Solomon wrapper: `erasure` (the engine does not use
//! them yet; the erasure-coding issue wires them in).

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod erasure;
pub mod error;
pub mod ids;
pub mod node;
pub mod pattern;
pub mod redundancy;
pub mod ring;

pub use error::PlacementError;
pub use ids::{object_kind, ObjectKind, Vid};
pub use node::{Node, NodeId, Zone};
pub use redundancy::Redundancy;
pub use ring::{vnode_bytes_for, NodeIdx, Ring};
