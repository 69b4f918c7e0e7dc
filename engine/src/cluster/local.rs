//! The `local` cluster driver: every sheep on one machine maps the same state file
//! (memmap2) and changes it only under an exclusive flock; readers take a shared flock
//! and copy. Liveness is the member's pid (with its start time, so a reused pid does
//! not pass for the dead sheep): whichever node polls first after a death removes the
//! member and bumps the epoch. Format: docs/cluster-local.md.

use super::{ClusterDriver, ClusterError, Member, View};
use bytemuck::{Pod, Zeroable};
use collie_placement::node::{NodeId, NODE_ID_BYTES};
use memmap2::MmapMut;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const MAGIC: u32 = u32::from_le_bytes(*b"CLLC");
pub const VERSION: u16 = 1;
pub const MAX_MEMBERS: usize = 256;
pub const MAX_PEER_PORTS: usize = 64;
const HEADER_LEN: usize = 64;
const SLOT_LEN: usize = 256;
pub const FILE_LEN: usize = HEADER_LEN + MAX_MEMBERS * SLOT_LEN;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Header {
    magic: u32,
    version: u16,
    max_members: u16,
    epoch: u32,
    _pad: u32,
    /// Bumped on every change, for cheap "anything new?" checks.
    changes: u64,
    _reserved: [u8; 40],
}
const _: () = assert!(std::mem::size_of::<Header>() == HEADER_LEN);

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Slot {
    used: u32,
    pid: u32,
    /// Process start time (clock ticks since boot, /proc/PID/stat field 22).
    start_time: u64,
    capacity: u64,
    zone: u32,
    nbd_port: u16,
    peer_count: u16,
    id: [u8; NODE_ID_BYTES],
    _pad: [u8; 6],
    peer_ports: [u16; MAX_PEER_PORTS],
    /// Partitions of the member's store (with the shard count, where an oid is served).
    partitions: u32,
    _reserved: [u8; 68],
}
const _: () = assert!(std::mem::size_of::<Slot>() == SLOT_LEN);

/// Start time of `pid`, or None if it does not exist or is a zombie.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    // Field 22 overall is the 20th after the name and state (index 19 here).
    fields.get(19)?.parse().ok()
}

pub struct LocalDriver {
    path: PathBuf,
    file: File,
    map: MmapMut,
    me: Option<NodeId>,
}

