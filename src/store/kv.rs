//! The key layout shared by the ordered key-value engines, and the [`Store`]
//! implementation on top of it.
//!
//! Keys (all tenants' data for one kind is a contiguous range, so a purge is a range
//! delete):
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `o/` | `o/{tenant}/{kind}/{id}` | version byte + JSON [`StoredObject`] without `raw` |
//! | `r/` | `r/{tenant}/{kind}/{id}` | the object's document as sent (`raw`) |
//! | `e/` | `e/{eppn}` | `{tenant}/{person id}` (global: EPPNs are unique across tenants) |
//! | `l/` | `l/{tenant}/{person id}/` | the person's object value, as under `o/` (the person record: read with its relations, below) |
//! | `c/` | `c/{tenant}/{civic no}/{person id}` | empty |
//! | `f/` | `f/{seq:016x}` | JSON [`ChangeRecord`] |
//! | `a/` | `a/{tenant}/{seq:016x}` | JSON [`AuditRecord`] |
//! | `s/` | `s/{setting key}` | setting value (operator controls) |
//! | `h/` | `h/probe` | health probe |
//! | `jh/` | `jh/{tenant}/{job}` | JSON [`JobHeader`] of a bulk job |
//! | `j/` | `j/{tenant}/{job}/i/{index:08x}` | the job's item (raw JSON) |
//! | | `j/{tenant}/{job}/m/{index:08x}` | mark: op byte + payload, written with the object |
//! | | `j/{tenant}/{job}/r/{index:08x}` | JSON [`ItemResult`] |
//! | `q/` | `q/{seq:016x}/{tenant}/{job}` | queued (unfinished) job, in acceptance order |
//! | `g/` | `g/{gateway id}` | `{tenant}/{kind}/{id}` (global: see [`gateway_id`]) |
//! | `x/` | `x/{context}\0{value}\0{tenant}/{person id}` | empty (external identifiers) |
//! | `l/` | `l/{tenant}/{from id}/{link}/{to id}` | empty (read-side relations, [`Link`]; all links from one id are adjacent, so one scan reads them) |
//!
//! Ids in keys are the stored ids (lower-case UUIDs from the adapters), so they never
//! contain `/`; contexts and values of external identifiers may, hence the `\0`
//! separators. Every index entry is derived from one object and is written in the same
//! atomic batch as that object: the index keys of the previous version that the new
//! version no longer has are removed, the new ones added.
//!
//! Object values are kept small (the document as sent lives under `r/`) because the login
//! API reads many of them per request; decoded models are also kept in a bounded cache
//! ([`KvStore::get_model`]) that every object write invalidates.
//!
//! A login reads the person and the relations from it with one scan of
//! `l/{tenant}/{person id}/`: the person record sorts first, its relations follow, all on
//! one page as a rule. In-memory [`EppnHints`] say which person to scan; the record read
//! confirms it (see there), and the `e/` index decides when it does not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::collections::BTreeSet;

use super::eppn_hints::EppnHints;
use super::{
    AuditRecord, ChangeRecord, Committed, Decide, Decision, Durable, Link, Links, Op, Store,
    StoreError, WriteEvent, MAX_CHANGE_ACCOUNTS,
};
use crate::domain::jobs::{ItemResult, JobHeader, JobMark};
use crate::domain::model::{gateway_id, AtUnit};
use crate::domain::{ConflictKind, DomainError, Entity, Kind, ObjectModel, StoredObject, TenantId};

/// Format version of stored object values: 2 keeps `raw` under its own key; 1 (still
/// read) held it inline.
const VALUE_VERSION: u8 = 2;
const VALUE_VERSION_RAW_INLINE: u8 = 1;

/// Default weight of the decoded-model cache in bytes (of encoded values).
pub const DEFAULT_MODEL_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// What the read cache holds: decoded object models by object key (`o/…`) and the
/// relations from an id by link prefix (`l/{tenant}/{from}/`).
#[derive(Clone)]
enum Cached {
    /// The model and the length of the value it was decoded from (for its weight).
    Model(Arc<ObjectModel>, usize),
    Links(Links),
}

impl Cached {
    /// Whether many reads share this entry, so that caching it pays. A person and the
    /// relations from a person are read by that person's own logins (a test morning reads
    /// each once, across a million persons); caching them would only push out the groups,
    /// activities, duties and school units that every login of a class reads. The
    /// relations from a school unit (everyone at it) are read only when it changes.
    fn shared(&self) -> bool {
        match self {
            Cached::Model(m, _) => m.kind() != Kind::Person,
            Cached::Links(l) => !l.iter().any(|(link, _)| {
                matches!(
                    link,
                    Link::PersonGroups | Link::PersonDuties | Link::UnitPersons | Link::UnitDuties
                )
            }),
        }
    }
}

type ModelCache = quick_cache::sync::Cache<Vec<u8>, Cached, ModelWeight>;

#[derive(Clone)]
struct ModelWeight;

impl quick_cache::Weighter<Vec<u8>, Cached> for ModelWeight {
    /// Heap bytes, estimated: the key twice (map and queue), the entry, and the decoded
    /// value: its struct plus about three bytes per byte of the JSON it came from (each
    /// string is an allocation with its own header and size-class rounding). Calibrated
    /// against process RSS in the login bench: a nominal 32 MiB cache used ~90 MiB with a
    /// weight of the struct size plus 48 bytes per id.
    fn weight(&self, key: &Vec<u8>, value: &Cached) -> u64 {
        let entry = 2 * key.len() + 96;
        let value = match value {
            Cached::Model(_, encoded) => std::mem::size_of::<ObjectModel>() + 3 * encoded,
            Cached::Links(l) => 64 + l.iter().map(|(_, to)| 48 + to.len()).sum::<usize>(),
        };
        (entry + value) as u64
    }
}

/// One write of a batch: `None` deletes the key.
pub type KvOp = (Vec<u8>, Option<Vec<u8>>);

