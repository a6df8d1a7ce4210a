//! The sled engine with group commit.
//!
//! sled makes every `apply_batch` atomic by sealing its log buffer, which costs a buffer
//! write per batch, and durability costs an fsync per flush. Both are paid once per
//! *round* instead of once per write: `apply` puts a write's operations into an in-memory
//! overlay (immediately visible to readers, in order) and a queue; one committer thread
//! repeatedly takes everything queued, applies it to sled as ONE atomic batch, flushes,
//! and then wakes every writer whose operations that round covered. A writer acknowledges
//! its client only after that (see [`Kv::durable`]), so a 2xx still means "on disk", and a
//! crash loses only unacknowledged rounds, whole.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use tokio::sync::oneshot;

use super::kv::{Kv, KvOp, KvStore};
use super::{Durable, StoreError};

type Waiter = (u64, oneshot::Sender<Result<(), String>>);

#[derive(Default)]
struct Pending {
    /// Latest queued value of every key with writes not yet applied to sled, with the
    /// generation of that write (`None`: deleted).
    overlay: BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)>,
    /// Operations not yet taken by the committer, in order.
    queue: Vec<KvOp>,
    /// Generation of the last queued operation.
    queued_gen: u64,
    /// Every operation up to this generation is applied and flushed.
    flushed_gen: u64,
    /// Writers waiting for a generation to be flushed.
    waiters: Vec<Waiter>,
    stop: bool,
}

