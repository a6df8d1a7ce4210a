//! The store room: one trait, [`Store`], that the domain persists through, and its
//! implementations. Today both implementations share one key layout ([`kv::KvStore`]) over
//! an ordered key-value engine: [`sled_kv::SledKv`] on disk and [`memory::MemoryKv`] for
//! tests. A PostgreSQL implementation would implement [`Store`] directly and pass the same
//! [`conformance`] suite.
//!
//! Every write goes through [`Store::write`]: under the store's write lock the current
//! object is read, the domain's `decide` closure chooses what to do, and the object, its
//! index entries, a change-feed entry and an audit entry are applied as one atomic batch.
//! The returned [`Committed::durable`] resolves once a flush covering the batch is on disk
//! (concurrent writers share flushes: group commit).

pub mod eppn_hints;
pub mod group_commit;
pub mod kv;
pub mod memory;
pub mod redb_kv;
pub mod sled_kv;

#[cfg(test)]
mod conformance;

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::jobs::{ItemResult, JobHeader, JobMark};
use crate::domain::{DomainError, Kind, ObjectModel, Protocol, StoredObject, TenantId};

/// A person found by EPPN, with what a login reads next: the relations from the person.
pub struct EppnPerson {
    pub tenant: TenantId,
    /// The person's source id.
    pub id: String,
    pub model: std::sync::Arc<ObjectModel>,
    /// As [`Store::links_from`] the person would return.
    pub links: Links,
}

/// Which ordered key-value engine persists the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreEngine {
    #[default]
    Sled,
    Redb,
}

impl StoreEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreEngine::Sled => "sled",
            StoreEngine::Redb => "redb",
        }
    }

    /// The page cache when `server.cache_mb` is not set. sled keeps its tree's pages in
    /// this cache and rebuilds an evicted page from several reads, so it gets a large one.
    /// redb reads an evicted page with one read; at a million persons the decoded-object
    /// cache serves logins far better with the same memory. Login bench at 1M persons,
    /// median of three rounds, pages / objects in MiB: 32 / 32 0.20x; 96 / 128 0.26x
    /// (RSS 263 MB); 64 / 256 0.33x (291 MB); 32 / 320 0.40x (272 MB); 16 / 512 0.38x
    /// (241 MB): the groups, activities, duties and school units of a million persons
    /// fit in 320, whose weights overstate the memory they take.
    pub fn default_cache_bytes(self) -> u64 {
        match self {
            StoreEngine::Sled => sled_kv::DEFAULT_CACHE_BYTES,
            StoreEngine::Redb => redb_kv::DEFAULT_CACHE_BYTES,
        }
    }

    /// The decoded-object cache when `server.model_cache_mb` is not set.
    pub fn default_model_cache_bytes(self) -> u64 {
        match self {
            StoreEngine::Sled => kv::DEFAULT_MODEL_CACHE_BYTES,
            StoreEngine::Redb => redb_kv::DEFAULT_MODEL_CACHE_BYTES,
        }
    }
}

/// Opens the store of `engine` in `dir`, refusing a directory that holds the other
/// engine's files (opening it would start an empty store beside the real data).
pub fn open(
    engine: StoreEngine,
    dir: &std::path::Path,
    cache_bytes: u64,
    model_cache_bytes: u64,
) -> Result<std::sync::Arc<dyn Store>, String> {
    if let Some(other) = engine_in(dir).filter(|found| *found != engine) {
        return Err(format!(
            "server.engine is \"{}\" but {} holds a {} store: set server.engine = \"{}\" or use another data_dir",
            engine.as_str(),
            dir.display(),
            other.as_str(),
            other.as_str()
        ));
    }
    let opened: Result<std::sync::Arc<dyn Store>, StoreError> = match engine {
        StoreEngine::Sled => {
            sled_kv::SledStore::open_dir_with_caches(dir, cache_bytes, model_cache_bytes)
                .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn Store>)
        }
        StoreEngine::Redb => {
            redb_kv::RedbStore::open_dir_with_caches(dir, cache_bytes, model_cache_bytes)
                .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn Store>)
        }
    };
    opened.map_err(|e| {
        format!(
            "server.data_dir {}: cannot open the {} store: {e}",
            dir.display(),
            engine.as_str()
        )
    })
}

/// The engine whose files `dir` holds, if any (sled's `conf`/`db`, redb's one file).
fn engine_in(dir: &std::path::Path) -> Option<StoreEngine> {
    if redb_kv::file_in(dir).exists() {
        Some(StoreEngine::Redb)
    } else if dir.join("conf").exists() || dir.join("db").exists() {
        Some(StoreEngine::Sled)
    } else {
        None
    }
}

