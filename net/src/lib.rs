//! collie-net: bytes on the wire.
//!
//! Owns frame codecs and protocol state machines: peer RPC, admin RPC (dog <-> sheep),
//! the NBD server, cluster-driver clients; and the traits a server implements (such as a
//! block export).
//!
//! Must not: depend on engine, or trust a length, count or offset from a socket before
//! checking it against a bound. (Filled in by the sheep/NBD issue.)

pub mod nbd;