struct Shared {
    db: sled::Db,
    pending: Mutex<Pending>,
    /// Signals the committer: work is queued, a waiter registered, or stop.
    wake: Condvar,
    /// Signalled by the committer at the end of every round.
    round_done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct SledKv {
    shared: Arc<Shared>,
    committer: Option<thread::JoinHandle<()>>,
}

/// sled's page cache when nothing else is configured.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// The sled-backed store.
pub type SledStore = KvStore<SledKv>;

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
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
            .map_err(io)?;
        let shared = Arc::new(Shared {
            db,
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            round_done: Condvar::new(),
        });
        let worker = shared.clone();
        let committer = thread::Builder::new()
            .name("skolgrind-commit".into())
            .spawn(move || commit_loop(&worker))
            .map_err(|e| StoreError::Io(e.to_string()))?;
        Ok(Self {
            shared,
            committer: Some(committer),
        })
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.shared.db.size_on_disk().map_err(io)
    }

    /// Calls `f` for the overlay entries in `(from, to)`, with sled's entries merged in key
    /// order; an overlay entry hides sled's entry for the same key.
    fn merged_scan(
        &self,
        from: Bound<&[u8]>,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let overlay: Vec<(Vec<u8>, Option<Vec<u8>>)> = self
            .shared
            .lock()
            .overlay
            .range::<[u8], _>((from, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect();
        let mut pending = overlay.into_iter().peekable();
        for item in self.shared.db.range::<&[u8], _>((from, Bound::Unbounded)) {
            let (k, v) = item.map_err(io)?;
            if !k.starts_with(prefix) {
                break;
            }
            // Overlay keys before this one come first.
            while let Some((ok, ov)) = pending.next_if(|(ok, _)| ok.as_slice() < k.as_ref()) {
                if let Some(ov) = ov {
                    if !f(&ok, &ov) {
                        return Ok(());
                    }
                }
            }
            match pending.next_if(|(ok, _)| ok.as_slice() == k.as_ref()) {
                Some((ok, Some(ov))) => {
                    if !f(&ok, &ov) {
                        return Ok(());
                    }
                }
                Some((_, None)) => {}
                None => {
                    if !f(&k, &v) {
                        return Ok(());
                    }
                }
            }
        }
        for (ok, ov) in pending {
            if let Some(ov) = ov {
                if !f(&ok, &ov) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

impl Drop for SledKv {
    fn drop(&mut self) {
        // The committer finishes what is queued, then exits; joining it releases its
        // handle on the database so the directory can be opened again at once.
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(h) = self.committer.take() {
            let _ = h.join();
        }
        if let Err(e) = self.shared.db.flush() {
            tracing::error!(error = %e, "final store flush failed");
        }
    }
}

/// One round at a time: take the queue, apply it as one batch, flush, wake its writers.
fn commit_loop(shared: &Shared) {
    loop {
        let (ops, round_gen) = {
            let mut p = shared.lock();
            while p.queue.is_empty() && p.waiters.is_empty() && !p.stop {
                p = shared.wake.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            if p.stop && p.queue.is_empty() && p.waiters.is_empty() {
                return;
            }
            (std::mem::take(&mut p.queue), p.queued_gen)
        };
        let result = apply_and_flush(&shared.db, ops);
        if let Err(e) = &result {
            tracing::error!(error = %e, "store commit failed");
        }
        let mut p = shared.lock();
        // Applied (or, on failure, lost): either way the overlay must stop showing them.
        p.overlay.retain(|_, (gen, _)| *gen > round_gen);
        if result.is_ok() {
            p.flushed_gen = round_gen;
        }
        let waiters = std::mem::take(&mut p.waiters);
        for (target, tx) in waiters {
            if target <= round_gen {
                let _ = tx.send(result.clone());
            } else {
                p.waiters.push((target, tx));
            }
        }
        drop(p);
        shared.round_done.notify_all();
    }
}

fn apply_and_flush(db: &sled::Db, ops: Vec<KvOp>) -> Result<(), String> {
    if !ops.is_empty() {
        let mut batch = sled::Batch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        db.apply_batch(batch).map_err(|e| e.to_string())?;
    }
    db.flush().map(|_| ()).map_err(|e| e.to_string())
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some((_, v)) = self.shared.lock().overlay.get(key) {
            return Ok(v.clone());
        }
        Ok(self.shared.db.get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.merged_scan(Bound::Included(prefix), prefix, f)
    }

    fn scan_after(
        &self,
        prefix: &[u8],
        after: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.merged_scan(Bound::Excluded(after), prefix, f)
    }

    fn apply(&self, ops: Vec<KvOp>) -> Result<(), StoreError> {
        let mut p = self.shared.lock();
        if p.stop {
            return Err(StoreError::Io("store is shutting down".into()));
        }
        for (k, v) in ops {
            p.queued_gen += 1;
            let gen = p.queued_gen;
            p.overlay.insert(k.clone(), (gen, v.clone()));
            p.queue.push((k, v));
        }
        drop(p);
        self.shared.wake.notify_one();
        Ok(())
    }

    fn next_seq(&self) -> Result<u64, StoreError> {
        // generate_id is monotonic across restarts (it may skip values after a crash).
        self.shared.db.generate_id().map(|n| n + 1).map_err(io)
    }

    fn durable(&self) -> Durable {
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.shared.lock();
            if p.queued_gen <= p.flushed_gen {
                return Durable::ready();
            }
            let target = p.queued_gen;
            p.waiters.push((target, tx));
        }
        self.shared.wake.notify_one();
        Durable::pending(async move {
            match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(StoreError::Io(e)),
                Err(_) => Err(StoreError::Io("store committer stopped".into())),
            }
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Wait (blocking this thread) until the committer has taken and finished every
        // round queued so far, then flush whatever else sled holds.
        let mut p = self.shared.lock();
        while !p.stop && (!p.queue.is_empty() || p.flushed_gen < p.queued_gen) {
            self.shared.wake.notify_one();
            p = self
                .shared
                .round_done
                .wait(p)
                .unwrap_or_else(|e| e.into_inner());
        }
        drop(p);
        self.shared.db.flush().map(|_| ()).map_err(io)
    }
}

impl SledStore {
    pub fn open_dir(dir: &Path) -> Result<Self, StoreError> {
        Self::open_dir_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens the store (building read-side indexes missing from older data).
    pub fn open_dir_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        Self::open_dir_with_caches(dir, cache_bytes, super::kv::DEFAULT_MODEL_CACHE_BYTES)
    }

    /// Opens with both caches sized: sled's page cache and the decoded-model cache.
    pub fn open_dir_with_caches(
        dir: &Path,
        cache_bytes: u64,
        model_cache_bytes: u64,
    ) -> Result<Self, StoreError> {
        let s = KvStore::with_model_cache(
            SledKv::open_with_cache(dir, cache_bytes)?,
            model_cache_bytes,
        );
        s.ensure_indexes()?;
        Ok(s)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect(kv: &SledKv, prefix: &[u8], after: Option<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let mut f = |k: &[u8], v: &[u8]| {
            out.push((k.to_vec(), v.to_vec()));
            true
        };
        match after {
            Some(a) => kv.scan_after(prefix, a, &mut f).unwrap(),
            None => kv.scan(prefix, &mut f).unwrap(),
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Reads merge the not-yet-committed overlay with sled exactly like a plain ordered
        /// map, before and after the round is durable, and across a reopen.
        #[test]
        fn overlay_reads_match_a_model(rounds in proptest::collection::vec(
            proptest::collection::vec((0u8..12, proptest::option::of(0u8..5)), 1..8), 1..6)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            {
                let kv = SledKv::open(dir.path()).unwrap();
                for (i, ops) in rounds.iter().enumerate() {
                    let ops: Vec<KvOp> = ops.iter().map(|(k, v)| (format!("p/{k:02}").into_bytes(), v.map(|v| vec![v]))).collect();
                    for (k, v) in &ops {
                        match v { Some(v) => { model.insert(k.clone(), v.clone()); } None => { model.remove(k); } }
                    }
                    kv.apply(ops).unwrap();
                    let expected: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    prop_assert_eq!(collect(&kv, b"p/", None), expected.clone());
                    let after: Vec<_> = expected.iter().filter(|(k, _)| k.as_slice() > b"p/05".as_slice()).cloned().collect();
                    prop_assert_eq!(collect(&kv, b"p/", Some(b"p/05")), after);
                    for k in 0u8..12 {
                        let key = format!("p/{k:02}").into_bytes();
                        prop_assert_eq!(kv.get(&key).unwrap(), model.get(&key).cloned());
                    }
                    if i % 2 == 0 {
                        rt.block_on(kv.durable().wait()).unwrap();
                        prop_assert_eq!(collect(&kv, b"p/", None), expected);
                    }
                }
                rt.block_on(kv.durable().wait()).unwrap();
            }
            let kv = reopen(dir.path());
            let expected: Vec<_> = model.into_iter().collect();
            prop_assert_eq!(collect(&kv, b"p/", None), expected);
        }
    }
}