/// An engine's raw key-value handle, for copying a store between engines.
enum RawKv {
    Sled(sled_kv::SledKv),
    Redb(redb_kv::RedbKv),
}

impl RawKv {
    fn open(engine: StoreEngine, dir: &std::path::Path) -> Result<Self, StoreError> {
        Ok(match engine {
            StoreEngine::Sled => RawKv::Sled(sled_kv::SledKv::open(dir)?),
            StoreEngine::Redb => RawKv::Redb(redb_kv::RedbKv::open(dir)?),
        })
    }

    fn kv(&self) -> &dyn kv::Kv {
        match self {
            RawKv::Sled(k) => k,
            RawKv::Redb(k) => k,
        }
    }

    fn advance_seq(&self, floor: u64) -> Result<(), StoreError> {
        match self {
            RawKv::Sled(k) => k.advance_seq(floor),
            RawKv::Redb(k) => k.advance_seq(floor),
        }
    }
}

/// Copies every key of the store in `from` (written by `from_engine`) into a new store of
/// `to_engine` in `to`, which must not hold a store yet; sequence numbers of the copy
/// continue after the source's. Offline: both engines lock their files, so a running
/// server on either directory makes this fail. Returns the number of keys copied.
pub fn copy_store(
    from_engine: StoreEngine,
    from: &std::path::Path,
    to_engine: StoreEngine,
    to: &std::path::Path,
) -> Result<u64, String> {
    if engine_in(from).is_none() {
        return Err(format!("{}: holds no store", from.display()));
    }
    if engine_in(to).is_some() {
        return Err(format!(
            "{}: already holds a store; copy into an empty directory",
            to.display()
        ));
    }
    let err = |dir: &std::path::Path, e: StoreError| format!("{}: {e}", dir.display());
    let source = RawKv::open(from_engine, from).map_err(|e| err(from, e))?;
    let target = RawKv::open(to_engine, to).map_err(|e| err(to, e))?;
    const CHUNK: usize = 10_000;
    let mut chunk: Vec<kv::KvOp> = Vec::with_capacity(CHUNK);
    let mut copied = 0u64;
    let mut failed = None;
    source
        .kv()
        .scan(b"", &mut |k, v| {
            chunk.push((k.to_vec(), Some(v.to_vec())));
            copied += 1;
            if chunk.len() == CHUNK {
                // Committed before the next chunk: the group committer's overlay never
                // holds more than one chunk.
                let step = target.kv().apply(std::mem::take(&mut chunk));
                if let Err(e) = step.and_then(|_| target.kv().flush()) {
                    failed = Some(e);
                    return false;
                }
            }
            true
        })
        .map_err(|e| err(from, e))?;
    if let Some(e) = failed {
        return Err(err(to, e));
    }
    target.kv().apply(chunk).map_err(|e| err(to, e))?;
    let floor = source.kv().next_seq().map_err(|e| err(from, e))?;
    target.advance_seq(floor).map_err(|e| err(to, e))?;
    target.kv().flush().map_err(|e| err(to, e))?;
    Ok(copied)
}

/// A storage failure. Its text goes to the log only; clients see `Unavailable`/`Internal`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O error: {0}")]
    Io(String),
    #[error("stored data could not be decoded: {0}")]
    Corrupt(String),
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        match e {
            StoreError::Io(_) => DomainError::Unavailable,
            StoreError::Corrupt(_) => DomainError::Internal,
        }
    }
}

/// What the domain decided to do with the object under the write lock.
#[derive(Debug)]
pub enum Decision {
    Put(Box<StoredObject>),
    Delete,
}

/// The operation recorded in the change feed and the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Create,
    Update,
    Delete,
}

/// Who wrote, how and when: kept in the audit trail (never the personal data itself).
#[derive(Debug, Clone)]
pub struct WriteEvent {
    pub protocol: Protocol,
    pub credential: String,
    pub at: DateTime<Utc>,
}

/// One entry of the change feed: the object `(tenant, kind, id)` changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub seq: u64,
    pub tenant: TenantId,
    pub kind: Kind,
    pub id: String,
    pub op: Op,
    pub at: DateTime<Utc>,
    /// The persons (source ids, same tenant) whose login account view this change alters:
    /// the person itself; a group's members before and after; a duty's person; the members
    /// of an activity's groups and its teachers' persons, before and after; the persons
    /// enrolled at a school unit and the persons of its duties.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
}

/// At most this many accounts are listed for one change (a larger fan-out lists the
/// first ones in id order; the object's own entry still says what changed).
pub const MAX_CHANGE_ACCOUNTS: usize = 10_000;

/// What an audit entry records: a write (as in the change feed) or a login the login API
/// refused although the identifier belongs to this tenant's person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOp {
    Create,
    Update,
    Delete,
    LoginRefused,
}

