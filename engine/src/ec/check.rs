//! `dog vdi check` of an erasure-coded object, at its primary.

use super::*;

/// Peer form of a check report: six u64s.
pub(super) fn encode_report(r: &CheckReport) -> Vec<u8> {
    collie_net::peer::encode_oids(&[
        r.objects,
        r.stripes,
        r.consistent,
        r.repaired,
        r.lost,
        r.unplaced,
    ])
}

fn decode_report(p: &[u8]) -> Result<CheckReport> {
    match collie_net::peer::decode_oids(p).as_deref() {
        Ok(&[objects, stripes, consistent, repaired, lost, unplaced]) => Ok(CheckReport {
            objects,
            stripes,
            consistent,
            repaired,
            lost,
            unplaced,
        }),
        _ => Err(StoreError::Invalid("malformed check report".into())),
    }
}

impl Gateway {
    /// Verifies every stripe of an object at its primary, and repairs if asked.
    pub async fn ec_check(&self, oid: u64, lay: &Layout, repair: bool) -> Result<CheckReport> {
        self.check_at_primary(oid, lay, repair, false).await
    }

    /// Recovery's repairing check: skipped if the primary completed one at this epoch
    /// (it rewrote every target's fragment then).
    pub(crate) async fn ec_recovery_check(&self, oid: u64, lay: &Layout) -> Result<CheckReport> {
        self.check_at_primary(oid, lay, true, true).await
    }

    async fn check_at_primary(
        &self,
        oid: u64,
        lay: &Layout,
        repair: bool,
        recovery: bool,
    ) -> Result<CheckReport> {
        self.settled(oid, || async {
            let (epoch, ts) = self.ec_targets(oid, lay)?;
            if self.is_primary(&ts, oid) {
                return self.primary_check(oid, lay, repair, recovery).await;
            }
            let mut c = self.ec_call(Op::EcCheck, oid, lay, 0, 0);
            if repair {
                c.flags |= FLAG_REPAIR;
            }
            if recovery {
                c.flags |= FLAG_RECOVERY;
            }
            let p = self.ec_data(epoch, ts[0], &c).await?;
            Ok(decode_report(&p)?)
        })
        .await
    }

