//! First-seen baselines (`type: new_terms`, an audithawk extension to Sigma correlations).
//!
//! A baseline remembers, per correlation, every tuple of field values (hashed to 128 bits,
//! with the cluster) and when it was last seen. During the learning period, which starts at
//! the earliest event the correlation has seen, tuples are only recorded. After it, a tuple
//! that is absent, or was last seen `history` or longer ago, raises an alert and is recorded.
//! Tuples not seen for `history` are forgotten by the sweep, which bounds memory together
//! with the per-rule group cap.

use serde::{Deserialize, Serialize};

/// When a tuple was last seen, and in which cluster (for the per-cluster watermark).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Last time seen (µs).
    pub last: i64,
    /// Interned cluster id.
    pub cluster: u16,
}

/// Bytes of one baseline entry in the hash table (key + value + control byte, at the
/// table's typical load).
pub const ENTRY_BYTES: usize = (16 + std::mem::size_of::<Seen>() + 1) * 8 / 7;

/// The tuples of one correlation held by one shard.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// tuple hash -> last seen.
    pub seen: super::state::KeyMap<Seen>,
}

impl Baseline {
    /// Records tuple `key` at time `t`. Returns whether it is new: unseen (or forgotten)
    /// and at or after `learning_end`. Late (out-of-order) sightings only move `last`
    /// forward.
    pub fn observe(
        &mut self,
        key: u128,
        t: i64,
        cluster: u16,
        learning_end: i64,
        history: i64,
    ) -> bool {
        match self.seen.get_mut(&key) {
            Some(s) => {
                let forgotten = s.last <= t.saturating_sub(history);
                s.last = s.last.max(t);
                forgotten && t >= learning_end
            }
            None => {
                self.seen.insert(key, Seen { last: t, cluster });
                t >= learning_end
            }
        }
    }

    /// Forgets tuples last seen `history` or longer before their cluster's watermark.
    /// Returns how many were forgotten.
    pub fn expire(&mut self, wm: impl Fn(u16) -> i64, history: i64) -> usize {
        let before = self.seen.len();
        self.seen
            .retain(|_, s| s.last > wm(s.cluster).saturating_sub(history));
        before - self.seen.len()
    }

    /// Evicts the stalest `n` tuples (memory cap). Returns how many were evicted.
    pub fn evict_stalest(&mut self, n: usize) -> usize {
        if n == 0 || self.seen.is_empty() {
            return 0;
        }
        let mut times: Vec<i64> = self.seen.values().map(|s| s.last).collect();
        let k = n.min(times.len()) - 1;
        let (_, cut, _) = times.select_nth_unstable(k);
        let cut = *cut;
        let mut left = n;
        self.seen.retain(|_, s| {
            if left > 0 && s.last <= cut {
                left -= 1;
                false
            } else {
                true
            }
        });
        n - left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: i64 = 86_400_000_000; // one day in µs

    #[test]
    fn learning_then_first_seen_then_history() {
        let mut b = Baseline::default();
        let learning_end = D;
        assert!(
            !b.observe(1, 0, 0, learning_end, 7 * D),
            "learning: recorded, not new"
        );
        assert!(!b.observe(1, D, 0, learning_end, 7 * D), "known tuple");
        assert!(
            b.observe(2, D, 0, learning_end, 7 * D),
            "new exactly at the end of learning"
        );
        assert!(!b.observe(2, D + 1, 0, learning_end, 7 * D));
        // Last seen exactly `history` ago: forgotten, new again.
        assert!(b.observe(1, 8 * D, 0, learning_end, 7 * D));
        assert!(
            !b.observe(2, 8 * D, 0, learning_end, 7 * D),
            "seen within history"
        );
    }

    #[test]
    fn expire_and_evict() {
        let mut b = Baseline::default();
        for k in 0..10u128 {
            b.observe(k, k as i64, 0, 0, 100);
        }
        assert_eq!(b.evict_stalest(3), 3);
        assert!(!b.seen.contains_key(&0) && !b.seen.contains_key(&2) && b.seen.contains_key(&3));
        assert_eq!(
            b.expire(|_| 105, 100),
            3,
            "tuples 3, 4, 5 are 100 µs or more before 105"
        );
        assert_eq!(b.seen.len(), 4);
    }
}
