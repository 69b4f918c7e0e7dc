//! A holder's memory of the chunks its small writes just wrote.
//!
//! A small write reads the chunks it keeps (the touched data chunks at the primary,
//! each parity's kept slot at its holder) and these are, more often than not, what the
//! previous small write of that stripe wrote: sequential small writes fill one stripe
//! chunk by chunk, and a guest's hot blocks are written again and again. Without this
//! each of those reads is a disk request (for 4:2, 3 of a small write's 6).
//!
//! Only the write path asks (FragDelta's kept slot, FragRead with `FLAG_RECENT`); client
//! reads, `dog vdi check` and recovery read the disk, so bit rot there is still found.
//! An entry is only an answer for a slot whose header entry names its version and whose
//! CRC32C it matches (see `frag_read`): a stale entry (the slot was rewritten, the
//! fragment removed and made again) is a miss, never a wrong answer.

use std::collections::{HashMap, VecDeque};

/// Bytes of chunks a shard keeps (8192 chunks of 4 KiB): enough for the stripes a
/// few seconds of small writes touch on one shard.
pub(super) const RECENT_BYTES: usize = 32 << 20;

/// The last chunk a single-stripe write left in each `(fragment key, stripe)`, oldest
/// dropped first once more than `limit` bytes are kept.
pub(super) struct Recent {
    chunks: HashMap<(u64, u64), (u64, Vec<u8>)>,
    /// Insertion order: `(key, stripe, version)`; an item whose entry has since been
    /// replaced by a newer version is stale and skipped.
    order: VecDeque<(u64, u64, u64)>,
    bytes: usize,
    limit: usize,
}

impl Recent {
    pub(super) fn new(limit: usize) -> Self {
        Recent {
            chunks: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    /// Remembers `chunk` as stripe `stripe` of fragment `key` at `version`.
    pub(super) fn put(&mut self, key: u64, stripe: u64, version: u64, chunk: &[u8]) {
        if chunk.len() > self.limit {
            return;
        }
        if let Some((_, old)) = self.chunks.insert((key, stripe), (version, chunk.to_vec())) {
            self.bytes -= old.len();
        }
        self.bytes += chunk.len();
        self.order.push_back((key, stripe, version));
        while self.bytes > self.limit {
            let Some((k, s, v)) = self.order.pop_front() else {
                break;
            };
            if self.chunks.get(&(k, s)).is_some_and(|(cv, _)| *cv == v) {
                if let Some((_, c)) = self.chunks.remove(&(k, s)) {
                    self.bytes -= c.len();
                }
            }
        }
        // Rewrites of hot stripes leave stale items behind: keep the queue within
        // twice the live entries.
        if self.order.len() > 2 * self.chunks.len() + 64 {
            let chunks = &self.chunks;
            self.order
                .retain(|(k, s, v)| chunks.get(&(*k, *s)).is_some_and(|(cv, _)| cv == v));
        }
    }

    /// The chunk remembered for stripe `stripe` of `key` if it is at `version`.
    pub(super) fn get(&self, key: u64, stripe: u64, version: u64) -> Option<&[u8]> {
        match self.chunks.get(&(key, stripe)) {
            Some((v, c)) if *v == version => Some(c),
            _ => None,
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_the_version_it_was_given() {
        let mut r = Recent::new(1 << 20);
        r.put(7, 3, 10, &[1; 16]);
        assert_eq!(r.get(7, 3, 10), Some(&[1u8; 16][..]));
        assert_eq!(r.get(7, 3, 9), None);
        assert_eq!(r.get(7, 4, 10), None);
        // A newer write of the stripe replaces it.
        r.put(7, 3, 11, &[2; 16]);
        assert_eq!(r.get(7, 3, 10), None);
        assert_eq!(r.get(7, 3, 11), Some(&[2u8; 16][..]));
        assert_eq!(r.bytes(), 16);
    }

    #[test]
    fn drops_the_oldest_beyond_its_limit_and_keeps_its_queue_bounded() {
        let mut r = Recent::new(64);
        for s in 0..4 {
            r.put(1, s, 5, &[s as u8; 16]);
        }
        // Rewriting stripe 0 makes it the newest; the next put drops stripe 1.
        r.put(1, 0, 6, &[9; 16]);
        r.put(1, 4, 5, &[4; 16]);
        assert_eq!(r.get(1, 1, 5), None);
        for s in [0, 2, 3, 4] {
            assert!(
                r.get(1, s, if s == 0 { 6 } else { 5 }).is_some(),
                "stripe {s}"
            );
        }
        assert_eq!(r.bytes(), 64);
        // One hot stripe written many times: the queue does not grow with it.
        for v in 10..10_000 {
            r.put(2, 0, v, &[1; 16]);
        }
        assert!(r.order.len() <= 2 * r.chunks.len() + 64);
        assert!(r.bytes() <= 64);
        // A chunk larger than the whole budget is not kept.
        r.put(3, 0, 1, &[0; 65]);
        assert_eq!(r.get(3, 0, 1), None);
    }
}
