//! Nodes and zones as placement sees them: plain data that every member of an epoch
//! agrees on (identity, failure domain, capacity), and nothing about sockets or state.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// A failure domain (`sheep -z`). Copies and fragments of one object go to distinct zones.
pub type Zone = u32;

/// Length of [`NodeId::to_bytes`]: 16 bytes of address (IPv4 as `::ffff:a.b.c.d`), then
/// the port, both in network order.
pub const NODE_ID_BYTES: usize = 18;

/// A node's stable identity: the address and main (admin) port it serves, `ADDR:PORT`.
///
/// IPv4 and IPv4-mapped IPv6 forms of one address are the same node: [`NodeId::new`]
/// stores the canonical form, so equality, ordering and hashing agree on every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId {
    addr: IpAddr,
    port: u16,
}

impl NodeId {
    pub fn new(addr: IpAddr, port: u16) -> NodeId {
        NodeId {
            addr: addr.to_canonical(),
            port,
        }
    }
    pub fn addr(&self) -> IpAddr {
        self.addr
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
    /// The bytes the ring hashes and sorts by (Sheepdog's node id layout: a 16-byte
    /// address, then the port). Network order throughout, so that byte order is the
    /// natural order: by address, then by port.
    pub fn to_bytes(&self) -> [u8; NODE_ID_BYTES] {
        let v6 = match self.addr {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let mut b = [0u8; NODE_ID_BYTES];
        b[..16].copy_from_slice(&v6.octets());
        b[16..].copy_from_slice(&self.port.to_be_bytes());
        b
    }
    pub fn from_bytes(b: [u8; NODE_ID_BYTES]) -> NodeId {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[..16]);
        NodeId::new(
            IpAddr::V6(Ipv6Addr::from(a)),
            u16::from_be_bytes([b[16], b[17]]),
        )
    }
}

/// Canonical order of nodes: by [`NodeId::to_bytes`], so it is the same in any language.
impl Ord for NodeId {
    fn cmp(&self, other: &NodeId) -> std::cmp::Ordering {
        self.to_bytes().cmp(&other.to_bytes())
    }
}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &NodeId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl From<SocketAddr> for NodeId {
    fn from(s: SocketAddr) -> NodeId {
        NodeId::new(s.ip(), s.port())
    }
}

/// `ADDR:PORT`, IPv6 in brackets (`[::1]:7000`).
impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.socket_addr().fmt(f)
    }
}

impl FromStr for NodeId {
    type Err = String;
    fn from_str(s: &str) -> Result<NodeId, String> {
        s.parse::<SocketAddr>()
            .map(NodeId::from)
            .map_err(|_| format!("'{s}' is not a node address (ADDR:PORT, e.g. 127.0.0.1:7000)"))
    }
}

/// One member of an epoch's node list, as placement needs it.
///
/// `capacity` is the node's weight in bytes: it receives objects in proportion to it. It
/// should be a stable figure (the size of its store, or a configured weight), not free
/// space, since every change of it moves data. A node of capacity 0 is a gateway: it
/// is a member but holds no objects (as Sheepdog's `sheep -g`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    pub id: NodeId,
    pub zone: Zone,
    pub capacity: u64,
}

impl Node {
    pub fn new(id: NodeId, zone: Zone, capacity: u64) -> Node {
        Node { id, zone, capacity }
    }
    /// Whether this node holds objects (capacity > 0).
    pub fn stores_data(&self) -> bool {
        self.capacity > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn ids_parse_print_and_round_trip_through_bytes() {
        for s in [
            "127.0.0.1:7000",
            "[::1]:7001",
            "10.0.0.2:65535",
            "[fe80::1]:1",
        ] {
            let id: NodeId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
            assert_eq!(NodeId::from_bytes(id.to_bytes()), id);
        }
        assert!("127.0.0.1".parse::<NodeId>().is_err());
        assert!("host:7000".parse::<NodeId>().is_err());
    }

    #[test]
    fn mapped_ipv4_is_the_same_node() {
        let v4 = NodeId::new(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 7000);
        let mapped: NodeId = "[::ffff:10.1.2.3]:7000".parse().unwrap();
        assert_eq!(v4, mapped);
        assert_eq!(mapped.to_string(), "10.1.2.3:7000");
        assert_eq!(v4.to_bytes(), mapped.to_bytes());
    }

    #[test]
    fn order_follows_bytes() {
        let a: NodeId = "127.0.0.1:7001".parse().unwrap();
        let a2: NodeId = "127.0.0.1:7256".parse().unwrap();
        let b: NodeId = "127.0.0.2:7000".parse().unwrap();
        let c: NodeId = "[::1]:7000".parse().unwrap();
        let mut v = vec![b, a2, c, a];
        v.sort();
        // ::1 sorts before ::ffff:127.0.0.x; ports break ties of one address numerically.
        assert_eq!(v, vec![c, a, a2, b]);
    }
}