struct Locked<'a> {
    d: &'a mut LocalDriver,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: flock on our own open descriptor.
        unsafe { libc::flock(self.d.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl LocalDriver {
    /// Opens (creating if needed) the shared state file at `path`.
    pub fn open(path: &Path) -> Result<LocalDriver, ClusterError> {
        let io = |source| ClusterError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut d = {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(io(std::io::Error::last_os_error()));
            }
            let len = file.metadata().map_err(io)?.len();
            if len == 0 {
                file.set_len(FILE_LEN as u64).map_err(io)?;
            } else if len != FILE_LEN as u64 {
                // SAFETY: as above.
                unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
                return Err(ClusterError::Foreign {
                    path: path.display().to_string(),
                    why: format!("{len} bytes, expected {FILE_LEN}"),
                });
            }
            // SAFETY: the file is FILE_LEN bytes and only collie sheep map it; every
            // access below goes through bytemuck copies under the flock, so another
            // process changing it can never make us read torn or invalid Rust values.
            let map = unsafe { MmapMut::map_mut(&file) }.map_err(io)?;
            LocalDriver {
                path: path.to_path_buf(),
                file,
                map,
                me: None,
            }
        };
        let r = d.init_header();
        // SAFETY: as above.
        unsafe { libc::flock(d.file.as_raw_fd(), libc::LOCK_UN) };
        r?;
        Ok(d)
    }

    fn init_header(&mut self) -> Result<(), ClusterError> {
        let mut h: Header = bytemuck::pod_read_unaligned(&self.map[..HEADER_LEN]);
        if h.magic == 0 {
            h = Header::zeroed();
            h.magic = MAGIC;
            h.version = VERSION;
            h.max_members = MAX_MEMBERS as u16;
            self.map[..HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&h));
            return Ok(());
        }
        if h.magic != MAGIC || h.version != VERSION || usize::from(h.max_members) != MAX_MEMBERS {
            return Err(ClusterError::Foreign {
                path: self.path.display().to_string(),
                why: format!("magic {:#x} version {}", h.magic, h.version),
            });
        }
        Ok(())
    }

    fn lock(&mut self) -> Result<Locked<'_>, ClusterError> {
        // SAFETY: flock on our own open descriptor.
        if unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(ClusterError::Io {
                path: self.path.display().to_string(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Locked { d: self })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Locked<'_> {
    fn header(&self) -> Header {
        bytemuck::pod_read_unaligned(&self.d.map[..HEADER_LEN])
    }
    fn set_header(&mut self, h: &Header) {
        self.d.map[..HEADER_LEN].copy_from_slice(bytemuck::bytes_of(h));
    }
    fn slot(&self, i: usize) -> Slot {
        let at = HEADER_LEN + i * SLOT_LEN;
        bytemuck::pod_read_unaligned(&self.d.map[at..at + SLOT_LEN])
    }
    fn set_slot(&mut self, i: usize, s: &Slot) {
        let at = HEADER_LEN + i * SLOT_LEN;
        self.d.map[at..at + SLOT_LEN].copy_from_slice(bytemuck::bytes_of(s));
    }
    fn bump(&mut self) {
        let mut h = self.header();
        h.epoch = h.epoch.wrapping_add(1).max(1);
        h.changes = h.changes.wrapping_add(1);
        self.set_header(&h);
    }

    /// Removes members whose process is gone; one epoch per removal.
    fn reap(&mut self) -> usize {
        let mut reaped = 0;
        for i in 0..MAX_MEMBERS {
            let s = self.slot(i);
            if s.used == 1 && process_start_time(s.pid) != Some(s.start_time) {
                tracing::warn!(
                    node = %NodeId::from_bytes(s.id),
                    pid = s.pid,
                    "cluster member died; removing it"
                );
                self.set_slot(i, &Slot::zeroed());
                self.bump();
                reaped += 1;
            }
        }
        reaped
    }

    fn view(&self) -> View {
        let mut members: Vec<Member> = (0..MAX_MEMBERS)
            .map(|i| self.slot(i))
            .filter(|s| s.used == 1)
            .map(|s| Member {
                id: NodeId::from_bytes(s.id),
                zone: s.zone,
                capacity: s.capacity,
                nbd_port: s.nbd_port,
                partitions: s.partitions,
                peer_ports: s.peer_ports[..usize::from(s.peer_count).min(MAX_PEER_PORTS)].to_vec(),
                pid: s.pid,
            })
            .collect();
        members.sort_by_key(|m| m.id);
        View {
            epoch: self.header().epoch,
            members,
        }
    }

    fn find(&self, id: &NodeId) -> Option<usize> {
        let b = id.to_bytes();
        (0..MAX_MEMBERS).find(|&i| {
            let s = self.slot(i);
            s.used == 1 && s.id == b
        })
    }
}

impl ClusterDriver for LocalDriver {
    fn join(&mut self, me: &Member) -> Result<View, ClusterError> {
        if me.peer_ports.len() > MAX_PEER_PORTS {
            return Err(ClusterError::Invalid(format!(
                "at most {MAX_PEER_PORTS} shards per node"
            )));
        }
        let start_time = process_start_time(me.pid)
            .ok_or_else(|| ClusterError::Invalid(format!("process {} is not running", me.pid)))?;
        let mut l = self.lock()?;
        l.reap();
        if l.find(&me.id).is_some() {
            return Err(ClusterError::Duplicate(me.id.to_string()));
        }
        let free = (0..MAX_MEMBERS)
            .find(|&i| l.slot(i).used == 0)
            .ok_or(ClusterError::Full(MAX_MEMBERS))?;
        let mut s = Slot::zeroed();
        s.used = 1;
        s.pid = me.pid;
        s.start_time = start_time;
        s.capacity = me.capacity;
        s.zone = me.zone;
        s.nbd_port = me.nbd_port;
        s.partitions = me.partitions;
        s.peer_count = me.peer_ports.len() as u16;
        s.peer_ports[..me.peer_ports.len()].copy_from_slice(&me.peer_ports);
        s.id = me.id.to_bytes();
        l.set_slot(free, &s);
        l.bump();
        let v = l.view();
        drop(l);
        self.me = Some(me.id);
        Ok(v)
    }

    fn poll(&mut self) -> Result<View, ClusterError> {
        let mut l = self.lock()?;
        l.reap();
        Ok(l.view())
    }

    fn leave(&mut self) -> Result<(), ClusterError> {
        let Some(me) = self.me.take() else {
            return Ok(());
        };
        let mut l = self.lock()?;
        if let Some(i) = l.find(&me) {
            l.set_slot(i, &Slot::zeroed());
            l.bump();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn member(port: u16, zone: u32, pid: u32) -> Member {
        Member {
            id: NodeId::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            zone,
            capacity: 1 << 30,
            nbd_port: port + 3809,
            partitions: 16,
            peer_ports: vec![port + 100, port + 200],
            pid,
        }
    }

    #[test]
    fn join_poll_leave_and_death_bump_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster");
        let me = std::process::id();
        let mut a = LocalDriver::open(&path).unwrap();
        let mut b = LocalDriver::open(&path).unwrap();
        let v1 = a.join(&member(7000, 0, me)).unwrap();
        assert_eq!(v1.epoch, 1);
        assert_eq!(v1.members.len(), 1);
        // A child process stands in for a second sheep that will die.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let v2 = b.join(&member(7001, 1, child.id())).unwrap();
        assert_eq!(v2.epoch, 2);
        assert_eq!(a.poll().unwrap(), v2);
        assert_eq!(v2.members[1].peer_ports, vec![7101, 7201]);
        assert!(matches!(
            a.join(&member(7001, 1, me)),
            Err(ClusterError::Duplicate(_))
        ));
        child.kill().unwrap();
        child.wait().unwrap();
        let v3 = a.poll().unwrap();
        assert_eq!(v3.epoch, 3);
        assert_eq!(v3.members.len(), 1);
        assert_eq!(b.poll().unwrap(), v3);
        a.leave().unwrap();
        let v4 = b.poll().unwrap();
        assert_eq!((v4.epoch, v4.members.len()), (4, 0));
    }

    #[test]
    fn foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster");
        std::fs::write(&path, b"not a cluster").unwrap();
        assert!(matches!(
            LocalDriver::open(&path),
            Err(ClusterError::Foreign { .. })
        ));
        std::fs::write(&path, vec![0xffu8; FILE_LEN]).unwrap();
        assert!(matches!(
            LocalDriver::open(&path),
            Err(ClusterError::Foreign { .. })
        ));
    }

    #[test]
    fn start_time_distinguishes_processes() {
        let me = process_start_time(std::process::id()).unwrap();
        assert!(me > 0);
        assert_eq!(process_start_time(u32::MAX), None);
    }
}
