//! An in-memory engine for unit tests and the conformance suite. Not durable by nature.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use super::kv::{Kv, KvOp, KvStore};
use super::{Durable, StoreError};

#[derive(Default)]
pub struct MemoryKv {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    seq: AtomicU64,
}

pub type MemoryStore = KvStore<MemoryKv>;

impl MemoryStore {
    pub fn in_memory() -> Self {
        KvStore::new(MemoryKv::default())
    }
}

impl Kv for MemoryKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned())
    }

    fn scan(
        &self,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        for (k, v) in map.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded)) {
            if !k.starts_with(prefix) || !f(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn scan_after(
        &self,
        prefix: &[u8],
        after: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        for (k, v) in map.range::<[u8], _>((Bound::Excluded(after), Bound::Unbounded)) {
            if !k.starts_with(prefix) || !f(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, ops: Vec<KvOp>) -> Result<(), StoreError> {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        for (k, v) in ops {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }

    fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.seq.fetch_add(1, Ordering::SeqCst) + 1)
    }

    fn durable(&self) -> Durable {
        Durable::ready()
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
