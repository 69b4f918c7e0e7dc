//! Reads: the fast path from the data fragments, the careful path that decodes.

use super::*;

impl Gateway {
    /// Reads `len` bytes at `offset` of an erasure-coded object. `NotFound` if no
    /// fragment of it exists anywhere (the caller reads zeros).
    pub async fn ec_read(&self, oid: u64, lay: &Layout, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0
            || offset
                .checked_add(len)
                .is_none_or(|e| e > lay.geo.object_size())
        {
            return Err(StoreError::OutOfRange(format!(
                "read {offset}+{len} outside an object of {} bytes",
                lay.geo.object_size()
            )));
        }
        self.settled(oid, || async {
            let (epoch, ts) = self.ec_targets(oid, lay)?;
            if let Some(d) = self.read_direct(epoch, oid, lay, &ts, offset, len).await? {
                return Ok(d);
            }
            let sr = lay.geo.stripe_range(offset, len);
            let (s0, n) = (sr.start, sr.end - sr.start);
            let holders = self.gather(epoch, oid, lay, s0, n).await?;
            if holders.is_empty() {
                return Err(StoreError::NotFound(oid).into());
            }
            let cands = candidates_all(&holders, n, lay.data());
            let (_, bytes) = self
                .read_careful(epoch, oid, lay, &holders, &cands, s0)
                .await?;
            let at = (offset - s0 * lay.stripe_size()) as usize;
            Ok(bytes[at..at + len as usize].to_vec())
        })
        .await
    }

