//! In-memory hints from an EPPN to the person that holds it, so that a login finds the
//! person's record without reading the EPPN index from disk first.
//!
//! A hint is only ever a guess: [`super::kv::KvStore::find_eppn_person`] reads the person
//! record it points to and uses it only if that person holds the EPPN in the same read
//! (EPPNs are unique across tenants in every committed state, so such a person is the
//! owner). A missing, stale or colliding hint costs one read of the on-disk EPPN index,
//! never a wrong answer. So hints can be filled at open, updated after writes and left
//! stale by anything else.
//!
//! Memory: 26 bytes per person with a UUID id (a 64-bit keyed hash of the EPPN, the
//! tenant's number and the 16 id bytes) in sorted arrays, one per 4,096 shards of the
//! hash, built at their size when the store opens and grown by an eighth after: about
//! 26–30 MB for a million persons, computed (a hash table's power-of-two growth would
//! take up to twice that). Persons whose id is not a UUID get no hint and are found
//! through the index.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;

use crate::domain::TenantId;

/// Shards by the hash's top bits: a shard holds ~250 hints per million, so an insert
/// moves a few kilobytes at most, and readers of other shards never wait for it.
const SHARD_BITS: u32 = 12;

/// One hint, packed (no padding): the EPPN's hash, the tenant's number and the person id.
#[derive(Clone, Copy)]
#[repr(C, packed(2))]
struct Entry {
    hash: u64,
    tenant: u16,
    id: [u8; 16],
}

pub struct EppnHints {
    /// Keyed per process, so nobody can choose EPPNs that collide on purpose.
    hasher: RandomState,
    /// Each sorted by hash.
    shards: Box<[RwLock<Vec<Entry>>]>,
    /// Tenant ids by number, read by every login without a lock that both cores would
    /// write to; numbers are never reused while the process runs.
    tenant_ids: ArcSwap<Vec<TenantId>>,
    /// Numbers by tenant id, for writers (who add tenants to `tenant_ids`).
    tenant_numbers: Mutex<HashMap<TenantId, u16>>,
}

impl Default for EppnHints {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..1usize << SHARD_BITS)
                .map(|_| RwLock::default())
                .collect(),
            tenant_ids: ArcSwap::default(),
            tenant_numbers: Mutex::default(),
        }
    }
}

impl EppnHints {
    fn shard(&self, hash: u64) -> &RwLock<Vec<Entry>> {
        &self.shards[shard_of(hash)]
    }

    /// Replaces every hint with those `fill` gives (`set` for each), building each shard
    /// at its final size: one sorted array instead of thousands of growing ones, whose
    /// freed steps the allocator would keep.
    pub fn rebuild<E>(
        &self,
        fill: impl FnOnce(&mut dyn FnMut(&str, &TenantId, &str)) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut all = Vec::new();
        fill(&mut |eppn, tenant, id| all.extend(self.entry(eppn, tenant, id).1))?;
        all.sort_unstable_by_key(|e| e.hash);
        // Two EPPNs with one hash (about never): one keeps the hint, the other is found
        // through the index.
        all.dedup_by_key(|e| e.hash);
        // Sorted by hash is sorted by shard.
        let mut rest = all.as_slice();
        for (n, shard) in self.shards.iter().enumerate() {
            let end = rest.partition_point(|e| shard_of(e.hash) == n);
            *shard.write().unwrap_or_else(|p| p.into_inner()) = rest[..end].to_vec();
            rest = &rest[end..];
        }
        Ok(())
    }

    /// The person an EPPN (normalised) probably belongs to.
    pub fn get(&self, eppn: &str) -> Option<(TenantId, String)> {
        let hash = self.hasher.hash_one(eppn);
        let (tenant, id) = {
            let shard = self.shard(hash).read().unwrap_or_else(|p| p.into_inner());
            let i = position(&shard, hash).ok()?;
            (shard[i].tenant, shard[i].id)
        };
        let tenant = self.tenant_ids.load().get(usize::from(tenant))?.clone();
        let id = uuid::Uuid::from_bytes(id).hyphenated().to_string();
        Some((tenant, id))
    }

    /// Records that `eppn` belongs to `tenant`/`id`. An id that is not a lower-case
    /// hyphenated UUID cannot be kept in 16 bytes: any hint for the EPPN is dropped.
    pub fn set(&self, eppn: &str, tenant: &TenantId, id: &str) {
        let (hash, packed) = self.entry(eppn, tenant, id);
        let mut shard = self.shard(hash).write().unwrap_or_else(|p| p.into_inner());
        match (position(&shard, hash), packed) {
            (Ok(i), Some(e)) => shard[i] = e,
            (Ok(i), None) => {
                shard.remove(i);
            }
            (Err(i), Some(e)) => {
                if shard.len() == shard.capacity() {
                    let more = shard.capacity() / 8 + 4;
                    shard.reserve_exact(more);
                }
                shard.insert(i, e);
            }
            (Err(_), None) => {}
        }
    }

