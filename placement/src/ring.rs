//! The consistent-hash ring: which nodes hold an object. Every node builds the same ring
//! from the same epoch's node list and so picks the same targets without talking.
//!
//! Each node owns vnodes in proportion to its capacity; an oid's targets are the nodes
//! met walking clockwise from the oid's position, one per zone. See docs/placement.md.

use std::fmt;

use crate::error::PlacementError;
use crate::ids::fnv1a64;
use crate::node::{Node, NodeId, Zone};
use crate::redundancy::Redundancy;

/// Vnodes of a node of average capacity in the cluster [`vnode_bytes_for`] was asked
/// about (at format). Chosen by measurement (docs/placement.md): it keeps each node's
/// share of primaries within a few percent of its capacity share.
pub const DEFAULT_VNODES: u64 = 4096;

/// Most vnodes in one ring (12 bytes each: 12 MiB). Beyond it the ring doubles its bytes
/// per vnode until the total fits: that moves data, but only once a cluster has grown to
/// about 256 times the capacity of a node of average size at format.
pub const MAX_RING_VNODES: usize = 1 << 20;

/// Most nodes in one ring (Sheepdog allows 6144).
pub const MAX_NODES: usize = 8192;

/// Index of a node in [`Ring::nodes`] (the canonical order: by [`NodeId`]). Only
/// meaningful for the ring that returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeIdx(u32);

impl NodeIdx {
    pub fn index(self) -> usize {
        self.0 as usize
    }
    /// The idx of `nodes()[i]`.
    pub fn from_index(i: usize) -> NodeIdx {
        debug_assert!(i < MAX_NODES);
        NodeIdx(i as u32)
    }
}

/// Bytes of capacity per vnode for a cluster of these nodes: the mean capacity of the
/// nodes that store data over [`DEFAULT_VNODES`] (at least 1).
///
/// Choose it once (at format) and keep it: a node's vnode count then depends only on its
/// own capacity, so adding or removing a node moves only that node's objects. Recomputing
/// it for every epoch would rescale every node whenever the mean changes.
pub fn vnode_bytes_for(nodes: &[Node]) -> u64 {
    let (sum, count) = nodes
        .iter()
        .filter(|n| n.stores_data())
        .fold((0u128, 0u128), |(s, c), n| {
            (s + u128::from(n.capacity), c + 1)
        });
    if count == 0 {
        return 1;
    }
    let per = sum / count / u128::from(DEFAULT_VNODES);
    u64::try_from(per).unwrap_or(u64::MAX).max(1)
}

/// Vnodes of a node of `capacity` bytes at `vnode_bytes` per vnode: rounded to nearest,
/// at least 1 for a node that stores data, 0 for a gateway.
pub fn vnodes_for(capacity: u64, vnode_bytes: u64) -> u64 {
    if capacity == 0 {
        return 0;
    }
    let unit = u128::from(vnode_bytes.max(1));
    let v = (u128::from(capacity) + unit / 2) / unit;
    u64::try_from(v).unwrap_or(u64::MAX).max(1)
}

/// Stafford's Mix13, the splitmix64 finaliser: a bijection on u64 with full avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where vnode `index` of node `id` sits: FNV-1a 64 of the node id bytes followed by the
/// index (u32 little-endian), then [`mix64`] (FNV alone barely moves the high bits when
/// only the last bytes differ).
pub fn vnode_position(id: &NodeId, index: u32) -> u64 {
    let mut key = [0u8; crate::node::NODE_ID_BYTES + 4];
    key[..crate::node::NODE_ID_BYTES].copy_from_slice(&id.to_bytes());
    key[crate::node::NODE_ID_BYTES..].copy_from_slice(&index.to_le_bytes());
    mix64(fnv1a64(&key))
}

/// Salt of [`oid_position`]: keeps ring positions unrelated to other hashes of the oid
/// (the engine's partition is splitmix64 of the oid).
const OID_SALT: u64 = 0x6a09_e667_f3bc_c908;

