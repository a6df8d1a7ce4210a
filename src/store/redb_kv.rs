//! The redb engine, behind the group committer ([`super::group_commit`]): each round is
//! one write transaction committed with immediate durability (one fsync).
//!
//! Why a second engine: sled keeps in-memory state for every page of its tree (a leaf
//! holds at most 16 keys) and reads a page back as its base plus every delta written
//! since, one read each. At a million persons (about 9M keys) that is ~390 MB before the
//! first request and 20–40 µs per uncached read. redb is a copy-on-write B-tree of 4 KiB
//! pages: nothing per key in memory beyond its bounded page cache, and an uncached read is
//! one page read. The key layout ([`super::kv`]) is the same for both.
//!
//! Sequence numbers ([`Engine::next_seq`]) are handed out from blocks reserved durably in
//! a metadata table, so they keep increasing across restarts (a crash skips the rest of
//! the reserved block).

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use redb::{Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition};

use super::group_commit::{Engine, GroupCommitKv};
use super::kv::{KvOp, KvStore};
use super::StoreError;

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The metadata entry holding the end of the reserved sequence block.
const SEQ_RESERVED: &str = "seq_reserved";
/// Sequence numbers reserved per durable metadata write.
const SEQ_BLOCK: u64 = 4096;

/// The database file inside the data directory.
pub const FILE_NAME: &str = "skolgrind.redb";

/// redb's page cache when nothing else is configured (see
/// [`super::StoreEngine::default_cache_bytes`]).
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// The decoded-object cache in front of redb when nothing else is configured.
pub const DEFAULT_MODEL_CACHE_BYTES: u64 = 320 * 1024 * 1024;

type DataTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

pub struct RedbEngine {
    /// The data table as of the last commit, shared by every read until the next one.
    /// Opening a read transaction and its table costs about as much as an uncached read
    /// (a lock in the transaction tracker and a lookup in the table tree), and a login
    /// makes about eight reads. Declared before `db`, so it is dropped first and the
    /// database closes with no read transaction of ours open.
    snapshot: ArcSwapOption<DataTable>,
    /// Held while a snapshot is opened and while a commit drops it, so a snapshot opened
    /// before a commit finished is never kept after it (see [`RedbEngine::table`]).
    refresh: Mutex<()>,
    db: Database,
    /// (next number to hand out, end of the durably reserved block)
    seq: Mutex<(u64, u64)>,
}

/// The redb engine with group commit.
pub type RedbKv = GroupCommitKv<RedbEngine>;

/// The redb-backed store.
pub type RedbStore = KvStore<RedbKv>;

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The database file of a data directory.
pub fn file_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

impl RedbKv {
    /// Opens (or creates) the database file in `dir` with a page cache of `cache_bytes`.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let open = || -> Result<RedbEngine, String> {
            std::fs::create_dir_all(dir).map_err(text)?;
            let db = Database::builder()
                .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
                .set_repair_callback(|session| {
                    tracing::warn!(
                        progress = session.progress(),
                        "store: repairing the database file after an unclean shutdown"
                    );
                })
                .create(file_in(dir))
                .map_err(text)?;
            // Both tables exist from the start, so readers never meet a missing table.
            let mut tx = db.begin_write().map_err(text)?;
            tx.set_quick_repair(true);
            let reserved = {
                tx.open_table(DATA).map_err(text)?;
                let meta = tx.open_table(META).map_err(text)?;
                let reserved = meta.get(SEQ_RESERVED).map_err(text)?.map(|v| v.value());
                reserved.unwrap_or(0)
            };
            tx.commit().map_err(text)?;
            Ok(RedbEngine {
                db,
                // Everything up to the end of the last reserved block may have been used.
                seq: Mutex::new((reserved + 1, reserved)),
                snapshot: ArcSwapOption::empty(),
                refresh: Mutex::new(()),
            })
        };
        GroupCommitKv::start(open().map_err(StoreError::Io)?)
    }

    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }
}

impl RedbStore {
    /// Opens the store in `dir` (building read-side indexes missing from older data).
    pub fn open_dir_with_caches(
        dir: &Path,
        cache_bytes: u64,
        model_cache_bytes: u64,
    ) -> Result<Self, StoreError> {
        KvStore::open_on(
            RedbKv::open_with_cache(dir, cache_bytes)?,
            model_cache_bytes,
        )
    }

    pub fn open_dir(dir: &Path) -> Result<Self, StoreError> {
        Self::open_dir_with_caches(dir, DEFAULT_CACHE_BYTES, DEFAULT_MODEL_CACHE_BYTES)
    }
}