    /// Drops the hint for `eppn` if it points to `tenant`/`id` (a hint that another
    /// write has since pointed elsewhere stays).
    pub fn remove(&self, eppn: &str, tenant: &TenantId, id: &str) {
        let hash = self.hasher.hash_one(eppn);
        let number = self.numbers().get(tenant).copied();
        let mut shard = self.shard(hash).write().unwrap_or_else(|p| p.into_inner());
        if let Ok(i) = position(&shard, hash) {
            let e = shard[i];
            if Some(e.tenant) == number && Some(e.id) == uuid_bytes(id) {
                shard.remove(i);
            }
        }
    }

    #[cfg(test)]
    /// How many hints are held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(test)]
    /// Drops every hint (tenant numbers stay).
    pub fn clear(&self) {
        for s in self.shards.iter() {
            *s.write().unwrap_or_else(|p| p.into_inner()) = Vec::new();
        }
    }

    /// The EPPN's hash, and the hint for it unless the id is not a stored UUID (or there
    /// are more tenants than numbers).
    fn entry(&self, eppn: &str, tenant: &TenantId, id: &str) -> (u64, Option<Entry>) {
        let hash = self.hasher.hash_one(eppn);
        let entry = match (uuid_bytes(id), self.tenant_number(tenant)) {
            (Some(id), Some(tenant)) => Some(Entry { hash, tenant, id }),
            _ => None,
        };
        (hash, entry)
    }

