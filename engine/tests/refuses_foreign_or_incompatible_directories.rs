//! The store refuses, with a clear error, a directory of another node, of another format
//! version, one that is not a store, or one already open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use collie_engine::format::{Superblock, BLOCK};
use collie_engine::{Store, StoreError};
use support::*;

fn rewrite_superblock(dir: &std::path::Path, f: impl FnOnce(&mut Superblock)) {
    let path = dir.join("superblock");
    let mut block = std::fs::read(&path).unwrap();
    let mut sb: Superblock =
        bytemuck::pod_read_unaligned(&block[..std::mem::size_of::<Superblock>()]);
    f(&mut sb);
    let sb = sb.seal();
    block[..std::mem::size_of::<Superblock>()].copy_from_slice(bytemuck::bytes_of(&sb));
    assert_eq!(block.len(), BLOCK);
    std::fs::write(&path, block).unwrap();
}

fn refused(cfg: collie_engine::StoreConfig, needle: &str) {
    match Store::open(cfg) {
        Err(e @ StoreError::Incompatible { .. }) => assert!(e.to_string().contains(needle), "{e}"),
        Err(e) => panic!("wrong error kind: {e}"),
        Ok(_) => panic!("opened a directory it must refuse ({needle})"),
    }
}

#[test]
fn refuses_what_it_must() {
    let dir = test_dir("foreign");
    let mut cfg = small_config(dir.path());
    cfg.node_uuid = Some([1; 16]);
    let store = Store::open(cfg.clone()).unwrap();
    assert_eq!(store.node_uuid(), [1; 16]);
    store
        .write(9 << 32, 0, b"keep me".to_vec(), meta(1))
        .unwrap();
    // Already open (by this or another process): the flock says no.
    refused(cfg.clone(), "in use");
    store.shutdown().unwrap();

    // Another node's directory.
    let mut other = cfg.clone();
    other.node_uuid = Some([2; 16]);
    refused(other, "belongs to node");

    // A future format version.
    rewrite_superblock(dir.path(), |sb| sb.format_version = 99);
    refused(cfg.clone(), "format version 99");
    rewrite_superblock(dir.path(), |sb| {
        sb.format_version = collie_engine::format::FORMAT_VERSION
    });

    // A damaged superblock.
    let mut raw = std::fs::read(dir.path().join("superblock")).unwrap();
    raw[20] ^= 1;
    std::fs::write(dir.path().join("superblock"), &raw).unwrap();
    refused(cfg.clone(), "checksum");
    raw[20] ^= 1;
    std::fs::write(dir.path().join("superblock"), &raw).unwrap();

    // Not a store at all.
    let junk = test_dir("junk");
    std::fs::write(junk.path().join("superblock"), vec![0x41; BLOCK]).unwrap();
    refused(small_config(junk.path()), "not a Collie store");

    // Partitions without a superblock (someone deleted it).
    let orphan = test_dir("orphan");
    std::fs::create_dir_all(orphan.path().join("partitions/0000")).unwrap();
    refused(small_config(orphan.path()), "no superblock");

    // After all that, the real one still opens with its data.
    let store = Store::open(cfg).unwrap();
    assert_eq!(store.read(9 << 32, 0, 7).unwrap(), b"keep me");
    store.shutdown().unwrap();
}
