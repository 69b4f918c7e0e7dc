//! Request validation: decide, before touching storage, whether a parsed request may run,
//! which errno to answer it with, or whether the connection must close. Follows the
//! spec sections "Block size constraints", "Request types" and "Error values".

use super::consts::*;
use super::transmission::{Command, HeaderStyle, Request};

/// What the server negotiated for this connection's export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportLimits {
    /// Export size in bytes.
    pub size: u64,
    /// Minimum block size (alignment of offset and length); 1 for none.
    pub min_block: u32,
    /// Maximum READ/WRITE length we advertised.
    pub max_block: u32,
    /// Transmission flags we sent (`FLAG_SEND_*`, `FLAG_READ_ONLY`, ...).
    pub tflags: u16,
    /// Structured replies (or extended headers, which imply them) are on.
    pub structured: bool,
    /// At least one metadata context was selected for this export.
    pub meta_context: bool,
    pub style: HeaderStyle,
}

/// Outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Run it. (A zero-length READ/WRITE/TRIM/WRITE_ZEROES is valid and a no-op.)
    Ok,
    /// Do not run it; reply with this `NBD_E*` value (after draining any payload).
    Reply(u32),
    /// Close the connection without replying (payload too big to drain safely).
    Disconnect,
}

/// Flags that are valid for `kind` given what we advertised.
fn allowed_flags(kind: Command, l: &ExportLimits) -> u16 {
    // FUA is valid on every command once NBD_FLAG_SEND_FUA was advertised.
    let mut f = if l.tflags & FLAG_SEND_FUA != 0 {
        CMD_FLAG_FUA
    } else {
        0
    };
    match kind {
        Command::Read if l.tflags & FLAG_SEND_DF != 0 => f |= CMD_FLAG_DF,
        Command::Write if l.style == HeaderStyle::Extended => f |= CMD_FLAG_PAYLOAD_LEN,
        Command::WriteZeroes => {
            f |= CMD_FLAG_NO_HOLE;
            if l.tflags & FLAG_SEND_FAST_ZERO != 0 {
                f |= CMD_FLAG_FAST_ZERO;
            }
        }
        Command::BlockStatus => f |= CMD_FLAG_REQ_ONE,
        _ => {}
    }
    f
}

