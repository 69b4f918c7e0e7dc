//! VDI and object ids: how a name becomes a vid and a (vid, index) becomes an oid.
//! Numbers follow Sheepdog so that its tools' habits (and its docs) still make sense.

/// Default data object size: 4 MiB (`1 << DEFAULT_OBJECT_SHIFT`).
pub const DEFAULT_OBJECT_SHIFT: u8 = 22;
pub const DEFAULT_OBJECT_SIZE: u64 = 1 << DEFAULT_OBJECT_SHIFT;

/// vids are 24 bits; 0 is never a VDI (it means "no owner" in `data_vdi_id`).
pub const VID_BITS: u32 = 24;
pub const MAX_VID: u32 = (1 << VID_BITS) - 1;

/// High bits of an oid that say what kind of object it is (Sheepdog's values).
pub const VDI_BIT: u64 = 1 << 63;
pub const VMSTATE_BIT: u64 = 1 << 62;
pub const VDI_ATTR_BIT: u64 = 1 << 61;
pub const VDI_BTREE_BIT: u64 = 1 << 60;
/// Cluster-wide metadata objects (format record); not in Sheepdog, which kept it in a file.
pub const CLUSTER_BIT: u64 = 1 << 59;
/// One fragment of an erasure-coded data object, as a holder stores it: the data oid
/// with this bit and the fragment index in bits 24..32 (data indexes stay below 2^22:
/// a VDI is at most 16 TiB of 4 MiB objects). Sheepdog kept the index in the file name.
pub const FRAGMENT_BIT: u64 = 1 << 58;
const FRAGMENT_SHIFT: u32 = 24;
/// Data indexes an erasure-coded VDI may use (the fragment index sits above them).
pub const MAX_FRAGMENTED_INDEX: u32 = (1 << FRAGMENT_SHIFT) - 1;
const TYPE_MASK: u64 = 0xff << 56;

/// A 24-bit VDI id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vid(u32);

impl Vid {
    /// `None` for 0 or values wider than 24 bits.
    pub fn new(v: u32) -> Option<Vid> {
        (v != 0 && v <= MAX_VID).then_some(Vid(v))
    }
    pub fn get(self) -> u32 {
        self.0
    }
    /// The vid a new VDI named `name` tries first: FNV-1a 64 of the name folded to 24
    /// bits as Sheepdog does; on collision the next free one (see [`Vid::probe`]).
    pub fn of_name(name: &str) -> Vid {
        let h = fnv1a64(name.as_bytes()) & u64::from(MAX_VID);
        Vid::new(h as u32).unwrap_or(Vid(1))
    }
    /// The i-th vid of the probe sequence starting at `self` (wraps, skipping 0).
    pub fn probe(self, i: u32) -> Vid {
        let v = (self.0 - 1 + i % MAX_VID) % MAX_VID + 1;
        Vid(v)
    }
    /// Oid of this VDI's inode object.
    pub fn inode_oid(self) -> u64 {
        VDI_BIT | (u64::from(self.0) << 32)
    }
    /// Oid of data object `index` of this VDI.
    pub fn data_oid(self, index: u32) -> u64 {
        (u64::from(self.0) << 32) | u64::from(index)
    }
}

impl std::fmt::Display for Vid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:06x}", self.0)
    }
}

/// What an oid names, decoded from its type bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Data {
        vid: Vid,
        index: u32,
    },
    Inode {
        vid: Vid,
    },
    Cluster {
        index: u32,
    },
    /// Fragment `fragment` of data object `index` of an erasure-coded VDI.
    Fragment {
        vid: Vid,
        index: u32,
        fragment: u8,
    },
    Other,
}

pub fn object_kind(oid: u64) -> ObjectKind {
    let vid = Vid::new(((oid >> 32) & u64::from(MAX_VID)) as u32);
    let low = oid as u32;
    match (oid & TYPE_MASK, vid) {
        (0, Some(vid)) => ObjectKind::Data { vid, index: low },
        (VDI_BIT, Some(vid)) if low == 0 => ObjectKind::Inode { vid },
        (CLUSTER_BIT, None) if oid >> 32 == CLUSTER_BIT >> 32 => ObjectKind::Cluster { index: low },
        (FRAGMENT_BIT, Some(vid)) => ObjectKind::Fragment {
            vid,
            index: low & MAX_FRAGMENTED_INDEX,
            fragment: (low >> FRAGMENT_SHIFT) as u8,
        },
        _ => ObjectKind::Other,
    }
}

/// Oid of cluster metadata object `index` (0 = the format record).
pub fn cluster_oid(index: u32) -> u64 {
    CLUSTER_BIT | u64::from(index)
}

/// The key fragment `fragment` of data object `oid` is stored under.
pub fn fragment_oid(oid: u64, fragment: u8) -> u64 {
    debug_assert!(oid & TYPE_MASK == 0 && (oid as u32) <= MAX_FRAGMENTED_INDEX);
    FRAGMENT_BIT | oid | (u64::from(fragment) << FRAGMENT_SHIFT)
}

/// The object a key belongs to: the data oid for a fragment, the key itself otherwise.
/// Everything that places or routes an object uses this, so all fragments of one
/// object live in the same partition (and shard) of their holders.
pub fn base_oid(key: u64) -> u64 {
    if key & TYPE_MASK == FRAGMENT_BIT {
        key & !(FRAGMENT_BIT | (0xff << FRAGMENT_SHIFT))
    } else {
        key
    }
}

/// FNV-1a, 64 bit (Sheepdog's `fnv_64a_buf` with its initial basis).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        // Reference values of FNV-1a 64.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn vid_of_name_is_24_bit_nonzero_and_probes_wrap() {
        for name in ["replica", "erasure", "", "x"] {
            let v = Vid::of_name(name).get();
            assert!(v != 0 && v <= MAX_VID);
        }
        let top = Vid::new(MAX_VID).unwrap_or(Vid(1));
        assert_eq!(top.probe(0).get(), MAX_VID);
        assert_eq!(top.probe(1).get(), 1);
        assert_eq!(Vid(5).probe(2).get(), 7);
    }

    #[test]
    fn oids_round_trip_through_kind() {
        let v = Vid::of_name("replica");
        assert_eq!(
            object_kind(v.data_oid(7)),
            ObjectKind::Data { vid: v, index: 7 }
        );
        assert_eq!(object_kind(v.inode_oid()), ObjectKind::Inode { vid: v });
        assert_eq!(
            object_kind(cluster_oid(0)),
            ObjectKind::Cluster { index: 0 }
        );
        assert_eq!(object_kind(7), ObjectKind::Other);
        let f = fragment_oid(v.data_oid(7), 5);
        assert_eq!(
            object_kind(f),
            ObjectKind::Fragment {
                vid: v,
                index: 7,
                fragment: 5
            }
        );
        assert_eq!(base_oid(f), v.data_oid(7));
        assert_eq!(base_oid(v.inode_oid()), v.inode_oid());
        assert_eq!(object_kind(v.inode_oid() | 1), ObjectKind::Other);
    }
}
