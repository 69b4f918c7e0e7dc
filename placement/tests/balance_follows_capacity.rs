//! Scenario: a million real-looking oids over six nodes land on each node in proportion
//! to its capacity, as primaries and as all copies of `-c 3`.
//! Run with `--nocapture` to see the measured shares (docs/placement.md quotes them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use collie_placement::{Node, Ring};
use support::{data_oids, local_cluster};

const OIDS: u32 = 1_000_000;

struct Shares {
    /// Share of primaries per node (canonical order), sampled.
    primary: Vec<f64>,
    /// Share of all copies of `-c copies` per node, sampled.
    all: Vec<f64>,
    /// Exact share of the ring per node.
    arcs: Vec<f64>,
}

fn measure(nodes: &[Node], copies: usize) -> (Ring, Shares) {
    let ring = Ring::balanced(nodes).unwrap();
    let mut primary = vec![0u64; nodes.len()];
    let mut all = vec![0u64; nodes.len()];
    let mut buf = Vec::with_capacity(copies);
    for oid in data_oids(OIDS) {
        ring.targets_into(oid, copies, &mut buf).unwrap();
        primary[buf[0].index()] += 1;
        for t in &buf {
            all[t.index()] += 1;
        }
    }
    let frac = |v: Vec<u64>, total: f64| v.into_iter().map(|c| c as f64 / total).collect();
    let shares = Shares {
        primary: frac(primary, f64::from(OIDS)),
        all: frac(all, f64::from(OIDS) * copies as f64),
        arcs: ring.primary_shares(),
    };
    (ring, shares)
}

fn capacity_shares(ring: &Ring) -> Vec<f64> {
    let total: u64 = ring.nodes().iter().map(|n| n.capacity).sum();
    ring.nodes()
        .iter()
        .map(|n| n.capacity as f64 / total as f64)
        .collect()
}

/// Largest |measured / expected - 1| over the nodes.
fn worst(measured: &[f64], expected: &[f64]) -> f64 {
    measured
        .iter()
        .zip(expected)
        .map(|(m, e)| (m / e - 1.0).abs())
        .fold(0.0, f64::max)
}

fn print(name: &str, ring: &Ring, s: &Shares, expected_all: &[f64]) {
    println!("{name}");
    for (i, n) in ring.nodes().iter().enumerate() {
        println!(
            "  {} zone {} {:>3} GiB vnodes {:>5}: ring {:.4} primaries {:.4} all copies {:.4} (expected {:.4})",
            n.id,
            n.zone,
            n.capacity >> 30,
            ring.vnodes(collie_placement::ring::NodeIdx::from_index(i)),
            s.arcs[i],
            s.primary[i],
            s.all[i],
            expected_all[i],
        );
    }
}

/// The sampled primary shares agree with the exact ring shares: the oid hash spreads
/// sequential, structured oids evenly.
fn assert_sampling_matches_ring(s: &Shares) {
    for (p, a) in s.primary.iter().zip(&s.arcs) {
        assert!((p - a).abs() < 0.002, "sampled {p} vs ring {a}");
    }
}

#[test]
fn equal_capacities_share_equally() {
    let nodes = local_cluster(&[100; 6]);
    let (ring, s) = measure(&nodes, 3);
    let cap = capacity_shares(&ring);
    print("6 nodes, 6 zones, equal capacity, -c 3", &ring, &s, &cap);
    assert_sampling_matches_ring(&s);
    let (p, a) = (worst(&s.primary, &cap), worst(&s.all, &cap));
    println!(
        "  worst deviation: primaries {:.2}%, all copies {:.2}%",
        p * 100.0,
        a * 100.0
    );
    assert!(p < 0.05, "primaries off by {p}");
    assert!(a < 0.05, "all copies off by {a}");
}

#[test]
fn unequal_capacities_share_by_capacity() {
    let nodes = local_cluster(&[100, 200, 300, 100, 200, 300]);
    let (ring, s) = measure(&nodes, 3);
    let cap = capacity_shares(&ring);
    // With one copy per zone, a node's share of all copies is not its capacity share but
    // the chance of being among the first 3 drawn without replacement, weight ∝ capacity.
    let expected = without_replacement(&cap, 3);
    print(
        "6 nodes, 6 zones, capacity 1:2:3:1:2:3, -c 3",
        &ring,
        &s,
        &expected,
    );
    assert_sampling_matches_ring(&s);
    let (p, a) = (worst(&s.primary, &cap), worst(&s.all, &expected));
    let vs_cap = worst(&s.all, &cap);
    println!(
        "  worst deviation: primaries {:.2}% of capacity share, all copies {:.2}% of the \
         without-replacement share ({:.2}% of capacity share)",
        p * 100.0,
        a * 100.0,
        vs_cap * 100.0
    );
    assert!(p < 0.05, "primaries off by {p}");
    assert!(a < 0.05, "all copies off by {a}");
}

#[test]
fn two_nodes_per_zone_share_equally() {
    let mut nodes = local_cluster(&[100; 6]);
    for (i, n) in nodes.iter_mut().enumerate() {
        n.zone = i as u32 / 2;
    }
    let (ring, s) = measure(&nodes, 3);
    let cap = capacity_shares(&ring);
    print(
        "6 nodes, 3 zones of 2, equal capacity, -c 3",
        &ring,
        &s,
        &cap,
    );
    assert_sampling_matches_ring(&s);
    let (p, a) = (worst(&s.primary, &cap), worst(&s.all, &cap));
    println!(
        "  worst deviation: primaries {:.2}%, all copies {:.2}%",
        p * 100.0,
        a * 100.0
    );
    assert!(p < 0.05, "primaries off by {p}");
    assert!(a < 0.05, "all copies off by {a}");
    // Every object has exactly one copy in each zone.
    for zone in 0..3 {
        let z: f64 = ring
            .nodes()
            .iter()
            .zip(&s.all)
            .filter(|(n, _)| n.zone == zone)
            .map(|(_, a)| a)
            .sum();
        assert!((z - 1.0 / 3.0).abs() < 1e-9, "zone {zone} holds {z}");
    }
}

/// Inclusion probability of each item in an ordered draw of `k` without replacement,
/// item i drawn with probability ∝ w[i] among those left; as a share of all k draws.
fn without_replacement(w: &[f64], k: usize) -> Vec<f64> {
    fn go(w: &[f64], left: &mut Vec<bool>, k: usize, p: f64, acc: &mut [f64]) {
        if k == 0 {
            return;
        }
        let total: f64 = w
            .iter()
            .zip(left.iter())
            .filter(|(_, &l)| l)
            .map(|(x, _)| x)
            .sum();
        for i in 0..w.len() {
            if left[i] {
                let q = p * w[i] / total;
                acc[i] += q;
                left[i] = false;
                go(w, left, k - 1, q, acc);
                left[i] = true;
            }
        }
    }
    let mut acc = vec![0.0; w.len()];
    go(w, &mut vec![true; w.len()], k, 1.0, &mut acc);
    acc.iter().map(|a| a / k as f64).collect()
}
