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
/// (every data version is `w[i]` after a whole-stripe write). `w[i] == 0` only in the
/// primary's memory ([`known`]): that stripe's state is not known.
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
    /// The epoch versions are being assigned in, and the last counter given out in it.
    static COUNTER: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
}

pub(super) fn known(oid: u64, epoch: u32, lay: &Layout, s0: u64, n: u64) -> Option<Basis> {
    KNOWN.with(|k| {
        let k = k.borrow();
        let (e, b) = k.get(&oid)?;
        let (a, z) = (s0 as usize, (s0 + n) as usize);
        let fits = b.d == lay.data() && b.len() == lay.stripes() as usize;
        (*e == epoch && fits && !b.w[a..z].contains(&0)).then(|| b.slice(a, z))
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
        // (Another layout for the same object can only come from a forged request.)
        if e.0 != epoch || e.1.d != lay.data() || e.1.len() != lay.stripes() as usize {
            *e = unknown();
        }
        e.1.set(s0 as usize, b);
    })
}

pub(super) fn forget(oid: u64) {
    KNOWN.with(|k| k.borrow_mut().remove(&oid));
}

/// A new version for a write this shard orders at `epoch`: `epoch << 32 | counter`,
/// the counter starting over when the epoch grows. A write that took its epoch before
/// the shard moved to a newer one is sent round again (nothing of it was written yet),
/// and once a counter is used up the shard refuses writes until the next epoch: a
/// version that wrapped would look older than the ones before it.
pub(super) fn next_version(epoch: u32) -> Rpc<u64> {
    let epoch = epoch.max(1);
    let counter = COUNTER.with(|c| {
        let (at, n) = c.get();
        let next = match epoch.cmp(&at) {
            std::cmp::Ordering::Greater => 1,
            std::cmp::Ordering::Equal => n.checked_add(1).ok_or_else(|| {
                RpcError::Store(StoreError::Invalid(format!(
                    "the 2^32 write versions of epoch {epoch} on this shard are used up: \
                     writes resume at the next epoch (a node joining or leaving)"
                )))
            })?,
            std::cmp::Ordering::Less => {
                return Err(RpcError::Retry(format!(
                    "versions are given out at epoch {at} here, the write took {epoch}"
                )))
            }
        };
        c.set((epoch, next));
        Ok(next)
    })?;
    Ok(u64::from(epoch) << 32 | u64::from(counter))
}

/// The states stripe `i` can be decoded in from `holders`, best first. Every slot
/// records the state its write left the stripe in, `(u, V)`: data fragment `j` at
/// `V[j]`, parity at `u` (the write's version, the newest in `V`). A state decodes
/// when the data fragments holding their `V[j]` and the parity fragments holding `u`
/// number `d` or more; the newest state that decodes wins. Parity lost, the data
/// fragments alone still give the state of the last write (the fragments it changed
/// record it); a write that reached fewer than `d` fragments gives none, so a stripe
/// is never decoded as a mix of two writes.
pub(super) fn candidates(holders: &[Holder], i: usize, d: usize) -> Vec<(u64, Vec<u64>)> {
    let holds = |u: u64, v: &[u64]| {
        let mut frags = 0u32;
        for o in holders {
            let j = usize::from(o.frag);
            let want = if j < d { v[j] } else { u };
            if o.ents.as_ref().is_some_and(|x| x.ents[i].has(want)) {
                frags |= 1 << j;
            }
        }
        frags.count_ones() as usize
    };
    let mut seen: Vec<u64> = Vec::new();
    let mut out: Vec<(u64, Vec<u64>)> = Vec::new();
    for h in holders {
        let Some(e) = &h.ents else { continue };
        for k in 0..2 {
            let u = e.ents[i].slots[k].version;
            let v = e.vector(d, i, k);
            // Stateless slots (zeros) and malformed answers name no state.
            if u == 0 || v.len() != d || v.contains(&0) || seen.contains(&u) {
                continue;
            }
            seen.push(u);
            if holds(u, v) >= d {
                out.push((u, v.to_vec()));
            }
        }
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.0));
    out
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

/// Each of `n` stripes' candidate states ([`candidates`]).
pub(super) type Candidates = Vec<Vec<(u64, Vec<u64>)>>;

pub(super) fn candidates_all(holders: &[Holder], n: u64, d: usize) -> Candidates {
    (0..n as usize).map(|i| candidates(holders, i, d)).collect()
}

