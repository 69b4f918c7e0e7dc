use super::*;
use collie_placement::Redundancy;

fn round_trip_request(r: Request) {
    let (op, body) = r.encode();
    let mut wire = Vec::new();
    write_frame(&mut wire, op, 0, 9, &body).unwrap();
    let (h, b) = read_frame(&mut wire.as_slice()).unwrap().unwrap();
    assert_eq!(h.id, 9);
    assert_eq!(Request::decode(&h, &b).unwrap(), r);
}

fn round_trip_response(r: Response) {
    let (op, status, body) = r.encode();
    let mut wire = Vec::new();
    write_frame(&mut wire, op, status, 3, &body).unwrap();
    let (h, b) = read_frame(&mut wire.as_slice()).unwrap().unwrap();
    assert_eq!(Response::decode(&h, &b).unwrap(), r);
}

fn copy_info() -> CopyInfo {
    CopyInfo {
        addr: "127.0.0.1:7002".into(),
        zone: 2,
        used: 4 << 20,
        crc: 0xdead_beef,
    }
}

fn recovery_stat() -> RecoveryStat {
    RecoveryStat {
        epoch: 7,
        complete: false,
        objects_total: 1 << 33,
        objects_done: 12_345,
        bytes: 48 << 30,
        enabled: true,
        rate: 100 << 20,
        objects_lost: 3,
    }
}

fn members() -> Vec<MemberRecovery> {
    vec![
        MemberRecovery {
            id: 0,
            addr: "127.0.0.1:7000".into(),
            stat: Ok(recovery_stat()),
        },
        MemberRecovery {
            id: 1,
            addr: "127.0.0.1:7001".into(),
            stat: Ok(RecoveryStat {
                complete: true,
                enabled: false,
                ..RecoveryStat::default()
            }),
        },
        MemberRecovery {
            id: 2,
            addr: "127.0.0.1:7002".into(),
            stat: Err("Connection refused".into()),
        },
    ]
}

fn vdi_info() -> VdiInfo {
    VdiInfo {
        name: "replica".into(),
        vid: 0x72a1e2,
        size: 20 << 30,
        used: 4 << 20,
        shared: 0,
        ctime: 1_369_623_031,
        redundancy: Redundancy::Erasure { data: 4, parity: 2 },
        snap_id: 0,
        tag: String::new(),
    }
}

