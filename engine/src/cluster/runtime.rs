//! A node's membership at run time: it joins through its driver, polls it, keeps the
//! epoch history in its directory, and hands every shard the view of each new epoch.
//!
//! After a restart the node waits for every member of the last epoch it served in (as
//! Sheepdog does) before it serves data: until they are back, a copy on a missing
//! member may be the only up-to-date one, and reading another could return old bytes.
//! A cluster-wide shutdown freezes the history first, so members leaving one by one
//! then do not shrink the set the restart waits for.

use super::view::ClusterView;
use super::{ClusterDriver, ClusterError, Member, View};
use crate::gateway;
use crate::store::Store;
use collie_placement::node::{Node as PlacementNode, NodeId};
use collie_placement::ring::vnode_bytes_for;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// The epoch history file in the node's directory: one line per epoch this node saw
/// while serving, `EPOCH UNIX_SECONDS ADDR:PORT...`.
pub const EPOCH_LOG: &str = "epochs";

/// One line of the epoch history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochRecord {
    pub epoch: u32,
    pub time: u64,
    pub members: Vec<NodeId>,
}

impl EpochRecord {
    fn line(&self) -> String {
        let mut s = format!("{} {}", self.epoch, self.time);
        for m in &self.members {
            s.push(' ');
            s.push_str(&m.to_string());
        }
        s
    }

    fn parse(line: &str) -> Option<EpochRecord> {
        let mut f = line.split_whitespace();
        let epoch = f.next()?.parse().ok()?;
        let time = f.next()?.parse().ok()?;
        let members = f.map(str::parse).collect::<Result<Vec<NodeId>, _>>().ok()?;
        Some(EpochRecord {
            epoch,
            time,
            members,
        })
    }
}

/// Reads the history; damaged lines (a torn last line after a crash) are skipped.
pub fn read_epoch_log(dir: &Path) -> Vec<EpochRecord> {
    let text = std::fs::read_to_string(dir.join(EPOCH_LOG)).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let r = EpochRecord::parse(l);
            if r.is_none() && !l.trim().is_empty() {
                tracing::warn!("skipping a damaged line of the epoch log: {l:?}");
            }
            r
        })
        .collect()
}

/// What a running member says about the cluster, as far as joining is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerState {
    pub formatted: bool,
    /// The newest epoch in its history.
    pub newest_epoch: Option<u32>,
}