impl From<Op> for AuditOp {
    fn from(op: Op) -> Self {
        match op {
            Op::Create => AuditOp::Create,
            Op::Update => AuditOp::Update,
            Op::Delete => AuditOp::Delete,
        }
    }
}

/// One entry of the audit trail. `credential` is the school owner's credential label for
/// writes and the product id for refused logins; neither it nor `detail` carries personal
/// data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub tenant: TenantId,
    pub credential: String,
    /// The provisioning protocol of a write (none for a refused login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    pub kind: Kind,
    pub id: String,
    pub op: AuditOp,
    /// For a refused login: the reason code and the identity provider that asserted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

type DurableFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// Resolves when the write it belongs to is on disk.
pub struct Durable(Option<DurableFuture>);

impl Durable {
    pub fn ready() -> Self {
        Durable(None)
    }

    pub fn pending(f: impl Future<Output = Result<(), StoreError>> + Send + 'static) -> Self {
        Durable(Some(Box::pin(f)))
    }

    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            None => Ok(()),
            Some(f) => f.await,
        }
    }
}

/// The result of a write: the object before it, the object after it, and the durability
/// handle to await before acknowledging.
pub struct Committed {
    pub previous: Option<StoredObject>,
    pub current: Option<StoredObject>,
    pub durable: Durable,
}

/// A read-side relation kept as an index in the same batch as the object it comes from,
/// so a login is resolved with point reads and short prefix scans, never a table scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Link {
    /// Person → the groups listing it as a member (from `Group::members`).
    PersonGroups,
    /// Group → the activities it takes part in (from `Activity::groups`).
    GroupActivities,
    /// Person → their duties (from `Duty::person`).
    PersonDuties,
    /// Duty → the activities it teaches (from `Activity::teachers`).
    DutyActivities,
    /// School unit → the persons enrolled at it (from `Person::enrolments`).
    UnitPersons,
    /// School unit → the duties at it (from `Duty::school_unit`).
    UnitDuties,
}

impl Link {
    pub fn as_str(self) -> &'static str {
        match self {
            Link::PersonGroups => "pg",
            Link::GroupActivities => "ga",
            Link::PersonDuties => "pd",
            Link::DutyActivities => "da",
            Link::UnitPersons => "up",
            Link::UnitDuties => "ud",
        }
    }

    /// The inverse of [`Link::as_str`].
    pub fn parse(s: &str) -> Option<Link> {
        [
            Link::PersonGroups,
            Link::GroupActivities,
            Link::PersonDuties,
            Link::DutyActivities,
            Link::UnitPersons,
            Link::UnitDuties,
        ]
        .into_iter()
        .find(|l| l.as_str() == s)
    }
}

/// Every relation from one id: `(link, to id)` in link then id order.
pub type Links = std::sync::Arc<Vec<(Link, String)>>;

/// The closure the domain passes to [`Store::write`].
pub type Decide<'a> = &'a mut dyn FnMut(Option<&StoredObject>) -> Result<Decision, DomainError>;