#[test]
fn every_message_round_trips() {
    for r in [
        Request::ClusterFormat {
            redundancy: Redundancy::Replicated { copies: 3 },
            force: true,
        },
        Request::ClusterInfo,
        Request::ClusterShutdown,
        Request::NodeInfo,
        Request::VdiCreate {
            name: "a".into(),
            size: 1 << 40,
            redundancy: None,
        },
        Request::VdiCreate {
            name: "b".into(),
            size: 5,
            redundancy: Some(Redundancy::Replicated { copies: 2 }),
        },
        Request::VdiList,
        Request::VdiDelete { name: "a".into() },
        Request::VdiResize {
            name: "a".into(),
            size: 7,
        },
        Request::VdiRead {
            name: "a".into(),
            offset: 3,
            len: 4,
        },
        Request::VdiWrite {
            name: "a".into(),
            offset: 3,
            data: vec![1, 2, 3],
        },
    ] {
        round_trip_request(r);
    }
    for r in [
        Request::NodeList,
        Request::NodeKill { id: 3 },
        Request::ObjectLocation {
            name: "replica".into(),
            index: Some(7),
        },
        Request::ObjectLocation {
            name: "replica".into(),
            index: None,
        },
        Request::NodeFormat {
            redundancy: Redundancy::Erasure { data: 4, parity: 2 },
            force: true,
            ctime: 9,
            vnode_bytes: 1 << 30,
        },
        Request::NodeStat,
        Request::ObjectCopy { oid: 42 },
        Request::VdiCheck {
            name: "erasure".into(),
            repair: true,
        },
        Request::EpochFreeze,
        Request::NodeStop,
        Request::NodeRecovery,
        Request::RecoveryStat,
    ] {
        round_trip_request(r);
    }
    for enabled in [None, Some(false), Some(true)] {
        for rate in [None, Some(0), Some(100 << 20), Some(u64::MAX)] {
            if enabled.is_none() && rate.is_none() {
                continue;
            }
            round_trip_request(Request::ClusterRecover { enabled, rate });
            round_trip_request(Request::RecoverSet { enabled, rate });
        }
    }
    for r in [
        Response::Ok,
        Response::Error {
            code: ErrorCode::NoVdi,
            message: "no such vdi".into(),
        },
        Response::ClusterInfo(ClusterInfo {
            formatted: Some(ClusterFormatInfo {
                ctime: 5,
                default_redundancy: Redundancy::Replicated { copies: 3 },
                vnode_bytes: 1 << 20,
            }),
            waiting_for: vec!["127.0.0.1:7003".into()],
            epochs: vec![EpochEntry {
                epoch: 1,
                time: 5,
                nodes: vec!["127.0.0.1:7000".into()],
            }],
            recovery: members(),
        }),
        Response::ClusterInfo(ClusterInfo {
            formatted: None,
            waiting_for: vec![],
            epochs: vec![],
            recovery: vec![],
        }),
        Response::NodeInfo(NodeInfo {
            nodes: vec![NodeStat {
                id: 0,
                addr: "127.0.0.1:7000".into(),
                zone: 0,
                used: 1,
                avail: 2,
                nosync: true,
            }],
            vdi_total: 9,
        }),
        Response::Vdi(vdi_info()),
        Response::VdiList(vec![vdi_info(), vdi_info()]),
        Response::Data(vec![0; 4096]),
        Response::Nodes(vec![NodeEntry {
            id: 1,
            addr: "127.0.0.1:7001".into(),
            zone: 1,
            vnodes: 4096,
            nbd_port: 10810,
        }]),
        Response::Location(ObjectLocation {
            oid: 1 << 40,
            redundancy: Redundancy::Replicated { copies: 3 },
            targets: vec!["127.0.0.1:7001".into(), "127.0.0.1:7004".into()],
            copies: vec![copy_info()],
        }),
        Response::Copy(Some(copy_info())),
        Response::Copy(None),
        Response::Check(CheckReport {
            objects: 1,
            stripes: 2,
            consistent: 3,
            repaired: 4,
            lost: 5,
            unplaced: 6,
        }),
        Response::Recovery(recovery_stat()),
        Response::Recovery(RecoveryStat::default()),
        Response::NodeRecovery(members()),
        Response::NodeRecovery(vec![]),
    ] {
        round_trip_response(r);
    }
}

#[test]
fn recover_requests_that_change_nothing_are_refused() {
    let empty = Request::ClusterRecover {
        enabled: None,
        rate: None,
    };
    assert!(empty.check().is_err());
    assert!(Request::RecoverSet {
        enabled: None,
        rate: None
    }
    .check()
    .is_err());
    // Sent anyway (by another client): the sheep refuses it with a message.
    let (op, body) = empty.encode();
    let h = FrameHeader::new(op, 0, 1, &body);
    let e = Request::decode(&h, &body).unwrap_err();
    assert!(e.to_string().contains("changes nothing"), "{e}");
    assert!(Request::ClusterRecover {
        enabled: Some(false),
        rate: None
    }
    .check()
    .is_ok());
}

