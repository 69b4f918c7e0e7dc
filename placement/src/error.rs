//! The one error type of this crate: what can go wrong when placing objects on an
//! epoch's node list. Callers map it at their edges (dog prints the message).

use std::fmt;

use crate::node::NodeId;
use crate::redundancy::Redundancy;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlacementError {
    /// More targets were asked for than there are zones holding data. `redundancy` is
    /// set when the caller asked through a [`Redundancy`], for a message in its words.
    NotEnoughZones {
        needed: usize,
        zones: usize,
        redundancy: Option<Redundancy>,
    },
    /// The node list names one node twice.
    DuplicateNode(NodeId),
    /// More nodes than [`crate::ring::MAX_NODES`].
    TooManyNodes { nodes: usize, max: usize },
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlacementError::NotEnoughZones {
                needed,
                zones,
                redundancy,
            } => {
                let zones_word = if *zones == 1 { "zone" } else { "zones" };
                match redundancy {
                    Some(r @ Redundancy::Erasure { .. }) => write!(
                        f,
                        "erasure coding {r} needs {needed} zones, the cluster has {zones} {zones_word} with storage"
                    ),
                    _ if *needed == 1 => write!(
                        f,
                        "1 copy needs 1 zone, the cluster has {zones} {zones_word} with storage"
                    ),
                    _ => write!(
                        f,
                        "{needed} copies need {needed} zones, the cluster has {zones} {zones_word} with storage"
                    ),
                }
            }
            PlacementError::DuplicateNode(id) => {
                write!(f, "node {id} appears twice in the node list")
            }
            PlacementError::TooManyNodes { nodes, max } => {
                write!(f, "{nodes} nodes: a cluster has at most {max}")
            }
        }
    }
}

impl std::error::Error for PlacementError {}
