//! VDIs as NBD exports: the engine's side of `collie_net::nbd::server`. An export lives
//! on the shard that accepted the connection (`!Send`); each object it touches is served
//! by that object's owning shard through the shard mesh.

use crate::error::StoreError;
use crate::gateway::Gateway;
use crate::vdi::{self, Inode, VdiError};
use collie_net::nbd::consts::{EINVAL, EIO, ENOSPC};
use collie_net::nbd::{BlockExport, ExportError, ExportProvider};
use collie_placement::Vid;
use futures::future::join_all;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

/// Objects one request works on at once.
const FAN_OUT: usize = 16;

thread_local! {
    /// This shard's open exports by vid, so that `dog vdi delete` can end them: a
    /// connection left open would otherwise write objects of a deleted VDI that nothing
    /// removes.
    static OPEN: RefCell<HashMap<u32, Vec<Weak<Cell<bool>>>>> = RefCell::new(HashMap::new());
}

/// Marks every export of `vid` open on this shard as gone; their requests fail from now
/// on. Returns how many there were.
pub fn close_exports(vid: u32) -> usize {
    OPEN.with(|o| {
        o.borrow_mut().remove(&vid).map_or(0, |list| {
            list.iter()
                .filter_map(Weak::upgrade)
                .map(|g| g.set(true))
                .count()
        })
    })
}

fn register(vid: u32) -> Rc<Cell<bool>> {
    let gone = Rc::new(Cell::new(false));
    OPEN.with(|o| {
        let mut o = o.borrow_mut();
        let list = o.entry(vid).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Rc::downgrade(&gone));
    });
    gone
}

fn nbd_error(e: VdiError) -> ExportError {
    let errno = match &e {
        VdiError::Store(StoreError::NoSpace { .. }) => ENOSPC,
        VdiError::Store(s) if s.errno() == libc::ENOSPC => ENOSPC,
        VdiError::Invalid(_) | VdiError::Store(StoreError::OutOfRange(_)) => EINVAL,
        _ => EIO,
    };
    // The client sees only an errno; the reason belongs in the log (bad requests,
    // EINVAL, are the client's business and not logged).
    if errno != EINVAL {
        tracing::warn!("nbd request failed: {e}");
    }
    ExportError {
        errno,
        message: e.to_string(),
    }
}

fn store_error(e: StoreError) -> ExportError {
    nbd_error(VdiError::Store(e))
}

/// Finds VDIs by name for the NBD handshake.
pub struct VdiProvider {
    pub gw: Gateway,
}

/// Refuses data while a restarted cluster waits for members of its last epoch.
pub fn check_serving() -> Result<(), String> {
    check_serving_view(crate::gateway::view().as_deref())
}

