//! Group commit over an on-disk engine, shared by every engine that persists a [`Kv`].
//!
//! Committing a write costs the engine a log write or a transaction, and durability costs
//! an fsync. Both are paid once per *round* instead of once per write: `apply` puts a
//! write's operations into an in-memory overlay (immediately visible to readers, in
//! order) and a queue; one committer thread repeatedly takes everything queued, commits it
//! to the engine as ONE atomic, durable unit, and then wakes every writer whose operations
//! that round covered. A writer acknowledges its client only after that (see
//! [`Kv::durable`]), so a 2xx still means "on disk", and a crash loses only
//! unacknowledged rounds, whole.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use tokio::sync::oneshot;

use super::kv::{Kv, KvOp};
use super::{Durable, StoreError};

/// What an engine offers the committer and the readers. Errors are the engine's own text
/// (logged, never sent to clients).
pub trait Engine: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String>;
    /// Calls `f` for the committed entries from `from` on whose key starts with `prefix`,
    /// in key order, until it returns `false`.
    fn scan_from(
        &self,
        from: Bound<&[u8]>,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), String>;
    /// Applies all operations as one atomic unit and makes them durable before returning.
    fn commit(&self, ops: Vec<KvOp>) -> Result<(), String>;
    /// A strictly increasing number that survives restarts (it may skip values).
    fn next_seq(&self) -> Result<u64, String>;
    /// Makes every later [`Engine::next_seq`] larger than `floor` (for a copied store,
    /// whose records carry the source's numbers).
    fn advance_seq(&self, floor: u64) -> Result<(), String>;
    /// Makes everything committed durable (a no-op for engines whose commit already is).
    fn flush(&self) -> Result<(), String>;
}

type Waiter = (u64, oneshot::Sender<Result<(), String>>);

#[derive(Default)]
struct Pending {
    /// Latest queued value of every key with writes not yet committed, with the
    /// generation of that write (`None`: deleted).
    overlay: BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)>,
    /// Operations not yet taken by the committer, in order.
    queue: Vec<KvOp>,
    /// Generation of the last queued operation.
    queued_gen: u64,
    /// Every operation up to this generation is committed and durable.
    flushed_gen: u64,
    /// Writers waiting for a generation to be durable.
    waiters: Vec<Waiter>,
    stop: bool,
}

struct Shared<E> {
    engine: E,
    pending: Mutex<Pending>,
    /// Signals the committer: work is queued, a waiter registered, or stop.
    wake: Condvar,
    /// Signalled by the committer at the end of every round.
    round_done: Condvar,
}

impl<E> Shared<E> {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A [`Kv`] on an [`Engine`] with group commit.
pub struct GroupCommitKv<E: Engine> {
    shared: Arc<Shared<E>>,
    committer: Option<thread::JoinHandle<()>>,
}

fn io(e: String) -> StoreError {
    StoreError::Io(e)
}

impl<E: Engine> GroupCommitKv<E> {
    /// Starts the committer thread for `engine`.
    pub fn start(engine: E) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            engine,
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

    /// See [`Engine::advance_seq`].
    pub fn advance_seq(&self, floor: u64) -> Result<(), StoreError> {
        self.shared.engine.advance_seq(floor).map_err(io)
    }

