//! Handshake phase: the server greeting, client flags, option requests and the
//! replies to them (fixed newstyle, spec "Newstyle negotiation" and "Option types").

use super::consts::*;
use super::{clip_message, nbd_str, outgoing_str, NbdError, Reader, Result};

/// Length of an option request header: IHAVEOPT u64, option u32, length u32.
pub const OPTION_HEADER_LEN: usize = 16;
/// Length of the server greeting: NBDMAGIC u64, IHAVEOPT u64, handshake flags u16.
pub const GREETING_LEN: usize = 18;

/// Header of one client option; `len` bytes of data follow, already checked to be at
/// most [`MAX_OPTION_LEN`] so the caller may allocate them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub code: u32,
    pub len: u32,
}

/// Body of `NBD_OPT_INFO` / `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    /// Empty means the default export.
    pub export: &'a str,
    /// `NBD_INFO_*` codes the client asked for (unknown ones are to be ignored).
    pub requests: Vec<u16>,
}

/// Body of `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContextRequest<'a> {
    pub export: &'a str,
    pub queries: Vec<&'a str>,
}

/// Server greeting: `NBDMAGIC`, `IHAVEOPT`, handshake flags.
pub fn encode_server_greeting(out: &mut Vec<u8>, handshake_flags: u16) {
    out.extend_from_slice(&NBDMAGIC.to_be_bytes());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&handshake_flags.to_be_bytes());
}

/// Client flags (32 bits). Unknown bits, or bits the server did not offer, mean the
/// server MUST drop the connection (spec "Client flags").
pub fn parse_client_flags(buf: &[u8; 4], offered_handshake_flags: u16) -> Result<u32> {
    let flags = u32::from_be_bytes(*buf);
    let allowed = u32::from(offered_handshake_flags) & (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    if flags & !allowed != 0 {
        return Err(NbdError::UnknownClientFlags(flags));
    }
    Ok(flags)
}

/// Parse an option request header, refusing a length above [`MAX_OPTION_LEN`] before
/// anyone allocates for it. A too-long option is a protocol-level DoS signal: the server
/// either closes or drains `len` bytes and replies `NBD_REP_ERR_TOO_BIG`.
pub fn parse_option_header(buf: &[u8; OPTION_HEADER_LEN]) -> Result<OptionHeader> {
    let mut r = Reader::new(buf, "option header");
    let magic = r.u64()?;
    if magic != IHAVEOPT {
        return Err(NbdError::BadMagic {
            what: "option",
            got: magic,
        });
    }
    let code = r.u32()?;
    let len = r.u32()?;
    if len > MAX_OPTION_LEN {
        return Err(NbdError::OptionTooLong {
            len,
            max: MAX_OPTION_LEN,
        });
    }
    Ok(OptionHeader { code, len })
}

/// `NBD_OPT_EXPORT_NAME`: the whole option data is the export name.
pub fn parse_export_name(body: &[u8]) -> Result<&str> {
    nbd_str(body, "export name")
}

/// `NBD_OPT_INFO` / `NBD_OPT_GO`: u32 name length (at most data length - 6), name,
/// u16 count, count x u16 info requests. Trailing bytes are rejected.
pub fn parse_info_request(body: &[u8]) -> Result<InfoRequest<'_>> {
    let mut r = Reader::new(body, "NBD_OPT_INFO/GO");
    let name_len = r.u32()? as usize;
    if name_len > body.len().saturating_sub(6) {
        return Err(NbdError::Malformed {
            what: "NBD_OPT_INFO/GO",
            why: "name length larger than option data - 6",
        });
    }
    let export = nbd_str(r.take(name_len)?, "export name")?;
    let count = r.u16()? as usize;
    if count.saturating_mul(2) != r.remaining() {
        return Err(NbdError::Malformed {
            what: "NBD_OPT_INFO/GO",
            why: "information request count does not match option length",
        });
    }
    let mut requests = Vec::with_capacity(count);
    for _ in 0..count {
        requests.push(r.u16()?);
    }
    r.finish()?;
    Ok(InfoRequest { export, requests })
}

