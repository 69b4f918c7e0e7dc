//! Stripe states: what a write builds on, what a reader decodes, and the primary's
//! memory of what its targets hold.

use super::*;

/// One node's fragment of an object, and (if it was asked) its header entries.
pub(super) struct Holder {
    pub(super) t: Target,
    pub(super) frag: u8,
    /// Entries of the stripes in question; `None`: assumed to hold the basis versions
    /// (a target whose versions the primary knows).
    pub(super) ents: Option<Entries>,
}

impl Holder {
    /// Whether this holder has a slot at `version` for stripe `i`.
    pub(super) fn holds(&self, i: usize, version: u64) -> bool {
        version != 0 && self.ents.as_ref().is_none_or(|e| e.ents[i].has(version))
    }
}

/// The state of a run of stripes a read decodes or a write builds on: for stripe `i`,
/// the parity fragments at version `w[i]` encode data fragment `j` at `v[i * D + j]`
/// (every data version is `w[i]` after a whole-stripe write). `w[i] == 0`: no parity
/// state is known to decode; the data fragments are read as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Basis {
    pub(super) d: usize,
    pub(super) w: Vec<u64>,
    pub(super) v: Vec<u64>,
}

impl Basis {
    /// Every fragment of every stripe at that stripe's version.
    pub(super) fn uniform(d: usize, w: Vec<u64>) -> Basis {
        let v = w.iter().flat_map(|&x| std::iter::repeat_n(x, d)).collect();
        Basis { d, w, v }
    }
    pub(super) fn empty(d: usize) -> Basis {
        Basis {
            d,
            w: Vec::new(),
            v: Vec::new(),
        }
    }
    pub(super) fn push(&mut self, w: u64, v: &[u64]) {
        self.w.push(w);
        self.v.extend_from_slice(v);
    }
    pub(super) fn len(&self) -> usize {
        self.w.len()
    }
    /// The version fragment `frag` holds for stripe `i` in this state.
    pub(super) fn want(&self, i: usize, frag: usize) -> u64 {
        if frag < self.d {
            self.v[i * self.d + frag]
        } else {
            self.w[i]
        }
    }
    pub(super) fn vector(&self, i: usize) -> &[u64] {
        &self.v[i * self.d..(i + 1) * self.d]
    }
    pub(super) fn slice(&self, a: usize, b: usize) -> Basis {
        Basis {
            d: self.d,
            w: self.w[a..b].to_vec(),
            v: self.v[a * self.d..b * self.d].to_vec(),
        }
    }
    /// Stripes `at..` become `other`'s.
    pub(super) fn set(&mut self, at: usize, other: &Basis) {
        self.w[at..at + other.len()].copy_from_slice(&other.w);
        self.v[at * self.d..(at + other.len()) * self.d].copy_from_slice(&other.v);
    }
    /// Per fragment `frag`, its version of each stripe.
    pub(super) fn of_fragment(&self, frag: usize) -> Vec<u64> {
        (0..self.len()).map(|i| self.want(i, frag)).collect()
    }
}

thread_local! {
    /// Stripe states of objects this shard is the primary of, as of an epoch: every
    /// target holds exactly these, each as its newest (`w` 0: not known). Only the
    /// primary writes, so they stay true until the epoch changes or a write fails.
    static KNOWN: RefCell<HashMap<u64, (u32, Basis)>> = RefCell::new(HashMap::new());
    static COUNTER: Cell<u32> = const { Cell::new(0) };
}

pub(super) fn known(oid: u64, epoch: u32, s0: u64, n: u64) -> Option<Basis> {
    KNOWN.with(|k| {
        let k = k.borrow();
        let (e, b) = k.get(&oid)?;
        let (a, z) = (s0 as usize, (s0 + n) as usize);
        (*e == epoch && !b.w[a..z].contains(&0)).then(|| b.slice(a, z))
    })
}

pub(super) fn remember(oid: u64, epoch: u32, lay: &Layout, s0: u64, b: &Basis) {
    KNOWN.with(|k| {
        let mut k = k.borrow_mut();
        if k.len() >= CACHED_OBJECTS && !k.contains_key(&oid) {
            // Forgetting costs a probe of the targets on the next write; no more.
            k.clear();
        }
        let unknown = || {
            (
                epoch,
                Basis::uniform(lay.data(), vec![0; lay.stripes() as usize]),
            )
        };
        let e = k.entry(oid).or_insert_with(unknown);
        if e.0 != epoch {
            *e = unknown();
        }
        e.1.set(s0 as usize, b);
    })
}

pub(super) fn forget(oid: u64) {
    KNOWN.with(|k| k.borrow_mut().remove(&oid));
}

pub(super) fn next_version(epoch: u32) -> u64 {
    let c = COUNTER.with(|c| {
        c.set(c.get().wrapping_add(1));
        c.get()
    });
    u64::from(epoch.max(1)) << 32 | u64::from(c)
}