    fn numbers(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, u16>> {
        self.tenant_numbers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn tenant_number(&self, tenant: &TenantId) -> Option<u16> {
        let mut numbers = self.numbers();
        if let Some(n) = numbers.get(tenant) {
            return Some(*n);
        }
        let n = u16::try_from(numbers.len()).ok()?;
        // Published before any hint can carry the number.
        let mut ids = Vec::clone(&self.tenant_ids.load());
        ids.push(tenant.clone());
        self.tenant_ids.store(Arc::new(ids));
        numbers.insert(tenant.clone(), n);
        Some(n)
    }
}

/// Where `hash` is (or would go) in a shard, as `binary_search` answers. Hashes are
/// uniform, so the entry is near where its value says (a shard of 250 holds it within a
/// few places): that window is searched first, which touches two or three cache lines
/// of a table that is never in the CPU's cache instead of eight.
fn position(shard: &[Entry], hash: u64) -> Result<usize, usize> {
    const WINDOW: usize = 8;
    let within = u128::from(hash << SHARD_BITS);
    let guess = usize::try_from((within * shard.len() as u128) >> 64).unwrap_or(0);
    let lo = guess.saturating_sub(WINDOW);
    let hi = (guess + WINDOW).min(shard.len());
    let bracketed = lo < hi
        && (lo == 0 || { shard[lo - 1].hash } < hash)
        && (hi == shard.len() || hash < { shard[hi].hash });
    if bracketed {
        shard[lo..hi]
            .binary_search_by_key(&hash, |e| e.hash)
            .map(|i| lo + i)
            .map_err(|i| lo + i)
    } else {
        shard.binary_search_by_key(&hash, |e| e.hash)
    }
}

/// The shard of a hash: its top bits.
fn shard_of(hash: u64) -> usize {
    usize::try_from(hash >> (64 - SHARD_BITS)).unwrap_or(0)
}

/// The 16 bytes of an id that is a UUID written the way stored ids are (lower case,
/// hyphenated), so that writing them back gives the same id.
fn uuid_bytes(id: &str) -> Option<[u8; 16]> {
    let u = uuid::Uuid::try_parse(id).ok()?;
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    (u.hyphenated().encode_lower(&mut buf) == id).then(|| u.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    const A: &str = "0b5c5bde-9bd6-4c43-a6ad-3bd0bbcd3e7f";
    const B: &str = "7e0b4f8e-2d3c-4a55-9a3e-1c2b3d4e5f60";

    #[test]
    fn a_hint_points_to_the_owner_last_set() {
        let h = EppnHints::default();
        assert_eq!(h.get("anna@skola.se"), None);
        h.set("anna@skola.se", &t("norrby"), A);
        assert_eq!(h.get("anna@skola.se"), Some((t("norrby"), A.to_owned())));
        h.set("anna@skola.se", &t("soderby"), B);
        assert_eq!(h.get("anna@skola.se"), Some((t("soderby"), B.to_owned())));
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn remove_drops_only_a_hint_to_that_owner() {
        let h = EppnHints::default();
        h.set("anna@skola.se", &t("norrby"), A);
        h.remove("anna@skola.se", &t("norrby"), B);
        h.remove("anna@skola.se", &t("soderby"), A);
        assert!(h.get("anna@skola.se").is_some());
        h.remove("anna@skola.se", &t("norrby"), A);
        assert_eq!(h.get("anna@skola.se"), None);
        assert!(h.is_empty());
    }

    #[test]
    fn ids_that_are_not_stored_uuids_get_no_hint() {
        let h = EppnHints::default();
        h.set("anna@skola.se", &t("norrby"), A);
        // Setting a non-UUID owner must not leave the old hint behind.
        h.set("anna@skola.se", &t("norrby"), "elev-17");
        assert_eq!(h.get("anna@skola.se"), None);
        h.set("anna@skola.se", &t("norrby"), &A.to_uppercase());
        h.set("bo@skola.se", &t("norrby"), &A.replace('-', ""));
        assert!(h.is_empty());
    }

    #[test]
    fn many_hints_per_shard_stay_sorted_and_found() {
        let h = EppnHints::default();
        let id = |i: u32| format!("00000000-0000-4000-8000-{i:012x}");
        for i in 0..20_000u32 {
            h.set(&format!("p{i}@skola.se"), &t("norrby"), &id(i));
        }
        for i in (0..20_000u32).step_by(2) {
            h.remove(&format!("p{i}@skola.se"), &t("norrby"), &id(i));
        }
        assert_eq!(h.len(), 10_000);
        for i in 0..20_000u32 {
            let want = (i % 2 == 1).then(|| (t("norrby"), id(i)));
            assert_eq!(h.get(&format!("p{i}@skola.se")), want, "{i}");
        }
    }

    #[test]
    fn a_rebuild_replaces_every_hint() {
        let h = EppnHints::default();
        h.set("old@skola.se", &t("norrby"), A);
        let id = |i: u32| format!("00000000-0000-4000-8000-{i:012x}");
        h.rebuild(|set| {
            for i in 0..10_000u32 {
                set(&format!("p{i}@skola.se"), &t("soderby"), &id(i));
            }
            set("elev@skola.se", &t("soderby"), "elev-17");
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(h.len(), 10_000);
        assert_eq!(h.get("old@skola.se"), None);
        for i in 0..10_000u32 {
            assert_eq!(
                h.get(&format!("p{i}@skola.se")),
                Some((t("soderby"), id(i)))
            );
        }
        // Set and remove keep working on rebuilt shards.
        h.set("old@skola.se", &t("norrby"), A);
        h.remove("p7@skola.se", &t("soderby"), &id(7));
        assert_eq!(h.get("old@skola.se"), Some((t("norrby"), A.to_owned())));
        assert_eq!(h.get("p7@skola.se"), None);
        assert_eq!(h.len(), 10_000);
    }

    fn entries(hashes: &[u64]) -> Vec<Entry> {
        hashes
            .iter()
            .map(|&hash| Entry {
                hash,
                tenant: 0,
                id: [0; 16],
            })
            .collect()
    }

    proptest! {
        #[test]
        fn position_answers_as_binary_search(mut hashes in proptest::collection::vec(any::<u64>(), 0..400), probe in any::<u64>(), pick in any::<prop::sample::Index>()) {
            hashes.sort_unstable();
            hashes.dedup();
            let shard = entries(&hashes);
            let want = |h: u64| shard.binary_search_by_key(&h, |e| e.hash);
            prop_assert_eq!(position(&shard, probe), want(probe));
            if !hashes.is_empty() {
                let h = hashes[pick.index(hashes.len())];
                prop_assert_eq!(position(&shard, h), want(h));
            }
        }

        #[test]
        fn position_answers_as_binary_search_within_one_shard(mut low in proptest::collection::vec(0u64..(1 << 52), 0..400), probe in 0u64..(1 << 52), top in 0u64..4096) {
            // Hashes of one shard share their top bits, which position() relies on.
            let hashes: Vec<u64> = { low.sort_unstable(); low.dedup(); low.iter().map(|l| (top << 52) | l).collect() };
            let shard = entries(&hashes);
            let probe = (top << 52) | probe;
            prop_assert_eq!(position(&shard, probe), shard.binary_search_by_key(&probe, |e| e.hash));
            for &h in &hashes {
                prop_assert_eq!(position(&shard, h), Ok(shard.binary_search_by_key(&h, |e| e.hash).unwrap()));
            }
        }

        #[test]
        fn hints_agree_with_a_plain_map(ops in proptest::collection::vec((0u8..20, 0u8..3, 0u8..4, any::<bool>()), 1..200)) {
            let h = EppnHints::default();
            let ids = [A, B, "1c9a0c3e-5f1e-4b1a-8d7e-6f5a4b3c2d1e", "not-a-uuid"];
            let tenants = ["norrby", "soderby", "vasterby"];
            let mut model: HashMap<String, (String, String)> = HashMap::new();
            for (e, tn, i, set) in ops {
                let eppn = format!("p{e}@skola.se");
                let (tn, id) = (tenants[usize::from(tn)], ids[usize::from(i)]);
                if set {
                    h.set(&eppn, &t(tn), id);
                    if id == "not-a-uuid" {
                        model.remove(&eppn);
                    } else {
                        model.insert(eppn.clone(), (tn.to_owned(), id.to_owned()));
                    }
                } else {
                    h.remove(&eppn, &t(tn), id);
                    if model.get(&eppn) == Some(&(tn.to_owned(), id.to_owned())) {
                        model.remove(&eppn);
                    }
                }
            }
            prop_assert_eq!(h.len(), model.len());
            for (eppn, (tn, id)) in &model {
                prop_assert_eq!(h.get(eppn), Some((t(tn), id.clone())));
            }
        }
    }
}
