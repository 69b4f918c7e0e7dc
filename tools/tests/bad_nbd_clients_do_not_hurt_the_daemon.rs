//! Misbehaving NBD clients — garbage in the handshake or in place of requests, truncated
//! headers, absurd lengths, unknown exports, silence, out-of-range requests, oversized
//! options, a burst of abandoned connections — each get an error reply or a closed
//! connection, never a hang, and after each one the daemon still serves a good client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::nbd_client::{go_body, greet, read_option_reply, send_option, NbdClient};
use support::*;

use collie_net::nbd::consts::*;
use collie_net::nbd::Command as Cmd;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

const VDI: &str = "disk";
const SIZE: u64 = 64 * MIB;
/// Large enough that a 4 GiB-1 READ is in range: only the block-size limit refuses it.
const BIG: &str = "big";
/// A connection the server must close is closed well within this.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// A compact request header, spelled out byte by byte.
fn header(kind: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(28);
    b.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&cookie.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b
}

/// Reads until the server closes (EOF or reset) and returns what it sent first; fails
/// if the connection is still open after `within`.
fn expect_closed(s: &mut TcpStream, within: Duration, what: &str) -> Vec<u8> {
    let end = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: connection still open after {within:?} (received {} bytes)",
            got.len()
        );
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                assert!(got.len() < 1 << 20, "{what}: server keeps sending");
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return got
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => panic!(
                "{what}: connection still open after {within:?} (received {} bytes)",
                got.len()
            ),
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// A client in the transmission phase of `export`, reads bounded so nothing hangs.
fn client(port: u16, export: &str) -> NbdClient {
    NbdClient::connect_timeout(port, export, Duration::from_secs(10)).unwrap()
}

/// A stream after the greeting and valid client flags: in option haggling.
fn haggling(port: u16) -> TcpStream {
    let mut s = greet(port).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
        .unwrap();
    s
}

fn expect_error(c: &mut NbdClient, cookie: u64, errno: u32, what: &str) {
    let r = c
        .reply()
        .unwrap_or_else(|e| panic!("{what}: no reply: {e}"));
    assert_eq!(r.cookie, cookie, "{what}");
    assert_eq!(
        r.error, errno,
        "{what}: want errno {errno}, got {}",
        r.error
    );
}

/// The daemon is alive and a fresh, well-behaved client can write and read back.
fn assert_serving(sheep: &Sheep, step: &str) {
    assert!(pid_alive(sheep.pid()), "after {step}: the sheep died");
    let seed = step
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let data = pattern(seed, 64 * 1024 + 3);
    let off = 8 * MIB + (seed % 1024) * 4099;
    let mut c = NbdClient::connect(sheep.nbd_port, VDI)
        .unwrap_or_else(|e| panic!("after {step}: a good client cannot connect: {e}"));
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    c.write(off, &data)
        .unwrap_or_else(|e| panic!("after {step}: write: {e}"));
    let back = c
        .read(off, data.len())
        .unwrap_or_else(|e| panic!("after {step}: read: {e}"));
    assert!(back == data, "after {step}: read back differs");
    c.disconnect();
}

