//! Erasure geometry and the Reed-Solomon wrapper: chunks land where `locate` says,
//! split and join are inverses, parity computed in slices equals parity computed per
//! stripe run, and any `data` of `data + parity` fragments restore the data bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use collie_placement::erasure::{Codec, CodecError, Geometry, DEFAULT_CHUNK};
use collie_placement::pattern::pattern;
use proptest::prelude::*;

const OBJECT: u64 = 4 << 20;

fn schemes() -> impl Strategy<Value = (u32, u32)> {
    (prop::sample::select(vec![2u32, 4, 8, 16]), 1u32..=4)
}

#[test]
fn geometry_is_checked() {
    assert!(Geometry::new(4, 2, DEFAULT_CHUNK, OBJECT).is_ok());
    assert!(Geometry::new(16, 15, DEFAULT_CHUNK, OBJECT).is_ok());
    for (d, p, c, o) in [
        (3, 2, DEFAULT_CHUNK, OBJECT),
        (4, 0, DEFAULT_CHUNK, OBJECT),
        (4, 16, DEFAULT_CHUNK, OBJECT),
        (4, 2, 4095, OBJECT),
        (4, 2, 0, OBJECT),
        (4, 2, DEFAULT_CHUNK, OBJECT + 4096),
    ] {
        assert!(
            matches!(Geometry::new(d, p, c, o), Err(CodecError::Geometry(_))),
            "{d}:{p} chunk {c} object {o}"
        );
    }
    let g = Geometry::new(4, 2, DEFAULT_CHUNK, OBJECT).unwrap();
    assert_eq!(g.fragment_size(), 1 << 20);
    assert_eq!(g.stripe_size(), 16384);
    assert_eq!(g.stripes(), 256);
    assert_eq!(g.stripe_range(16383, 2), 0..2);
    assert_eq!(g.stripe_range(5, 0), 0..0);
    assert!(g.is_full_stripes(16384, 32768));
    assert!(!g.is_full_stripes(4096, 16384));
}

#[test]
fn any_data_fragments_restore_a_whole_object() {
    let g = Geometry::new(4, 2, DEFAULT_CHUNK, OBJECT).unwrap();
    let object = pattern(9, OBJECT as usize);
    let data = g.split(&object).unwrap();
    let mut codec = Codec::new(g);
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let parity = codec.encode(&refs).unwrap();
    let all: Vec<&[u8]> = refs
        .iter()
        .copied()
        .chain(parity.iter().map(Vec::as_slice))
        .collect();
    for lost in [[0, 1], [0, 4], [2, 5], [4, 5], [1, 3]] {
        let frags: Vec<Option<&[u8]>> = all
            .iter()
            .enumerate()
            .map(|(i, f)| (!lost.contains(&i)).then_some(*f))
            .collect();
        let restored = codec.decode(&frags).unwrap();
        let back: Vec<&[u8]> = restored.iter().map(Vec::as_slice).collect();
        assert!(g.join(&back).unwrap() == object, "lost {lost:?}");
    }
    let three_lost: Vec<Option<&[u8]>> = all
        .iter()
        .enumerate()
        .map(|(i, f)| (i > 2).then_some(*f))
        .collect();
    assert_eq!(
        codec.decode(&three_lost).unwrap_err(),
        CodecError::TooFewFragments { have: 3, data: 4 }
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn pieces_and_split_agree_on_where_every_byte_is(
        (d, p) in schemes(),
        offset in 0u64..OBJECT,
        len in 0u64..200_000,
    ) {
        let g = Geometry::new(d, p, DEFAULT_CHUNK, OBJECT).unwrap();
        let object = pattern(u64::from(d) << 8 | u64::from(p), OBJECT as usize);
        let frags = g.split(&object).unwrap();
        let refs: Vec<&[u8]> = frags.iter().map(Vec::as_slice).collect();
        prop_assert!(g.join(&refs).unwrap() == object);
        let len = len.min(OBJECT - offset);
        let mut covered = 0;
        for piece in g.pieces(offset, len) {
            prop_assert_eq!(piece.at, covered);
            let f = &frags[piece.fragment as usize];
            let want = &object[(offset + piece.at) as usize..(offset + piece.at + piece.len) as usize];
            prop_assert!(&f[piece.offset as usize..(piece.offset + piece.len) as usize] == want);
            covered += piece.len;
        }
        prop_assert_eq!(covered, len);
    }

    #[test]
    fn parity_of_a_run_is_the_parity_of_its_parts(
        (d, p) in schemes(),
        stripes in 1u64..64,
        cut in 1u64..64,
        lost in prop::collection::vec(0usize..20, 0..4),
    ) {
        let g = Geometry::new(d, p, DEFAULT_CHUNK, OBJECT).unwrap();
        let cut = cut.min(stripes);
        let run = pattern(stripes * 31 + cut, (stripes * g.stripe_size()) as usize);
        let mut codec = Codec::new(g);
        let frags = g.split(&run).unwrap();
        let refs: Vec<&[u8]> = frags.iter().map(Vec::as_slice).collect();
        let parity = codec.encode(&refs).unwrap();
        // The same stripes encoded in two runs: the parity is bytewise, so the halves
        // concatenate to the whole.
        let at = (cut * g.chunk()) as usize;
        let head: Vec<&[u8]> = refs.iter().map(|f| &f[..at]).collect();
        let tail: Vec<&[u8]> = refs.iter().map(|f| &f[at..]).collect();
        let mut joined = codec.encode(&head).unwrap();
        if at < refs[0].len() {
            for (j, t) in joined.iter_mut().zip(codec.encode(&tail).unwrap()) {
                j.extend_from_slice(&t);
            }
        }
        prop_assert!(joined == parity);
        // Lose up to `parity` fragments (any of them) and decode the run in one call.
        let n = (d + p) as usize;
        let mut gone: Vec<usize> = lost.iter().map(|i| i % n).collect();
        gone.sort_unstable();
        gone.dedup();
        gone.truncate(p as usize);
        let all: Vec<&[u8]> = refs.iter().copied().chain(parity.iter().map(Vec::as_slice)).collect();
        let have: Vec<Option<&[u8]>> = all
            .iter()
            .enumerate()
            .map(|(i, f)| (!gone.contains(&i)).then_some(*f))
            .collect();
        let restored = codec.decode(&have).unwrap();
        let back: Vec<&[u8]> = restored.iter().map(Vec::as_slice).collect();
        prop_assert!(g.join(&back).unwrap() == run, "lost {:?}", gone);
    }
}