    /// The fast read: each needed chunk from its data fragment's target, newest valid
    /// version. `None` if anything is not as expected (the careful path decides).
    async fn read_direct(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        ts: &[Target],
        offset: u64,
        len: u64,
    ) -> Rpc<Option<Vec<u8>>> {
        // Per data fragment: the stripes it has bytes of (a contiguous run).
        let mut runs: Vec<Option<(u64, u64)>> = vec![None; lay.data()];
        let c = lay.geo.chunk();
        for p in lay.geo.pieces(offset, len) {
            let s = p.offset / c;
            let r = &mut runs[p.fragment as usize];
            *r = Some(r.map_or((s, s + 1), |(a, _)| (a, s + 1)));
        }
        let calls: Vec<(usize, Call<'_>, Vec<u8>)> = runs
            .iter()
            .enumerate()
            .filter_map(|(j, r)| r.map(|(a, b)| (j, a, b)))
            .map(|(j, a, b)| {
                let c = self.ec_call(Op::FragRead, fragment_oid(oid, j as u8), lay, a, b - a);
                (
                    j,
                    c,
                    collie_net::peer::encode_oids(&vec![NEWEST; (b - a) as usize]),
                )
            })
            .collect();
        if calls.iter().any(|(j, _, _)| *j >= ts.len()) {
            return Ok(None);
        }
        let answers = join_all(calls.iter().map(|(j, c, wants)| {
            let mut c = self.ec_call(c.op, c.oid, lay, c.offset, c.len);
            c.payload = wants;
            let t = ts[*j];
            async move { self.ec_data(epoch, t, &c).await }
        }))
        .await;
        // Per data fragment: its first stripe, and the answer (versions, then chunks).
        let mut frags: Vec<Option<(u64, usize, Vec<u8>)>> = vec![None; lay.data()];
        for ((j, c, _), a) in calls.iter().zip(answers) {
            let p = match a {
                Ok(p) => p,
                Err(RpcError::Store(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            let n = c.len as usize;
            let (versions, data) =
                split_u64s(&p, n).map_err(|e| StoreError::Invalid(e.to_string()))?;
            if versions.contains(&0) || data.len() != n * lay.chunk() {
                return Ok(None);
            }
            frags[*j] = Some((c.offset, 8 * n, p));
        }
        // Pieces come in order and back to back: append, no zeroing first.
        let mut out = Vec::with_capacity(len as usize);
        for p in lay.geo.pieces(offset, len) {
            let Some((first, skip, data)) = &frags[p.fragment as usize] else {
                return Ok(None);
            };
            let at = skip + (p.offset - first * c) as usize;
            out.extend_from_slice(&data[at..at + p.len as usize]);
        }
        Ok(Some(out))
    }

    /// Asks every member for the fragments of `oid` it holds (stripes `s0..s0+n`).
    pub(super) async fn gather(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        s0: u64,
        n: u64,
    ) -> Rpc<Vec<Holder>> {
        let (_, all) = self.all_members(oid)?;
        let c = self.ec_call(Op::FragProbe, oid, lay, s0, n);
        let answers = join_all(all.iter().map(|&t| self.ec_data(epoch, t, &c))).await;
        let mut out = Vec::new();
        for (&t, a) in all.iter().zip(answers) {
            match a {
                Ok(p) => {
                    for (frag, ents) in decode_probe(&p, lay, n)? {
                        out.push(Holder {
                            t,
                            frag,
                            ents: Some(ents),
                        });
                    }
                }
                // A member that cannot answer holds nothing we can read now.
                Err(RpcError::Unreachable { addr, why }) => {
                    tracing::debug!(%addr, "fragment probe: {why}")
                }
                // Nor does one whose store fails (a damaged disk): the others decode.
                Err(RpcError::Store(e)) => tracing::warn!(?t, "fragment probe: {e}"),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Stripes `s0..` (one per entry of `cands`, their candidate states from
    /// `holders`) in their best decodable states, and the states they were read in. A
    /// state whose fragments do not all read back (a chunk torn by a crash or rotten)
    /// gives way to the next candidate, stripe by stripe.
    pub(super) async fn read_careful(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        holders: &[Holder],
        cands: &Candidates,
        s0: u64,
    ) -> Rpc<(Basis, Vec<u8>)> {
        let d = lay.data();
        let first = best(cands, oid, s0, d)?;
        let (mut bytes, got) = self
            .read_stripes_some(epoch, oid, lay, holders, s0, &first)
            .await?;
        let mut basis = first;
        let ss = lay.stripe_size() as usize;
        for i in (0..cands.len()).filter(|&i| !got[i]) {
            let sub = stripe_holders(holders, i, d);
            let mut read = false;
            for (w, v) in cands[i].iter().skip(1) {
                let b = Basis {
                    d,
                    w: vec![*w],
                    v: v.clone(),
                };
                let (one, ok) = self
                    .read_stripes_some(epoch, oid, lay, &sub, s0 + i as u64, &b)
                    .await?;
                if ok[0] {
                    bytes[i * ss..(i + 1) * ss].copy_from_slice(&one);
                    basis.set(i, &b);
                    read = true;
                    break;
                }
            }
            if !read {
                return Err(unsettled(oid, s0 + i as u64));
            }
        }
        Ok((basis, bytes))
    }

    /// The object bytes of stripes `s0..s0+basis.len()`, each in its basis state,
    /// read from the holders (data fragments first) and decoded where needed; a stripe
    /// whose state fewer than D fragments answer for is an error ([`unsettled`]).
    pub(super) async fn read_stripes(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        holders: &[Holder],
        s0: u64,
        basis: &Basis,
    ) -> Rpc<Vec<u8>> {
        let (bytes, got) = self
            .read_stripes_some(epoch, oid, lay, holders, s0, basis)
            .await?;
        match got.iter().position(|&g| !g) {
            Some(i) => Err(unsettled(oid, s0 + i as u64)),
            None => Ok(bytes),
        }
    }

    /// [`Gateway::read_stripes`], answering which stripes it got (the others read as
    /// zeros). Each round asks for what is still missing from holders not yet tried.
    async fn read_stripes_some(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        holders: &[Holder],
        s0: u64,
        basis: &Basis,
    ) -> Rpc<(Vec<u8>, Vec<bool>)> {
        let (n, d, c) = (basis.len(), lay.data(), lay.chunk());
        let fl = n * c;
        // have[j]: fragment j's chunks, and which stripes of it are valid.
        let mut have: Vec<(Vec<u8>, Vec<bool>)> =
            vec![(vec![0u8; fl], vec![false; n]); lay.width()];
        let mut tried = vec![false; holders.len()];
        // Data fragments first, targets (no entries: assumed) before others.
        let mut order: Vec<usize> = (0..holders.len()).collect();
        order.sort_by_key(|&h| (holders[h].frag as usize >= d, holders[h].frag));
        let count =
            |have: &[(Vec<u8>, Vec<bool>)], i: usize| have.iter().filter(|f| f.1[i]).count();
        loop {
            // For each holder not tried: the stripes it should give (short of d there).
            let mut want: Vec<(usize, Vec<u64>)> = Vec::new();
            let mut planned = vec![0usize; n];
            for &h in &order {
                if tried[h] {
                    continue;
                }
                let hd = &holders[h];
                let j = hd.frag as usize;
                let mut w = vec![SKIP; n];
                let mut any = false;
                for i in 0..n {
                    let want = basis.want(i, j);
                    if hd.holds(i, want) && !have[j].1[i] && count(&have, i) + planned[i] < d {
                        w[i] = want;
                        planned[i] += 1;
                        any = true;
                    }
                }
                if any {
                    want.push((h, w));
                }
            }
            if want.is_empty() {
                break;
            }
            let answers = join_all(want.iter().map(|(h, w)| {
                let hd = &holders[*h];
                let payload = collie_net::peer::encode_oids(w);
                let c = self.ec_call(Op::FragRead, fragment_oid(oid, hd.frag), lay, s0, n as u64);
                async move {
                    let mut c = c;
                    c.payload = &payload;
                    self.ec_data(epoch, hd.t, &c).await
                }
            }))
            .await;
            for ((h, w), a) in want.iter().zip(answers) {
                tried[*h] = true;
                let p = match a {
                    Ok(p) => p,
                    Err(RpcError::Store(_)) | Err(RpcError::Unreachable { .. }) => continue,
                    Err(e) => return Err(e),
                };
                let Ok((versions, data)) = split_u64s(&p, n) else {
                    continue;
                };
                if data.len() != fl {
                    continue;
                }
                let j = holders[*h].frag as usize;
                for i in 0..n {
                    if w[i] != SKIP && versions[i] == w[i] && !have[j].1[i] {
                        have[j].0[i * c..(i + 1) * c].copy_from_slice(&data[i * c..(i + 1) * c]);
                        have[j].1[i] = true;
                    }
                }
            }
        }
        let got: Vec<bool> = (0..n).map(|i| count(&have, i) >= d).collect();
        // Decode runs of stripes that have the same fragments, one call per run (a
        // stripe short of fragments is left zero).
        let mut data_frags: Vec<Vec<u8>> = vec![vec![0u8; fl]; d];
        let mut i = 0;
        while i < n {
            let set = |i: usize| -> Vec<bool> {
                let mut taken = 0;
                have.iter()
                    .map(|f| {
                        let t = f.1[i] && taken < d;
                        taken += usize::from(t);
                        t
                    })
                    .collect()
            };
            let si = set(i);
            let mut k = i + 1;
            while k < n && set(k) == si {
                k += 1;
            }
            let (a, b) = (i * c, k * c);
            if !got[i] {
                // Short of fragments: nothing to decode.
            } else if si[..d].iter().all(|&x| x) {
                for (j, f) in data_frags.iter_mut().enumerate() {
                    f[a..b].copy_from_slice(&have[j].0[a..b]);
                }
            } else {
                let frags: Vec<Option<&[u8]>> = have
                    .iter()
                    .zip(&si)
                    .map(|(f, &t)| t.then_some(&f.0[a..b]))
                    .collect();
                let out = with_codec(lay, |cd| cd.decode(&frags)).map_err(codec_error)?;
                for (f, o) in data_frags.iter_mut().zip(out) {
                    f[a..b].copy_from_slice(&o);
                }
            }
            i = k;
        }
        let refs: Vec<&[u8]> = data_frags.iter().map(|f| f.as_slice()).collect();
        Ok((lay.geo.join(&refs).map_err(codec_error)?, got))
    }
}
