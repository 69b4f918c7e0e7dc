//! collie-engine: everything one node does with its disks.
//!
//! Owns the node-local object store: shards (one glommio executor per core), the
//! partitions each shard owns, their direct-I/O segment logs with group commit, the
//! in-memory extent index with checkpoints, CRC32C verification on every read, and
//! compaction; VDIs (inodes, vids, byte ranges over objects) served as NBD exports and
//! answered to admin requests; cluster membership and the gateway that reaches every
//! copy of an object over peer RPC (docs/cluster.md); erasure-coded objects, their
//! fragments and stripe versions (docs/erasure.md); recovery after membership changes
//! (docs/recovery.md).
//!
//! Must not: take a lock on the data path (shards talk by message), return bytes that
//! failed their checksum, acknowledge a write before it is durable (unless the store
//! was opened `nosync`), or panic on anything read from disk.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod checkpoint;
pub mod cluster;
pub mod ec;
pub mod error;
pub mod export;
pub mod format;
pub mod frontend;
pub mod gateway;
mod held;
pub mod index;
mod listen;
pub mod node;
pub mod partition;
pub mod peer;
pub mod recovery;
pub mod shard;
pub mod store;
pub mod vdi;

pub use error::{Result, StoreError};
pub use partition::{ObjectInfo, PartitionStats, WriteMeta, MAX_IO, MAX_OBJECT_SIZE};
pub use shard::Shard;
pub use store::{Store, StoreConfig};