pub fn check_serving_view(v: Option<&crate::cluster::view::ClusterView>) -> Result<(), String> {
    match v {
        Some(v) if !v.serving() => Err(format!(
            "the cluster is waiting for {} member(s) of its last epoch to come back ({})",
            v.waiting_for.len(),
            v.waiting_for
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => Ok(()),
    }
}

impl ExportProvider for VdiProvider {
    type Export = VdiExport;

    async fn list(&self) -> Result<Vec<String>, String> {
        check_serving()?;
        vdi::list(&self.gw)
            .await
            .map(|l| l.into_iter().map(|(i, _)| i.name).collect())
            .map_err(|e| e.to_string())
    }

    async fn open(&self, name: &str) -> Result<Option<VdiExport>, String> {
        if vdi::check_name(name).is_err() {
            return Ok(None);
        }
        check_serving()?;
        let inode = match vdi::find(&self.gw, name).await {
            Ok(Some(i)) => i,
            Ok(None) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let owners = vdi::load_owners(&self.gw, &inode)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(VdiExport {
            gw: self.gw.clone(),
            objects: vdi::Objects::of(&inode).map_err(|e| e.to_string())?,
            gone: register(inode.vid.get()),
            inode,
            owners: RefCell::new(owners),
        }))
    }
}

/// One open VDI. `!Send`: lives on the connection's shard.
pub struct VdiExport {
    gw: Gateway,
    /// How the data objects are kept (copies or fragments).
    objects: vdi::Objects,
    /// Set when the VDI is deleted: every later request fails.
    gone: Rc<Cell<bool>>,
    inode: Inode,
    /// Cached `data_vdi_id[]`. Only a hint for reads: another connection may have
    /// written an object since we loaded it, so a 0 here still reads the object.
    owners: RefCell<Vec<u32>>,
}

impl VdiExport {
    fn alive(&self) -> Result<(), ExportError> {
        if self.gone.get() {
            return Err(ExportError {
                errno: EIO,
                message: format!("vdi '{}' was deleted", self.inode.name),
            });
        }
        Ok(())
    }

    fn oid(&self, index: u32) -> u64 {
        self.inode.vid.data_oid(index)
    }

    fn object_size(&self) -> u64 {
        self.inode.object_size()
    }

    async fn read_piece(&self, p: vdi::Piece) -> Result<Option<Vec<u8>>, StoreError> {
        match self
            .objects
            .read(&self.gw, self.oid(p.index), p.offset, p.len)
            .await
        {
            Ok(d) => Ok(Some(d)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn write_piece(&self, p: vdi::Piece, data: &[u8]) -> Result<(), VdiError> {
        let os = self.object_size();
        self.objects
            .write(&self.gw, self.oid(p.index), p.offset, data, os)
            .await?;
        let vid: Vid = self.inode.vid;
        let known = self.owners.borrow().get(p.index as usize).copied();
        if known != Some(vid.get()) {
            vdi::set_owner(&self.gw, &self.inode, p.index, vid).await?;
            if let Some(slot) = self.owners.borrow_mut().get_mut(p.index as usize) {
                *slot = vid.get();
            }
        }
        Ok(())
    }

    /// Makes a piece read as zeros (see [`vdi::Objects::punch`]).
    async fn punch_piece(&self, p: vdi::Piece) -> Result<(), StoreError> {
        self.objects
            .punch(
                &self.gw,
                self.oid(p.index),
                p.offset,
                p.len,
                self.object_size(),
            )
            .await
    }

    async fn extents_piece(&self, p: vdi::Piece) -> Result<Vec<(u64, bool)>, StoreError> {
        match self
            .objects
            .extents(&self.gw, self.oid(p.index), p.offset, p.len)
            .await
        {
            Ok(e) => Ok(e),
            Err(StoreError::NotFound(_)) => Ok(vec![(p.len, false)]),
            Err(e) => Err(e),
        }
    }
}

impl BlockExport for VdiExport {
    fn size(&self) -> u64 {
        self.inode.size
    }

    /// Every write is durable on its owning shard before it is acknowledged, whichever
    /// connection sent it, so a FLUSH anywhere covers them all.
    fn multi_conn(&self) -> bool {
        true
    }

    async fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, ExportError> {
        self.alive()?;
        let pieces: Vec<vdi::Piece> = vdi::pieces(offset, len, self.object_size()).collect();
        if let [p] = pieces[..] {
            // The common case: one object; hand its buffer straight back.
            return match self.read_piece(p).await.map_err(store_error)? {
                Some(d) => Ok(d),
                None => Ok(vec![0; p.len as usize]),
            };
        }
        let mut out = vec![0u8; len as usize];
        for chunk in pieces.chunks(FAN_OUT) {
            let got = join_all(chunk.iter().map(|&p| self.read_piece(p))).await;
            for (p, r) in chunk.iter().zip(got) {
                if let Some(d) = r.map_err(store_error)? {
                    out[p.at..p.at + d.len()].copy_from_slice(&d);
                }
            }
        }
        Ok(out)
    }

    async fn write(&self, offset: u64, data: &[u8], _fua: bool) -> Result<(), ExportError> {
        self.alive()?;
        let pieces: Vec<vdi::Piece> =
            vdi::pieces(offset, data.len() as u64, self.object_size()).collect();
        for chunk in pieces.chunks(FAN_OUT) {
            let done = join_all(
                chunk
                    .iter()
                    .map(|&p| self.write_piece(p, &data[p.at..p.at + p.len as usize])),
            )
            .await;
            for r in done {
                r.map_err(nbd_error)?;
            }
        }
        Ok(())
    }

    /// Writes are durable when acknowledged (or, with `sheep -n`, never forced):
    /// nothing is left to flush.
    async fn flush(&self) -> Result<(), ExportError> {
        self.alive()?;
        Ok(())
    }

    async fn trim(&self, offset: u64, len: u64) -> Result<(), ExportError> {
        self.alive()?;
        // Lazily, FAN_OUT objects at a time: a trim may cover a whole 16 TiB disk.
        let mut it = vdi::pieces(offset, len, self.object_size()).peekable();
        while it.peek().is_some() {
            let chunk: Vec<vdi::Piece> = it.by_ref().take(FAN_OUT).collect();
            for r in join_all(chunk.iter().map(|&p| self.punch_piece(p))).await {
                r.map_err(store_error)?;
            }
        }
        Ok(())
    }

    async fn write_zeroes(&self, offset: u64, len: u64, allocate: bool) -> Result<(), ExportError> {
        self.alive()?;
        if !allocate {
            return self.trim(offset, len).await;
        }
        // NO_HOLE: real zeros, one object at a time to bound memory.
        for p in vdi::pieces(offset, len, self.object_size()) {
            let zeros = vec![0u8; p.len as usize];
            self.write_piece(p, &zeros).await.map_err(nbd_error)?;
        }
        Ok(())
    }

    async fn extents(&self, offset: u64, len: u64) -> Result<Vec<(u64, bool)>, ExportError> {
        self.alive()?;
        // The server bounds `len` (1 GiB per reply), so collecting the pieces is cheap.
        let pieces: Vec<vdi::Piece> = vdi::pieces(offset, len, self.object_size()).collect();
        let mut out: Vec<(u64, bool)> = Vec::new();
        for chunk in pieces.chunks(FAN_OUT) {
            for r in join_all(chunk.iter().map(|&p| self.extents_piece(p))).await {
                for (l, data) in r.map_err(store_error)? {
                    match out.last_mut() {
                        Some(last) if last.1 == data => last.0 += l,
                        _ if l > 0 => out.push((l, data)),
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }
}
