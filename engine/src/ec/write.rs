//! Writes at the primary: small writes as deltas, others as whole stripes.

use super::*;
use futures::channel::oneshot;

impl Gateway {
    /// Writes a range of an erasure-coded object: sent to its primary, which orders it.
    pub async fn ec_write(
        &self,
        oid: u64,
        lay: &Layout,
        offset: u64,
        content: Content<'_>,
    ) -> Result<()> {
        self.settled(oid, || async {
            let (epoch, ts) = self.ec_targets(oid, lay)?;
            if self.is_primary(&ts, oid) {
                return self.primary_write(oid, lay, offset, content).await;
            }
            let mut c = self.ec_call(Op::EcWrite, oid, lay, offset, content.len());
            match content {
                Content::Data(d) => c.payload = d,
                Content::Zeros(_) => c.flags |= FLAG_ZEROS,
            }
            self.ec_data(epoch, ts[0], &c).await.map(|_| ())
        })
        .await
    }

    /// The state of stripes `s0..s0+n` if every target holds its fragment and their
    /// newest slots agree on one (each parity fragment at the same `(w, V)`, each data
    /// fragment `j` at `V[j]`); `None` otherwise.
    async fn probe_targets(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        ts: &[Target],
        s0: u64,
        n: u64,
    ) -> Rpc<Option<Basis>> {
        if ts.len() < lay.width() {
            return Ok(None);
        }
        let c = self.ec_call(Op::FragProbe, oid, lay, s0, n);
        let answers = join_all(ts.iter().map(|&t| self.ec_data(epoch, t, &c))).await;
        let mut frags: Vec<Entries> = Vec::new();
        for (j, a) in answers.into_iter().enumerate() {
            let p = match a {
                Ok(p) => p,
                Err(RpcError::Store(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            let Some((_, e)) = decode_probe(&p, lay, n)?
                .into_iter()
                .find(|(f, _)| *f as usize == j)
            else {
                return Ok(None);
            };
            frags.push(e);
        }
        let d = lay.data();
        let mut b = Basis::empty(d);
        for i in 0..n as usize {
            let newest = |e: &Entries| {
                let k = usize::from(e.ents[i].slots[1].version > e.ents[i].slots[0].version);
                (e.ents[i].slots[k].version, k)
            };
            let (w, k) = newest(&frags[d]);
            let v = frags[d].vector(d, i, k).to_vec();
            let agree = w != 0
                && frags[d..].iter().all(|e| {
                    let (w2, k2) = newest(e);
                    w2 == w && e.vector(d, i, k2) == v.as_slice()
                })
                && frags[..d]
                    .iter()
                    .enumerate()
                    .all(|(j, e)| newest(e).0 == v[j]);
            if !agree {
                return Ok(None);
            }
            b.push(w, &v);
        }
        Ok(Some(b))
    }

    /// The primary's write: lock the stripes, learn their versions, read what a partial
    /// stripe keeps, encode, and write every fragment with a new version that keeps
    /// the old one on each holder.
    pub(crate) async fn primary_write(
        &self,
        oid: u64,
        lay: &Layout,
        offset: u64,
        content: Content<'_>,
    ) -> Rpc<()> {
        let len = content.len();
        let os = lay.geo.object_size();
        if len == 0 || offset.checked_add(len).is_none_or(|e| e > os) {
            return Err(StoreError::OutOfRange(format!(
                "write {offset}+{len} outside an object of {os} bytes"
            ))
            .into());
        }
        if content.len() > u64::from(MAX_PAYLOAD) {
            return Err(StoreError::OutOfRange("write larger than a peer frame".into()).into());
        }
        let ss = lay.stripe_size();
        if let Content::Zeros(_) = content {
            // Whole stripes become zeros by their headers alone; the partial stripes
            // at either end are written as data.
            let (a, b) = (offset.next_multiple_of(ss), (offset + len) / ss * ss);
            if a < b {
                let zeros = vec![0u8; ss as usize];
                if offset < a {
                    let d = Content::Data(&zeros[..(a - offset) as usize]);
                    Box::pin(self.primary_write(oid, lay, offset, d)).await?;
                }
                self.write_stripes(oid, lay, a, Content::Zeros(b - a))
                    .await?;
                if b < offset + len {
                    let d = Content::Data(&zeros[..(offset + len - b) as usize]);
                    Box::pin(self.primary_write(oid, lay, b, d)).await?;
                }
                return Ok(());
            }
            let zeros = vec![0u8; len as usize];
            return self
                .write_stripes(oid, lay, offset, Content::Data(&zeros))
                .await;
        }
        match content {
            Content::Data(d) if offset / ss == (offset + len - 1) / ss => {
                self.combining_write(oid, lay, offset, d).await
            }
            _ => self.write_stripes(oid, lay, offset, content).await,
        }
    }

    /// A write inside one stripe. If another write of that stripe is in progress, this
    /// one waits in the stripe's queue, and when that write is done the queue is
    /// written as one (`drain_stripe`): a stream of small writes then pays one
    /// read-modify-write per stripe and queue instead of one per write (4 KiB
    /// sequential writes at QD32 on 4:2: four writes of a stripe in flight at once).
    async fn combining_write(&self, oid: u64, lay: &Layout, offset: u64, data: &[u8]) -> Rpc<()> {
        let key = (oid, offset / lay.stripe_size());
        let waiting = STRIPE_QUEUES.with(|q| {
            let mut q = q.borrow_mut();
            match q.get_mut(&key) {
                Some(queue) => {
                    let (done, rx) = oneshot::channel();
                    queue.push(Queued {
                        offset,
                        data: data.to_vec(),
                        done,
                    });
                    Some(rx)
                }
                None => {
                    q.insert(key, Vec::new());
                    None
                }
            }
        });
        let Some(rx) = waiting else {
            return self.lead_stripe(key, lay, offset, data).await;
        };
        if rx.await == Ok(true) {
            return Ok(());
        }
        // Not written together (the queue had holes, the write failed, or the
        // stripe's turn ended without it): this write goes alone, with its own answer.
        self.write_stripes(oid, lay, offset, Content::Data(data))
            .await
    }

    /// The write that found stripe `key` idle: written at once, then what queued
    /// meanwhile is written by a task of its own, so this write's answer does not
    /// wait for it. If this future is dropped before (its client went away), the
    /// stripe's turn ends with it and the queued writes go alone.
    async fn lead_stripe(
        &self,
        key: (u64, u64),
        lay: &Layout,
        offset: u64,
        data: &[u8],
    ) -> Rpc<()> {
        let turn = StripeTurn(key);
        let r = self
            .write_stripes(key.0, lay, offset, Content::Data(data))
            .await;
        let (gw, lay) = (self.clone(), *lay);
        glommio::spawn_local(async move { gw.drain_stripe(turn, &lay).await }).detach();
        r
    }

    /// Writes the writes queued for stripe `key` (see `combining_write`), a queue at a
    /// time, until none are left. A queue whose writes cover one range without holes
    /// is one write (overlaps resolved in arrival order, as one after the other would);
    /// otherwise, or if that write fails, each is told to go alone.
    async fn drain_stripe(&self, turn: StripeTurn, lay: &Layout) {
        let key = turn.0;
        loop {
            // Writes whose callers went away are dropped here: written later, they
            // could land over what their client wrote since.
            let queue: Vec<Queued> = STRIPE_QUEUES.with(|q| {
                q.borrow_mut()
                    .get_mut(&key)
                    .map(std::mem::take)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|w| !w.done.is_canceled())
                    .collect()
            });
            if queue.is_empty() {
                return; // `turn` ends the stripe's turn
            }
            let written = match covered_range(&queue) {
                Some((lo, hi)) => {
                    let mut buf = vec![0u8; (hi - lo) as usize];
                    for w in &queue {
                        let at = (w.offset - lo) as usize;
                        buf[at..at + w.data.len()].copy_from_slice(&w.data);
                    }
                    self.write_stripes(key.0, lay, lo, Content::Data(&buf))
                        .await
                        .is_ok()
                }
                None => false,
            };
            for w in queue {
                let _ = w.done.send(written);
            }
        }
    }

    async fn write_stripes(
        &self,
        oid: u64,
        lay: &Layout,
        offset: u64,
        content: Content<'_>,
    ) -> Rpc<()> {
        let r = self.write_stripes_once(oid, lay, offset, content).await;
        if r.is_err() {
            // What the targets hold is no longer known for sure.
            forget(oid);
        }
        r
    }

    async fn write_stripes_once(
        &self,
        oid: u64,
        lay: &Layout,
        offset: u64,
        content: Content<'_>,
    ) -> Rpc<()> {
        let ss = lay.stripe_size();
        let len = content.len();
        let (s0, s1) = (offset / ss, (offset + len).div_ceil(ss));
        let n = s1 - s0;
        let mut guard = lock_range(oid, s0 * ss, s1 * ss).await;
        let (epoch, ts) = self.ec_targets(oid, lay)?;
        if !self.is_primary(&ts, oid) {
            return Err(RpcError::Retry(format!(
                "{oid:#018x}: not the primary here"
            )));
        }
        let mut basis = self.basis(epoch, oid, lay, &ts, s0, n).await?;
        let mut create = false;
        if basis.is_none() {
            // A new object: created with nothing else of it in flight (another write
            // beside the creation could find some fragments created and others not).
            drop(guard);
            guard = lock_range(oid, 0, u64::MAX).await;
            basis = self.basis(epoch, oid, lay, &ts, s0, n).await?;
            create = basis.is_none();
        }
        let _guard = guard;
        let (mut basis, mut holders) = match basis {
            Some(b) => b,
            None => (
                Basis::uniform(lay.data(), vec![INITIAL; n as usize]),
                Vec::new(),
            ),
        };
        if let Content::Data(d) = content {
            let known = holders.is_empty() && ts.len() == lay.width();
            if known && !create && n == 1 && delta_pays(lay, offset, len) {
                match self
                    .delta_write(epoch, oid, lay, &ts, s0, &basis, offset, d)
                    .await
                {
                    Ok(b) => {
                        remember(oid, epoch, lay, s0, &b);
                        return Ok(());
                    }
                    Err(RpcError::Store(e)) => {
                        // A target lacks the state the primary knew (or it fails its
                        // checksum): write the whole stripe from a careful read.
                        tracing::debug!(
                            oid = format!("{oid:#018x}"),
                            stripe = s0,
                            "small write falls back to a whole stripe: {e}"
                        );
                        forget(oid);
                        (basis, holders) = self
                            .careful_basis(epoch, oid, lay, s0, n)
                            .await?
                            .ok_or_else(|| unsettled(oid, s0))?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let full = offset == s0 * ss && offset + len == s1 * ss;
        let stripes: Option<Cow<'_, [u8]>> = match content {
            Content::Zeros(_) => None,
            Content::Data(d) if full => Some(Cow::Borrowed(d)),
            Content::Data(d) => {
                let mut buf = vec![0u8; (n * ss) as usize];
                if !create {
                    let holders = if holders.is_empty() {
                        (0..ts.len())
                            .map(|j| Holder {
                                t: ts[j],
                                frag: j as u8,
                                ents: None,
                            })
                            .collect()
                    } else {
                        holders
                    };
                    // Only the partial stripes at the ends keep old bytes.
                    let ends: Vec<u64> = [s0, s1 - 1]
                        .into_iter()
                        .filter(|&s| s * ss < offset || (s + 1) * ss > offset + len)
                        .collect();
                    let assumed = holders.iter().all(|h| h.ents.is_none());
                    for s in dedup(ends) {
                        let i = (s - s0) as usize;
                        let one = basis.slice(i, i + 1);
                        let sub = stripe_holders(&holders, i, lay.data());
                        let old = if assumed {
                            match self
                                .old_chunks(epoch, oid, lay, &ts, s, &one, offset, len)
                                .await?
                            {
                                Some(d) => d,
                                None => self.read_stripes(epoch, oid, lay, &sub, s, &one).await?,
                            }
                        } else {
                            // The state actually read is the one the write keeps.
                            let cands = candidates_all(&sub, 1, lay.data());
                            let (state, old) =
                                self.read_careful(epoch, oid, lay, &sub, &cands, s).await?;
                            basis.set(i, &state);
                            old
                        };
                        buf[i * ss as usize..(i + 1) * ss as usize].copy_from_slice(&old);
                    }
                }
                let at = (offset - s0 * ss) as usize;
                buf[at..at + d.len()].copy_from_slice(d);
                Some(Cow::Owned(buf))
            }
        };
        let nv = next_version(epoch)?;
        let versions = vec![nv; n as usize];
        let payloads = fragment_payloads(lay, &versions, &basis, stripes.as_deref(), ts.len())?;
        let zeros = stripes.is_none();
        self.write_fragments(epoch, oid, lay, &ts, s0, n, &payloads, zeros, create)
            .await?;
        let done = Basis::uniform(lay.data(), versions);
        if create {
            let mut all = Basis::uniform(lay.data(), vec![INITIAL; lay.stripes() as usize]);
            all.set(s0 as usize, &done);
            remember(oid, epoch, lay, 0, &all);
        } else {
            remember(oid, epoch, lay, s0, &done);
        }
        Ok(())
    }

    /// A small write inside stripe `s0`, whose state `basis` every target holds as its
    /// newest: reads the touched data chunks at their versions, writes them back changed
    /// at a new version `w`, and has each parity holder XOR in the parity of the
    /// difference (reed-solomon is linear) and keep the result at `w` with the new
    /// vector (FragDelta). The other data fragments are left alone. Answers the
    /// stripe's new state.
    #[allow(clippy::too_many_arguments)]
    async fn delta_write(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        ts: &[Target],
        s0: u64,
        basis: &Basis,
        offset: u64,
        bytes: &[u8],
    ) -> Rpc<Basis> {
        let (c, d) = (lay.chunk(), lay.data());
        let pieces: Vec<_> = lay.geo.pieces(offset, bytes.len() as u64).collect();
        let touched = touched(&pieces);
        // Old and new bytes of the data chunks (untouched ones stay zero in both, so
        // their difference is zero).
        let mut old = vec![0u8; d * c];
        let answers = self
            .chunks_at(epoch, oid, lay, ts, s0, basis, &touched)
            .await;
        for (&j, a) in touched.iter().zip(answers) {
            match a? {
                Some(x) => old[j * c..(j + 1) * c].copy_from_slice(&x),
                None => return Err(StoreError::NotFound(fragment_oid(oid, j as u8)).into()),
            }
        }
        let mut new = old.clone();
        for p in &pieces {
            let at = p.fragment as usize * c + (p.offset - s0 * c as u64) as usize;
            new[at..at + p.len as usize]
                .copy_from_slice(&bytes[p.at as usize..(p.at + p.len) as usize]);
        }
        let diff: Vec<u8> = old.iter().zip(&new).map(|(a, b)| a ^ b).collect();
        let refs: Vec<&[u8]> = diff.chunks(c).collect();
        let deltas = with_codec(lay, |cd| cd.encode(&refs)).map_err(codec_error)?;
        let w = next_version(epoch)?;
        let mut v = basis.vector(0).to_vec();
        for &j in &touched {
            v[j] = w;
        }
        let mut sends: Vec<(usize, Op, Vec<u8>)> = Vec::new();
        for &j in &touched {
            let p = frag_payload(&[w], &[basis.want(0, j)], &v, &new[j * c..(j + 1) * c]);
            sends.push((j, Op::FragWrite, p));
        }
        for (i, delta) in deltas.iter().enumerate() {
            let p = frag_payload(&[w], &[basis.w[0]], &v, delta);
            sends.push((d + i, Op::FragDelta, p));
        }
        let done = join_all(sends.iter().map(|(j, op, p)| {
            let mut call = self.ec_call(*op, fragment_oid(oid, *j as u8), lay, s0, 1);
            call.payload = p;
            async move { self.ec_data(epoch, ts[*j], &call).await }
        }))
        .await;
        for r in done {
            r?;
        }
        let mut b = Basis::empty(d);
        b.push(w, &v);
        Ok(b)
    }

    /// The bytes of stripe `s` in state `basis` (that one stripe) that a write of
    /// `[offset, offset+len)` keeps: the chunks it does not wholly cover, each from its
    /// data target (no decode; the covered chunks are left zero). `None` if a target
    /// does not answer with them.
    #[allow(clippy::too_many_arguments)]
    async fn old_chunks(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        ts: &[Target],
        s: u64,
        basis: &Basis,
        offset: u64,
        len: u64,
    ) -> Rpc<Option<Vec<u8>>> {
        let (c, ss) = (lay.geo.chunk(), lay.stripe_size());
        let needed: Vec<usize> = (0..lay.data())
            .filter(|&j| {
                let start = s * ss + j as u64 * c;
                !(offset <= start && start + c <= offset + len)
            })
            .collect();
        if needed.iter().any(|&j| j >= ts.len()) {
            return Ok(None);
        }
        let answers = self.chunks_at(epoch, oid, lay, ts, s, basis, &needed).await;
        let mut out = vec![0u8; ss as usize];
        for (&j, a) in needed.iter().zip(answers) {
            match a {
                Ok(Some(x)) => out[j * c as usize..(j + 1) * c as usize].copy_from_slice(&x),
                Ok(None) | Err(RpcError::Store(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(Some(out))
    }

    /// Stripe `s`'s chunks of data fragments `frags`, each at its version in `basis`
    /// (that one stripe), straight from their targets: per fragment its chunk, or
    /// `None` if the target answered without it (another version, a short answer).
    #[allow(clippy::too_many_arguments)]
    async fn chunks_at(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        ts: &[Target],
        s: u64,
        basis: &Basis,
        frags: &[usize],
    ) -> Vec<Rpc<Option<Vec<u8>>>> {
        join_all(frags.iter().map(|&j| {
            let want = basis.want(0, j);
            let wants = collie_net::peer::encode_oids(&[want]);
            async move {
                let mut call = self.ec_call(Op::FragRead, fragment_oid(oid, j as u8), lay, s, 1);
                call.payload = &wants;
                call.flags |= FLAG_RECENT;
                let p = self.ec_data(epoch, ts[j], &call).await?;
                Ok(match split_u64s(&p, 1) {
                    Ok((v, x)) if v[0] == want && x.len() == lay.chunk() => Some(x.to_vec()),
                    _ => None,
                })
            }
        }))
        .await
    }

    /// Writes stripes `s0..` of every fragment to its target, in parallel.
    #[allow(clippy::too_many_arguments)]
    async fn write_fragments(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        ts: &[Target],
        s0: u64,
        n: u64,
        payloads: &[Vec<u8>],
        zeros: bool,
        create: bool,
    ) -> Rpc<()> {
        let done = join_all(ts.iter().enumerate().map(|(j, &t)| {
            let mut c = self.ec_call(Op::FragWrite, fragment_oid(oid, j as u8), lay, s0, n);
            c.payload = &payloads[j];
            if zeros {
                c.flags |= FLAG_ZEROS;
            }
            if create {
                c.flags |= FLAG_CREATE;
            }
            async move { self.ec_data(epoch, t, &c).await }
        }))
        .await;
        for r in done {
            r?;
        }
        Ok(())
    }

    /// The state a write of stripes `s0..s0+n` builds on, and the holders that
    /// recorded it (empty if every target agreed); `None` if the object is new.
    async fn basis(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        ts: &[Target],
        s0: u64,
        n: u64,
    ) -> Rpc<Option<(Basis, Vec<Holder>)>> {
        if let Some(b) = known(oid, epoch, lay, s0, n) {
            return Ok(Some((b, Vec::new())));
        }
        if let Some(b) = self.probe_targets(epoch, oid, lay, ts, s0, n).await? {
            remember(oid, epoch, lay, s0, &b);
            return Ok(Some((b, Vec::new())));
        }
        self.careful_basis(epoch, oid, lay, s0, n).await
    }

    /// [`Gateway::basis`] from every member's fragments: each stripe's best state and
    /// the holders it was found on; `None` if no member has a fragment.
    async fn careful_basis(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        s0: u64,
        n: u64,
    ) -> Rpc<Option<(Basis, Vec<Holder>)>> {
        let holders = self.gather(epoch, oid, lay, s0, n).await?;
        if holders.is_empty() {
            return Ok(None);
        }
        let basis = best(
            &candidates_all(&holders, n, lay.data()),
            oid,
            s0,
            lay.data(),
        )?;
        Ok(Some((basis, holders)))
    }
}

/// A write waiting for the write in progress on its stripe (`combining_write`).
struct Queued {
    offset: u64,
    data: Vec<u8>,
    /// Told whether it was written with its queue.
    done: oneshot::Sender<bool>,
}

thread_local! {
    /// Per `(oid, stripe)` with a write in progress at this primary: the writes of that
    /// stripe waiting for it.
    static STRIPE_QUEUES: RefCell<HashMap<(u64, u64), Vec<Queued>>> = RefCell::new(HashMap::new());
}

/// A primary's turn at writing one stripe (`combining_write`): while it lasts, writes
/// of the stripe queue. Ending it (dropped: done, or its task cancelled) removes the
/// queue, and any writes still in it, told nothing, go alone.
struct StripeTurn((u64, u64));

impl Drop for StripeTurn {
    fn drop(&mut self) {
        // try_with: a task dropped as its thread exits finds the map gone already.
        let _ = STRIPE_QUEUES.try_with(|q| q.borrow_mut().remove(&self.0));
    }
}

/// The range `[lo, hi)` the writes of `queue` cover together, if it has no holes.
fn covered_range(queue: &[Queued]) -> Option<(u64, u64)> {
    let mut spans: Vec<(u64, u64)> = queue
        .iter()
        .map(|w| (w.offset, w.offset + w.data.len() as u64))
        .collect();
    spans.sort_unstable();
    let (lo, mut hi) = *spans.first()?;
    for &(a, b) in &spans[1..] {
        if a > hi {
            return None;
        }
        hi = hi.max(b);
    }
    Some((lo, hi))
}

/// Whether a write of `[offset, offset+len)` inside one stripe costs fewer disk
/// requests as a delta (read and write each touched data chunk, read and write each
/// parity) than as a whole stripe (read the chunks it does not cover, write every
/// fragment). For 4:2 and one 4 KiB chunk: 6 against 9.
fn delta_pays(lay: &Layout, offset: u64, len: u64) -> bool {
    let c = lay.geo.chunk();
    let pieces: Vec<_> = lay.geo.pieces(offset, len).collect();
    let touched = touched(&pieces).len();
    let whole = pieces.iter().filter(|p| p.len == c).count();
    let (d, p) = (lay.data(), lay.width() - lay.data());
    2 * touched + 2 * p < (d - whole) + d + p
}

/// The data fragments `pieces` (of one stripe, in object order) change, in order.
fn touched(pieces: &[collie_placement::erasure::FragmentPiece]) -> Vec<usize> {
    let mut t: Vec<usize> = pieces.iter().map(|p| p.fragment as usize).collect();
    t.dedup();
    t
}

/// The FragWrite payload of each of the first `targets` fragments: new versions, the
/// versions `keeps` says it holds, the new state's data versions, then the
/// fragment's chunks of `stripes` (object bytes of whole stripes; `None` for zeros: no
/// chunks). Each byte is copied once into its payload.
fn fragment_payloads(
    lay: &Layout,
    versions: &[u64],
    keeps: &Basis,
    stripes: Option<&[u8]>,
    targets: usize,
) -> Result<Vec<Vec<u8>>> {
    let d = lay.data();
    // A whole-stripe write: every data fragment at the new version.
    let states = Basis::uniform(d, versions.to_vec()).v;
    let head = |j: usize| frag_payload(versions, &keeps.of_fragment(j), &states, &[]);
    let Some(bytes) = stripes else {
        return Ok((0..targets).map(head).collect());
    };
    // Data heads all have one length: split after the first, then put each in place.
    let first = head(0);
    let mut out = lay.geo.split_after(&first, bytes).map_err(codec_error)?;
    for (j, f) in out.iter_mut().enumerate().skip(1) {
        f[..first.len()].copy_from_slice(&head(j));
    }
    let refs: Vec<&[u8]> = out.iter().map(|f| &f[first.len()..]).collect();
    let parity = with_codec(lay, |cd| cd.encode(&refs)).map_err(codec_error)?;
    for (i, p) in parity.into_iter().enumerate() {
        let mut f = head(d + i);
        f.extend_from_slice(&p);
        out.push(f);
    }
    out.truncate(targets);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_is_cheaper_only_for_a_few_chunks() {
        let lay = Layout::of(Redundancy::Erasure { data: 4, parity: 2 }, 4 << 20)
            .unwrap()
            .unwrap();
        assert!(delta_pays(&lay, 4096, 4096));
        assert!(delta_pays(&lay, 100, 512));
        assert!(!delta_pays(&lay, 0, 3 * 4096));
        let lay21 = Layout::of(Redundancy::Erasure { data: 2, parity: 1 }, 4 << 20)
            .unwrap()
            .unwrap();
        assert!(!delta_pays(&lay21, 4096, 4096));
    }

    #[test]
    fn a_queue_is_one_write_only_if_it_covers_one_range_without_holes() {
        let q = |spans: &[(u64, usize)]| -> Vec<Queued> {
            spans
                .iter()
                .map(|&(offset, len)| Queued {
                    offset,
                    data: vec![0; len],
                    done: oneshot::channel().0,
                })
                .collect()
        };
        // Out of order, touching and overlapping: one range.
        assert_eq!(
            covered_range(&q(&[(8192, 4096), (0, 4096), (4096, 4096)])),
            Some((0, 12288))
        );
        assert_eq!(
            covered_range(&q(&[(0, 6000), (4096, 100)])),
            Some((0, 6000))
        );
        // A hole between them: not one write.
        assert_eq!(covered_range(&q(&[(0, 4096), (8192, 4096)])), None);
        assert_eq!(covered_range(&q(&[])), None);
    }
}
