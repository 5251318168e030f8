//! Bounded recent-set of events already seen, to drop the API server's re-sent batches.
//!
//! The webhook backend retries a batch after a timeout even when we processed it, so the
//! same events arrive twice. The key is the cluster plus a 128-bit hash of the event's full
//! text: an exact re-send is byte-identical, while two *different* requests that share a
//! client-supplied `Audit-ID` header (auditID is not trustworthy as unique) are not
//! mistaken for each other, so an attacker cannot hide a request behind a recycled ID.

use std::collections::{HashSet, VecDeque};

use parking_lot::Mutex;
use xxhash_rust::xxh3::Xxh3;

/// A bounded set of recently seen event keys (FIFO eviction).
#[derive(Debug)]
pub struct Dedup {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    set: HashSet<u128>,
    order: VecDeque<u128>,
}

impl Dedup {
    /// A set remembering the last `capacity` events (0 disables de-duplication).
    pub fn new(capacity: usize) -> Dedup {
        Dedup {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    /// How many events it remembers.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The key of an event: cluster, auditID, stage and the event's text.
    pub fn key(cluster: Option<&str>, audit_id: &str, stage: &str, raw: &str) -> u128 {
        let mut h = Xxh3::new();
        for part in [cluster.unwrap_or(""), audit_id, stage] {
            h.update(part.as_bytes());
            h.update(&[0]);
        }
        h.update(raw.as_bytes());
        h.digest128()
    }

    /// Records `key`; returns `true` when it was already present (a duplicate).
    pub fn seen(&self, key: u128) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let mut g = self.inner.lock();
        if !g.set.insert(key) {
            return true;
        }
        g.order.push_back(key);
        if g.order.len() > self.capacity {
            if let Some(old) = g.order.pop_front() {
                g.set.remove(&old);
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_exact() {
        let d = Dedup::new(2);
        let a = Dedup::key(None, "a", "ResponseComplete", "{1}");
        let a2 = Dedup::key(None, "a", "ResponseComplete", "{2}");
        let b = Dedup::key(None, "b", "ResponseComplete", "{1}");
        let c = Dedup::key(None, "c", "ResponseComplete", "{1}");
        assert!(!d.seen(a));
        assert!(d.seen(a));
        assert!(
            !d.seen(a2),
            "same auditID, different content is not a duplicate"
        );
        assert!(!d.seen(b));
        assert!(!d.seen(c));
        assert!(!d.seen(a), "evicted after capacity");
        let other_cluster = Dedup::key(Some("x"), "a", "ResponseComplete", "{1}");
        assert_ne!(a, other_cluster);
    }
}