/// Classify `req` against the export. The caller has already checked the header style
/// matches the negotiated one; `NBD_CMD_DISC` is `Ok` (the caller then closes).
pub fn validate_request(req: &Request, l: &ExportLimits) -> Verdict {
    debug_assert!(l.min_block >= 1 && l.min_block.is_power_of_two());
    let len = req.length;

    // A WRITE's payload is on the wire whatever we decide; if it is absurd we cannot
    // afford to drain it. Lengths under 32 MiB are never treated as DoS (spec).
    if req.kind == Command::Write && len > u64::from(l.max_block).max(DOS_SAFE_PAYLOAD) {
        return Verdict::Disconnect;
    }
    // BLOCK_STATUS payloads (NBD_FLAG_BLOCK_STAT_PAYLOAD) are not supported: only
    // tolerate a small one that the caller can drain before replying EINVAL.
    if req.kind != Command::Write && req.payload_len(l.style) > u64::from(MAX_OPTION_LEN) {
        return Verdict::Disconnect;
    }

    let needs_flag = |flag: u16| l.tflags & flag != 0;
    let supported = match req.kind {
        Command::Read | Command::Write | Command::Disc => true,
        Command::Flush => needs_flag(FLAG_SEND_FLUSH),
        Command::Trim => needs_flag(FLAG_SEND_TRIM),
        Command::Cache => needs_flag(FLAG_SEND_CACHE),
        Command::WriteZeroes => needs_flag(FLAG_SEND_WRITE_ZEROES),
        Command::BlockStatus => l.structured && l.meta_context,
        Command::Unknown(_) => false,
    };
    if !supported {
        return Verdict::Reply(EINVAL);
    }
    if req.flags & !allowed_flags(req.kind, l) != 0 {
        return Verdict::Reply(EINVAL);
    }
    if matches!(req.kind, Command::Disc | Command::Flush) {
        // Offset and length are reserved (MUST be zero); be lenient and ignore them.
        return Verdict::Ok;
    }

    let writes = matches!(
        req.kind,
        Command::Write | Command::Trim | Command::WriteZeroes
    );
    if writes && needs_flag(FLAG_READ_ONLY) {
        return Verdict::Reply(EPERM);
    }

    // Range: writes past the end are ENOSPC, everything else EINVAL.
    let in_range = req.offset.checked_add(len).is_some_and(|end| end <= l.size);
    if !in_range {
        let errno = match req.kind {
            Command::Write | Command::WriteZeroes => ENOSPC,
            _ => EINVAL,
        };
        return Verdict::Reply(errno);
    }

    // min_block is a power of two (asserted above), so a mask tests alignment; this also
    // keeps the crate building on the workspace MSRV (no `is_multiple_of`).
    let mask = u64::from(l.min_block.max(1)) - 1;
    if req.offset & mask != 0 || len & mask != 0 {
        return Verdict::Reply(EINVAL);
    }

    // Only READ and WRITE (and CACHE) are bounded by the maximum block size in our
    // policy; TRIM, WRITE_ZEROES and BLOCK_STATUS may cover any range of the export.
    let bounded = matches!(req.kind, Command::Read | Command::Write | Command::Cache);
    if bounded && len > u64::from(l.max_block) {
        return Verdict::Reply(EINVAL);
    }

    if req.kind == Command::Read {
        // DF: one content chunk must carry 8 + len bytes in a compact header.
        if req.flags & CMD_FLAG_DF != 0
            && l.style == HeaderStyle::Compact
            && len > u64::from(u32::MAX) - 8
        {
            return Verdict::Reply(EOVERFLOW);
        }
    }

    if req.kind == Command::BlockStatus && len == 0 {
        // A reply needs at least one nonzero-length descriptor; refuse rather than
        // invent one.
        return Verdict::Reply(EINVAL);
    }

    if req.payload_len(l.style) != 0 && req.kind != Command::Write {
        return Verdict::Reply(EINVAL);
    }

    Verdict::Ok
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::XorShift;
    use super::*;

    const MIB: u64 = 1 << 20;

    fn limits() -> ExportLimits {
        ExportLimits {
            size: 1 << 30,
            min_block: 512,
            max_block: 4 << 20,
            tflags: FLAG_HAS_FLAGS
                | FLAG_SEND_FLUSH
                | FLAG_SEND_FUA
                | FLAG_SEND_TRIM
                | FLAG_SEND_WRITE_ZEROES
                | FLAG_SEND_DF
                | FLAG_SEND_FAST_ZERO,
            structured: true,
            meta_context: true,
            style: HeaderStyle::Compact,
        }
    }

    fn req(kind: Command, flags: u16, offset: u64, length: u64) -> Request {
        Request {
            flags,
            kind,
            cookie: 1,
            offset,
            length,
        }
    }

    #[test]
    fn happy_paths() {
        let l = limits();
        assert_eq!(
            validate_request(&req(Command::Read, 0, 0, 4096), &l),
            Verdict::Ok
        );
        assert_eq!(
            validate_request(&req(Command::Write, CMD_FLAG_FUA, 4096, 4 * MIB), &l),
            Verdict::Ok
        );
        assert_eq!(
            validate_request(&req(Command::Flush, 0, 0, 0), &l),
            Verdict::Ok
        );
        assert_eq!(
            validate_request(&req(Command::Disc, 0, 0, 0), &l),
            Verdict::Ok
        );
        // QEMU trims the whole export in one request: beyond max_block is fine.
        assert_eq!(
            validate_request(&req(Command::Trim, 0, 0, 1 << 30), &l),
            Verdict::Ok
        );
        assert_eq!(
            validate_request(&req(Command::WriteZeroes, CMD_FLAG_NO_HOLE, 0, 1 << 30), &l),
            Verdict::Ok
        );
        assert_eq!(
            validate_request(&req(Command::BlockStatus, CMD_FLAG_REQ_ONE, 0, 1 << 30), &l),
            Verdict::Ok
        );
        // Zero-length is unspecified but must not disconnect: treat as a no-op.
        assert_eq!(
            validate_request(&req(Command::Read, 0, 0, 0), &l),
            Verdict::Ok
        );
        assert_eq!(
            validate_request(&req(Command::Write, 0, 1 << 30, 0), &l),
            Verdict::Ok
        );
    }

    #[test]
    fn range_errors_follow_spec() {
        let l = limits();
        let end = l.size;
        assert_eq!(
            validate_request(&req(Command::Write, 0, end, 512), &l),
            Verdict::Reply(ENOSPC)
        );
        assert_eq!(
            validate_request(&req(Command::WriteZeroes, 0, end - 512, 1024), &l),
            Verdict::Reply(ENOSPC)
        );
        assert_eq!(
            validate_request(&req(Command::Read, 0, end, 512), &l),
            Verdict::Reply(EINVAL)
        );
        assert_eq!(
            validate_request(&req(Command::Trim, 0, end, 512), &l),
            Verdict::Reply(EINVAL)
        );
        assert_eq!(
            validate_request(&req(Command::BlockStatus, 0, end, 512), &l),
            Verdict::Reply(EINVAL)
        );
        // offset + length overflowing u64
        assert_eq!(
            validate_request(&req(Command::Read, 0, u64::MAX - 511, 1024), &l),
            Verdict::Reply(EINVAL)
        );
    }

    #[test]
    fn size_alignment_and_flags() {
        let l = limits();
        assert_eq!(
            validate_request(&req(Command::Read, 0, 0, 4 * MIB + 512), &l),
            Verdict::Reply(EINVAL)
        );
        // A too-long WRITE under 32 MiB: reply EINVAL (caller drains the payload).
        assert_eq!(
            validate_request(&req(Command::Write, 0, 0, 8 * MIB), &l),
            Verdict::Reply(EINVAL)
        );
        // An absurd WRITE: close, do not try to drain 4 GiB.
        assert_eq!(
            validate_request(&req(Command::Write, 0, 0, u64::from(u32::MAX)), &l),
            Verdict::Disconnect
        );
        assert_eq!(
            validate_request(&req(Command::Read, 0, 1, 512), &l),
            Verdict::Reply(EINVAL)
        );
        assert_eq!(
            validate_request(&req(Command::Read, 0, 0, 100), &l),
            Verdict::Reply(EINVAL)
        );
        assert_eq!(
            validate_request(&req(Command::Unknown(99), 0, 0, 0), &l),
            Verdict::Reply(EINVAL)
        );
        assert_eq!(
            validate_request(&req(Command::Read, 1 << 9, 0, 512), &l),
            Verdict::Reply(EINVAL)
        );
        assert_eq!(
            validate_request(&req(Command::Read, CMD_FLAG_REQ_ONE, 0, 512), &l),
            Verdict::Reply(EINVAL)
        );
        assert_eq!(
            validate_request(&req(Command::Read, CMD_FLAG_DF, 0, 512), &l),
            Verdict::Ok
        );
        assert_eq!(
            validate_request(&req(Command::Write, CMD_FLAG_PAYLOAD_LEN, 0, 512), &l),
            Verdict::Reply(EINVAL)
        );
        let ext = ExportLimits {
            style: HeaderStyle::Extended,
            ..l
        };
        assert_eq!(
            validate_request(&req(Command::Write, CMD_FLAG_PAYLOAD_LEN, 0, 512), &ext),
            Verdict::Ok
        );
        assert_eq!(
            validate_request(
                &req(Command::BlockStatus, CMD_FLAG_PAYLOAD_LEN, 0, 16),
                &ext
            ),
            Verdict::Reply(EINVAL)
        );
        assert_eq!(
            validate_request(
                &req(Command::BlockStatus, CMD_FLAG_PAYLOAD_LEN, 0, 1 << 40),
                &ext
            ),
            Verdict::Disconnect
        );
        assert_eq!(
            validate_request(&req(Command::BlockStatus, 0, 0, 0), &l),
            Verdict::Reply(EINVAL)
        );
    }

    #[test]
    fn negotiation_gates_commands() {
        let bare = ExportLimits {
            tflags: FLAG_HAS_FLAGS | FLAG_READ_ONLY,
            structured: false,
            meta_context: false,
            ..limits()
        };
        for kind in [
            Command::Flush,
            Command::Trim,
            Command::WriteZeroes,
            Command::BlockStatus,
            Command::Cache,
        ] {
            assert_eq!(
                validate_request(&req(kind, 0, 0, 512), &bare),
                Verdict::Reply(EINVAL),
                "{kind:?}"
            );
        }
        assert_eq!(
            validate_request(&req(Command::Write, CMD_FLAG_FUA, 0, 512), &bare),
            Verdict::Reply(EINVAL)
        );
        assert_eq!(
            validate_request(&req(Command::Write, 0, 0, 512), &bare),
            Verdict::Reply(EPERM)
        );
        let no_fast = ExportLimits {
            tflags: limits().tflags & !FLAG_SEND_FAST_ZERO,
            ..limits()
        };
        assert_eq!(
            validate_request(
                &req(Command::WriteZeroes, CMD_FLAG_FAST_ZERO, 0, 512),
                &no_fast
            ),
            Verdict::Reply(EINVAL)
        );
    }

    #[test]
    fn random_requests_never_panic() {
        let mut rng = XorShift(0xdead_beef_cafe_f00d);
        for i in 0..5000u64 {
            let r = Request {
                flags: rng.next() as u16,
                kind: Command::from_wire((rng.next() % 10) as u16),
                cookie: i,
                offset: if i % 2 == 0 {
                    rng.next()
                } else {
                    rng.next() % (2 << 30)
                },
                length: if i % 3 == 0 {
                    rng.next()
                } else {
                    rng.next() % (8 << 20)
                },
            };
            let mut l = limits();
            l.style = if i % 2 == 0 {
                HeaderStyle::Compact
            } else {
                HeaderStyle::Extended
            };
            l.min_block = 1 << (rng.next() % 13);
            l.size = rng.next() % (4 << 30);
            let _ = validate_request(&r, &l);
        }
    }
}
