//! collie-placement: where data lives.
//!
//! Owns ids (vid, oid), node and zone types, the consistent-hash ring with vnodes
//! weighted by capacity, zone-aware target selection and erasure geometry. Every node
//! computes the same answers from the same epoch's node list.
//!
//! Must not: do I/O, spawn tasks, read clocks, or depend on any other crate of ours.
//! (Filled in by the cluster and erasure-coding issues.)