/// An ordered key-value engine with atomic batches and an explicit durability point.
pub trait Kv: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Calls `f` for every entry whose key starts with `prefix`, in key order, until it
    /// returns `false`.
    fn scan(
        &self,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError>;
    /// Entries with `prefix` and key > `after`, in order, until `f` returns false.
    fn scan_after(
        &self,
        prefix: &[u8],
        after: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError>;
    /// Applies all operations atomically (visible to readers, not yet durable).
    fn apply(&self, ops: Vec<KvOp>) -> Result<(), StoreError>;
    /// A strictly increasing sequence number that survives restarts.
    fn next_seq(&self) -> Result<u64, StoreError>;
    /// A handle that resolves once everything applied so far is durable.
    fn durable(&self) -> Durable;
    fn flush(&self) -> Result<(), StoreError>;
}

pub struct KvStore<B: Kv> {
    kv: B,
    write_lock: Mutex<()>,
    models: ModelCache,
    /// Bumped after every applied object write, before its cache entry is dropped; a
    /// reader that filled the cache across a bump drops its entry again (see `get_model`).
    generation: AtomicU64,
    /// EPPN → person guesses for logins (filled at open, kept up by writes).
    hints: EppnHints,
}

impl<B: Kv> KvStore<B> {
    pub fn new(kv: B) -> Self {
        Self::with_model_cache(kv, DEFAULT_MODEL_CACHE_BYTES)
    }

    /// With a decoded-model cache of about `bytes` (0 turns it off).
    /// A store on `kv` with a model cache of `model_cache_bytes`, its read-side indexes
    /// brought up to date (what every on-disk engine does when it opens).
    pub fn open_on(kv: B, model_cache_bytes: u64) -> Result<Self, StoreError> {
        let s = Self::with_model_cache(kv, model_cache_bytes);
        s.ensure_indexes()?;
        s.load_hints()?;
        Ok(s)
    }

    /// Fills the EPPN hints from the `e/` index.
    fn load_hints(&self) -> Result<(), StoreError> {
        self.hints.rebuild(|set| {
            let mut err = None;
            self.kv.scan(b"e/", &mut |k, v| {
                let found = std::str::from_utf8(&k[2..])
                    .map_err(|_| StoreError::Corrupt("eppn index key".into()))
                    .and_then(|eppn| Ok((eppn, parse_owner(eppn_owner(v)?, "eppn")?)));
                match found {
                    Ok((eppn, (tenant, id))) => {
                        set(eppn, &tenant, &id);
                        true
                    }
                    Err(e) => {
                        err = Some(e);
                        false
                    }
                }
            })?;
            err.map_or(Ok(()), Err)
        })
    }

    pub fn with_model_cache(kv: B, bytes: u64) -> Self {
        // quick_cache wants an item estimate for sizing its tables: ~300 bytes per model.
        let items = usize::try_from(bytes / 300).unwrap_or(usize::MAX).max(1);
        Self {
            kv,
            write_lock: Mutex::new(()),
            models: ModelCache::with_weighter(items, bytes.max(1), ModelWeight),
            generation: AtomicU64::new(0),
            hints: EppnHints::default(),
        }
    }

    /// The cache entries a batch makes stale: the model of every object key written and
    /// the relation list of every link key's source.
    fn stale_entries(ops: &[KvOp]) -> BTreeSet<Vec<u8>> {
        ops.iter()
            .filter_map(|(k, _)| {
                if k.starts_with(b"o/") {
                    Some(k.clone())
                } else if k.starts_with(b"l/") {
                    links_prefix_of(k).map(<[u8]>::to_vec)
                } else {
                    None
                }
            })
            .collect()
    }

    /// Drops cached entries after the write that made them stale is applied.
    fn invalidate(&self, stale: &BTreeSet<Vec<u8>>) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for k in stale {
            self.models.remove(k.as_slice());
        }
    }

    /// Reads through the cache: `load` runs on a miss and its value is cached unless a
    /// write was applied meanwhile (then the write may have dropped its entry before we
    /// inserted the old value; a later read refills it).
    fn cached(
        &self,
        key: Vec<u8>,
        load: impl FnOnce(&B) -> Result<Option<Cached>, StoreError>,
    ) -> Result<Option<Cached>, StoreError> {
        if let Some(v) = self.models.get(&key) {
            return Ok(Some(v));
        }
        let before = self.generation.load(Ordering::SeqCst);
        let Some(v) = load(&self.kv)? else {
            return Ok(None);
        };
        if !v.shared() {
            return Ok(Some(v));
        }
        self.models.insert(key.clone(), v.clone());
        if self.generation.load(Ordering::SeqCst) != before {
            self.models.remove(&key);
        }
        Ok(Some(v))
    }

    /// Fills `raw` of objects decoded from a version-2 value.
    fn with_raw(&self, mut o: StoredObject, inline: bool) -> Result<StoredObject, StoreError> {
        if !inline {
            let raw = self
                .kv
                .get(&raw_key(&o.tenant, o.kind(), &o.id))?
                .unwrap_or_default();
            o.raw = String::from_utf8(raw).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        }
        Ok(o)
    }

    /// The persons whose account view a change from `previous` to `current` alters (the
    /// rule is the domain's: [`Entity::account_persons`]).
    fn affected_accounts(
        &self,
        tenant: &TenantId,
        previous: Option<&StoredObject>,
        current: Option<&StoredObject>,
    ) -> Result<Vec<String>, StoreError> {
        let mut out = BTreeSet::new();
        for o in previous.into_iter().chain(current) {
            o.entity.account_persons(
                &o.id,
                &mut |kind, id| self.get_model(tenant, kind, id),
                &mut |unit| {
                    let links = self.links_from(tenant, unit)?;
                    let of = |want: Link| {
                        links
                            .iter()
                            .filter(|(l, _)| *l == want)
                            .map(|(_, to)| to.clone())
                            .collect()
                    };
                    Ok(AtUnit {
                        enrolled: of(Link::UnitPersons),
                        duties: of(Link::UnitDuties),
                    })
                },
                &mut out,
            )?;
        }
        Ok(out.into_iter().take(MAX_CHANGE_ACCOUNTS).collect())
    }

    /// An object's model through the cache.
    fn model(&self, tenant: &TenantId, kind: Kind, id: &str) -> Result<Option<Cached>, StoreError> {
        let key = object_key(tenant, kind, id);
        self.cached(key.clone(), |kv| match kv.get(&key)? {
            Some(v) => Ok(Some(Cached::Model(Arc::new(decode_model(&v)?), v.len()))),
            None => Ok(None),
        })
    }

    fn decode_full(&self, v: &[u8]) -> Result<StoredObject, StoreError> {
        let (o, inline) = decode_object(v)?;
        self.with_raw(o, inline)
    }

    fn collect_objects(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<StoredObject>, StoreError> {
        collect_decoded(&self.kv, prefix, after, skip, limit, decode_object)?
            .into_iter()
            .map(|(o, inline)| self.with_raw(o, inline))
            .collect()
    }

    /// Reads a tenant's shared objects (school units, groups, activities, duties) and the
    /// relations from groups and duties into the decoded-object cache, as logins would,
    /// until the cache is nine tenths full. Returns how many objects it added.
    ///
    /// A write that lands while a batch is being cached bumps the generation: the entry
    /// just inserted is dropped again (left to the logins) and the scan resumes after it,
    /// reading the rest anew, so no entry older than the stored object stays (the rule of
    /// [`KvStore::cached`]).
    fn warm(&self, tenant: &TenantId) -> Result<usize, StoreError> {
        const BATCH: usize = 1_000;
        let full = || self.models.weight() >= self.models.capacity() / 10 * 9;
        let mut added = 0;
        for kind in [Kind::OrgUnit, Kind::Group, Kind::Activity, Kind::Duty] {
            let prefix = object_prefix(tenant, kind);
            let mut after: Option<Vec<u8>> = None;
            loop {
                if full() {
                    return Ok(added);
                }
                let before = self.generation.load(Ordering::SeqCst);
                let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
                let mut take = |k: &[u8], v: &[u8]| {
                    batch.push((k.to_vec(), v.to_vec()));
                    batch.len() < BATCH
                };
                match &after {
                    None => self.kv.scan(&prefix, &mut take)?,
                    Some(a) => self.kv.scan_after(&prefix, a, &mut take)?,
                }
                let last_batch = batch.len() < BATCH;
                for (k, v) in batch {
                    if !self.models.contains_key(k.as_slice()) {
                        let model = Cached::Model(Arc::new(decode_model(&v)?), v.len());
                        self.models.insert(k.clone(), model);
                        if self.generation.load(Ordering::SeqCst) != before {
                            // Read before a write that may have dropped it: left to the
                            // logins, and the rest of the batch is read again.
                            self.models.remove(k.as_slice());
                            after = Some(k);
                            break;
                        }
                        added += 1;
                    }
                    if matches!(kind, Kind::Group | Kind::Duty) {
                        let id = String::from_utf8_lossy(&k[prefix.len()..]);
                        self.links_from(tenant, &id)?;
                    }
                    after = Some(k);
                }
                if last_batch && self.generation.load(Ordering::SeqCst) == before {
                    break;
                }
            }
        }
        Ok(added)
    }

    /// A person with the relations from it, from one scan of its record and relations.
    fn person_with_links(
        &self,
        tenant: TenantId,
        id: String,
    ) -> Result<Option<super::EppnPerson>, StoreError> {
        let Scanned { record, links } = scan_links(&self.kv, &links_prefix(&tenant, &id))?;
        let model = match record {
            Some(v) => Arc::new(decode_model(&v)?),
            // No record (written before index version 7 and not rebuilt): its own key.
            None => match self.get_model(&tenant, Kind::Person, &id)? {
                Some(m) => m,
                None => return Ok(None),
            },
        };
        Ok(Some(super::EppnPerson {
            tenant,
            id,
            model,
            links: Arc::new(links),
        }))
    }

    /// Decoded objects in the read cache (relation lists not counted).
    #[cfg(test)]
    pub(crate) fn cached_models(&self) -> usize {
        self.models
            .iter()
            .filter(|(_, v)| matches!(v, Cached::Model(..)))
            .count()
    }

    #[cfg(test)]
    pub(crate) fn hints(&self) -> &EppnHints {
        &self.hints
    }

    pub fn engine(&self) -> &B {
        &self.kv
    }

    /// The queue entries of a job (normally one).
    fn queue_keys(&self, tenant: &TenantId, id: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let suffix = format!("/{tenant}/{id}").into_bytes();
        let mut keys = Vec::new();
        self.kv.scan(b"q/", &mut |k, _| {
            if k.ends_with(&suffix) {
                keys.push(k.to_vec());
            }
            true
        })?;
        Ok(keys)
    }

    fn write_impl(
        &self,
        tenant: &TenantId,
        kind: Kind,
        id: &str,
        event: &WriteEvent,
        decide: Decide<'_>,
        mark: Option<&JobMark>,
    ) -> Result<Committed, DomainError> {
        let key = object_key(tenant, kind, id);
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self
            .kv
            .get(&key)?
            .map(|v| self.decode_full(&v))
            .transpose()?;
        let decision = decide(previous.as_ref())?;
        let mut ops: Vec<KvOp> = Vec::new();
        let current = match decision {
            Decision::Put(o) => Some(*o),
            Decision::Delete => None,
        };

        // Secondary indexes: remove what the old version contributed, add the new.
        let (old_eppns, old_civic) = person_indexes(previous.as_ref());
        let (new_eppns, new_civic) = person_indexes(current.as_ref());
        let owner = format!("{tenant}/{id}");
        for (eppn, path) in &new_eppns {
            if let Some(v) = self.kv.get(&eppn_key(eppn))? {
                if eppn_owner(&v)? != owner.as_bytes() {
                    return Err(DomainError::Conflict(ConflictKind::Unique {
                        path: path.clone(),
                    }));
                }
            }
        }
        for (eppn, _) in &old_eppns {
            if !new_eppns.iter().any(|(e, _)| e == eppn) {
                ops.push((eppn_key(eppn), None));
            }
        }
        for (eppn, _) in &new_eppns {
            ops.push((eppn_key(eppn), Some(owner.clone().into_bytes())));
        }
        let encoded = current.as_ref().map(encode_object).transpose()?;
        // The person record next to the person's relations.
        if kind == Kind::Person {
            ops.push((links_prefix(tenant, id), encoded.clone()));
        }
        if old_civic != new_civic {
            if let Some(c) = &old_civic {
                ops.push((civic_key(tenant, c, id), None));
            }
        }
        if let Some(c) = &new_civic {
            ops.push((civic_key(tenant, c, id), Some(Vec::new())));
        }

        ops.extend(derived_ops(previous.as_ref(), current.as_ref()));

        let op = match (&previous, &current) {
            (None, Some(_)) => Op::Create,
            (Some(_), Some(_)) => Op::Update,
            (_, None) => Op::Delete,
        };
        let raw = raw_key(tenant, kind, id);
        match (&current, encoded) {
            (Some(o), Some(value)) => {
                ops.push((key.clone(), Some(value)));
                ops.push((raw, Some(o.raw.clone().into_bytes())));
            }
            _ => {
                ops.push((key.clone(), None));
                ops.push((raw, None));
            }
        }
        let accounts = self.affected_accounts(tenant, previous.as_ref(), current.as_ref())?;
        let seq = self.kv.next_seq()?;
        let change = ChangeRecord {
            seq,
            tenant: tenant.clone(),
            kind,
            id: id.to_owned(),
            op,
            at: event.at,
            accounts,
        };
        ops.push((format!("f/{seq:016x}").into_bytes(), Some(encode(&change)?)));
        let audit = AuditRecord {
            seq,
            at: event.at,
            tenant: tenant.clone(),
            credential: event.credential.clone(),
            protocol: Some(event.protocol),
            kind,
            id: id.to_owned(),
            op: op.into(),
            detail: None,
        };
        ops.push((
            format!("a/{tenant}/{seq:016x}").into_bytes(),
            Some(encode(&audit)?),
        ));
        if let Some(m) = mark {
            let mut v = vec![match op {
                Op::Create => b'c',
                Op::Update => b'u',
                Op::Delete => b'd',
            }];
            v.extend_from_slice(&m.payload);
            ops.push((job_key(tenant, &m.job, 'm', m.index), Some(v)));
        }
        let stale = Self::stale_entries(&ops);
        self.kv.apply(ops)?;
        self.invalidate(&stale);
        for (eppn, _) in &old_eppns {
            self.hints.remove(eppn, tenant, id);
        }
        for (eppn, _) in &new_eppns {
            self.hints.set(eppn, tenant, id);
        }
        drop(_guard);
        Ok(Committed {
            previous,
            current,
            durable: self.kv.durable(),
        })
    }
}

fn object_prefix(tenant: &TenantId, kind: Kind) -> Vec<u8> {
    format!("o/{}/{}/", tenant, kind.as_str()).into_bytes()
}

// The keys a login reads are joined rather than formatted: `join` sizes the buffer once.
fn object_key(tenant: &TenantId, kind: Kind, id: &str) -> Vec<u8> {
    ["o", tenant.as_str(), kind.as_str(), id]
        .join("/")
        .into_bytes()
}

fn raw_key(tenant: &TenantId, kind: Kind, id: &str) -> Vec<u8> {
    format!("r/{}/{}/{}", tenant, kind.as_str(), id).into_bytes()
}

fn job_header_key(tenant: &TenantId, job: &str) -> Vec<u8> {
    format!("jh/{tenant}/{job}").into_bytes()
}

fn job_section(tenant: &TenantId, job: &str, section: char) -> Vec<u8> {
    format!("j/{tenant}/{job}/{section}/").into_bytes()
}

fn job_key(tenant: &TenantId, job: &str, section: char, index: u32) -> Vec<u8> {
    format!("j/{tenant}/{job}/{section}/{index:08x}").into_bytes()
}

fn parse_index(hex: &[u8]) -> Option<u32> {
    std::str::from_utf8(hex)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
}

fn eppn_key(eppn: &str) -> Vec<u8> {
    ["e", eppn].join("/").into_bytes()
}

/// Marks an EPPN index value of index version 6, which carried the person's object value
/// after the owner (a u32 length, then the owner). Other values are the owner alone
/// (`{tenant}/{id}`), which never starts with this byte. Version 7 keeps the person's
/// value in the person record instead, next to its relations, and rewrites these at open.
const EPPN_WITH_PERSON: u8 = 1;

/// The owner (`{tenant}/{id}`) an EPPN index value names.
fn eppn_owner(v: &[u8]) -> Result<&[u8], StoreError> {
    match v.split_first() {
        Some((&EPPN_WITH_PERSON, rest)) => {
            let bad = || StoreError::Corrupt("eppn index value".into());
            let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
            let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| bad())?;
            rest.get(..len).ok_or_else(bad)
        }
        _ => Ok(v),
    }
}

