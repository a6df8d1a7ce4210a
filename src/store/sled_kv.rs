//! The sled engine, behind the group committer ([`super::group_commit`]): each round is
//! one atomic `apply_batch` (sled seals its log buffer once for it) and one flush.

use std::ops::Bound;
use std::path::Path;

use super::group_commit::{Engine, GroupCommitKv};
use super::kv::{KvOp, KvStore};
use super::StoreError;

/// sled behind the group committer.
pub struct SledEngine {
    db: sled::Db,
}

/// The sled engine with group commit.
pub type SledKv = GroupCommitKv<SledEngine>;

/// sled's page cache when nothing else is configured.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// The sled-backed store.
pub type SledStore = KvStore<SledKv>;

fn text(e: sled::Error) -> String {
    e.to_string()
}

impl SledKv {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens with a page cache of `cache_bytes` (sled's cache is the bulk of the memory
    /// the process uses; the login benchmark measures with a smaller one).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| StoreError::Io(e.to_string()))?;
        GroupCommitKv::start(SledEngine { db })
    }
}

impl Engine for SledEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(self.db.get(key).map_err(text)?.map(|v| v.to_vec()))
    }

    fn scan_from(
        &self,
        from: Bound<&[u8]>,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), String> {
        for item in self.db.range::<&[u8], _>((from, Bound::Unbounded)) {
            let (k, v) = item.map_err(text)?;
            if !k.starts_with(prefix) || !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    /// One atomic batch (sled seals its log buffer once for it), then one flush.
    fn commit(&self, ops: Vec<KvOp>) -> Result<(), String> {
        let mut batch = sled::Batch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.db.apply_batch(batch).map_err(text)?;
        self.flush()
    }

    fn next_seq(&self) -> Result<u64, String> {
        // generate_id is monotonic across restarts (it may skip values after a crash).
        self.db.generate_id().map(|n| n + 1).map_err(text)
    }

    fn advance_seq(&self, floor: u64) -> Result<(), String> {
        // sled's id generator only counts up; it persists its position periodically, so
        // this costs a counter increment per skipped number (fast even for millions).
        while self.next_seq()? <= floor {}
        Ok(())
    }

    fn flush(&self) -> Result<(), String> {
        self.db.flush().map(|_| ()).map_err(text)
    }
}

impl SledStore {
    /// Opens the store with the default caches.
    pub fn open_dir(dir: &Path) -> Result<Self, StoreError> {
        Self::open_dir_with_caches(
            dir,
            DEFAULT_CACHE_BYTES,
            super::kv::DEFAULT_MODEL_CACHE_BYTES,
        )
    }

    /// Opens with both caches sized: sled's page cache and the decoded-model cache.
    pub fn open_dir_with_caches(
        dir: &Path,
        cache_bytes: u64,
        model_cache_bytes: u64,
    ) -> Result<Self, StoreError> {
        KvStore::open_on(
            SledKv::open_with_cache(dir, cache_bytes)?,
            model_cache_bytes,
        )
    }
}

/// Opens a directory that a just-dropped handle used: sled's background threads may hold
/// its file lock for a moment after the last handle is gone.
#[cfg(test)]
pub(crate) fn reopen(dir: &Path) -> SledKv {
    for _ in 0..100 {
        if let Ok(kv) = SledKv::open(dir) {
            return kv;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    SledKv::open(dir).unwrap()
}
