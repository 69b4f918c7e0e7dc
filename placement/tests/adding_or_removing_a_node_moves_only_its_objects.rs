//! Scenario: one node joins or leaves a cluster. Only objects placed on that node move:
//! a primary changes only to the node that joined (or from the node that left), and an
//! object's target set either stays or swaps exactly that node for one other (the
//! target in its zone, or else the last). The targets that stay keep their order, but
//! may move up or down one slot.
//! Run with `--nocapture` to see the measured fractions (docs/placement.md quotes them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use collie_placement::{vnode_bytes_for, Node, NodeId, NodeIdx, Ring};
use proptest::prelude::*;
use support::{arb_cluster, arb_node, data_oids, ids, local_cluster, local_node, GIB};

/// What changed for a set of oids between the ring without `x` and the ring with it.
#[derive(Debug, Default)]
struct Movement {
    oids: u64,
    /// Oids whose primary differs.
    primaries: u64,
    /// Oids whose target set differs.
    sets: u64,
    /// Oids where a target that stayed changed slot (matters for erasure coding:
    /// fragment i lives on the i-th target).
    shifted: u64,
}

/// Checks every oid and returns the counts. `small` lacks `x`; `big` is `small` + `x`.
/// Panics with the oid when a rule is broken.
fn compare(
    small: &Ring,
    big: &Ring,
    x: NodeId,
    copies: usize,
    oids: impl Iterator<Item = u64>,
) -> Movement {
    // The bytes per vnode are the cluster's (kept from format), so other nodes' vnodes
    // do not change; a ring that had to rescale would move more.
    assert_eq!(small.vnode_bytes(), big.vnode_bytes());
    // Work in `big`'s indices: translate `small`'s once, allocate nothing per oid.
    let to_big: Vec<NodeIdx> = small
        .nodes()
        .iter()
        .map(|n| big.index_of(&n.id).unwrap())
        .collect();
    let x = big.index_of(&x).unwrap();
    let zone = |i: NodeIdx| big.node(i).zone;
    let mut m = Movement::default();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for oid in oids {
        m.oids += 1;
        small.targets_into(oid, copies, &mut a).unwrap();
        big.targets_into(oid, copies, &mut b).unwrap();
        a.iter_mut().for_each(|t| *t = to_big[t.index()]);
        let show = || format!("oid {oid:#x}: {:?} -> {:?}", ids(big, &a), ids(big, &b));
        if a[0] != b[0] {
            m.primaries += 1;
            assert_eq!(b[0], x, "{}: primary moved to another node", show());
        }
        if a == b {
            continue;
        }
        m.sets += 1;
        assert!(b.contains(&x), "{}: changed without the new node", show());
        let mut gone = a.iter().filter(|n| !b.contains(n));
        let out = *gone.next().unwrap();
        assert!(gone.next().is_none(), "{}: swaps more than one", show());
        // Which one leaves: the target in x's zone if the object had one there (x is
        // met first in that zone now), else the last target (x's zone is new to it and
        // takes a place among the first `copies` zones met).
        let expect_out = match a.iter().find(|&&t| zone(t) == zone(x)) {
            Some(&t) => t,
            None => *a.last().unwrap(),
        };
        assert_eq!(out, expect_out, "{}", show());
        // The others keep their order; x enters at or before the slot it frees.
        let out_slot = a.iter().position(|&n| n == out).unwrap();
        let x_slot = b.iter().position(|&n| n == x).unwrap();
        assert!(x_slot <= out_slot, "{}", show());
        let stay_a = a.iter().filter(|&&n| n != out);
        let stay_b = b.iter().filter(|&&n| n != x);
        assert!(stay_a.eq(stay_b), "{}: order changed", show());
        if x_slot < out_slot {
            m.shifted += 1;
        }
    }
    m
}