/// The owner `{tenant}/{id}` that the EPPN and external-identifier indexes point to;
/// `index` names the index in the error.
fn parse_owner(owner: &[u8], index: &str) -> Result<(TenantId, String), StoreError> {
    let bad = || StoreError::Corrupt(format!("{index} index entry"));
    let s = std::str::from_utf8(owner).map_err(|_| bad())?;
    let (t, id) = s.split_once('/').ok_or_else(bad)?;
    let t = TenantId::parse(t).map_err(|_| bad())?;
    Ok((t, id.to_owned()))
}

fn civic_key(tenant: &TenantId, civic: &str, id: &str) -> Vec<u8> {
    format!("c/{tenant}/{civic}/{id}").into_bytes()
}

fn gateway_key(gid: &uuid::Uuid) -> Vec<u8> {
    format!("g/{}", gid.hyphenated()).into_bytes()
}

fn external_prefix(context: &str, value: &str) -> Vec<u8> {
    let mut k = b"x/".to_vec();
    k.extend_from_slice(context.as_bytes());
    k.push(0);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

fn links_prefix(tenant: &TenantId, from: &str) -> Vec<u8> {
    ["l", tenant.as_str(), from, ""].join("/").into_bytes()
}

fn link_prefix(tenant: &TenantId, link: Link, from: &str) -> Vec<u8> {
    format!("l/{tenant}/{from}/{}/", link.as_str()).into_bytes()
}

/// What one scan of `l/{tenant}/{from}/` finds.
struct Scanned {
    /// The person record, if `from` is a person.
    record: Option<Vec<u8>>,
    /// The relations from `from`.
    links: Vec<(Link, String)>,
}

fn scan_links<B: Kv>(kv: &B, prefix: &[u8]) -> Result<Scanned, StoreError> {
    let mut record = None;
    let mut links = Vec::new();
    let mut bad = false;
    kv.scan(prefix, &mut |k, v| {
        let rest = &k[prefix.len()..];
        if rest.is_empty() {
            record = Some(v.to_vec());
            return true;
        }
        match std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.split_once('/'))
            .and_then(|(l, to)| Some((Link::parse(l)?, to)))
        {
            Some((l, to)) => links.push((l, to.to_owned())),
            None => bad = true,
        }
        !bad
    })?;
    if bad {
        return Err(StoreError::Corrupt("link index key".into()));
    }
    Ok(Scanned { record, links })
}