impl RedbEngine {
    /// The data table as of the last commit.
    ///
    /// Why a shared snapshot still reads every acknowledged write: [`RedbEngine::commit`]
    /// drops the snapshot before it returns, and the group committer takes a round's
    /// writes out of its overlay only after that. A reader looks in the overlay first and
    /// takes the snapshot after, so a write it does not find in the overlay is either not
    /// yet applied (the read comes before it) or in every snapshot it can get.
    fn table(&self) -> Result<Arc<DataTable>, String> {
        if let Some(t) = self.snapshot.load_full() {
            return Ok(t);
        }
        let _refresh = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = self.snapshot.load_full() {
            return Ok(t);
        }
        let table = Arc::new(
            self.db
                .begin_read()
                .map_err(text)?
                .open_table(DATA)
                .map_err(text)?,
        );
        self.snapshot.store(Some(table.clone()));
        Ok(table)
    }

    /// Durably records that sequence numbers up to `end` may be in use; returns `end`.
    fn reserve_until(&self, end: u64) -> Result<u64, String> {
        let mut tx = self.db.begin_write().map_err(text)?;
        tx.set_durability(Durability::Immediate).map_err(text)?;
        tx.set_quick_repair(true);
        {
            let mut meta = tx.open_table(META).map_err(text)?;
            meta.insert(SEQ_RESERVED, end).map_err(text)?;
        }
        tx.commit().map_err(text)?;
        Ok(end)
    }
}

impl Engine for RedbEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let table = self.table()?;
        Ok(table.get(key).map_err(text)?.map(|v| v.value().to_vec()))
    }

    fn scan_from(
        &self,
        from: Bound<&[u8]>,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), String> {
        let table = self.table()?;
        let range: (Bound<&[u8]>, Bound<&[u8]>) = (from, Bound::Unbounded);
        for item in table.range::<&[u8]>(range).map_err(text)? {
            let (k, v) = item.map_err(text)?;
            let (k, v) = (k.value(), v.value());
            if !k.starts_with(prefix) || !f(k, v) {
                break;
            }
        }
        Ok(())
    }

    /// One write transaction, committed with immediate durability. Quick repair (the
    /// allocator state saved with each commit, two-phase commit) makes reopening after a
    /// crash almost instant instead of a walk over the whole file.
    fn commit(&self, ops: Vec<KvOp>) -> Result<(), String> {
        let mut tx = self.db.begin_write().map_err(text)?;
        tx.set_quick_repair(true);
        {
            let mut table = tx.open_table(DATA).map_err(text)?;
            for (k, v) in ops {
                match v {
                    Some(v) => {
                        table.insert(k.as_slice(), v.as_slice()).map_err(text)?;
                    }
                    None => {
                        table.remove(k.as_slice()).map_err(text)?;
                    }
                }
            }
        }
        let committed = tx.commit().map_err(text);
        // Also after a failed commit: what it left is for the next snapshot to show.
        let _refresh = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
        self.snapshot.store(None);
        committed
    }

    fn next_seq(&self) -> Result<u64, String> {
        let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        let (next, reserved) = *seq;
        if next > reserved {
            // Reserve the next block durably before handing out any number from it.
            seq.1 = self.reserve_until(next + SEQ_BLOCK - 1)?;
        }
        seq.0 = next + 1;
        Ok(next)
    }

    fn advance_seq(&self, floor: u64) -> Result<(), String> {
        let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        if seq.0 <= floor {
            // Numbers up to `floor` count as used: reserve from past it.
            seq.1 = self.reserve_until(floor)?;
            seq.0 = floor + 1;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), String> {
        // Every commit is already durable.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::Kv;

    /// Readers on other threads keep taking (and holding) snapshots while one thread
    /// writes, waits for the commit, and reads back: once a write is committed and gone
    /// from the overlay, every read must find it. Fails if a commit leaves the snapshot
    /// of before it in place.
    #[test]
    fn a_committed_write_is_read_back_while_others_hold_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Arc::new(RedbKv::open(dir.path()).unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (kv, stop) = (kv.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = kv.get(format!("k{}", (n + r) % 300).as_bytes()).unwrap();
                        n += 1;
                    }
                })
            })
            .collect();
        for i in 0..300u32 {
            let (k, v) = (format!("k{i}"), format!("v{i}"));
            kv.apply(vec![(k.clone().into_bytes(), Some(v.clone().into_bytes()))])
                .unwrap();
            kv.flush().unwrap();
            assert_eq!(kv.get(k.as_bytes()).unwrap(), Some(v.into_bytes()), "{k}");
            let mut seen = 0;
            kv.scan(b"k", &mut |_, _| {
                seen += 1;
                true
            })
            .unwrap();
            assert_eq!(seen, i + 1, "scan after writing {k}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
    }

    #[test]
    fn sequence_numbers_keep_increasing_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut last = 0;
        for _ in 0..3 {
            let kv = RedbKv::open(dir.path()).unwrap();
            for _ in 0..(SEQ_BLOCK + 10) {
                let n = kv.next_seq().unwrap();
                assert!(n > last, "{n} after {last}");
                last = n;
            }
        }
    }
}
