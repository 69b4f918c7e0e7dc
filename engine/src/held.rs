//! Counts of things in progress on a shard, per key, held by guards.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::thread::LocalKey;

/// A shard-local count of things in progress per key.
pub(crate) type Counts<K> = RefCell<BTreeMap<K, usize>>;

/// Counts one thing in progress under `key` until dropped (done, failed, or the request
/// that ran it went away).
pub(crate) struct Held<K: Ord + Copy + 'static> {
    counts: &'static LocalKey<Counts<K>>,
    key: K,
}

impl<K: Ord + Copy + 'static> Held<K> {
    pub(crate) fn new(counts: &'static LocalKey<Counts<K>>, key: K) -> Held<K> {
        counts.with(|c| *c.borrow_mut().entry(key).or_default() += 1);
        Held { counts, key }
    }
}

impl<K: Ord + Copy + 'static> Drop for Held<K> {
    fn drop(&mut self) {
        self.counts.with(|c| {
            let mut c = c.borrow_mut();
            if let Some(n) = c.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    c.remove(&self.key);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static COUNTS: Counts<u32> = const { RefCell::new(BTreeMap::new()) };
    }

    #[test]
    fn a_key_is_counted_while_any_guard_lives() {
        let a = Held::new(&COUNTS, 7);
        let b = Held::new(&COUNTS, 7);
        drop(a);
        assert_eq!(COUNTS.with(|c| c.borrow().get(&7).copied()), Some(1));
        drop(b);
        assert!(COUNTS.with(|c| c.borrow().is_empty()));
    }
}
