//! collie-placement: where data lives.
//!
//! Owns ids (vid, oid), node and zone types, the consistent-hash ring with vnodes
//! weighted by capacity, zone-aware target selection and erasure geometry. Every node
//! computes the same answers from the same epoch's node list.
//!
//! Must not: do I/O, spawn tasks, read clocks, or depend on any other crate of ours.
//! (Rings and erasure geometry: the cluster and erasure-coding issues.)

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod ids;
pub mod redundancy;

pub use ids::{object_kind, ObjectKind, Vid};
pub use redundancy::Redundancy;
