//! Scenario: whatever the node list (zones shared or not, gateways among the members),
//! the targets of any oid are in distinct zones, never a gateway, and asking for more
//! targets than there are zones with storage is an error, never fewer copies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use collie_placement::{PlacementError, Redundancy, Ring};
use proptest::prelude::*;
use support::arb_cluster;

proptest! {
    #![proptest_config(support::proptest_config(256))]

    #[test]
    fn targets_are_distinct_zones_of_data_nodes(
        nodes in arb_cluster(12, 8),
        oids in proptest::collection::vec(any::<u64>(), 200),
    ) {
        let ring = Ring::balanced(&nodes).unwrap();
        let mut data_zones: Vec<u32> =
            nodes.iter().filter(|n| n.capacity > 0).map(|n| n.zone).collect();
        data_zones.sort_unstable();
        data_zones.dedup();
        prop_assert_eq!(ring.zones(), data_zones.len());
        let mut buf = Vec::new();
        for &oid in &oids {
            for n in 1..=ring.zones() {
                ring.targets_into(oid, n, &mut buf).unwrap();
                prop_assert_eq!(buf.len(), n);
                let mut zones: Vec<u32> = buf.iter().map(|&t| ring.node(t).zone).collect();
                zones.sort_unstable();
                zones.dedup();
                prop_assert_eq!(zones.len(), n, "zones repeat for oid {:#x}", oid);
                prop_assert!(buf.iter().all(|&t| ring.node(t).capacity > 0));
                prop_assert_eq!(buf[0], ring.primary(oid).unwrap());
            }
            // Fewer targets are a prefix of more: copy i stays on the i-th target
            // whatever the redundancy of the VDI.
            let all = ring.targets(oid, ring.zones()).unwrap();
            for n in 0..=ring.zones() {
                prop_assert_eq!(&ring.targets(oid, n).unwrap()[..], &all[..n]);
            }
            let too_many = ring.zones() + 1;
            prop_assert_eq!(
                ring.targets(oid, too_many),
                Err(PlacementError::NotEnoughZones {
                    needed: too_many,
                    zones: ring.zones(),
                    redundancy: None,
                })
            );
        }
    }

    #[test]
    fn redundancy_asks_for_its_width(nodes in arb_cluster(12, 8), oid in any::<u64>()) {
        let ring = Ring::balanced(&nodes).unwrap();
        for r in ["1", "2", "3", "2:1", "2:2", "4:2"] {
            let r: Redundancy = r.parse().unwrap();
            let width = r.width() as usize;
            match ring.targets_for(oid, r) {
                Ok(t) => prop_assert_eq!(t, ring.targets(oid, width).unwrap()),
                Err(e) => {
                    prop_assert!(width > ring.zones());
                    prop_assert_eq!(
                        e,
                        PlacementError::NotEnoughZones {
                            needed: width,
                            zones: ring.zones(),
                            redundancy: Some(r),
                        }
                    );
                }
            }
        }
    }
}
