//! The sled engine, with group commit: writers apply their batch, then wait for a flush
//! that started after their batch was applied. One background thread runs the flushes;
//! every writer that queued while a flush was running shares the next one.

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use tokio::sync::oneshot;

use super::kv::{Kv, KvOp, KvStore};
use super::{Durable, StoreError};

type Waiter = oneshot::Sender<Result<(), String>>;

pub struct SledKv {
    db: sled::Db,
    /// The only sender of the flusher's channel. Durability handles share it (not a clone
    /// of the sender), so taking it out at drop closes the channel even while handles
    /// that were never awaited are still alive.
    flush_requests: Arc<Mutex<Option<mpsc::Sender<Waiter>>>>,
    flusher: Option<thread::JoinHandle<()>>,
}

impl Drop for SledKv {
    fn drop(&mut self) {
        // Closing the channel ends the flush thread; joining it releases its handle on the
        // database so the directory can be opened again at once.
        self.flush_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "final store flush failed");
        }
    }
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
        let (tx, rx) = mpsc::channel::<Waiter>();
        let flusher = db.clone();
        let handle = thread::Builder::new()
            .name("skolgrind-flush".into())
            .spawn(move || group_commit_loop(&flusher, &rx))
            .map_err(|e| StoreError::Io(e.to_string()))?;
        Ok(Self {
            db,
            flush_requests: Arc::new(Mutex::new(Some(tx))),
            flusher: Some(handle),
        })
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(io)
    }
}

/// Waits for flush requests; each flush answers every request queued before it started.
fn group_commit_loop(db: &sled::Db, rx: &mpsc::Receiver<Waiter>) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "store flush failed");
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        for item in self.db.scan_prefix(prefix) {
            let (k, v) = item.map_err(io)?;
            if !f(&k, &v) {
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
        use std::ops::Bound;
        for item in self
            .db
            .range::<&[u8], _>((Bound::Excluded(after), Bound::Unbounded))
        {
            let (k, v) = item.map_err(io)?;
            if !k.starts_with(prefix) || !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, ops: Vec<KvOp>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.db.apply_batch(batch).map_err(io)
    }

    fn next_seq(&self) -> Result<u64, StoreError> {
        // generate_id is monotonic across restarts (it may skip values after a crash).
        self.db.generate_id().map(|n| n + 1).map_err(io)
    }

    fn durable(&self) -> Durable {
        // The flush is requested when the handle is first awaited, not now: a writer that
        // never waits (a bulk load that waits once per chunk) costs the flusher nothing,
        // and a flush requested later still starts after this batch was applied.
        let requests = self.flush_requests.clone();
        Durable::pending(async move {
            let (tx, rx) = oneshot::channel();
            let sent = requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(|s| s.send(tx).is_ok());
            if !sent {
                return Err(StoreError::Io("flush thread stopped".into()));
            }
            match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(StoreError::Io(e)),
                Err(_) => Err(StoreError::Io("flush thread stopped".into())),
            }
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(io)
    }
}

impl SledStore {
    pub fn open_dir(dir: &Path) -> Result<Self, StoreError> {
        Self::open_dir_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens the store (building read-side indexes missing from older data).
    pub fn open_dir_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let s = KvStore::new(SledKv::open_with_cache(dir, cache_bytes)?);
        s.ensure_indexes()?;
        Ok(s)
    }
}
