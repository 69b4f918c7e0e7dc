//! collie-tools' small shared library for its binaries: the units users type and read
//! (`20G`, `20 GB`) and the pure half of `dog` (command-line parsing and output
//! formatting), kept here so they can be unit-tested without a running sheep.
//!
//! Must not: use collie-engine. `dog` is an admin client built on net and placement
//! only (DESIGN.md §1), and everything in this library is linked into it.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod dogcli;
pub mod units;