    /// The primary's check of a whole object: every stripe's newest decodable state,
    /// re-encoded, compared with what each target holds; with `repair`, targets that
    /// differ get that state written (same versions: nothing newer is invented, except
    /// for a stripe where a cut-short write left a data target a newer chunk: it is
    /// rewritten whole at a new version).
    pub(crate) async fn primary_check(
        &self,
        oid: u64,
        lay: &Layout,
        repair: bool,
        recovery: bool,
    ) -> Rpc<CheckReport> {
        let _object = lock_range(oid, 0, u64::MAX).await;
        let (epoch, ts) = self.ec_targets(oid, lay)?;
        if !self.is_primary(&ts, oid) {
            return Err(RpcError::Retry(format!(
                "{oid:#018x}: not the primary here"
            )));
        }
        if recovery {
            if let Some(r) = crate::recovery::checked(oid, epoch) {
                return Ok(r);
            }
        }
        let n = lay.stripes();
        let holders = self.gather(epoch, oid, lay, 0, n).await?;
        let mut r = CheckReport::default();
        if holders.is_empty() {
            // Nothing found (or nobody answered): nothing to record as checked.
            return Ok(r);
        }
        r.objects = 1;
        r.stripes = n;
        r.unplaced = (lay.width() - ts.len()) as u64 * n;
        let cands = candidates_all(&holders, n, lay.data());
        r.lost = cands.iter().filter(|c| c.is_empty()).count() as u64;
        if r.lost > 0 {
            tracing::error!(
                oid = format!("{oid:#018x}"),
                lost = r.lost,
                "stripes cannot be decoded"
            );
            return Ok(r);
        }
        let (mut basis, bytes) = self
            .read_careful(epoch, oid, lay, &holders, &cands, 0)
            .await?;
        // What repair writes keeps the decoded state on every holder.
        let keep = basis.clone();
        // A stripe where a data target's newest chunk is newer than the decoded state
        // (a write cut short left it there) is rewritten whole at a new version: else
        // fast reads, which take each chunk's newest, would go on returning it.
        let d = lay.data();
        let mut renewed = vec![false; n as usize];
        for (i, renew) in renewed.iter_mut().enumerate() {
            *renew = holders.iter().any(|h| {
                let j = usize::from(h.frag);
                j < d
                    && ts.get(j) == Some(&h.t)
                    && h.ents
                        .as_ref()
                        .is_some_and(|e| e.ents[i].newest() > keep.want(i, j))
            });
            if *renew {
                let w = next_version(epoch)?;
                basis.set(i, &Basis::uniform(d, vec![w]));
            }
        }
        let mut expect = lay.geo.split(&bytes).map_err(codec_error)?;
        let refs: Vec<&[u8]> = expect.iter().map(|x| x.as_slice()).collect();
        let parity = with_codec(lay, |cd| cd.encode(&refs)).map_err(codec_error)?;
        expect.extend(parity);
        // What each target holds at the basis versions.
        let c = lay.chunk();
        let answers = join_all(ts.iter().enumerate().map(|(j, &t)| {
            let wants = collie_net::peer::encode_oids(&basis.of_fragment(j));
            async move {
                let mut call = self.ec_call(Op::FragRead, fragment_oid(oid, j as u8), lay, 0, n);
                call.payload = &wants;
                self.ec_data(epoch, t, &call).await
            }
        }))
        .await;
        let mut bad = vec![vec![false; n as usize]; ts.len()];
        for (j, a) in answers.into_iter().enumerate() {
            let got = match a {
                Ok(p) => split_u64s(&p, n as usize)
                    .ok()
                    .filter(|(_, x)| x.len() == n as usize * c)
                    .map(|(v, x)| (v, x.to_vec())),
                Err(RpcError::Store(_)) => None,
                Err(e) => return Err(e),
            };
            for i in 0..n as usize {
                bad[j][i] = renewed[i]
                    || match &got {
                        Some((v, x)) => {
                            v[i] != basis.want(i, j)
                                || x[i * c..(i + 1) * c] != expect[j][i * c..(i + 1) * c]
                        }
                        None => true,
                    };
            }
        }
        let bad_stripes: Vec<bool> = (0..n as usize).map(|i| bad.iter().any(|b| b[i])).collect();
        let nbad = bad_stripes.iter().filter(|&&b| b).count() as u64;
        r.consistent = n - nbad;
        if !repair || nbad == 0 {
            if repair {
                crate::recovery::record_check(oid, epoch, &r);
            }
            return Ok(r);
        }
        // Rewrite each target's bad runs in the basis state, keeping the decoded one.
        for (j, &t) in ts.iter().enumerate() {
            let mut i = 0;
            while i < n as usize {
                if !bad[j][i] {
                    i += 1;
                    continue;
                }
                let mut k = i + 1;
                while k < n as usize && bad[j][k] {
                    k += 1;
                }
                let run = basis.slice(i, k);
                // The state each stripe is in. A data chunk not changed by the write
                // that made the state is rewritten at its own, older version, whose
                // state is not known here: it records none.
                let mut states = Vec::with_capacity(run.len() * d);
                for x in 0..run.len() {
                    if lay.is_parity(j) || run.want(x, j) == run.w[x] {
                        states.extend_from_slice(run.vector(x));
                    } else {
                        states.extend(std::iter::repeat_n(0, d));
                    }
                }
                let p = frag_payload(
                    &run.of_fragment(j),
                    &keep.slice(i, k).of_fragment(j),
                    &states,
                    &expect[j][i * c..k * c],
                );
                let mut call = self.ec_call(
                    Op::FragWrite,
                    fragment_oid(oid, j as u8),
                    lay,
                    i as u64,
                    (k - i) as u64,
                );
                call.payload = &p;
                self.ec_data(epoch, t, &call).await?;
                i = k;
            }
        }
        if ts.len() == lay.width() {
            remember(oid, epoch, lay, 0, &basis);
        } else {
            forget(oid);
        }
        r.repaired = nbad;
        crate::recovery::record_check(oid, epoch, &r);
        Ok(r)
    }
}