/// `l/{tenant}/{from}/` of a link key `l/{tenant}/{from}/{link}/{to}`.
fn links_prefix_of(key: &[u8]) -> Option<&[u8]> {
    let mut slashes = key.iter().enumerate().filter(|(_, b)| **b == b'/');
    let (third, _) = slashes.nth(2)?;
    Some(&key[..=third])
}

/// The keys of the read-side indexes one object contributes (all with empty values except
/// the gateway id, whose value is fixed by the key): relations, external identifiers and
/// the gateway id. The EPPN and civic-number indexes are handled separately because the
/// EPPN one is unique.
fn derived_keys(o: Option<&StoredObject>) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    let Some(o) = o else { return out };
    let (t, id) = (&o.tenant, o.id.as_str());
    out.insert(gateway_key(&gateway_id(t, o.kind(), id)));
    let mut link = |l: Link, from: &str| {
        let mut k = link_prefix(t, l, from);
        k.extend_from_slice(id.as_bytes());
        out.insert(k);
    };
    match &o.entity {
        Entity::Group(g) => g.members.iter().for_each(|m| link(Link::PersonGroups, m)),
        Entity::Activity(a) => {
            a.groups.iter().for_each(|g| link(Link::GroupActivities, g));
            a.teachers
                .iter()
                .for_each(|d| link(Link::DutyActivities, d));
        }
        Entity::Duty(d) => {
            d.person.iter().for_each(|p| link(Link::PersonDuties, p));
            link(Link::UnitDuties, &d.school_unit);
        }
        Entity::Person(p) => {
            p.enrolments
                .iter()
                .for_each(|e| link(Link::UnitPersons, &e.school_unit));
            for x in &p.external_identifiers {
                if let Some(c) = &x.context {
                    let mut k = external_prefix(c, &x.value);
                    k.extend_from_slice(format!("{t}/{id}").as_bytes());
                    out.insert(k);
                }
            }
        }
        Entity::OrgUnit(_) => {}
    }
    out
}