/// Why a node must join as a gateway (no data: weight 0 on the ring) instead of with
/// its capacity; `None` if it may hold data.
///
/// Until recovery exists, a node whose store does not hold everything placement would
/// give it must not take placements: it would answer "not found" (reads as zeros) for
/// objects it should have, or serve bytes older than the other copies. That is a node
/// joining a formatted cluster with an empty store, and one that missed epochs (it was
/// stopped or killed while the others went on). Members restarting together after
/// `dog cluster shutdown` all stopped at the same epoch and are not stale.
pub fn stale_reason(
    my_last_epoch: Option<u32>,
    formatted_here: bool,
    others: &[PeerState],
) -> Option<String> {
    if !others.iter().any(|o| o.formatted) {
        return None;
    }
    if !formatted_here {
        return Some("the cluster is formatted and this store is empty".into());
    }
    let newest = others.iter().filter_map(|o| o.newest_epoch).max()?;
    match my_last_epoch {
        Some(mine) if mine >= newest => None,
        mine => Some(format!(
            "this node's last epoch is {}, the cluster went on to {newest} without it, so its \
             copies may be stale",
            mine.map_or_else(|| "unknown".to_owned(), |e| e.to_string())
        )),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct State {
    driver: Box<dyn ClusterDriver>,
    view: Option<Arc<ClusterView>>,
    /// Ring bytes per vnode from the format record; `None` before format.
    vnode_bytes: Option<u64>,
    /// Members of the last served epoch still missing (empty: serving).
    waiting_for: Vec<NodeId>,
    /// No more epochs are recorded (cluster shutdown in progress).
    frozen: bool,
    /// The newest history line: its epoch and members (sorted).
    last_logged: Option<(u32, Vec<NodeId>)>,
}

pub struct Cluster {
    me: Member,
    log_path: PathBuf,
    state: Mutex<State>,
}

impl Cluster {
    /// Joins the cluster and installs the first view on every shard. `vnode_bytes` is
    /// the format record's (None if this node is not formatted).
    pub fn join(
        store: &Store,
        mut driver: Box<dyn ClusterDriver>,
        me: Member,
        vnode_bytes: Option<u64>,
    ) -> Result<Cluster, ClusterError> {
        let dir = store.dir().to_path_buf();
        let history = read_epoch_log(&dir);
        let waiting_for = match (vnode_bytes, history.last()) {
            (Some(_), Some(last)) => last
                .members
                .iter()
                .filter(|&&m| m != me.id)
                .copied()
                .collect(),
            _ => Vec::new(),
        };
        if !waiting_for.is_empty() {
            tracing::info!(
                members = waiting_for.len(),
                "waiting for the members of the last epoch before serving"
            );
        }
        let view = driver.join(&me)?;
        let c = Cluster {
            me,
            log_path: dir.join(EPOCH_LOG),
            state: Mutex::new(State {
                driver,
                view: None,
                vnode_bytes,
                waiting_for,
                frozen: false,
                last_logged: history.last().map(|r| (r.epoch, r.members.clone())),
            }),
        };
        c.apply(store, view)?;
        Ok(c)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn me(&self) -> &Member {
        &self.me
    }

    /// The current view (None only before the first one is built).
    pub fn view(&self) -> Option<Arc<ClusterView>> {
        self.lock().view.clone()
    }

    /// Polls the driver; on a change, records and distributes the new view.
    pub fn poll(&self, store: &Store) -> Result<(), ClusterError> {
        let v = self.lock().driver.poll()?;
        self.apply(store, v)
    }

    /// The format record was written (or rewritten): rebuild the ring with its bytes
    /// per vnode.
    pub fn formatted(&self, store: &Store, vnode_bytes: u64) -> Result<(), ClusterError> {
        let v = {
            let mut st = self.lock();
            st.vnode_bytes = Some(vnode_bytes);
            // Rebuild and record even if the membership did not change.
            st.last_logged = None;
            st.view = None;
            st.driver.poll()?
        };
        self.apply(store, v)
    }

    /// Stops recording epochs: the cluster is shutting down as a whole.
    pub fn freeze(&self) {
        self.lock().frozen = true;
    }

    /// Leaves the cluster (clean shutdown of this node).
    pub fn leave(&self) {
        if let Err(e) = self.lock().driver.leave() {
            tracing::warn!("leaving the cluster: {e}");
        }
    }

    pub fn history(&self) -> Vec<EpochRecord> {
        read_epoch_log(self.log_path.parent().unwrap_or(Path::new(".")))
    }

    fn apply(&self, store: &Store, v: View) -> Result<(), ClusterError> {
        let mut st = self.lock();
        if let Some(old) = &st.view {
            let same_members = old.members.len() == v.members.len()
                && old
                    .members
                    .iter()
                    .zip(&v.members)
                    .all(|(a, b)| a.id == b.id);
            if old.epoch == v.epoch && same_members && st.waiting_for.is_empty() {
                return Ok(());
            }
        }
        let ids: Vec<NodeId> = v.members.iter().map(|m| m.id).collect();
        let was_waiting = !st.waiting_for.is_empty();
        st.waiting_for.retain(|w| !ids.contains(w));
        if was_waiting && st.waiting_for.is_empty() {
            tracing::info!(
                epoch = v.epoch,
                "every member of the last epoch is back; serving"
            );
        }
        let vnode_bytes = st.vnode_bytes.unwrap_or_else(|| {
            let nodes: Vec<PlacementNode> = v
                .members
                .iter()
                .map(|m| PlacementNode::new(m.id, m.zone, m.capacity))
                .collect();
            vnode_bytes_for(&nodes)
        });
        let epoch = v.epoch;
        let view = ClusterView::new(v, vnode_bytes, self.me.id, st.waiting_for.clone())
            .map_err(|e| ClusterError::Invalid(format!("building the ring: {e}")))?;
        let view = Arc::new(view);
        if st.waiting_for.is_empty() && !st.frozen && st.vnode_bytes.is_some() {
            let mut sorted = ids.clone();
            sorted.sort();
            // A restart with the same members is no change of membership: the history
            // (and what a restart waits for) keeps its last line.
            if st.last_logged.as_ref().map(|(_, m)| m) != Some(&sorted) {
                let rec = EpochRecord {
                    epoch,
                    time: now(),
                    members: sorted.clone(),
                };
                if let Err(e) = self.append(&rec) {
                    tracing::error!("writing the epoch log: {e}");
                }
                st.last_logged = Some((epoch, sorted));
            }
        }
        tracing::info!(
            epoch,
            members = view.members.len(),
            zones = view.zones(),
            waiting = view.waiting_for.len(),
            "new cluster view"
        );
        st.view = Some(view.clone());
        // Shards take the view in their own executor; they never block on us.
        for shard in 0..store.shard_count() {
            let v = view.clone();
            if store
                .run_on(shard, move |sh| async move {
                    gateway::set_view(Some(v.clone()));
                    crate::recovery::on_view(&sh, &v);
                })
                .is_err()
            {
                // The store is shutting down.
                break;
            }
        }
        Ok(())
    }

    fn append(&self, rec: &EpochRecord) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        writeln!(f, "{}", rec.line())?;
        f.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_hold_data_when_joining() {
        let peer = |formatted, newest_epoch| PeerState {
            formatted,
            newest_epoch,
        };
        // Nobody formatted: everyone holds data (the quick start's first joins).
        assert_eq!(stale_reason(None, false, &[]), None);
        assert_eq!(stale_reason(None, false, &[peer(false, None)]), None);
        // A restart after a cluster shutdown: same last epoch everywhere.
        assert_eq!(stale_reason(Some(6), true, &[peer(true, Some(6))]), None);
        // The others are still waiting for us and record nothing new.
        assert_eq!(
            stale_reason(Some(6), true, &[peer(true, Some(6)), peer(true, Some(5))]),
            None
        );
        // Killed at 6 while the cluster went on to 7: stale.
        assert!(stale_reason(Some(6), true, &[peer(true, Some(7))]).is_some());
        // An empty store joining a formatted cluster.
        assert!(stale_reason(None, false, &[peer(true, Some(3))]).is_some());
        // Formatted here but no history at all, while the cluster has one.
        assert!(stale_reason(None, true, &[peer(true, Some(3))]).is_some());
    }

    #[test]
    fn epoch_records_round_trip_and_damage_is_skipped() {
        let r = EpochRecord {
            epoch: 7,
            time: 1_700_000_000,
            members: vec![
                "127.0.0.1:7000".parse().unwrap(),
                "127.0.0.1:7001".parse().unwrap(),
            ],
        };
        assert_eq!(EpochRecord::parse(&r.line()), Some(r));
        // A line torn in the middle of an address.
        assert_eq!(EpochRecord::parse("7 17000 127.0.0."), None);
        assert_eq!(EpochRecord::parse("x 1"), None);
        assert_eq!(EpochRecord::parse("3 4 not-a-node"), None);
    }
}