/// One join or leave over a million oids: checks the rules, prints the figures and
/// checks that primaries moved ≈ the changed node's share of the ring and of capacity.
fn scenario(name: &str, before: &[Node], after: &[Node], copies: usize) {
    let unit = vnode_bytes_for(before); // chosen at format, kept across epochs
    let r_before = Ring::new(before.iter().cloned(), unit).unwrap();
    let r_after = Ring::new(after.iter().cloned(), unit).unwrap();
    let joined = after.len() > before.len();
    let (small, big) = if joined {
        (&r_before, &r_after)
    } else {
        (&r_after, &r_before)
    };
    let x = big
        .nodes()
        .iter()
        .find(|n| small.index_of(&n.id).is_none())
        .unwrap()
        .clone();
    let m = compare(small, big, x.id, copies, data_oids(1_000_000));
    let n = m.oids as f64;
    let x_ring = big.primary_shares()[big.index_of(&x.id).unwrap().index()];
    let total: u64 = big.nodes().iter().map(|n| n.capacity).sum();
    let x_cap = x.capacity as f64 / total as f64;
    let moved = m.primaries as f64 / n;
    println!(
        "{name}: {} {} ({}/{} of capacity {:.4}, ring {:.4}); primaries moved {:.4}, \
         sets changed {:.4} (copies moved {:.4}), slots shifted {:.4}",
        x.id,
        if joined { "joins" } else { "leaves" },
        x.capacity >> 30,
        total >> 30,
        x_cap,
        x_ring,
        moved,
        m.sets as f64 / n,
        m.sets as f64 / n / copies as f64,
        m.shifted as f64 / n,
    );
    assert!(
        (moved - x_ring).abs() < 0.002,
        "moved {moved} vs ring {x_ring}"
    );
    assert!(
        (moved / x_cap - 1.0).abs() < 0.05,
        "moved {moved} vs capacity {x_cap}"
    );
}

fn without(nodes: &[Node], port: u16) -> Vec<Node> {
    nodes
        .iter()
        .filter(|n| n.id.port() != port)
        .cloned()
        .collect()
}

fn with(nodes: &[Node], extra: Node) -> Vec<Node> {
    let mut v = nodes.to_vec();
    v.push(extra);
    v
}

#[test]
fn equal_nodes_join_and_leave() {
    let six = local_cluster(&[100; 6]);
    scenario(
        "6 equal, -c 3",
        &six,
        &with(&six, local_node(6, 6, 100 * GIB)),
        3,
    );
    scenario("6 equal, -c 3", &six, &without(&six, 7005), 3);
    scenario(
        "6 equal, -c 1",
        &six,
        &with(&six, local_node(6, 6, 100 * GIB)),
        1,
    );
}

#[test]
fn unequal_nodes_join_and_leave() {
    let six = local_cluster(&[100, 200, 300, 100, 200, 300]);
    scenario(
        "1:2:3, -c 3",
        &six,
        &with(&six, local_node(6, 6, 200 * GIB)),
        3,
    );
    scenario("1:2:3, -c 3", &six, &without(&six, 7002), 3);
    scenario("1:2:3, -c 3", &six, &without(&six, 7000), 3);
}

#[test]
fn nodes_join_and_leave_shared_zones() {
    let mut six = local_cluster(&[100; 6]);
    for (i, n) in six.iter_mut().enumerate() {
        n.zone = i as u32 / 2;
    }
    scenario(
        "3 zones of 2, -c 3",
        &six,
        &with(&six, local_node(6, 1, 100 * GIB)),
        3,
    );
    scenario("3 zones of 2, -c 3", &six, &without(&six, 7005), 3);
    scenario(
        "3 zones of 2, -c 2",
        &six,
        &with(&six, local_node(6, 1, 100 * GIB)),
        2,
    );
    scenario(
        "3 zones of 2 + 1, -c 2",
        &six,
        &with(&six, local_node(6, 3, 100 * GIB)),
        2,
    );
}

proptest! {
    #![proptest_config(support::proptest_config(96))]

    /// Any cluster, any joining node (a gateway too), any copy count the smaller ring
    /// can place: the rules of `compare` hold for every oid.
    #[test]
    fn any_join_moves_only_to_the_new_node(
        nodes in arb_cluster(9, 6),
        x in arb_node(7),
        copies in 1usize..=6,
        seed in any::<u64>(),
    ) {
        prop_assume!(nodes.iter().all(|n| n.id != x.id));
        let unit = vnode_bytes_for(&nodes);
        let small = Ring::new(nodes.iter().cloned(), unit).unwrap();
        let big = Ring::new(with(&nodes, x.clone()), unit).unwrap();
        let copies = copies.min(small.zones());
        let oids = (0..3000u64).map(|i| seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        let m = compare(&small, &big, x.id, copies, oids);
        if x.capacity == 0 {
            prop_assert_eq!(m.sets, 0);
        }
    }
}