/// The states stripe `i` can be decoded in from `holders`, best first. A state
/// `(w, V)`: parity at `w` encodes data fragment `j` at `V[j]`; it decodes when the data
/// fragments holding their `V[j]` and the parity fragments holding `w` number `d` or
/// more. Candidates, ranked by the newest write in them:
/// - each parity slot's `(w, V)`;
/// - `(u, [u; d])` for each version `u` of a whole-stripe write a data fragment holds
///   (such a write counts even if no parity of it landed or has a place);
/// - the data fragments as they are (`w` 0), if each one holds a version whose write
///   reached every chunk it changed: needed once parity is lost, since a small write
///   changes one data fragment and parity only. Ranked after a parity-backed state of
///   the same newest write.
pub(super) fn candidates(holders: &[Holder], i: usize, d: usize) -> Vec<(u64, Vec<u64>)> {
    let all = (1u32 << d) - 1;
    // (rank, parity-backed, w, V)
    let mut out: Vec<(u64, bool, u64, Vec<u64>)> = Vec::new();
    let count = |w: u64, v: &[u64]| {
        let mut frags = 0u32;
        for o in holders {
            let j = usize::from(o.frag);
            let want = if j < d { v[j] } else { w };
            if o.ents.as_ref().is_some_and(|x| x.ents[i].has(want)) {
                frags |= 1 << j;
            }
        }
        frags.count_ones() as usize
    };
    for h in holders {
        let Some(e) = &h.ents else { continue };
        let j = usize::from(h.frag);
        for k in 0..2 {
            let slot = &e.ents[i].slots[k];
            let w = slot.version;
            if w == 0 || out.iter().any(|c| c.2 == w) {
                continue;
            }
            let v = if j >= d {
                e.vector(d, i, k).to_vec()
            } else if touched(slot, d) == all {
                vec![w; d]
            } else {
                continue;
            };
            if v.len() == d && count(w, &v) >= d {
                out.push((w, true, w, v));
            }
        }
    }
    // Per data fragment, the versions any holder has, newest first, with what their
    // writes changed.
    let mut held: Vec<Vec<(u64, u32)>> = vec![Vec::new(); d];
    for h in holders.iter().filter(|h| usize::from(h.frag) < d) {
        if let Some(e) = &h.ents {
            for s in e.ents[i].slots.iter().filter(|s| s.version != 0) {
                held[usize::from(h.frag)].push((s.version, touched(s, d)));
            }
        }
    }
    let has = |k: usize, u: u64| held[k].iter().any(|&(v, _)| v == u);
    let mut v = Vec::with_capacity(d);
    for (j, versions) in held.iter().enumerate() {
        let mut versions = versions.clone();
        versions.sort_by_key(|&(u, _)| std::cmp::Reverse(u));
        let complete = versions
            .iter()
            .find(|&&(u, m)| (0..d).filter(|&k| m >> k & 1 == 1).all(|k| has(k, u)));
        match complete {
            Some(&(u, _)) => v.push(u),
            None => break,
        }
        debug_assert_eq!(v.len(), j + 1);
    }
    if v.len() == d {
        let rank = v.iter().copied().max().unwrap_or(0);
        out.push((rank, false, 0, v));
    }
    out.sort_by_key(|c| std::cmp::Reverse((c.0, c.1)));
    out.into_iter().map(|(_, _, w, v)| (w, v)).collect()
}

/// The best state stripe `i` decodes in ([`candidates`]).
pub(super) fn decodable(holders: &[Holder], i: usize, d: usize) -> Option<(u64, Vec<u64>)> {
    candidates(holders, i, d).into_iter().next()
}

/// Holders as seen for stripe `i` of the run they were probed for alone.
pub(super) fn stripe_holders(holders: &[Holder], i: usize, d: usize) -> Vec<Holder> {
    holders
        .iter()
        .map(|h| Holder {
            t: h.t,
            frag: h.frag,
            ents: h.ents.as_ref().map(|e| Entries {
                ents: vec![e.ents[i]],
                vecs: e
                    .vecs
                    .get(i * 2 * d..(i + 1) * 2 * d)
                    .unwrap_or(&[])
                    .to_vec(),
            }),
        })
        .collect()
}

