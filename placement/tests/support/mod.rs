//! Shared helpers of the placement scenarios: clusters, oids, and comparing rings by
//! node id (indices are per ring).

#![allow(dead_code)]

use collie_placement::{Node, NodeId, NodeIdx, Ring, Vid};
use proptest::prelude::*;

pub const GIB: u64 = 1 << 30;

/// Nodes on one machine as the quick start runs them: 127.0.0.1:7000, 7001, ...,
/// node i in zone i, with capacities in GiB.
pub fn local_cluster(capacities_gib: &[u64]) -> Vec<Node> {
    capacities_gib
        .iter()
        .enumerate()
        .map(|(i, &c)| local_node(i as u16, i as u32, c * GIB))
        .collect()
}

pub fn local_node(i: u16, zone: u32, capacity: u64) -> Node {
    let id: NodeId = format!("127.0.0.1:{}", 7000 + i).parse().unwrap();
    Node::new(id, zone, capacity)
}

/// `count` oids shaped like real ones: the data objects of 16 VDIs, in order.
pub fn data_oids(count: u32) -> impl Iterator<Item = u64> {
    let vdis = 16;
    let per = count.div_ceil(vdis);
    (0..count).map(move |i| {
        let vid = Vid::of_name(&format!("vdi{}", i / per));
        vid.data_oid(i % per)
    })
}

pub fn ids(ring: &Ring, targets: &[NodeIdx]) -> Vec<NodeId> {
    targets.iter().map(|&t| ring.node(t).id).collect()
}

/// A node with a random IPv4 address and port.
pub fn arb_id() -> impl Strategy<Value = NodeId> {
    (any::<[u8; 4]>(), 1u16..).prop_map(|(a, p)| NodeId::new(std::net::Ipv4Addr::from(a).into(), p))
}

/// A random node: zone below `zones`, capacity 256 MiB to 8 GiB (ratios up to 32, so a
/// ring never outgrows its vnode bound) or (1 in 10) a gateway.
pub fn arb_node(zones: u32) -> impl Strategy<Value = Node> {
    (
        arb_id(),
        0..zones,
        prop_oneof![9 => (1u64..=32).prop_map(|k| k * GIB / 4), 1 => Just(0u64)],
    )
        .prop_map(|(id, zone, capacity)| Node::new(id, zone, capacity))
}

/// 1 to `max` nodes with distinct ids, in up to `zones` zones, at least one storing data.
pub fn arb_cluster(max: usize, zones: u32) -> impl Strategy<Value = Vec<Node>> {
    proptest::collection::vec(arb_node(zones), 1..=max).prop_map(|mut nodes| {
        nodes.sort_by_key(|n| n.id);
        nodes.dedup_by_key(|n| n.id);
        if nodes.iter().all(|n| n.capacity == 0) {
            nodes[0].capacity = GIB;
        }
        nodes
    })
}

/// `cases` cases; failures saved beside the test file (`*.proptest-regressions`).
pub fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    }
}