    /// Calls `f` for the overlay entries from `from`, with the engine's entries merged in
    /// key order; an overlay entry hides the engine's entry for the same key.
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
        let mut stopped = false;
        self.shared
            .engine
            .scan_from(from, prefix, &mut |k, v| {
                // Overlay keys before this one come first.
                while let Some((ok, ov)) = pending.next_if(|(ok, _)| ok.as_slice() < k) {
                    if let Some(ov) = ov {
                        if !f(&ok, &ov) {
                            stopped = true;
                            return false;
                        }
                    }
                }
                let go_on = match pending.next_if(|(ok, _)| ok.as_slice() == k) {
                    Some((ok, Some(ov))) => f(&ok, &ov),
                    Some((_, None)) => true,
                    None => f(k, v),
                };
                stopped = !go_on;
                go_on
            })
            .map_err(io)?;
        if stopped {
            return Ok(());
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

impl<E: Engine> Drop for GroupCommitKv<E> {
    fn drop(&mut self) {
        // The committer finishes what is queued, then exits; joining it releases its
        // handle on the engine so the directory can be opened again at once.
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(h) = self.committer.take() {
            let _ = h.join();
        }
        if let Err(e) = self.shared.engine.flush() {
            tracing::error!(error = %e, "final store flush failed");
        }
    }
}

/// One round at a time: take the queue, commit it as one unit, wake its writers.
fn commit_loop<E: Engine>(shared: &Shared<E>) {
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
        let result = if ops.is_empty() {
            shared.engine.flush()
        } else {
            shared.engine.commit(ops)
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "store commit failed");
        }
        let mut p = shared.lock();
        // Committed (or, on failure, lost): either way the overlay must stop showing them.
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

impl<E: Engine> Kv for GroupCommitKv<E> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some((_, v)) = self.shared.lock().overlay.get(key) {
            return Ok(v.clone());
        }
        self.shared.engine.get(key).map_err(io)
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
        self.shared.engine.next_seq().map_err(io)
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
        // round queued so far, then flush whatever else the engine holds.
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
        self.shared.engine.flush().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    fn collect(kv: &dyn Kv, prefix: &[u8], after: Option<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
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

    type Rounds = Vec<Vec<(u8, Option<u8>)>>;

    /// Reads merge the not-yet-committed overlay with the engine exactly like a plain
    /// ordered map, before and after the round is durable, and across a reopen.
    fn overlay_reads_match_a_model(
        open: &dyn Fn(&Path) -> Box<dyn Kv>,
        rounds: &Rounds,
    ) -> Result<(), TestCaseError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        {
            let kv = open(dir.path());
            for (i, ops) in rounds.iter().enumerate() {
                let ops: Vec<KvOp> = ops
                    .iter()
                    .map(|(k, v)| (format!("p/{k:02}").into_bytes(), v.map(|v| vec![v])))
                    .collect();
                for (k, v) in &ops {
                    match v {
                        Some(v) => {
                            model.insert(k.clone(), v.clone());
                        }
                        None => {
                            model.remove(k);
                        }
                    }
                }
                kv.apply(ops).unwrap();
                let expected: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                prop_assert_eq!(collect(&*kv, b"p/", None), expected.clone());
                let after: Vec<_> = expected
                    .iter()
                    .filter(|(k, _)| k.as_slice() > b"p/05".as_slice())
                    .cloned()
                    .collect();
                prop_assert_eq!(collect(&*kv, b"p/", Some(b"p/05")), after);
                for k in 0u8..12 {
                    let key = format!("p/{k:02}").into_bytes();
                    prop_assert_eq!(kv.get(&key).unwrap(), model.get(&key).cloned());
                }
                if i % 2 == 0 {
                    rt.block_on(kv.durable().wait()).unwrap();
                    prop_assert_eq!(collect(&*kv, b"p/", None), expected);
                }
            }
            rt.block_on(kv.durable().wait()).unwrap();
        }
        let kv = open(dir.path());
        let expected: Vec<_> = model.into_iter().collect();
        prop_assert_eq!(collect(&*kv, b"p/", None), expected);
        Ok(())
    }

    fn rounds() -> impl Strategy<Value = Rounds> {
        proptest::collection::vec(
            proptest::collection::vec((0u8..12, proptest::option::of(0u8..5)), 1..8),
            1..6,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn sled_overlay_reads_match_a_model(rounds in rounds()) {
            overlay_reads_match_a_model(&|d| Box::new(crate::store::sled_kv::reopen(d)), &rounds)?;
        }

        #[test]
        fn redb_overlay_reads_match_a_model(rounds in rounds()) {
            overlay_reads_match_a_model(
                &|d| Box::new(crate::store::redb_kv::RedbKv::open(d).unwrap()),
                &rounds,
            )?;
        }
    }
}