pub trait Store: Send + Sync + 'static {
    fn get(
        &self,
        tenant: &TenantId,
        kind: Kind,
        id: &str,
    ) -> Result<Option<StoredObject>, StoreError>;

    /// The model of an object (entity and metadata, without the document as sent), served
    /// from a bounded cache that every write of the object invalidates. For read paths
    /// that fan out over shared objects (the login API).
    fn get_model(
        &self,
        tenant: &TenantId,
        kind: Kind,
        id: &str,
    ) -> Result<Option<std::sync::Arc<ObjectModel>>, StoreError>;

    /// Number of objects of a kind in a tenant.
    fn count(&self, tenant: &TenantId, kind: Kind) -> Result<usize, StoreError>;

    /// Objects of a kind in a tenant ordered by id, skipping `offset`, at most `limit`.
    fn page(
        &self,
        tenant: &TenantId,
        kind: Kind,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<StoredObject>, StoreError>;

    /// Fills the read cache with a tenant's objects that many logins share (school units,
    /// groups, activities, duties and the relations from groups and duties) while it has
    /// room; returns how many objects it added. Run at start, so that the first logins
    /// after a restart find them cached.
    fn warm_cache(&self, tenant: &TenantId) -> Result<usize, StoreError>;

    /// The person holding a (normalised) EPPN, in any tenant.
    fn find_eppn(&self, eppn: &str) -> Result<Option<(TenantId, String)>, StoreError>;

    /// The person holding a (normalised) EPPN with its model and the relations from it,
    /// as a login needs them (the key-value store keeps a copy of the person's value next
    /// to its relations and finds it through in-memory hints: usually one read).
    fn find_eppn_person(&self, eppn: &str) -> Result<Option<EppnPerson>, StoreError>;

    /// The persons of a tenant with this civic number.
    fn find_civic_no(&self, tenant: &TenantId, civic_no: &str) -> Result<Vec<String>, StoreError>;

    /// The persons (in any tenant) carrying this external identifier with this context.
    fn find_external_id(
        &self,
        context: &str,
        value: &str,
    ) -> Result<Vec<(TenantId, String)>, StoreError>;

    /// The object a gateway id ([`crate::domain::model::gateway_id`]) stands for.
    fn find_gateway_id(
        &self,
        gid: &uuid::Uuid,
    ) -> Result<Option<(TenantId, Kind, String)>, StoreError>;

    /// The ids related to `from` by `link` within a tenant, in id order. The targets exist
    /// (the relation is stored with them); `from` need not.
    fn linked(&self, tenant: &TenantId, link: Link, from: &str) -> Result<Vec<String>, StoreError>;

    /// All relations from `from` (of every [`Link`]) in one read, served from the same
    /// write-invalidated cache as [`Store::get_model`].
    fn links_from(&self, tenant: &TenantId, from: &str) -> Result<Links, StoreError>;

    /// Atomically: read the current object, let `decide` choose, enforce unique indexes
    /// (EPPN → `Conflict(Unique)`), write object + indexes + change feed + audit entry.
    fn write(
        &self,
        tenant: &TenantId,
        kind: Kind,
        id: &str,
        event: &WriteEvent,
        decide: Decide<'_>,
    ) -> Result<Committed, DomainError>;

    /// Change-feed entries with `seq > after`, oldest first.
    fn changes(&self, after: u64, limit: usize) -> Result<Vec<ChangeRecord>, StoreError>;

    /// Audit entries of one tenant with `seq > after`, oldest first.
    fn audit(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Removes every audit entry (all tenants) recorded before `cutoff`; returns how many.
    /// Appends a non-write entry (a refused login) to a tenant's audit trail; `seq` is
    /// assigned by the store.
    fn append_audit(&self, record: AuditRecord) -> Result<Durable, StoreError>;

    fn purge_audit_before(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError>;

    /// A small persisted setting (operator controls and the like), by key.
    fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores a setting; await the returned handle before acknowledging.
    fn put_setting(&self, key: &str, value: Vec<u8>) -> Result<Durable, StoreError>;

    /// Objects of a kind in a tenant with id > `after` (all when `None`), ordered by id,
    /// at most `limit` (keyset paging).
    fn page_after(
        &self,
        tenant: &TenantId,
        kind: Kind,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredObject>, StoreError>;

    /// [`Store::write`], and in the same atomic batch a job mark recording that job item
    /// `mark.index` was applied, with the operation (see `domain::jobs`).
    fn write_marked(
        &self,
        tenant: &TenantId,
        kind: Kind,
        id: &str,
        event: &WriteEvent,
        decide: Decide<'_>,
        mark: &JobMark,
    ) -> Result<Committed, DomainError>;

    /// Stores a bulk job (header and items) and queues it, atomically.
    fn put_job(&self, header: &JobHeader, items: &[String]) -> Result<Durable, StoreError>;

    fn get_job(&self, tenant: &TenantId, id: &str) -> Result<Option<JobHeader>, StoreError>;

    /// The job's items in index order.
    fn job_items(&self, tenant: &TenantId, id: &str) -> Result<Vec<String>, StoreError>;

    /// The job's marks `(index, op, payload)` in index order.
    fn job_marks(&self, tenant: &TenantId, id: &str)
        -> Result<Vec<(u32, Op, Vec<u8>)>, StoreError>;

    /// The job's recorded results in index order.
    fn job_results(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Vec<(u32, ItemResult)>, StoreError>;

    /// Records item results; with `finished`, replaces the header and dequeues the job in
    /// the same batch.
    fn put_job_results(
        &self,
        tenant: &TenantId,
        id: &str,
        results: &[(u32, ItemResult)],
        finished: Option<&JobHeader>,
    ) -> Result<Durable, StoreError>;

    /// Queued jobs in acceptance order.
    fn pending_jobs(&self) -> Result<Vec<(TenantId, String)>, StoreError>;

    /// Every job header (all tenants).
    fn list_jobs(&self) -> Result<Vec<JobHeader>, StoreError>;

    /// Removes a job with its items, marks, results and queue entry.
    fn delete_job(&self, tenant: &TenantId, id: &str) -> Result<Durable, StoreError>;

    /// A cheap read-and-write probe for readiness checks.
    fn check_health(&self) -> Result<(), StoreError>;

    /// Flush everything to disk now (used at shutdown).
    fn flush(&self) -> Result<(), StoreError>;
}
