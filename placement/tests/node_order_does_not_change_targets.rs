//! Scenario: every node builds its ring from the epoch's node list as it received it.
//! Whatever the order of that list, the ring and every oid's targets are the same.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use collie_placement::{vnode_bytes_for, Ring};
use proptest::prelude::*;
use support::{arb_cluster, ids, local_cluster};

proptest! {
    #![proptest_config(support::proptest_config(128))]

    #[test]
    fn any_order_gives_the_same_targets(
        (nodes, shuffled) in arb_cluster(12, 8)
            .prop_flat_map(|n| (Just(n.clone()), Just(n).prop_shuffle())),
        oids in proptest::collection::vec(any::<u64>(), 300),
    ) {
        let unit = vnode_bytes_for(&nodes);
        prop_assert_eq!(unit, vnode_bytes_for(&shuffled));
        let a = Ring::new(nodes, unit).unwrap();
        let b = Ring::new(shuffled, unit).unwrap();
        prop_assert_eq!(a.nodes(), b.nodes());
        prop_assert_eq!(a.total_vnodes(), b.total_vnodes());
        let n = a.zones().min(3);
        for oid in oids {
            prop_assert_eq!(
                ids(&a, &a.targets(oid, n).unwrap()),
                ids(&b, &b.targets(oid, n).unwrap())
            );
        }
    }
}

/// The same list reversed, on a realistic cluster: nodes are listed by id either way.
#[test]
fn reversed_local_cluster_is_the_same_ring() {
    let nodes = local_cluster(&[100, 200, 300, 100, 200, 300]);
    let mut reversed = nodes.clone();
    reversed.reverse();
    let a = Ring::balanced(&nodes).unwrap();
    let b = Ring::balanced(&reversed).unwrap();
    assert_eq!(a.nodes(), &nodes[..]);
    assert_eq!(b.nodes(), &nodes[..]);
    for oid in 0..10_000u64 {
        assert_eq!(a.targets(oid, 3).unwrap(), b.targets(oid, 3).unwrap());
    }
}