/// Every stripe's newest decodable state ([`decodable`]).
pub(super) fn decodable_all(
    holders: &[Holder],
    oid: u64,
    lay: &Layout,
    s0: u64,
    n: u64,
) -> Rpc<Basis> {
    let mut b = Basis::empty(lay.data());
    for i in 0..n as usize {
        let (w, v) =
            decodable(holders, i, lay.data()).ok_or_else(|| unsettled(oid, s0 + i as u64))?;
        b.push(w, &v);
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A holder of fragment `frag` of a 4:2 object with slots `a` and `b` (versions and,
    /// for parity, the data versions each encodes).
    fn holder(frag: u8, a: (u64, [u64; 4]), b: (u64, [u64; 4])) -> Holder {
        let mut e = StripeEntry::zeroed();
        e.slots[0].version = a.0;
        e.slots[1].version = b.0;
        let vecs = if frag >= 4 {
            a.1.iter().chain(&b.1).copied().collect()
        } else {
            Vec::new()
        };
        Holder {
            t: Target::Local,
            frag,
            ents: Some(Entries {
                ents: vec![e],
                vecs,
            }),
        }
    }

    fn data(frag: u8, a: u64, b: u64) -> Holder {
        holder(frag, (a, [0; 4]), (b, [0; 4]))
    }

    /// A data fragment whose slot `b` was written by a small write of it alone.
    fn small(frag: u8, a: u64, b: u64) -> Holder {
        let mut h = data(frag, a, b);
        if let Some(e) = &mut h.ents {
            e.ents[0].slots[1].flags = 1 << (TOUCHED_SHIFT + u32::from(frag));
        }
        h
    }

    /// A parity fragment written by whole-stripe writes only.
    fn par(frag: u8, a: u64, b: u64) -> Holder {
        holder(frag, (a, [a; 4]), (b, [b; 4]))
    }

    #[test]
    fn the_newest_state_enough_fragments_hold_wins() {
        // A whole-stripe write of 9 reached three data fragments: 8 (kept everywhere)
        // decodes, 9 not.
        let hs = vec![
            data(0, 8, 9),
            data(1, 8, 9),
            data(2, 9, 8),
            data(3, 8, 7),
            par(4, 8, 7),
            par(5, 7, 8),
        ];
        assert_eq!(decodable(&hs, 0, 4), Some((8, vec![8; 4])));
        // It reached a parity fragment as well: 9 decodes.
        let hs = vec![
            data(0, 8, 9),
            data(1, 8, 9),
            data(2, 9, 8),
            data(3, 8, 7),
            par(4, 8, 9),
        ];
        assert_eq!(decodable(&hs, 0, 4), Some((9, vec![9; 4])));
        // Two nodes died, so parity has no place: a whole-stripe write of 9 reached the
        // four data fragments only. The parity left behind on live nodes still decodes
        // 8 with the data fragments' kept slots, but 9 is newer and wins.
        let hs = vec![
            data(0, 8, 9),
            data(1, 9, 8),
            data(2, 9, 0),
            data(3, 9, 0),
            par(4, 8, 7),
            par(5, 7, 8),
        ];
        assert_eq!(decodable(&hs, 0, 4), Some((9, vec![9; 4])));
        // Two holders of one fragment count once.
        let hs = vec![par(4, 9, 0), par(4, 9, 0), data(1, 9, 0), data(2, 9, 0)];
        assert_eq!(decodable(&hs, 0, 4), None);
    }

    #[test]
    fn a_small_write_decodes_once_enough_of_it_landed_and_never_half() {
        let new = [8, 10, 8, 8];
        let p10 = |frag| holder(frag, (8, [8; 4]), (10, new));
        // A delta write of 10 to data fragment 1, built on 8 everywhere: complete.
        let done = vec![
            data(0, 8, 7),
            small(1, 8, 10),
            data(2, 7, 8),
            data(3, 8, 7),
            p10(4),
            p10(5),
        ];
        assert_eq!(decodable(&done, 0, 4), Some((10, new.to_vec())));
        // Only the data chunk landed: no parity names 10. The data fragments as they
        // are hold it whole (a write never acknowledged may read as new); should its
        // chunk not read back, 8 still decodes (fragment 1 kept it).
        let data_only = vec![
            data(0, 8, 7),
            small(1, 8, 10),
            data(2, 7, 8),
            data(3, 8, 7),
            par(4, 8, 7),
            par(5, 8, 7),
        ];
        assert_eq!(
            candidates(&data_only, 0, 4)[..2],
            [(0, vec![8, 10, 8, 8]), (8, vec![8; 4])]
        );
        // A whole-stripe write that reached one data fragment only is not taken from
        // the data fragments as they are.
        let torn = vec![
            data(0, 8, 11),
            data(1, 8, 7),
            data(2, 7, 8),
            data(3, 8, 7),
            par(4, 8, 7),
        ];
        assert_eq!(decodable(&torn, 0, 4), Some((8, vec![8; 4])));
        // One parity landed, the data chunk did not: 10 needs fragment 1 at 10, so
        // with fragment 0 gone it has 3 of 4 and 8 decodes.
        let parity_only = vec![
            data(1, 8, 7),
            data(2, 7, 8),
            data(3, 8, 7),
            p10(4),
            par(5, 8, 7),
        ];
        assert_eq!(decodable(&parity_only, 0, 4), Some((8, vec![8; 4])));
        // One parity and the data chunk landed, two holders are gone: 10 decodes from
        // data 1 at 10, data 2 and 3 at 8 and parity 4 at 10.
        let half = vec![small(1, 8, 10), data(2, 7, 8), data(3, 8, 7), p10(4)];
        assert_eq!(decodable(&half, 0, 4), Some((10, new.to_vec())));
    }

    #[test]
    fn without_parity_acknowledged_small_writes_are_read_from_the_data() {
        // Small writes 10 and 9 were acknowledged, then both parity holders died: the
        // data fragments as they are win over 8, which they all still keep.
        let hs = vec![
            data(0, 8, 7),
            small(1, 8, 10),
            data(2, 7, 8),
            small(3, 8, 9),
        ];
        assert_eq!(decodable(&hs, 0, 4), Some((0, vec![8, 10, 8, 9])));
        assert_eq!(decodable(&hs[1..], 0, 4), None);
    }
}