/// `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`: u32 name length, name,
/// u32 query count, then per query u32 length + string.
pub fn parse_meta_context_request(body: &[u8]) -> Result<MetaContextRequest<'_>> {
    let mut r = Reader::new(body, "NBD_OPT_*_META_CONTEXT");
    let export = r.string32("export name")?;
    let count = r.u32()? as usize;
    // Each query takes at least its 4-byte length: bound the count before allocating.
    if count > r.remaining() / 4 {
        return Err(NbdError::Malformed {
            what: "NBD_OPT_*_META_CONTEXT",
            why: "query count larger than the option data can hold",
        });
    }
    let mut queries = Vec::with_capacity(count);
    for _ in 0..count {
        queries.push(r.string32("meta context query")?);
    }
    r.finish()?;
    Ok(MetaContextRequest { export, queries })
}

/// Fixed newstyle option reply header: magic, option, reply type, data length.
pub fn encode_option_reply_header(out: &mut Vec<u8>, option: u32, reply_type: u32, len: u32) {
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
}

/// `NBD_REP_ACK` (no data).
pub fn encode_rep_ack(out: &mut Vec<u8>, option: u32) {
    encode_option_reply_header(out, option, REP_ACK, 0);
}

/// `NBD_REP_SERVER` for `NBD_OPT_LIST`: u32 name length + name (no description).
pub fn encode_rep_server(out: &mut Vec<u8>, option: u32, name: &str) -> Result<()> {
    let n = outgoing_str(name, "export name")?;
    encode_option_reply_header(out, option, REP_SERVER, 4 + n);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

/// `NBD_REP_INFO` / `NBD_INFO_EXPORT`: size u64 + transmission flags u16 (length 12).
pub fn encode_rep_info_export(out: &mut Vec<u8>, option: u32, size: u64, tflags: u16) {
    encode_option_reply_header(out, option, REP_INFO, 12);
    out.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&tflags.to_be_bytes());
}

