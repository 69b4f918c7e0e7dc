//! Not a check but a survey, run by hand when tuning `DEFAULT_VNODES`:
//! `cargo test --release -p collie-placement --test vnode_count_survey -- --ignored --nocapture`
//! For several vnode counts per node of average capacity, over 400 random six-node
//! clusters, how far the worst node's share of primaries is from its capacity share.
//! It also times `Ring::targets` (docs/placement.md quotes both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Instant;

use collie_placement::{Node, NodeId, Ring};
use support::{data_oids, local_cluster, GIB};

/// Worst |ring share / capacity share - 1| of a ring.
fn worst(ring: &Ring) -> f64 {
    let total: u64 = ring.nodes().iter().map(|n| n.capacity).sum();
    ring.primary_shares()
        .iter()
        .zip(ring.nodes())
        .map(|(s, n)| (s / (n.capacity as f64 / total as f64) - 1.0).abs())
        .fold(0.0, f64::max)
}

fn percentiles(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize] * 100.0;
    format!(
        "median {:.1}% p95 {:.1}% max {:.1}%",
        at(0.5),
        at(0.95),
        at(1.0)
    )
}

#[test]
#[ignore]
fn survey() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for caps in [[1u64; 6], [1, 2, 3, 1, 2, 3]] {
        let mean = caps.iter().sum::<u64>() * GIB / 6;
        println!("capacities {caps:?}");
        for v in [128u64, 512, 1024, 2048, 4096, 8192] {
            let mut random = Vec::new();
            for _ in 0..400 {
                let nodes: Vec<Node> = caps
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        let r = rnd();
                        let ip = std::net::Ipv4Addr::from(r as u32);
                        let id = NodeId::new(ip.into(), 7000 + i as u16);
                        Node::new(id, i as u32, c * GIB)
                    })
                    .collect();
                random.push(worst(&Ring::new(nodes, mean / v).unwrap()));
            }
            let local =
                worst(&Ring::new(local_cluster(&caps.map(|c| c * 100)), mean * 100 / v).unwrap());
            println!(
                "  {v:>5} vnodes per average node: random clusters {}; 127.0.0.1:7000-7005 {:.1}%",
                percentiles(random),
                local * 100.0
            );
        }
    }

    let ring = Ring::balanced(&local_cluster(&[100; 6])).unwrap();
    let oids: Vec<u64> = data_oids(1_000_000).collect();
    let mut buf = Vec::with_capacity(3);
    let mut sum = 0usize;
    let t = Instant::now();
    for &oid in &oids {
        ring.targets_into(oid, 3, &mut buf).unwrap();
        sum += buf[2].index();
    }
    let ns = t.elapsed().as_nanos() as f64 / oids.len() as f64;
    println!("targets_into(oid, 3) on 6 nodes x 4096 vnodes: {ns:.0} ns per oid (checksum {sum})");
}
