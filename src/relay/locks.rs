//! Per-tag locks inside one process.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};

/// Serializes work on one target tag within the process: two deliveries moving the same tag
/// need not race each other's rounds here. Across processes nothing is shared: correctness
/// there comes from re-reading the source after every write (`Relay::converge`).
#[derive(Default)]
pub(super) struct TagLocks {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl TagLocks {
    fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = map.get(key).and_then(Weak::upgrade) {
            return l;
        }
        // Entries of finished work are dropped as the map grows.
        if map.len() > 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let l = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key.to_owned(), Arc::downgrade(&l));
        l
    }

    /// Take the locks of every key, each once and in a fixed order whatever the caller passes
    /// (a key named twice would otherwise wait for itself, and two callers taking the same
    /// keys in different orders for each other).
    pub(super) async fn acquire(
        &self,
        keys: impl IntoIterator<Item = String>,
    ) -> Vec<tokio::sync::OwnedMutexGuard<()>> {
        let keys: BTreeSet<String> = keys.into_iter().collect();
        let mut guards = Vec::with_capacity(keys.len());
        for k in keys {
            guards.push(self.get(&k).lock_owned().await);
        }
        guards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lock_key_named_twice_is_taken_once() {
        let locks = TagLocks::default();
        let keys = ["r/b:v1", "r/a:v1", "r/b:v1"].map(String::from);
        let held = tokio::time::timeout(std::time::Duration::from_secs(5), locks.acquire(keys))
            .await
            .expect("a repeated key must not wait for itself");
        assert_eq!(held.len(), 2);
        // Held until dropped: another taker waits, then gets it.
        let again = locks.acquire(["r/a:v1".to_owned()]);
        tokio::pin!(again);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut again)
                .await
                .is_err()
        );
        drop(held);
        assert_eq!(again.await.len(), 1);
    }
}
