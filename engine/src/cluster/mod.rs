//! Cluster membership: who is in the cluster at which epoch. A driver keeps the shared
//! member list; every change (join, leave, a member found dead) bumps the epoch, and
//! every node polls its driver to learn the current view. `local` (one machine, a shared
//! memory-mapped file) is the embedded default; `etcd` is a later driver behind the same
//! trait.

pub mod local;
pub mod runtime;
pub mod view;

use collie_placement::node::NodeId;

/// One member as the cluster driver records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub zone: u32,
    /// Bytes of storage the node offers (its weight on the ring).
    pub capacity: u64,
    pub nbd_port: u16,
    /// The peer port of each shard, in shard order.
    pub peer_ports: Vec<u16>,
    /// Partitions of the member's store: with `peer_ports.len()` shards this tells
    /// which shard serves an oid there (`shard::owner_of(partition_of(..))`).
    pub partitions: u32,
    pub pid: u32,
}

/// The membership at one epoch; members sorted by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub epoch: u32,
    pub members: Vec<Member>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster state {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cluster state {path} is not a collie local cluster file ({why})")]
    Foreign { path: String, why: String },
    #[error("the cluster is full ({0} members)")]
    Full(usize),
    #[error("node {0} is already a member (is another sheep using its address?)")]
    Duplicate(String),
    #[error("{0}")]
    Invalid(String),
}

/// What every cluster driver provides.
pub trait ClusterDriver: Send {
    /// Adds this node and returns the view that includes it.
    fn join(&mut self, me: &Member) -> Result<View, ClusterError>;
    /// The current view. Members whose process is gone are removed first (each
    /// removal bumps the epoch), so a dead node is noticed within one poll.
    fn poll(&mut self) -> Result<View, ClusterError>;
    /// Removes this node (clean shutdown).
    fn leave(&mut self) -> Result<(), ClusterError>;
}