/// Where an oid sits on the ring: murmur3's fmix64 of the oid xor a salt. A different
/// mixer from the partition hash, so that which node holds an object and which
/// partition it lands in on that node are independent.
pub fn oid_position(oid: u64) -> u64 {
    let mut k = oid ^ OID_SALT;
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The ring of one epoch's node list. Immutable once built; `Send + Sync`, so shards may
/// share one behind an `Arc`.
#[derive(Clone)]
pub struct Ring {
    /// Sorted by id (canonical order); [`NodeIdx`] indexes this.
    nodes: Vec<Node>,
    /// Dense zone number of each node (index into the sorted distinct data zones).
    zone_of: Vec<u32>,
    /// Vnodes of each node.
    vnode_counts: Vec<u32>,
    /// Vnode positions, ascending; `owners[i]` owns `positions[i]`.
    positions: Vec<u64>,
    owners: Vec<u32>,
    /// Distinct zones with at least one node that stores data.
    zones: usize,
    /// Bytes per vnode actually used (the asked value, doubled if the total was too big).
    vnode_bytes: u64,
}

impl Ring {
    /// Builds the ring of `nodes` (any order) with `vnode_bytes` bytes of capacity per
    /// vnode (see [`vnode_bytes_for`]; 0 counts as 1).
    pub fn new(
        nodes: impl IntoIterator<Item = Node>,
        vnode_bytes: u64,
    ) -> Result<Ring, PlacementError> {
        let mut nodes: Vec<Node> = nodes.into_iter().collect();
        if nodes.len() > MAX_NODES {
            return Err(PlacementError::TooManyNodes {
                nodes: nodes.len(),
                max: MAX_NODES,
            });
        }
        nodes.sort_unstable_by_key(|n| n.id);
        if let Some(w) = nodes.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(PlacementError::DuplicateNode(w[0].id));
        }

        let mut data_zones: Vec<Zone> = nodes
            .iter()
            .filter(|n| n.stores_data())
            .map(|n| n.zone)
            .collect();
        data_zones.sort_unstable();
        data_zones.dedup();
        // Gateways get a zone number too; they own no vnode so it is never compared.
        let zone_of: Vec<u32> = nodes
            .iter()
            .map(|n| data_zones.binary_search(&n.zone).unwrap_or(0) as u32)
            .collect();

        // Vnode counts from each node's own capacity; double the unit until they fit.
        // Terminates: at u64::MAX per vnode every data node has 1, and nodes fit.
        let mut unit = vnode_bytes.max(1);
        let counts = loop {
            let counts: Vec<u64> = nodes.iter().map(|n| vnodes_for(n.capacity, unit)).collect();
            let total = counts.iter().fold(0u64, |s, &c| s.saturating_add(c));
            if total <= MAX_RING_VNODES as u64 || unit == u64::MAX {
                break counts;
            }
            unit = unit.saturating_mul(2);
        };
        let vnode_counts: Vec<u32> = counts
            .iter()
            .map(|&c| u32::try_from(c).unwrap_or(u32::MAX))
            .collect();
        let total: usize = vnode_counts.iter().map(|&c| c as usize).sum();
        assert!(total <= MAX_RING_VNODES, "ring of {total} vnodes");

        let mut vnodes: Vec<(u64, u32)> = Vec::with_capacity(total);
        for (i, (node, &count)) in nodes.iter().zip(&vnode_counts).enumerate() {
            for v in 0..count {
                vnodes.push((vnode_position(&node.id, v), i as u32));
            }
        }
        // Ties (never seen with 64-bit positions) break by canonical node order.
        vnodes.sort_unstable();
        let (positions, owners) = vnodes.into_iter().unzip();

        Ok(Ring {
            nodes,
            zone_of,
            vnode_counts,
            positions,
            owners,
            zones: data_zones.len(),
            vnode_bytes: unit,
        })
    }

    /// [`Ring::new`] with [`vnode_bytes_for`] these nodes: for a one-off look (tests,
    /// tools). A cluster keeps the bytes per vnode it chose at format instead.
    pub fn balanced(nodes: &[Node]) -> Result<Ring, PlacementError> {
        Ring::new(nodes.iter().cloned(), vnode_bytes_for(nodes))
    }

    /// All members, gateways included, in canonical order (by id).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, idx: NodeIdx) -> &Node {
        &self.nodes[idx.index()]
    }

    pub fn index_of(&self, id: &NodeId) -> Option<NodeIdx> {
        self.nodes
            .binary_search_by(|n| n.id.cmp(id))
            .ok()
            .map(|i| NodeIdx(i as u32))
    }

    /// Distinct zones that hold data: the most targets one object can have.
    pub fn zones(&self) -> usize {
        self.zones
    }

    /// Vnodes owned by a node (0 for a gateway).
    pub fn vnodes(&self, idx: NodeIdx) -> u32 {
        self.vnode_counts[idx.index()]
    }

    pub fn total_vnodes(&self) -> usize {
        self.positions.len()
    }

    /// Bytes of capacity per vnode this ring used.
    pub fn vnode_bytes(&self) -> u64 {
        self.vnode_bytes
    }

    /// The first target of `oid`: the owner of the first vnode at or after its position.
    pub fn primary(&self, oid: u64) -> Result<NodeIdx, PlacementError> {
        if self.positions.is_empty() {
            return Err(self.not_enough_zones(1, None));
        }
        Ok(NodeIdx(self.owners[self.first_vnode(oid)]))
    }

    /// The `n` targets of `oid`, in order (copy or fragment i goes to the i-th): walking
    /// clockwise from the oid's position, the owner of each vnode whose zone has no
    /// target yet. Distinct zones, hence distinct nodes. Fails if `n` > [`Ring::zones`].
    pub fn targets(&self, oid: u64, n: usize) -> Result<Vec<NodeIdx>, PlacementError> {
        let mut out = Vec::with_capacity(n);
        self.targets_into(oid, n, &mut out)?;
        Ok(out)
    }

    /// [`Ring::targets`] for a VDI's redundancy (`-c 3`: 3 targets, `-c 4:2`: 6).
    pub fn targets_for(
        &self,
        oid: u64,
        redundancy: Redundancy,
    ) -> Result<Vec<NodeIdx>, PlacementError> {
        let n = redundancy.width() as usize;
        let mut out = Vec::with_capacity(n);
        self.walk(oid, n, &mut out)
            .map_err(|_| self.not_enough_zones(n, Some(redundancy)))?;
        Ok(out)
    }

    /// [`Ring::targets`] into a caller's buffer (cleared first): no allocation once the
    /// buffer has room for `n`.
    pub fn targets_into(
        &self,
        oid: u64,
        n: usize,
        out: &mut Vec<NodeIdx>,
    ) -> Result<(), PlacementError> {
        self.walk(oid, n, out)
    }

    fn walk(&self, oid: u64, n: usize, out: &mut Vec<NodeIdx>) -> Result<(), PlacementError> {
        out.clear();
        if n > self.zones {
            return Err(self.not_enough_zones(n, None));
        }
        if n == 0 {
            return Ok(());
        }
        out.reserve(n);
        let start = self.first_vnode(oid);
        // One lap is enough: every zone counted in `zones` owns at least one vnode.
        let lap = self.owners[start..].iter().chain(&self.owners[..start]);
        for &owner in lap {
            let zone = self.zone_of[owner as usize];
            if out.iter().any(|t| self.zone_of[t.index()] == zone) {
                continue;
            }
            out.push(NodeIdx(owner));
            if out.len() == n {
                return Ok(());
            }
        }
        debug_assert!(false, "a lap of the ring met fewer than {n} zones");
        Err(self.not_enough_zones(n, None))
    }

    /// Index of the first vnode at or after the oid's position (`len` wraps to 0).
    fn first_vnode(&self, oid: u64) -> usize {
        let pos = oid_position(oid);
        let i = self.positions.partition_point(|&p| p < pos);
        if i == self.positions.len() {
            0
        } else {
            i
        }
    }

    fn not_enough_zones(&self, needed: usize, redundancy: Option<Redundancy>) -> PlacementError {
        PlacementError::NotEnoughZones {
            needed,
            zones: self.zones,
            redundancy,
        }
    }

    /// Each node's exact share of the ring (the fraction of all positions whose first
    /// vnode it owns): the share of primaries it receives, by [`NodeIdx`].
    pub fn primary_shares(&self) -> Vec<f64> {
        let mut shares = vec![0f64; self.nodes.len()];
        let Some(&last) = self.positions.last() else {
            return shares;
        };
        let mut prev = last;
        for (&pos, &owner) in self.positions.iter().zip(&self.owners) {
            // The arc (prev, pos] belongs to this vnode; wrapping_sub handles the wrap.
            let arc = pos.wrapping_sub(prev);
            shares[owner as usize] += arc as f64;
            prev = pos;
        }
        if self.positions.len() == 1 {
            // One vnode owns the whole ring (the arc above came out as 0).
            shares[self.owners[0] as usize] = 1.0;
            return shares;
        }
        let full = 2f64.powi(64);
        shares.iter_mut().for_each(|s| *s /= full);
        shares
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_list();
        for (n, c) in self.nodes.iter().zip(&self.vnode_counts) {
            l.entry(&format_args!(
                "{} zone {} capacity {} vnodes {}",
                n.id, n.zone, n.capacity, c
            ));
        }
        l.finish()?;
        write!(
            f,
            " ({} zones, {} vnodes, {} bytes per vnode)",
            self.zones,
            self.positions.len(),
            self.vnode_bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn node(s: &str, zone: Zone, capacity: u64) -> Node {
        Node::new(s.parse().unwrap(), zone, capacity)
    }

    #[test]
    fn mixers_match_their_references() {
        // splitmix64 with seed 1234567 (Vigna's reference output).
        let mut seed: u64 = 1_234_567;
        let mut next = || {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix64(seed)
        };
        assert_eq!(next(), 6_457_827_717_110_365_317);
        assert_eq!(next(), 3_203_168_211_198_807_973);
        assert_eq!(next(), 9_817_491_932_198_370_423);
    }

    /// Ring positions are part of the cluster's on-disk contract: changing them moves
    /// every object of every cluster on upgrade. These values pin them.
    #[test]
    fn positions_are_pinned() {
        let id: NodeId = "127.0.0.1:7000".parse().unwrap();
        // Computed independently (a few lines of Python) from the definitions above.
        assert_eq!(vnode_position(&id, 0), 0xfcdb_b151_9499_49ad);
        assert_eq!(vnode_position(&id, 1), 0x950a_f18e_bf39_052b);
        assert_eq!(oid_position(0), 0xbd0e_d0d0_8a42_a70c);
        assert_eq!(oid_position(1 << 32), 0x3eac_82fb_eac2_058b);
    }

    #[test]
    fn vnode_counts_follow_capacity() {
        assert_eq!(vnodes_for(0, 1), 0);
        assert_eq!(vnodes_for(1, GIB), 1);
        assert_eq!(vnodes_for(GIB / 2, GIB), 1);
        assert_eq!(vnodes_for(3 * GIB / 2, GIB), 2);
        assert_eq!(vnodes_for(7 * GIB, GIB), 7);
        assert_eq!(vnodes_for(u64::MAX, 0), u64::MAX);
        let nodes = [
            node("127.0.0.1:7000", 0, 100 * GIB),
            node("127.0.0.1:7001", 1, 200 * GIB),
            node("127.0.0.1:7002", 2, 0),
        ];
        assert_eq!(vnode_bytes_for(&nodes), 150 * GIB / DEFAULT_VNODES);
        assert_eq!(vnode_bytes_for(&nodes[2..]), 1);
        let ring = Ring::balanced(&nodes).unwrap();
        let v: Vec<u32> = (0..3).map(|i| ring.vnodes(NodeIdx(i))).collect();
        assert_eq!(v, vec![2731, 5461, 0]);
        assert_eq!(ring.total_vnodes(), 2731 + 5461);
        assert_eq!(ring.zones(), 2);
    }

    #[test]
    fn too_many_vnodes_double_the_unit() {
        let nodes = [
            node("127.0.0.1:7000", 0, 1 << 40),
            node("127.0.0.1:7001", 1, 1 << 40),
        ];
        // 2^40 / 2^18 = 4 Mi vnodes each: halved three times to 512 Ki each.
        let ring = Ring::new(nodes, 1 << 18).unwrap();
        assert_eq!(ring.vnode_bytes(), 1 << 21);
        assert_eq!(ring.total_vnodes(), MAX_RING_VNODES);
        // Degenerate units still give every data node a vnode.
        let ring = Ring::new(
            [
                node("127.0.0.1:7000", 0, 1),
                node("127.0.0.1:7001", 0, u64::MAX),
            ],
            u64::MAX,
        )
        .unwrap();
        assert_eq!(ring.total_vnodes(), 2);
    }

    #[test]
    fn duplicate_and_too_many_nodes_are_refused() {
        let a = node("127.0.0.1:7000", 0, GIB);
        let b = node("[::ffff:127.0.0.1]:7000", 1, GIB);
        let e = Ring::new([a.clone(), b], 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "node 127.0.0.1:7000 appears twice in the node list"
        );
        let many = (0..=MAX_NODES).map(|i| {
            Node::new(
                NodeId::new(std::net::Ipv4Addr::from(i as u32).into(), 7000),
                0,
                0,
            )
        });
        assert!(matches!(
            Ring::new(many, 1),
            Err(PlacementError::TooManyNodes { .. })
        ));
    }

    #[test]
    fn too_few_zones_is_a_clear_error() {
        let ring = Ring::balanced(&[
            node("127.0.0.1:7000", 0, GIB),
            node("127.0.0.1:7001", 0, GIB),
            node("127.0.0.1:7002", 1, GIB),
            node("127.0.0.1:7003", 2, 0),
        ])
        .unwrap();
        assert_eq!(ring.zones(), 2);
        assert_eq!(ring.targets(5, 2).unwrap().len(), 2);
        assert_eq!(
            ring.targets(5, 3).unwrap_err().to_string(),
            "3 copies need 3 zones, the cluster has 2 zones with storage"
        );
        let r = Redundancy::Erasure { data: 4, parity: 2 };
        assert_eq!(
            ring.targets_for(5, r).unwrap_err().to_string(),
            "erasure coding 4:2 needs 6 zones, the cluster has 2 zones with storage"
        );
        let empty = Ring::balanced(&[]).unwrap();
        assert_eq!(
            empty.primary(1).unwrap_err().to_string(),
            "1 copy needs 1 zone, the cluster has 0 zones with storage"
        );
        assert_eq!(empty.targets(1, 0).unwrap(), vec![]);
    }

    #[test]
    fn one_vnode_owns_the_whole_ring() {
        let ring = Ring::new([node("127.0.0.1:7000", 3, 1)], GIB).unwrap();
        assert_eq!(ring.total_vnodes(), 1);
        assert_eq!(ring.primary_shares(), vec![1.0]);
        for oid in [0, 1, u64::MAX, 1 << 63] {
            assert_eq!(ring.targets(oid, 1).unwrap(), vec![NodeIdx(0)]);
        }
    }

    #[test]
    fn gateways_are_members_but_never_targets() {
        let nodes = [
            node("127.0.0.1:7002", 0, 0),
            node("127.0.0.1:7000", 1, GIB),
            node("127.0.0.1:7001", 2, GIB),
        ];
        let ring = Ring::balanced(&nodes).unwrap();
        let gw = ring.index_of(&nodes[0].id).unwrap();
        assert_eq!(gw, NodeIdx(2));
        assert_eq!(ring.node(gw), &nodes[0]);
        assert_eq!(ring.vnodes(gw), 0);
        let mut buf = Vec::new();
        for oid in 0..1000 {
            ring.targets_into(oid, 2, &mut buf).unwrap();
            assert!(!buf.contains(&gw));
            assert_eq!(buf[0], ring.primary(oid).unwrap());
        }
        assert!(ring.index_of(&"127.0.0.1:7003".parse().unwrap()).is_none());
        let shares = ring.primary_shares();
        assert_eq!(shares[2], 0.0);
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn rings_can_be_shared_between_shards() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Ring>();
    }

    #[test]
    fn debug_summarises() {
        let ring = Ring::new([node("127.0.0.1:7000", 3, 2 * GIB)], GIB).unwrap();
        assert_eq!(
            format!("{ring:?}"),
            "[127.0.0.1:7000 zone 3 capacity 2147483648 vnodes 2] (1 zones, 2 vnodes, 1073741824 bytes per vnode)"
        );
    }
}
