//! collie-net: bytes on the wire.
//!
//! Owns frame codecs and protocol state machines: peer RPC, admin RPC (dog <-> sheep),
//! the NBD server, cluster-driver clients; and the traits a server implements (such as a
//! block export).
//!
//! Must not: depend on engine, or trust a length, count or offset from a socket before
//! checking it against a bound, or block on a runtime of its own: servers here are
//! generic over `futures` I/O traits and the caller supplies the executor and timers.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod nbd;
pub mod peer;