/// The value stored under a derived key.
fn derived_value(key: &[u8], o: &StoredObject) -> Vec<u8> {
    if key.starts_with(b"g/") {
        format!("{}/{}/{}", o.tenant, o.kind().as_str(), o.id).into_bytes()
    } else {
        Vec::new()
    }
}

/// The index operations that take the indexes from `previous` to `current`.
fn derived_ops(previous: Option<&StoredObject>, current: Option<&StoredObject>) -> Vec<KvOp> {
    let old = derived_keys(previous);
    let new = derived_keys(current);
    let mut ops: Vec<KvOp> = old.difference(&new).map(|k| (k.clone(), None)).collect();
    if let Some(cur) = current {
        ops.extend(
            new.difference(&old)
                .map(|k| (k.clone(), Some(derived_value(k, cur)))),
        );
    }
    ops
}

/// Index-layout version kept under `s/store/index_version`; [`KvStore::ensure_indexes`]
/// rebuilds the derived indexes of data written by an older version (3: object values
/// without the inline document; 4: relations keyed by their source id first; 5: school
/// unit → enrolled persons and duties; 6: the EPPN index carries the person's value; 7:
/// the person record next to the relations from the person instead).
const INDEX_VERSION: &[u8] = b"7";
const INDEX_VERSION_KEY: &[u8] = b"s/store/index_version";

impl<B: Kv> KvStore<B> {
    /// Builds the read-side indexes for objects stored before they existed. Cheap when
    /// they are current (one read).
    pub fn ensure_indexes(&self) -> Result<(), StoreError> {
        if self.kv.get(INDEX_VERSION_KEY)?.as_deref() == Some(INDEX_VERSION) {
            return Ok(());
        }
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        // Relations are rebuilt from the objects, so older layouts of them are dropped.
        self.in_chunks(b"l/", |k, _, ops| {
            ops.push((k.to_vec(), None));
            Ok(())
        })?;
        self.models.clear();
        self.in_chunks(b"o/", |k, v, ops| {
            let (o, inline) = decode_object(v)?;
            ops.extend(derived_ops(None, Some(&o)));
            // Version 1 value: move the document to its own key.
            let value = if inline {
                let value = encode_object(&o)?;
                ops.push((k.to_vec(), Some(value.clone())));
                ops.push((
                    raw_key(&o.tenant, o.kind(), &o.id),
                    Some(o.raw.clone().into_bytes()),
                ));
                value
            } else {
                v.to_vec()
            };
            if o.kind() == Kind::Person {
                // Version 7: the person record next to its relations, and EPPN index
                // values that are the owner alone again (version 6 carried the value).
                ops.push((links_prefix(&o.tenant, &o.id), Some(value)));
                let owner = format!("{}/{}", o.tenant, o.id);
                for (eppn, _) in person_indexes(Some(&o)).0 {
                    ops.push((eppn_key(&eppn), Some(owner.clone().into_bytes())));
                }
            }
            Ok(())
        })?;
        self.kv.apply(vec![(
            INDEX_VERSION_KEY.to_vec(),
            Some(INDEX_VERSION.to_vec()),
        )])?;
        self.models.clear();
        self.kv.flush()
    }