#[test]
fn bad_nbd_clients_do_not_hurt_the_daemon() {
    let mut sheep = Sheep::formatted("badnbd", &["--handshake-timeout", "2"]);
    sheep.create_vdi(VDI, "64M");
    sheep.create_vdi(BIG, "8G");
    let port = sheep.nbd_port;
    assert_serving(&sheep, "start");

    // (a) Garbage instead of the client flags (an HTTP client): closed, nothing sent.
    let mut s = greet(port).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(
        expect_closed(&mut s, CLOSE_WITHIN, "(a) garbage flags"),
        b""
    );
    assert_serving(&sheep, "(a) garbage flags");
    // ... and garbage in place of an option header (bad option magic).
    let mut s = haggling(port);
    s.write_all(&[0x5a; 16]).unwrap();
    assert_eq!(
        expect_closed(&mut s, CLOSE_WITHIN, "(a) bad option magic"),
        b""
    );
    assert_serving(&sheep, "(a) bad option magic");

    // (b) Garbage after the handshake (bad request magic): closed without a reply.
    let mut c = client(port, VDI);
    let mut junk = vec![0xde, 0xad, 0xbe, 0xef];
    junk.extend_from_slice(&[0x55; 24]);
    c.stream.write_all(&junk).unwrap();
    assert_eq!(
        expect_closed(&mut c.stream, CLOSE_WITHIN, "(b) bad request magic"),
        b""
    );
    assert_serving(&sheep, "(b) bad request magic");

    // (c) A truncated request header, then the client closes its side.
    let mut c = client(port, VDI);
    c.stream
        .write_all(&header(CMD_READ, 1, 0, 4096)[..13])
        .unwrap();
    c.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        expect_closed(&mut c.stream, CLOSE_WITHIN, "(c) truncated header"),
        b""
    );
    assert_serving(&sheep, "(c) truncated header");
    // ... and a WRITE whose payload stops short: closed, and nothing of it applied.
    let mut c = client(port, VDI);
    let at = 40 * MIB;
    c.stream
        .write_all(&header(CMD_WRITE, 1, at, 65536))
        .unwrap();
    c.stream.write_all(&[0xee; 1000]).unwrap();
    c.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        expect_closed(&mut c.stream, CLOSE_WITHIN, "(c) short payload"),
        b""
    );
    assert_serving(&sheep, "(c) short payload");
    let mut c = client(port, VDI);
    assert_eq!(
        c.read(at, 65536).unwrap(),
        vec![0u8; 65536],
        "half a WRITE was applied"
    );
    c.disconnect();

    // (d) A WRITE claiming 4 GiB: closed without reading it (no timer runs here, so a
    //     server draining the payload would keep the connection open and fail this).
    let mut c = client(port, BIG);
    c.stream
        .write_all(&header(CMD_WRITE, 1, 0, u32::MAX))
        .unwrap();
    let _ = c.stream.write_all(&[0xab; 256 * 1024]); // may meet the close: fine
    assert_eq!(
        expect_closed(&mut c.stream, CLOSE_WITHIN, "(d) 4 GiB write"),
        b""
    );
    assert_serving(&sheep, "(d) 4 GiB write");
    // A READ of 4 GiB - 1 (in range of the 8 GiB export): EINVAL, connection still fine.
    let mut c = client(port, BIG);
    assert_eq!(c.size, 8 << 30);
    assert_eq!(
        c.read(0, 4096).unwrap(),
        vec![0u8; 4096],
        "the 4 GiB write was applied"
    );
    let k = c.send(Cmd::Read, 0, u64::from(u32::MAX), &[]).unwrap();
    expect_error(&mut c, k, EINVAL, "(d) 4 GiB read");
    // Just over the advertised maximum block (32 MiB): EINVAL; exactly it: served.
    let k = c.send(Cmd::Read, 0, 32 * MIB + 1, &[]).unwrap();
    expect_error(&mut c, k, EINVAL, "(d) 32 MiB + 1 read");
    assert_eq!(
        c.read(MIB, 32 * MIB as usize).unwrap().len(),
        32 * MIB as usize
    );
    let d = pattern(4, 12_345);
    c.write(5 * MIB - 100, &d).unwrap();
    assert!(c.read(5 * MIB - 100, d.len()).unwrap() == d);
    c.disconnect();
    assert_serving(&sheep, "(d) 4 GiB read");

    // (e) An unknown export with NBD_OPT_GO: NBD_REP_ERR_UNKNOWN and still haggling
    //     (LIST answers, then GO on a real export works).
    let mut s = haggling(port);
    send_option(&mut s, OPT_GO, &go_body("no-such-vdi")).unwrap();
    let (ty, msg) = read_option_reply(&mut s).unwrap();
    assert_eq!(ty, 0x8000_0006, "{}", String::from_utf8_lossy(&msg));
    assert_eq!(ty, REP_ERR_UNKNOWN);
    send_option(&mut s, OPT_LIST, &[]).unwrap();
    let mut names = Vec::new();
    loop {
        let (ty, d) = read_option_reply(&mut s).unwrap();
        match ty {
            REP_SERVER => {
                let n = u32::from_be_bytes(d[..4].try_into().unwrap()) as usize;
                names.push(String::from_utf8(d[4..4 + n].to_vec()).unwrap());
            }
            REP_ACK => break,
            t => panic!("(e) NBD_OPT_LIST: reply {t:#x}"),
        }
    }
    names.sort();
    assert_eq!(names, [BIG, VDI]);
    send_option(&mut s, OPT_GO, &go_body(VDI)).unwrap();
    let mut size = None;
    loop {
        let (ty, d) = read_option_reply(&mut s).unwrap();
        match ty {
            REP_INFO if d[..2] == INFO_EXPORT.to_be_bytes() => {
                size = Some(u64::from_be_bytes(d[2..10].try_into().unwrap()))
            }
            REP_INFO => {}
            REP_ACK => break,
            t => panic!("(e) GO after an unknown export: reply {t:#x}"),
        }
    }
    assert_eq!(size, Some(SIZE));
    let mut c = NbdClient::from_negotiated(s, SIZE);
    let d = pattern(5, 7000);
    c.write(12 * MIB + 1, &d).unwrap();
    assert!(c.read(12 * MIB + 1, d.len()).unwrap() == d);
    c.disconnect();
    // With NBD_OPT_EXPORT_NAME there is no error reply: closed.
    let mut s = haggling(port);
    send_option(&mut s, OPT_EXPORT_NAME, b"no-such-vdi").unwrap();
    assert_eq!(
        expect_closed(&mut s, CLOSE_WITHIN, "(e) EXPORT_NAME unknown"),
        b""
    );
    assert_serving(&sheep, "(e) unknown export");

    // (f) Silence: a client that never speaks (and one that stops mid-option) is
    //     dropped after about the handshake timeout; one that finished its handshake
    //     may idle longer than that.
    let t = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut stalled = haggling(port);
    stalled.write_all(&IHAVEOPT.to_be_bytes()[..6]).unwrap();
    let mut idle = client(port, VDI);
    let greeting = expect_closed(&mut silent, Duration::from_secs(12), "(f) silent client");
    let silent_after = t.elapsed();
    assert_eq!(greeting.len(), 18, "only the greeting before the close");
    assert_eq!(greeting[..8], NBDMAGIC.to_be_bytes());
    expect_closed(&mut stalled, Duration::from_secs(12), "(f) stalled client");
    let stalled_after = t.elapsed();
    for (what, after) in [("silent", silent_after), ("stalled", stalled_after)] {
        assert!(
            after >= HANDSHAKE_TIMEOUT - Duration::from_millis(300)
                && after <= Duration::from_secs(10),
            "(f) {what} client closed after {after:?}; --handshake-timeout is {HANDSHAKE_TIMEOUT:?}"
        );
    }
    std::thread::sleep((HANDSHAKE_TIMEOUT + Duration::from_secs(1)).saturating_sub(t.elapsed()));
    let d = pattern(6, 4096);
    idle.write(20 * MIB, &d)
        .expect("(f) a client idle after its handshake was dropped");
    assert!(idle.read(20 * MIB, 4096).unwrap() == d);
    idle.disconnect();
    assert_serving(&sheep, "(f) silent client");

    // (g) Out of range: READ -> EINVAL, WRITE -> ENOSPC (its payload drained: the
    //     connection stays in step), nothing written; the edge itself is fine.
    let mut c = client(port, VDI);
    for (off, len) in [(SIZE - 2048, 4096), (SIZE, 1), (u64::MAX - 100, 4096)] {
        let k = c.send(Cmd::Read, off, len, &[]).unwrap();
        expect_error(&mut c, k, EINVAL, &format!("(g) read {len} at {off}"));
    }
    let d = pattern(7, 4096);
    for off in [SIZE - 2048, SIZE, u64::MAX - 100] {
        let k = c.send(Cmd::Write, off, 4096, &d).unwrap();
        expect_error(&mut c, k, ENOSPC, &format!("(g) write 4096 at {off}"));
    }
    assert_eq!(
        c.read(SIZE - 4096, 4096).unwrap(),
        vec![0u8; 4096],
        "(g) partial write"
    );
    c.write(SIZE - 4096, &d).unwrap();
    assert!(c.read(SIZE - 4096, 4096).unwrap() == d);
    assert_eq!(c.read(SIZE, 0).unwrap(), b"");
    c.disconnect();
    assert_serving(&sheep, "(g) out of range");

    // (h) An option longer than 64 KiB: closed, unanswered — also when its length is
    //     absurd and no data follows (closed at once, not by the handshake timer).
    let mut s = haggling(port);
    let _ = send_option(&mut s, OPT_LIST, &vec![0u8; 64 * 1024 + 1]);
    assert_eq!(
        expect_closed(&mut s, CLOSE_WITHIN, "(h) 64 KiB + 1 option"),
        b""
    );
    let mut s = haggling(port);
    let mut h = IHAVEOPT.to_be_bytes().to_vec();
    h.extend_from_slice(&OPT_GO.to_be_bytes());
    h.extend_from_slice(&u32::MAX.to_be_bytes());
    let t = Instant::now();
    s.write_all(&h).unwrap();
    assert_eq!(expect_closed(&mut s, CLOSE_WITHIN, "(h) 4 GiB option"), b"");
    assert!(
        t.elapsed() < HANDSHAKE_TIMEOUT - Duration::from_millis(500),
        "(h) a 4 GiB option was not refused at once (closed after {:?})",
        t.elapsed()
    );
    // Exactly 64 KiB is read and answered; the connection goes on.
    let mut s = haggling(port);
    send_option(&mut s, OPT_LIST, &vec![0u8; 64 * 1024]).unwrap();
    let (ty, _) = read_option_reply(&mut s).unwrap();
    assert_eq!(ty, REP_ERR_INVALID, "(h) NBD_OPT_LIST with 64 KiB of data");
    send_option(&mut s, OPT_ABORT, &[]).unwrap();
    assert_eq!(read_option_reply(&mut s).unwrap().0, REP_ACK);
    assert_serving(&sheep, "(h) oversized option");

    // (i) 50 connections at once, in every state, then abandoned.
    let mut held: Vec<TcpStream> = Vec::new();
    for i in 0..50 {
        match i % 5 {
            0 => held.push(TcpStream::connect(("127.0.0.1", port)).unwrap()),
            1 => held.push(greet(port).unwrap()),
            2 => {
                let mut s = haggling(port);
                s.write_all(&IHAVEOPT.to_be_bytes()).unwrap();
                held.push(s);
            }
            3 => {
                // A READ in flight whose reply nobody reads.
                let mut c = client(port, VDI);
                c.send(Cmd::Read, 0, 4 * MIB, &[]).unwrap();
                held.push(c.stream);
            }
            _ => {
                // Half a WRITE.
                let mut c = client(port, VDI);
                c.stream
                    .write_all(&header(CMD_WRITE, 9, MIB, 8192))
                    .unwrap();
                c.stream.write_all(&[1; 100]).unwrap();
                held.push(c.stream);
            }
        }
    }
    assert_serving(&sheep, "(i) 50 connections open");
    drop(held);
    assert_serving(&sheep, "(i) 50 connections abandoned");
    std::thread::sleep(HANDSHAKE_TIMEOUT + Duration::from_millis(500));
    assert_serving(&sheep, "(i) after their handshake timers");

    // Nothing of this wedged the daemon: it still shuts down cleanly, without panics.
    sheep.stop();
    let log = sheep.log();
    assert!(log.contains("clean shutdown"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
