//! The engine's one error type. Edges (NBD, dog, peer RPC) map it to their own codes.

use std::io;

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error from the disk, with what we were doing.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The disk (or the store's reserve) is full; reads still work.
    #[error("no space left for {what}")]
    NoSpace { what: String },
    /// Stored bytes did not match their CRC32C: never returned as data.
    #[error(
        "checksum mismatch in object {oid:#018x} at object offset {offset} (segment {segment})"
    )]
    Checksum { oid: u64, offset: u64, segment: u64 },
    /// The object does not exist on this node.
    #[error("object {0:#018x} not found")]
    NotFound(u64),
    /// A request outside the object, or longer than the store accepts.
    #[error("{0}")]
    OutOfRange(String),
    /// A request that makes no sense (zero-sized object, size mismatch, ...).
    #[error("{0}")]
    Invalid(String),
    /// The data directory belongs to another node or another format version.
    #[error("refusing to open {dir}: {why}")]
    Incompatible { dir: String, why: String },
    /// The store is shutting down or a shard is gone.
    #[error("store is shut down")]
    Closed,
    /// This node's copy is being brought up to date (recovery) and could not be yet,
    /// because a peer it needs did not answer: ask again (the gateway retries).
    #[error("{0}")]
    NotReady(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Wraps an I/O error, turning ENOSPC/EDQUOT into [`StoreError::NoSpace`].
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        let what = what.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StoreError::NoSpace { what },
            _ => StoreError::Io { what, source },
        }
    }

    /// A copy of this error for each of several waiters (io::Error is not Clone).
    pub fn duplicate(&self) -> Self {
        match self {
            StoreError::Io { what, source } => StoreError::Io {
                what: what.clone(),
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
            StoreError::NoSpace { what } => StoreError::NoSpace { what: what.clone() },
            StoreError::Checksum {
                oid,
                offset,
                segment,
            } => StoreError::Checksum {
                oid: *oid,
                offset: *offset,
                segment: *segment,
            },
            StoreError::NotFound(o) => StoreError::NotFound(*o),
            StoreError::OutOfRange(s) => StoreError::OutOfRange(s.clone()),
            StoreError::Invalid(s) => StoreError::Invalid(s.clone()),
            StoreError::Incompatible { dir, why } => StoreError::Incompatible {
                dir: dir.clone(),
                why: why.clone(),
            },
            StoreError::Closed => StoreError::Closed,
            StoreError::NotReady(s) => StoreError::NotReady(s.clone()),
        }
    }

    /// The errno an edge (NBD) should report for this error.
    pub fn errno(&self) -> i32 {
        match self {
            StoreError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            StoreError::NoSpace { .. } => libc::ENOSPC,
            StoreError::Checksum { .. } => libc::EIO,
            StoreError::NotFound(_) => libc::ENOENT,
            StoreError::OutOfRange(_) => libc::EINVAL,
            StoreError::Invalid(_) => libc::EINVAL,
            StoreError::Incompatible { .. } => libc::EINVAL,
            StoreError::Closed => libc::ESHUTDOWN,
            StoreError::NotReady(_) => libc::EAGAIN,
        }
    }
}

/// glommio wraps io::Error in its own type; take the io::Error (and its errno, which
/// decides e.g. ENOSPC -> NoSpace) back out, keeping glommio's path in the message.
pub(crate) fn from_glommio(what: impl Into<String>, err: glommio::GlommioError<()>) -> StoreError {
    let what = what.into();
    match err {
        glommio::GlommioError::IoError(source) => StoreError::io(what, source),
        glommio::GlommioError::EnhancedIoError { source, path, .. } => match path {
            Some(p) => StoreError::io(format!("{what} ({})", p.display()), source),
            None => StoreError::io(what, source),
        },
        other => StoreError::io(what, io::Error::other(other.to_string())),
    }
}