    /// Calls `f` for every entry under `prefix` and applies (and flushes) the operations
    /// it collects every [`REBUILD_CHUNK`] entries, resuming the scan after the last entry
    /// seen: a rebuild of a million objects holds one chunk in memory, not all of them.
    fn in_chunks(
        &self,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8], &mut Vec<KvOp>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (mut ops, mut seen, mut last, mut err) = (Vec::new(), 0usize, None, None);
            let mut each = |k: &[u8], v: &[u8]| {
                if let Err(e) = f(k, v, &mut ops) {
                    err = Some(e);
                    return false;
                }
                seen += 1;
                last = Some(k.to_vec());
                seen < REBUILD_CHUNK
            };
            match &after {
                None => self.kv.scan(prefix, &mut each)?,
                Some(a) => self.kv.scan_after(prefix, a, &mut each)?,
            }
            if let Some(e) = err {
                return Err(e);
            }
            if !ops.is_empty() {
                self.kv.apply(ops)?;
                // Committed before the next chunk: the group committer's overlay would
                // otherwise hold the whole rebuild (1.9 GB at 1M persons, measured).
                self.kv.flush()?;
            }
            if seen < REBUILD_CHUNK {
                return Ok(());
            }
            after = last;
        }
    }
}

/// Entries a rebuild handles per applied batch (tests cross chunk boundaries).
#[cfg(not(test))]
const REBUILD_CHUNK: usize = 10_000;
#[cfg(test)]
const REBUILD_CHUNK: usize = 2;

