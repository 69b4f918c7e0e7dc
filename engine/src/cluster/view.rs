//! What a node knows about its cluster at one epoch: the members, the ring built from
//! them, and which member is this node. Immutable; a new epoch is a new view. The
//! cluster thread builds it and hands an `Arc` of it to every shard, so the data path
//! reads it without a lock.

use super::{Member, View};
use collie_placement::node::{Node as PlacementNode, NodeId};
use collie_placement::ring::{NodeIdx, Ring};
use collie_placement::PlacementError;

pub struct ClusterView {
    pub epoch: u32,
    /// Sorted by id; the ring's `NodeIdx` indexes this list.
    pub members: Vec<Member>,
    ring: Ring,
    /// This node's index in `members` (None in a view that does not include us).
    me: Option<usize>,
    /// Members of the last epoch this node served in that have not come back yet. While
    /// it is not empty the node serves no data: a copy on a missing member could be the
    /// only one that is up to date.
    pub waiting_for: Vec<NodeId>,
}

impl ClusterView {
    pub fn new(
        view: View,
        vnode_bytes: u64,
        me: NodeId,
        waiting_for: Vec<NodeId>,
    ) -> Result<ClusterView, PlacementError> {
        let mut members = view.members;
        members.sort_by_key(|m| m.id);
        let ring = Ring::new(
            members
                .iter()
                .map(|m| PlacementNode::new(m.id, m.zone, m.capacity)),
            vnode_bytes,
        )?;
        let me = members.iter().position(|m| m.id == me);
        Ok(ClusterView {
            epoch: view.epoch,
            members,
            ring,
            me,
            waiting_for,
        })
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Distinct zones holding data: the most copies an object can have now.
    pub fn zones(&self) -> usize {
        self.ring.zones()
    }

    pub fn is_me(&self, idx: usize) -> bool {
        self.me == Some(idx)
    }

    pub fn me(&self) -> Option<usize> {
        self.me
    }

    pub fn serving(&self) -> bool {
        self.waiting_for.is_empty()
    }

    /// Where the `copies` copies of `oid` live at this epoch, in placement order, as
    /// indexes into `members`. With fewer zones than copies (members died) every zone
    /// gets one: the object is degraded, not unwritable.
    pub fn targets(&self, oid: u64, copies: usize) -> Vec<usize> {
        let n = copies.min(self.ring.zones());
        let mut out: Vec<NodeIdx> = Vec::with_capacity(n);
        // Cannot fail: n <= zones.
        if self.ring.targets_into(oid, n, &mut out).is_err() {
            return Vec::new();
        }
        out.into_iter().map(NodeIdx::index).collect()
    }
}