/// `NBD_REP_INFO` / `NBD_INFO_NAME`: the canonical export name.
pub fn encode_rep_info_name(out: &mut Vec<u8>, option: u32, name: &str) -> Result<()> {
    let n = outgoing_str(name, "export name")?;
    encode_option_reply_header(out, option, REP_INFO, 2 + n);
    out.extend_from_slice(&INFO_NAME.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

/// `NBD_REP_INFO` / `NBD_INFO_BLOCK_SIZE`: minimum, preferred, maximum (length 14).
/// The spec's constraints on the values are our own invariants, so they are asserted.
pub fn encode_rep_info_block_size(out: &mut Vec<u8>, option: u32, min: u32, pref: u32, max: u32) {
    debug_assert!(min.is_power_of_two() && min <= 65_536);
    debug_assert!(pref.is_power_of_two() && pref >= min.max(512));
    debug_assert!(max == u32::MAX || max & (min - 1) == 0);
    encode_option_reply_header(out, option, REP_INFO, 14);
    out.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    out.extend_from_slice(&min.to_be_bytes());
    out.extend_from_slice(&pref.to_be_bytes());
    out.extend_from_slice(&max.to_be_bytes());
}

/// `NBD_REP_META_CONTEXT`: u32 context id + name (length implied by the header).
pub fn encode_rep_meta_context(out: &mut Vec<u8>, option: u32, id: u32, name: &str) -> Result<()> {
    let n = outgoing_str(name, "meta context name")?;
    encode_option_reply_header(out, option, REP_META_CONTEXT, 4 + n);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

/// An error reply (`NBD_REP_ERR_*`) with a human-readable message, clipped to the
/// string limit so that sending an error cannot fail.
pub fn encode_rep_error(out: &mut Vec<u8>, option: u32, reply_type: u32, message: &str) {
    debug_assert!(reply_type & REP_FLAG_ERROR != 0, "not an error reply type");
    let msg = clip_message(message);
    // Clipped to MAX_STRING_LEN, so the cast cannot truncate.
    encode_option_reply_header(out, option, reply_type, msg.len() as u32);
    out.extend_from_slice(msg.as_bytes());
}

/// Reply to `NBD_OPT_EXPORT_NAME`: size u64, transmission flags u16, then 124 zero
/// bytes unless the client set `NBD_FLAG_C_NO_ZEROES`.
pub fn encode_export_name_reply(out: &mut Vec<u8>, size: u64, tflags: u16, no_zeroes: bool) {
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&tflags.to_be_bytes());
    if !no_zeroes {
        out.extend_from_slice(&[0u8; 124]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::XorShift;
    use super::*;

    fn opt_header(code: u32, len: u32) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
        b[8..12].copy_from_slice(&code.to_be_bytes());
        b[12..].copy_from_slice(&len.to_be_bytes());
        b
    }

    fn info_body(name: &str, reqs: &[u16]) -> Vec<u8> {
        let mut b = (name.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&(reqs.len() as u16).to_be_bytes());
        for r in reqs {
            b.extend_from_slice(&r.to_be_bytes());
        }
        b
    }

    fn meta_body(name: &str, queries: &[&str]) -> Vec<u8> {
        let mut b = (name.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in queries {
            b.extend_from_slice(&(q.len() as u32).to_be_bytes());
            b.extend_from_slice(q.as_bytes());
        }
        b
    }

    #[test]
    fn greeting_bytes() {
        let mut out = Vec::new();
        encode_server_greeting(&mut out, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        assert_eq!(out.len(), GREETING_LEN);
        assert_eq!(&out[..8], b"NBDMAGIC");
        assert_eq!(&out[8..16], b"IHAVEOPT");
        assert_eq!(&out[16..], &[0x00, 0x03]);
    }

    #[test]
    fn client_flags() {
        let offered = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;
        assert_eq!(parse_client_flags(&[0, 0, 0, 3], offered).unwrap(), 3);
        assert!(parse_client_flags(&[0, 0, 0, 4], offered).is_err());
        // NO_ZEROES not offered -> client may not set it.
        assert!(parse_client_flags(&[0, 0, 0, 2], FLAG_FIXED_NEWSTYLE).is_err());
    }

    #[test]
    fn option_header_layout_and_bounds() {
        // NBD_OPT_GO with 7 bytes, from the spec layout: "IHAVEOPT", 7, 7.
        let raw: [u8; 16] = [
            b'I', b'H', b'A', b'V', b'E', b'O', b'P', b'T', 0, 0, 0, 7, 0, 0, 0, 7,
        ];
        assert_eq!(
            parse_option_header(&raw).unwrap(),
            OptionHeader {
                code: OPT_GO,
                len: 7
            }
        );
        assert!(parse_option_header(&opt_header(1, MAX_OPTION_LEN)).is_ok());
        assert_eq!(
            parse_option_header(&opt_header(1, MAX_OPTION_LEN + 1)),
            Err(NbdError::OptionTooLong {
                len: MAX_OPTION_LEN + 1,
                max: MAX_OPTION_LEN
            })
        );
        assert!(parse_option_header(&opt_header(1, u32::MAX)).is_err());
        let mut bad = opt_header(1, 0);
        bad[0] ^= 1;
        assert!(matches!(
            parse_option_header(&bad),
            Err(NbdError::BadMagic { .. })
        ));
    }

    #[test]
    fn export_name() {
        assert_eq!(parse_export_name(b"erasure").unwrap(), "erasure");
        assert_eq!(parse_export_name(b"").unwrap(), "");
        assert!(parse_export_name(&[b'x'; 4097]).is_err());
        assert!(parse_export_name(b"a\0").is_err());
    }

    #[test]
    fn info_request_round_trip_and_layout() {
        let body = info_body("vdi0", &[INFO_BLOCK_SIZE, INFO_NAME]);
        assert_eq!(body, [0, 0, 0, 4, b'v', b'd', b'i', b'0', 0, 2, 0, 3, 0, 1]);
        let req = parse_info_request(&body).unwrap();
        assert_eq!(req.export, "vdi0");
        assert_eq!(req.requests, vec![INFO_BLOCK_SIZE, INFO_NAME]);
        let empty_body = info_body("", &[]);
        let empty = parse_info_request(&empty_body).unwrap();
        assert_eq!(empty.export, "");
        assert!(empty.requests.is_empty());
    }

    #[test]
    fn info_request_rejects_bad_lengths() {
        let body = info_body("vdi0", &[INFO_BLOCK_SIZE]);
        for cut in 0..body.len() {
            assert!(parse_info_request(&body[..cut]).is_err(), "cut {cut}");
        }
        let mut trailing = body.clone();
        trailing.push(0);
        assert!(parse_info_request(&trailing).is_err());
        // name length pointing past the end
        let mut huge = body.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_info_request(&huge).is_err());
        // count larger than the data
        let mut count = body;
        count[8..10].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(parse_info_request(&count).is_err());
    }

    #[test]
    fn meta_context_round_trip_and_bounds() {
        let body = meta_body("vdi0", &["base:allocation", "qemu:dirty-bitmap:x"]);
        let req = parse_meta_context_request(&body).unwrap();
        assert_eq!(req.export, "vdi0");
        assert_eq!(req.queries, vec!["base:allocation", "qemu:dirty-bitmap:x"]);
        let none_body = meta_body("", &[]);
        let none = parse_meta_context_request(&none_body).unwrap();
        assert!(none.queries.is_empty());
        for cut in 0..body.len() {
            assert!(
                parse_meta_context_request(&body[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut absurd = meta_body("v", &[]);
        absurd[5..9].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_meta_context_request(&absurd).is_err());
        let mut qlen = meta_body("v", &["base:allocation"]);
        qlen[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_meta_context_request(&qlen).is_err());
    }

    #[test]
    fn option_reply_layouts() {
        let mut out = Vec::new();
        encode_rep_ack(&mut out, OPT_STRUCTURED_REPLY);
        assert_eq!(
            out,
            [
                0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, // magic
                0, 0, 0, 8, // option
                0, 0, 0, 1, // NBD_REP_ACK
                0, 0, 0, 0, // length
            ]
        );

        out.clear();
        encode_rep_info_export(
            &mut out,
            OPT_GO,
            0x1_0000_0000,
            FLAG_HAS_FLAGS | FLAG_SEND_FLUSH,
        );
        assert_eq!(&out[8..20], &[0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 12]);
        assert_eq!(&out[20..], &[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0x05]);

        out.clear();
        encode_rep_info_block_size(&mut out, OPT_GO, 512, 4096, 1 << 22);
        assert_eq!(&out[16..20], &[0, 0, 0, 14]);
        assert_eq!(
            &out[20..],
            &[0, 3, 0, 0, 2, 0, 0, 0, 0x10, 0, 0, 0x40, 0, 0]
        );

        out.clear();
        encode_rep_server(&mut out, OPT_LIST, "ab").unwrap();
        assert_eq!(
            &out[12..],
            &[0, 0, 0, 2, 0, 0, 0, 6, 0, 0, 0, 2, b'a', b'b']
        );

        out.clear();
        encode_rep_meta_context(&mut out, OPT_SET_META_CONTEXT, 7, "base:allocation").unwrap();
        assert_eq!(&out[12..16], &REP_META_CONTEXT.to_be_bytes());
        assert_eq!(&out[16..20], &19u32.to_be_bytes());
        assert_eq!(&out[20..24], &7u32.to_be_bytes());
        assert_eq!(&out[24..], b"base:allocation");

        out.clear();
        encode_rep_info_name(&mut out, OPT_GO, "vdi").unwrap();
        assert_eq!(&out[16..], &[0, 0, 0, 5, 0, 1, b'v', b'd', b'i']);

        out.clear();
        encode_rep_error(&mut out, OPT_GO, REP_ERR_UNKNOWN, "no such vdi");
        assert_eq!(&out[12..16], &[0x80, 0, 0, 6]);
        assert_eq!(&out[16..20], &11u32.to_be_bytes());
        assert_eq!(&out[20..], b"no such vdi");

        out.clear();
        encode_rep_error(&mut out, OPT_GO, REP_ERR_POLICY, &"x".repeat(10_000));
        assert_eq!(out.len(), 20 + MAX_STRING_LEN);

        assert!(encode_rep_server(&mut out, OPT_LIST, &"x".repeat(5000)).is_err());
    }

    #[test]
    fn export_name_reply_zeroes() {
        let mut out = Vec::new();
        encode_export_name_reply(&mut out, 1 << 30, FLAG_HAS_FLAGS, false);
        assert_eq!(out.len(), 8 + 2 + 124);
        assert_eq!(&out[..10], &[0, 0, 0, 0, 0x40, 0, 0, 0, 0, 1]);
        assert!(out[10..].iter().all(|&b| b == 0));
        out.clear();
        encode_export_name_reply(&mut out, 1 << 30, FLAG_HAS_FLAGS, true);
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let ihaveopt = IHAVEOPT.to_be_bytes();
        for _ in 0..5000 {
            let v = rng.bytes(96, &[&ihaveopt, &[0, 0, 0, 0], &[0, 0, 0, 1, b'a']]);
            let mut h = [0u8; 16];
            let n = v.len().min(16);
            h[..n].copy_from_slice(&v[..n]);
            let _ = parse_option_header(&h);
            let _ = parse_export_name(&v);
            let _ = parse_info_request(&v);
            let _ = parse_meta_context_request(&v);
            let mut f = [0u8; 4];
            f.copy_from_slice(&h[..4]);
            let _ = parse_client_flags(&f, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        }
    }
}