#[test]
fn bad_recovery_bodies_are_refused() {
    // A presence flag that is not a boolean.
    let body = [2u8, 0];
    let (op, _) = Request::RecoverSet {
        enabled: Some(true),
        rate: None,
    }
    .encode();
    let h = FrameHeader::new(op, 0, 1, &body);
    assert!(Request::decode(&h, &body).is_err());
    // A rate cut short, and trailing bytes.
    let (op, body) = Request::ClusterRecover {
        enabled: None,
        rate: Some(7),
    }
    .encode();
    for bad in [&body[..body.len() - 1], &[&body[..], &[0][..]].concat()[..]] {
        let h = FrameHeader::new(op, 0, 1, bad);
        assert!(Request::decode(&h, bad).is_err());
    }
    // A member list whose count claims more entries than the body holds.
    let (op, _, mut body) = Response::NodeRecovery(members()).encode();
    body[..4].copy_from_slice(&1000u32.to_le_bytes());
    let h = FrameHeader::new(op, 0, 1, &body);
    assert!(matches!(
        Response::decode(&h, &body),
        Err(AdminError::Malformed(_))
    ));
    // A reason longer than any message is cut to fit, not refused.
    let long = MemberRecovery {
        id: 0,
        addr: "h:1".into(),
        stat: Err("é".repeat(body::MAX_TEXT)),
    };
    let (op, status, body) = Response::NodeRecovery(vec![long]).encode();
    let h = FrameHeader::new(op, status, 1, &body);
    match Response::decode(&h, &body).unwrap() {
        Response::NodeRecovery(l) => {
            let why = l[0].stat.as_ref().unwrap_err();
            assert!(why.len() <= body::MAX_TEXT && why.starts_with('é'));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn damaged_frames_are_rejected_not_trusted() {
    let (op, body) = Request::VdiDelete { name: "x".into() }.encode();
    let mut wire = Vec::new();
    write_frame(&mut wire, op, 0, 1, &body).unwrap();
    // Every single-byte flip is caught by a magic, version, length or CRC check.
    for i in 0..wire.len() {
        let mut w = wire.clone();
        w[i] ^= 0x5a;
        assert!(read_frame(&mut w.as_slice()).is_err(), "flip at {i} passed");
    }
    // A header claiming a huge body is refused before allocation.
    let mut h = FrameHeader::new(op, 0, 1, &body);
    h.body_len = u32::MAX;
    h.header_crc = crc32c::crc32c(&bytemuck::bytes_of(&h)[..HEADER_LEN - 4]);
    let bytes = bytemuck::bytes_of(&h).to_vec();
    assert!(matches!(
        read_frame(&mut bytes.as_slice()),
        Err(AdminError::TooLarge(_))
    ));
    // Truncation and clean EOF.
    assert!(read_frame(&mut &wire[..10]).is_err());
    assert!(read_frame(&mut &wire[..HEADER_LEN + 1]).is_err());
    assert!(read_frame(&mut &[][..]).unwrap().is_none());
}

#[test]
fn random_bodies_never_panic() {
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for opcode in (0u16..0x20).chain(0x40..0x50).chain(0x80..0x90) {
        for _ in 0..200 {
            let len = (x % 64) as usize;
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 7) as u8 // small values make plausible counts and lengths
                })
                .collect();
            let h = FrameHeader::new(opcode, 0, 1, &body);
            let _ = Request::decode(&h, &body);
            let _ = Response::decode(&h, &body);
        }
    }
}

#[test]
fn oversized_requests_are_refused_before_sending() {
    let long = "x".repeat(body::MAX_NAME + 1);
    assert!(Request::VdiDelete { name: long }.check().is_err());
    assert!(Request::VdiDelete {
        name: "x".repeat(body::MAX_NAME)
    }
    .check()
    .is_ok());
    let data = vec![0; MAX_DATA as usize + 1];
    assert!(Request::VdiWrite {
        name: "a".into(),
        offset: 0,
        data
    }
    .check()
    .is_err());
    assert!(Request::VdiRead {
        name: "a".into(),
        offset: 0,
        len: MAX_DATA + 1
    }
    .check()
    .is_err());
    assert!(Request::ClusterInfo.check().is_ok());
}