/// A JSON error as a store error, without serde_json's message: that can quote the value
/// it choked on (a name, an EPPN), and store errors are logged.
fn json_error(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!(
        "JSON {:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    ))
}

/// The object value: version byte + JSON without `raw` (which goes under `r/`).
fn encode_object(o: &StoredObject) -> Result<Vec<u8>, StoreError> {
    let mut v = vec![VALUE_VERSION];
    serde_json::to_writer(&mut v, o).map_err(json_error)?;
    Ok(v)
}

/// The JSON part of an object value, and whether `raw` is inline (version 1).
fn object_json(v: &[u8]) -> Result<(&[u8], bool), StoreError> {
    match v.split_first() {
        Some((&VALUE_VERSION, rest)) => Ok((rest, false)),
        Some((&VALUE_VERSION_RAW_INLINE, rest)) => Ok((rest, true)),
        _ => Err(StoreError::Corrupt("unknown value version".into())),
    }
}

/// Decodes an object value; `raw` is filled only when it was inline (see `with_raw`).
fn decode_object(v: &[u8]) -> Result<(StoredObject, bool), StoreError> {
    let (json, inline) = object_json(v)?;
    let o = serde_json::from_slice(json).map_err(json_error)?;
    Ok((o, inline))
}

fn decode_model(v: &[u8]) -> Result<ObjectModel, StoreError> {
    let (json, _) = object_json(v)?;
    serde_json::from_slice(json).map_err(json_error)
}

fn encode<T: serde::Serialize>(t: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(t).map_err(json_error)
}

fn decode<T: serde::de::DeserializeOwned>(v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(json_error)
}

/// Index values an object contributes: unique EPPNs (with their canonical path) and civic
/// numbers.
/// Whether a person model holds a (normalised) EPPN.
fn person_holds(model: &ObjectModel, eppn: &str) -> bool {
    matches!(&model.entity, Entity::Person(p) if p.eppns.iter().any(|e| e == eppn))
}

fn person_indexes(o: Option<&StoredObject>) -> (Vec<(String, String)>, Option<String>) {
    match o.map(|o| &o.entity) {
        Some(Entity::Person(p)) => (
            p.eppns
                .iter()
                .enumerate()
                .map(|(i, e)| (e.clone(), format!("person.eppns[{i}]")))
                .collect(),
            p.civic_no.clone(),
        ),
        _ => (Vec::new(), None),
    }
}

impl<B: Kv> Store for KvStore<B> {
    fn get(
        &self,
        tenant: &TenantId,
        kind: Kind,
        id: &str,
    ) -> Result<Option<StoredObject>, StoreError> {
        self.kv
            .get(&object_key(tenant, kind, id))?
            .map(|v| self.decode_full(&v))
            .transpose()
    }

    fn get_model(
        &self,
        tenant: &TenantId,
        kind: Kind,
        id: &str,
    ) -> Result<Option<Arc<ObjectModel>>, StoreError> {
        match self.model(tenant, kind, id)? {
            Some(Cached::Model(m, _)) => Ok(Some(m)),
            Some(Cached::Links(_)) => Err(StoreError::Corrupt("cache entry kind".into())),
            None => Ok(None),
        }
    }

    fn count(&self, tenant: &TenantId, kind: Kind) -> Result<usize, StoreError> {
        let mut n = 0usize;
        self.kv.scan(&object_prefix(tenant, kind), &mut |_, _| {
            n += 1;
            true
        })?;
        Ok(n)
    }

    fn page(
        &self,
        tenant: &TenantId,
        kind: Kind,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<StoredObject>, StoreError> {
        let prefix = object_prefix(tenant, kind);
        self.collect_objects(&prefix, None, offset, limit)
    }

    fn warm_cache(&self, tenant: &TenantId) -> Result<usize, StoreError> {
        self.warm(tenant)
    }

    fn find_eppn(&self, eppn: &str) -> Result<Option<(TenantId, String)>, StoreError> {
        let Some(v) = self.kv.get(&eppn_key(eppn))? else {
            return Ok(None);
        };
        parse_owner(eppn_owner(&v)?, "eppn").map(Some)
    }

    fn find_eppn_person(&self, eppn: &str) -> Result<Option<super::EppnPerson>, StoreError> {
        // The hint is confirmed by the record it points to: a person that holds the EPPN
        // in this read is its owner, as EPPNs are unique in every committed state.
        if let Some((tenant, id)) = self.hints.get(eppn) {
            if let Some(found) = self.person_with_links(tenant, id)? {
                if person_holds(&found.model, eppn) {
                    return Ok(Some(found));
                }
            }
        }
        match self.find_eppn(eppn)? {
            Some((tenant, id)) => self.person_with_links(tenant, id),
            None => Ok(None),
        }
    }

    fn find_civic_no(&self, tenant: &TenantId, civic_no: &str) -> Result<Vec<String>, StoreError> {
        let prefix = format!("c/{tenant}/{civic_no}/").into_bytes();
        let mut out = Vec::new();
        self.kv.scan(&prefix, &mut |k, _| {
            out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
            true
        })?;
        Ok(out)
    }

    fn find_external_id(
        &self,
        context: &str,
        value: &str,
    ) -> Result<Vec<(TenantId, String)>, StoreError> {
        let prefix = external_prefix(context, value);
        let mut out = Vec::new();
        let mut err = None;
        self.kv.scan(&prefix, &mut |k, _| match parse_owner(
            &k[prefix.len()..],
            "external identifier",
        ) {
            Ok(found) => {
                out.push(found);
                true
            }
            Err(e) => {
                err = Some(e);
                false
            }
        })?;
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn find_gateway_id(
        &self,
        gid: &uuid::Uuid,
    ) -> Result<Option<(TenantId, Kind, String)>, StoreError> {
        let Some(v) = self.kv.get(&gateway_key(gid))? else {
            return Ok(None);
        };
        let s = String::from_utf8(v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut parts = s.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(t), Some(k), Some(id)) => {
                let t = TenantId::parse(t).map_err(StoreError::Corrupt)?;
                let k = Kind::parse(k)
                    .ok_or_else(|| StoreError::Corrupt("gateway index kind".into()))?;
                Ok(Some((t, k, id.to_owned())))
            }
            _ => Err(StoreError::Corrupt("gateway index value".into())),
        }
    }

    fn linked(&self, tenant: &TenantId, link: Link, from: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .links_from(tenant, from)?
            .iter()
            .filter(|(l, _)| *l == link)
            .map(|(_, to)| to.clone())
            .collect())
    }

    fn links_from(&self, tenant: &TenantId, from: &str) -> Result<Links, StoreError> {
        let prefix = links_prefix(tenant, from);
        let found = self.cached(prefix.clone(), |kv| {
            Ok(Some(Cached::Links(Arc::new(
                scan_links(kv, &prefix)?.links,
            ))))
        })?;
        match found {
            Some(Cached::Links(l)) => Ok(l),
            _ => Err(StoreError::Corrupt("cache entry kind".into())),
        }
    }

    fn write(
        &self,
        tenant: &TenantId,
        kind: Kind,
        id: &str,
        event: &WriteEvent,
        decide: Decide<'_>,
    ) -> Result<Committed, DomainError> {
        self.write_impl(tenant, kind, id, event, decide, None)
    }

    fn write_marked(
        &self,
        tenant: &TenantId,
        kind: Kind,
        id: &str,
        event: &WriteEvent,
        decide: Decide<'_>,
        mark: &JobMark,
    ) -> Result<Committed, DomainError> {
        self.write_impl(tenant, kind, id, event, decide, Some(mark))
    }

    fn page_after(
        &self,
        tenant: &TenantId,
        kind: Kind,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredObject>, StoreError> {
        let prefix = object_prefix(tenant, kind);
        let start = after.map(|a| object_key(tenant, kind, a));
        self.collect_objects(&prefix, start.as_deref(), 0, limit)
    }

    fn put_job(&self, header: &JobHeader, items: &[String]) -> Result<Durable, StoreError> {
        let (t, id) = (&header.tenant, header.id.as_str());
        let mut ops: Vec<KvOp> = Vec::with_capacity(items.len() + 2);
        ops.push((job_header_key(t, id), Some(encode(header)?)));
        for (i, item) in items.iter().enumerate() {
            ops.push((
                job_key(t, id, 'i', i as u32),
                Some(item.as_bytes().to_vec()),
            ));
        }
        let seq = self.kv.next_seq()?;
        ops.push((
            format!("q/{seq:016x}/{t}/{id}").into_bytes(),
            Some(Vec::new()),
        ));
        self.kv.apply(ops)?;
        Ok(self.kv.durable())
    }

    fn get_job(&self, tenant: &TenantId, id: &str) -> Result<Option<JobHeader>, StoreError> {
        self.kv
            .get(&job_header_key(tenant, id))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn job_items(&self, tenant: &TenantId, id: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut err = None;
        self.kv.scan(&job_section(tenant, id, 'i'), &mut |_, v| {
            match String::from_utf8(v.to_vec()) {
                Ok(s) => out.push(s),
                Err(e) => {
                    err = Some(StoreError::Corrupt(e.to_string()));
                    return false;
                }
            }
            true
        })?;
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn job_marks(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Vec<(u32, Op, Vec<u8>)>, StoreError> {
        let prefix = job_section(tenant, id, 'm');
        let mut out = Vec::new();
        let mut err = None;
        self.kv.scan(&prefix, &mut |k, v| {
            let index = parse_index(&k[prefix.len()..]);
            let op = match v.first() {
                Some(b'c') => Some(Op::Create),
                Some(b'u') => Some(Op::Update),
                Some(b'd') => Some(Op::Delete),
                _ => None,
            };
            match (index, op) {
                (Some(i), Some(op)) => out.push((i, op, v[1..].to_vec())),
                _ => {
                    err = Some(StoreError::Corrupt("job mark".into()));
                    return false;
                }
            }
            true
        })?;
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn job_results(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Vec<(u32, ItemResult)>, StoreError> {
        let prefix = job_section(tenant, id, 'r');
        let mut out = Vec::new();
        let mut err = None;
        self.kv.scan(&prefix, &mut |k, v| {
            match (parse_index(&k[prefix.len()..]), decode::<ItemResult>(v)) {
                (Some(i), Ok(r)) => out.push((i, r)),
                (_, Err(e)) => {
                    err = Some(e);
                    return false;
                }
                (None, _) => {
                    err = Some(StoreError::Corrupt("job result key".into()));
                    return false;
                }
            }
            true
        })?;
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn put_job_results(
        &self,
        tenant: &TenantId,
        id: &str,
        results: &[(u32, ItemResult)],
        finished: Option<&JobHeader>,
    ) -> Result<Durable, StoreError> {
        let mut ops: Vec<KvOp> = Vec::with_capacity(results.len() + 2);
        for (i, r) in results {
            ops.push((job_key(tenant, id, 'r', *i), Some(encode(r)?)));
        }
        if let Some(h) = finished {
            ops.push((job_header_key(tenant, id), Some(encode(h)?)));
            ops.extend(self.queue_keys(tenant, id)?.into_iter().map(|k| (k, None)));
        }
        self.kv.apply(ops)?;
        Ok(self.kv.durable())
    }

    fn pending_jobs(&self) -> Result<Vec<(TenantId, String)>, StoreError> {
        let mut out = Vec::new();
        let mut err = None;
        self.kv.scan(b"q/", &mut |k, _| {
            // q/{seq}/{tenant}/{job}
            let s = String::from_utf8_lossy(k);
            let mut parts = s.splitn(4, '/').skip(2);
            match (parts.next().map(TenantId::parse), parts.next()) {
                (Some(Ok(t)), Some(job)) => out.push((t, job.to_owned())),
                _ => {
                    err = Some(StoreError::Corrupt("job queue key".into()));
                    return false;
                }
            }
            true
        })?;
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn list_jobs(&self) -> Result<Vec<JobHeader>, StoreError> {
        collect_decoded(&self.kv, b"jh/", None, 0, usize::MAX, decode)
    }

    fn delete_job(&self, tenant: &TenantId, id: &str) -> Result<Durable, StoreError> {
        let mut ops: Vec<KvOp> = vec![(job_header_key(tenant, id), None)];
        self.kv
            .scan(format!("j/{tenant}/{id}/").as_bytes(), &mut |k, _| {
                ops.push((k.to_vec(), None));
                true
            })?;
        ops.extend(self.queue_keys(tenant, id)?.into_iter().map(|k| (k, None)));
        self.kv.apply(ops)?;
        Ok(self.kv.durable())
    }

    fn changes(&self, after: u64, limit: usize) -> Result<Vec<ChangeRecord>, StoreError> {
        collect_after(&self.kv, b"f/".to_vec(), after, limit)
    }

    fn audit(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        collect_after(&self.kv, format!("a/{tenant}/").into_bytes(), after, limit)
    }

    fn append_audit(&self, mut record: AuditRecord) -> Result<Durable, StoreError> {
        // Under the write lock, like writes: entries become visible in sequence order, so
        // a reader paging by cursor never skips one.
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        record.seq = self.kv.next_seq()?;
        let key = format!("a/{}/{:016x}", record.tenant, record.seq).into_bytes();
        self.kv.apply(vec![(key, Some(encode(&record)?))])?;
        Ok(self.kv.durable())
    }

    fn purge_audit_before(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, StoreError> {
        // Within a tenant the trail is in sequence order, which is time order: stop at the
        // first entry at or after the cutoff and go on with the next tenant's range.
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        let mut skip_tenant: Option<Vec<u8>> = None;
        let mut err = None;
        self.kv.scan(b"a/", &mut |k, v| {
            // Key: a/{tenant}/{seq}; the tenant prefix ends at the last '/'.
            let tenant_prefix = match k.iter().rposition(|&b| b == b'/') {
                Some(i) => &k[..=i],
                None => return true,
            };
            if skip_tenant.as_deref() == Some(tenant_prefix) {
                return true;
            }
            match decode::<AuditRecord>(v) {
                Ok(r) if r.at < cutoff => doomed.push(k.to_vec()),
                Ok(_) => skip_tenant = Some(tenant_prefix.to_vec()),
                Err(e) => {
                    err = Some(e);
                    return false;
                }
            }
            true
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        let n = doomed.len();
        for chunk in doomed.chunks(10_000) {
            self.kv
                .apply(chunk.iter().map(|k| (k.clone(), None)).collect())?;
        }
        Ok(n)
    }

    fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv.get(format!("s/{key}").as_bytes())
    }

    fn put_setting(&self, key: &str, value: Vec<u8>) -> Result<Durable, StoreError> {
        self.kv
            .apply(vec![(format!("s/{key}").into_bytes(), Some(value))])?;
        Ok(self.kv.durable())
    }

    fn check_health(&self) -> Result<(), StoreError> {
        let stamp = chrono::Utc::now().timestamp_millis().to_be_bytes().to_vec();
        self.kv
            .apply(vec![(b"h/probe".to_vec(), Some(stamp.clone()))])?;
        match self.kv.get(b"h/probe")? {
            Some(v) if v == stamp => Ok(()),
            _ => Err(StoreError::Io(
                "health probe read back a different value".into(),
            )),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.kv.flush()
    }
}

fn collect_after<B: Kv, T: serde::de::DeserializeOwned>(
    kv: &B,
    prefix: Vec<u8>,
    after: u64,
    limit: usize,
) -> Result<Vec<T>, StoreError> {
    let mut start = prefix.clone();
    start.extend_from_slice(format!("{after:016x}").as_bytes());
    collect_decoded(kv, &prefix, Some(&start), 0, limit, decode)
}

/// The decoded values of the entries under `prefix` (after `after`, if given), skipping
/// the first `skip`, at most `limit`, in key order. A value that does not decode ends the
/// scan with its error.
fn collect_decoded<B: Kv, T>(
    kv: &B,
    prefix: &[u8],
    after: Option<&[u8]>,
    skip: usize,
    limit: usize,
    decode: impl Fn(&[u8]) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let mut err = None;
    let mut skipped = 0usize;
    let mut f = |_: &[u8], v: &[u8]| {
        if skipped < skip {
            skipped += 1;
            return true;
        }
        match decode(v) {
            Ok(t) => out.push(t),
            Err(e) => {
                err = Some(e);
                return false;
            }
        }
        out.len() < limit
    };
    match after {
        Some(a) => kv.scan_after(prefix, a, &mut f)?,
        None => kv.scan(prefix, &mut f)?,
    }
    err.map_or(Ok(out), Err)
}