/// Every stripe's best candidate (stripes `s0..`); [`unsettled`] for one with none.
pub(super) fn best(cands: &Candidates, oid: u64, s0: u64, d: usize) -> Rpc<Basis> {
    let mut b = Basis::empty(d);
    for (i, c) in cands.iter().enumerate() {
        let (w, v) = c.first().ok_or_else(|| unsettled(oid, s0 + i as u64))?;
        b.push(*w, v);
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The best state stripe `i` decodes in.
    fn decodable(holders: &[Holder], i: usize, d: usize) -> Option<(u64, Vec<u64>)> {
        candidates(holders, i, d).into_iter().next()
    }

    /// A holder of fragment `frag` of a 4:2 object with slots `a` and `b`: each a
    /// version and the state its write left (zeros: none recorded).
    fn holder(frag: u8, a: (u64, [u64; 4]), b: (u64, [u64; 4])) -> Holder {
        let mut e = StripeEntry::zeroed();
        e.slots[0].version = a.0;
        e.slots[1].version = b.0;
        Holder {
            t: Target::Local,
            frag,
            ents: Some(Entries {
                ents: vec![e],
                vecs: a.1.iter().chain(&b.1).copied().collect(),
            }),
        }
    }

    /// A fragment whose two slots were written by whole-stripe writes.
    fn whole(frag: u8, a: u64, b: u64) -> Holder {
        holder(frag, (a, [a; 4]), (b, [b; 4]))
    }

    /// A fragment whose slot `b` was written by a small write that left state `v`.
    fn small(frag: u8, a: u64, b: u64, v: [u64; 4]) -> Holder {
        holder(frag, (a, [a; 4]), (b, v))
    }

    #[test]
    fn versions_grow_start_over_with_each_epoch_and_never_wrap() {
        let a = next_version(7).unwrap();
        let b = next_version(7).unwrap();
        assert!(b > a);
        let c = next_version(8).unwrap();
        assert_eq!(c, 8 << 32 | 1);
        assert!(matches!(next_version(7), Err(RpcError::Retry(_))));
        COUNTER.with(|k| k.set((8, u32::MAX)));
        assert!(matches!(next_version(8), Err(RpcError::Store(_))));
        assert_eq!(next_version(9).unwrap(), 9 << 32 | 1);
    }

    #[test]
    fn the_newest_state_enough_fragments_hold_wins() {
        // A whole-stripe write of 9 reached three data fragments: 8 (kept everywhere)
        // decodes, 9 not.
        let hs = vec![
            whole(0, 8, 9),
            whole(1, 8, 9),
            whole(2, 9, 8),
            whole(3, 8, 7),
            whole(4, 8, 7),
            whole(5, 7, 8),
        ];
        assert_eq!(decodable(&hs, 0, 4), Some((8, vec![8; 4])));
        // It reached a parity fragment as well: 9 decodes.
        let hs = vec![
            whole(0, 8, 9),
            whole(1, 8, 9),
            whole(2, 9, 8),
            whole(3, 8, 7),
            whole(4, 8, 9),
        ];
        assert_eq!(decodable(&hs, 0, 4), Some((9, vec![9; 4])));
        // Two nodes died, so parity has no place: a whole-stripe write of 9 reached the
        // four data fragments only. The parity left behind on live nodes still decodes
        // 8 with the data fragments' kept slots, but 9 is newer and wins.
        let hs = vec![
            whole(0, 8, 9),
            whole(1, 9, 8),
            whole(2, 9, 0),
            whole(3, 9, 0),
            whole(4, 8, 7),
            whole(5, 7, 8),
        ];
        assert_eq!(decodable(&hs, 0, 4), Some((9, vec![9; 4])));
        // Two holders of one fragment count once.
        let hs = vec![
            whole(4, 9, 0),
            whole(4, 9, 0),
            whole(1, 9, 0),
            whole(2, 9, 0),
        ];
        assert_eq!(decodable(&hs, 0, 4), None);
    }

    #[test]
    fn a_small_write_decodes_once_enough_of_it_landed_and_never_half() {
        let new = [8, 10, 8, 8];
        let p10 = |frag| holder(frag, (8, [8; 4]), (10, new));
        // A delta write of 10 to data fragment 1, built on 8 everywhere: complete.
        let done = vec![
            whole(0, 8, 7),
            small(1, 8, 10, new),
            whole(2, 7, 8),
            whole(3, 8, 7),
            p10(4),
            p10(5),
        ];
        assert_eq!(decodable(&done, 0, 4), Some((10, new.to_vec())));
        // Only the data chunk landed: the data fragments hold 10's state (a write never
        // acknowledged may read as new); should its chunk not read back, 8 decodes.
        let data_only = vec![
            whole(0, 8, 7),
            small(1, 8, 10, new),
            whole(2, 7, 8),
            whole(3, 8, 7),
            whole(4, 8, 7),
            whole(5, 8, 7),
        ];
        assert_eq!(
            candidates(&data_only, 0, 4)[..2],
            [(10, new.to_vec()), (8, vec![8; 4])]
        );
        // A whole-stripe write that reached one data fragment only is no state.
        let torn = vec![
            whole(0, 8, 11),
            whole(1, 8, 7),
            whole(2, 7, 8),
            whole(3, 8, 7),
            whole(4, 8, 7),
        ];
        assert_eq!(decodable(&torn, 0, 4), Some((8, vec![8; 4])));
        // One parity landed, the data chunk did not, and fragment 0 is gone: 10 needs
        // fragment 1 at 10, so it has 3 of 4 and 8 decodes.
        let parity_only = vec![
            whole(1, 8, 7),
            whole(2, 7, 8),
            whole(3, 8, 7),
            p10(4),
            whole(5, 8, 7),
        ];
        assert_eq!(decodable(&parity_only, 0, 4), Some((8, vec![8; 4])));
        // One parity and the data chunk landed, two holders are gone: 10 decodes from
        // data 1 at 10, data 2 and 3 at 8 and parity 4 at 10.
        let half = vec![small(1, 8, 10, new), whole(2, 7, 8), whole(3, 8, 7), p10(4)];
        assert_eq!(decodable(&half, 0, 4), Some((10, new.to_vec())));
    }

    #[test]
    fn without_parity_acknowledged_small_writes_are_read_from_the_data() {
        // Small writes 9 (fragment 3) then 10 (fragment 1) were acknowledged, then both
        // parity holders died: 10's state wins over 8, which every fragment still keeps.
        let hs = vec![
            whole(0, 8, 7),
            small(1, 8, 10, [8, 10, 8, 9]),
            whole(2, 7, 8),
            small(3, 8, 9, [8, 8, 8, 9]),
        ];
        assert_eq!(decodable(&hs, 0, 4), Some((10, vec![8, 10, 8, 9])));
        assert_eq!(decodable(&hs[1..], 0, 4), None);
        // Two small writes to one chunk of a fresh stripe: the others are still at
        // the initial version, and 9's state decodes.
        let fresh = vec![
            holder(0, (8, [8, 1, 1, 1]), (9, [9, 1, 1, 1])),
            whole(1, 1, 0),
            whole(2, 1, 0),
            whole(3, 1, 0),
        ];
        assert_eq!(decodable(&fresh, 0, 4), Some((9, vec![9, 1, 1, 1])));
    }

    #[test]
    fn an_acknowledged_write_is_never_taken_back_by_later_writes_to_other_chunks() {
        // Whole-stripe 8; small 9 (fragment 1); whole-stripe 10; small 11 and 12
        // (fragment 2); small 13 (fragment 0) and 14 (fragment 3); then 15 (fragment
        // 3) reached fragment 3 only. Fragment 1's newest, 10, must stay: fragment 2
        // no longer holds 10, which does not make 10 less written.
        let v = |x: [u64; 4]| x;
        let (v10, v9) = (v([10; 4]), v([8, 9, 8, 8]));
        let (v11, v12) = (v([10, 10, 11, 10]), v([10, 10, 12, 10]));
        let (v13, v14, v15) = (
            v([13, 10, 12, 10]),
            v([13, 10, 12, 14]),
            v([13, 10, 12, 15]),
        );
        let data = vec![
            holder(0, (13, v13), (10, v10)),
            holder(1, (10, v10), (9, v9)),
            holder(2, (11, v11), (12, v12)),
            holder(3, (14, v14), (15, v15)),
        ];
        let parity = vec![
            holder(4, (13, v13), (14, v14)),
            holder(5, (13, v13), (14, v14)),
        ];
        let all: Vec<Holder> = data.into_iter().chain(parity).collect();
        assert_eq!(decodable(&all, 0, 4), Some((15, v15.to_vec())));
        // Parity lost: the same.
        let no_parity: Vec<Holder> = all.into_iter().take(4).collect();
        assert_eq!(decodable(&no_parity, 0, 4), Some((15, v15.to_vec())));
        // Fragment 3 lost instead: 14 decodes with parity; a repaired fragment that
        // records no state (zeros) still counts for the version it holds.
        let hs = vec![
            holder(0, (13, v13), (10, v10)),
            holder(1, (10, [0; 4]), (0, [0; 4])),
            holder(2, (11, v11), (12, v12)),
            holder(4, (13, v13), (14, v14)),
        ];
        assert_eq!(decodable(&hs, 0, 4), Some((14, v14.to_vec())));
    }
}
