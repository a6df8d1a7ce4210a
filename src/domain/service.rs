//! The provisioning service: the one place that decides what a write means, whatever
//! protocol carried it.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::controls::Controls;
use super::error::{ConflictKind, DomainError, RuleId};
use super::jobs::JobMark;
use super::model::{Entity, Flag, Kind, Meta, ObjectModel, OrgType, Protocol, StoredObject};
use super::rules::{check_civic_no, eppn_scope, normalise_eppn, CivicNoCheck};
use super::tenant::{CivicNoPolicy, Tenant, TenantId};
use crate::store::{Decision, Link, Store, WriteEvent};

/// Who is writing, with which protocol and credential, and when.
#[derive(Debug, Clone)]
pub struct WriteContext {
    pub tenant: Arc<Tenant>,
    pub protocol: Protocol,
    /// A label of the credential (never the secret itself), kept in the audit trail.
    pub credential: String,
    pub now: DateTime<Utc>,
}

/// A resource type as a protocol sees it: a storage kind, optionally narrowed to one
/// organisation type (EGIL has separate endpoints for organisations, school-unit groups
/// and school units, which all are org units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeSel {
    pub kind: Kind,
    pub org_type: Option<OrgType>,
}

impl TypeSel {
    pub const fn of(kind: Kind) -> Self {
        Self {
            kind,
            org_type: None,
        }
    }

    pub const fn org(org_type: OrgType) -> Self {
        Self {
            kind: Kind::OrgUnit,
            org_type: Some(org_type),
        }
    }

    pub fn matches(&self, o: &StoredObject) -> bool {
        o.kind() == self.kind && (self.org_type.is_none() || o.entity.org_type() == self.org_type)
    }
}

/// An object as a protocol adapter delivers it: canonical form plus the raw document.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub id: String,
    pub entity: Entity,
    pub raw: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Refuse if the id exists (SCIM POST).
    Create,
    /// Replace, creating if absent (SCIM PUT, upsert).
    Upsert,
}

#[derive(Debug)]
pub struct WriteOutcome {
    pub object: StoredObject,
    pub created: bool,
}

/// A page of a listing.
#[derive(Debug)]
pub struct Page {
    pub total: usize,
    pub items: Vec<StoredObject>,
}

/// Told how many objects of a kind a tenant gained (+1) or lost (-1) by an accepted write,
/// whatever protocol made it (the operations room keeps its object gauges with it).
pub type CountHook = Arc<dyn Fn(&TenantId, Kind, i64) + Send + Sync>;

pub struct Provisioning {
    store: Arc<dyn Store>,
    controls: Arc<Controls>,
    on_count: Option<CountHook>,
}

impl Provisioning {
    pub fn new(store: Arc<dyn Store>, controls: Arc<Controls>) -> Self {
        Self {
            store,
            controls,
            on_count: None,
        }
    }

    /// Reports every change in the number of stored objects to `hook`.
    pub fn with_count_hook(mut self, hook: CountHook) -> Self {
        self.on_count = Some(hook);
        self
    }

    fn counted(&self, tenant: &TenantId, kind: Kind, delta: i64) {
        if let Some(h) = &self.on_count {
            h(tenant, kind, delta);
        }
    }

    pub fn controls(&self) -> &Arc<Controls> {
        &self.controls
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Applies the rules every protocol shares (EPPN form and scope, civic number policy)
    /// and returns the normalised entity with any data-quality flags.
    pub fn apply_rules(
        &self,
        tenant: &Tenant,
        mut entity: Entity,
    ) -> Result<(Entity, Vec<Flag>), DomainError> {
        let mut flags = Vec::new();
        if let Entity::Person(p) = &mut entity {
            let mut eppns: Vec<String> = Vec::with_capacity(p.eppns.len());
            for (i, e) in p.eppns.iter().enumerate() {
                let path = format!("person.eppns[{i}]");
                let n = normalise_eppn(e).map_err(|r| {
                    DomainError::invalid(&path, r, "expected an EPPN of the form local@domain")
                })?;
                if !tenant.allows_scope(eppn_scope(&n)) {
                    return Err(DomainError::invalid(
                        &path,
                        RuleId::EppnScope,
                        "the EPPN's scope is not among this school owner's allowed scopes",
                    ));
                }
                if !eppns.contains(&n) {
                    eppns.push(n);
                }
            }
            p.eppns = eppns;
            if let Some(c) = &p.civic_no {
                let path = "person.civic_no";
                match check_civic_no(c) {
                    Err(r) => return Err(DomainError::invalid(
                        path,
                        r,
                        "expected 12 digits (YYYYMMDDNNNC) or a temporary number (YYYYMMDDTFNN)",
                    )),
                    Ok(CivicNoCheck::Valid | CivicNoCheck::Temporary) => {}
                    Ok(CivicNoCheck::Suspect(rule)) => match tenant.civic_no_policy {
                        CivicNoPolicy::Off => {}
                        CivicNoPolicy::Warn => flags.push(Flag {
                            path: path.into(),
                            rule: rule.as_str().into(),
                        }),
                        CivicNoPolicy::Strict => {
                            let detail = if rule == RuleId::CivicNoDate {
                                "the civic number does not start with a valid date"
                            } else {
                                "the civic number's check digit is wrong"
                            };
                            return Err(DomainError::invalid(path, rule, detail));
                        }
                    },
                }
            }
        }
        Ok((entity, flags))
    }

    /// Creates or replaces an object of type `sel`. Refused without any change when a rule
    /// fails, when `mode` is `Create` and the id exists, when the id exists as another
    /// type, or when an EPPN belongs to another person. Returns after the write is durable.
    pub async fn write(
        &self,
        ctx: &WriteContext,
        sel: TypeSel,
        mode: WriteMode,
        incoming: Incoming,
    ) -> Result<WriteOutcome, DomainError> {
        self.write_impl(ctx, sel, mode, incoming, None).await
    }

    /// [`Provisioning::write`] for an item of a bulk job: the job mark is written in the
    /// same atomic batch as the object (see `domain::jobs`).
    pub async fn write_marked(
        &self,
        ctx: &WriteContext,
        sel: TypeSel,
        mode: WriteMode,
        incoming: Incoming,
        mark: &JobMark,
    ) -> Result<WriteOutcome, DomainError> {
        self.write_impl(ctx, sel, mode, incoming, Some(mark)).await
    }

    async fn write_impl(
        &self,
        ctx: &WriteContext,
        sel: TypeSel,
        mode: WriteMode,
        incoming: Incoming,
        mark: Option<&JobMark>,
    ) -> Result<WriteOutcome, DomainError> {
        self.controls.check_write(&ctx.tenant.id)?;
        let (entity, flags) = self.apply_rules(&ctx.tenant, incoming.entity)?;
        if entity.kind() != sel.kind
            || (sel.org_type.is_some() && sel.org_type != entity.org_type())
        {
            tracing::error!(
                kind = sel.kind.as_str(),
                "adapter delivered an entity of another type"
            );
            return Err(DomainError::Internal);
        }
        let event = WriteEvent {
            protocol: ctx.protocol,
            credential: ctx.credential.clone(),
            at: ctx.now,
        };
        let mut pending = Some((entity, flags, incoming.raw));
        let mut decide = |current: Option<&StoredObject>| {
            if let Some(cur) = current {
                if !sel.matches(cur) {
                    return Err(DomainError::Conflict(ConflictKind::OtherType));
                }
                if mode == WriteMode::Create {
                    return Err(DomainError::Conflict(ConflictKind::AlreadyExists));
                }
            }
            let (entity, flags, raw) = pending.take().ok_or(DomainError::Internal)?;
            let meta = Meta {
                created: current.map_or(ctx.now, |c| c.meta.created),
                last_modified: ctx.now,
                version: current.map_or(1, |c| c.meta.version + 1),
                protocol: ctx.protocol,
                credential: ctx.credential.clone(),
            };
            Ok(Decision::Put(Box::new(StoredObject {
                tenant: ctx.tenant.id.clone(),
                id: incoming.id.clone(),
                entity,
                meta,
                raw,
                flags,
            })))
        };
        let (tenant, id) = (&ctx.tenant.id, incoming.id.as_str());
        let committed = match mark {
            None => self
                .store
                .write(tenant, sel.kind, id, &event, &mut decide)?,
            Some(m) => self
                .store
                .write_marked(tenant, sel.kind, id, &event, &mut decide, m)?,
        };
        committed.durable.wait().await?;
        let object = committed.current.ok_or(DomainError::Internal)?;
        let created = committed.previous.is_none();
        if created {
            self.counted(tenant, sel.kind, 1);
        }
        Ok(WriteOutcome { object, created })
    }

    /// Deletes an object of type `sel`; `NotFound` if there is none. Returns after the
    /// deletion is durable.
    pub async fn delete(
        &self,
        ctx: &WriteContext,
        sel: TypeSel,
        id: &str,
    ) -> Result<(), DomainError> {
        self.delete_impl(ctx, sel, id, None).await
    }

    /// [`Provisioning::delete`] for an item of a bulk job, with its job mark.
    pub async fn delete_marked(
        &self,
        ctx: &WriteContext,
        sel: TypeSel,
        id: &str,
        mark: &JobMark,
    ) -> Result<(), DomainError> {
        self.delete_impl(ctx, sel, id, Some(mark)).await
    }

    async fn delete_impl(
        &self,
        ctx: &WriteContext,
        sel: TypeSel,
        id: &str,
        mark: Option<&JobMark>,
    ) -> Result<(), DomainError> {
        let event = WriteEvent {
            protocol: ctx.protocol,
            credential: ctx.credential.clone(),
            at: ctx.now,
        };
        let mut decide = |current: Option<&StoredObject>| match current {
            Some(cur) if sel.matches(cur) => Ok(Decision::Delete),
            _ => Err(DomainError::NotFound),
        };
        let committed = match mark {
            None => self
                .store
                .write(&ctx.tenant.id, sel.kind, id, &event, &mut decide)?,
            Some(m) => {
                self.store
                    .write_marked(&ctx.tenant.id, sel.kind, id, &event, &mut decide, m)?
            }
        };
        committed.durable.wait().await?;
        self.counted(&ctx.tenant.id, sel.kind, -1);
        Ok(())
    }

    /// An object's model (entity and metadata) as stored now, if any; for rules that look
    /// at other objects than the one being written.
    pub fn model(&self, tenant: &TenantId, kind: Kind, id: &str) -> Option<Arc<ObjectModel>> {
        self.store.get_model(tenant, kind, id).ok().flatten()
    }

    /// Whether a stored duty names this person (which makes the person staff).
    pub fn holds_duty(&self, tenant: &TenantId, person: &str) -> bool {
        self.store
            .linked(tenant, Link::PersonDuties, person)
            .is_ok_and(|d| !d.is_empty())
    }

    pub fn get(
        &self,
        tenant: &TenantId,
        sel: TypeSel,
        id: &str,
    ) -> Result<StoredObject, DomainError> {
        match self.store.get(tenant, sel.kind, id)? {
            Some(o) if sel.matches(&o) => Ok(o),
            _ => Err(DomainError::NotFound),
        }
    }

    /// One page of a tenant's objects of type `sel`, ordered by id.
    pub fn list(
        &self,
        tenant: &TenantId,
        sel: TypeSel,
        offset: usize,
        limit: usize,
    ) -> Result<Page, DomainError> {
        if sel.org_type.is_none() {
            let total = self.store.count(tenant, sel.kind)?;
            let items = self.store.page(tenant, sel.kind, offset, limit)?;
            return Ok(Page { total, items });
        }
        // Org units of one type: there are few of them, so filter the whole kind.
        let all: Vec<StoredObject> = self
            .store
            .page(tenant, sel.kind, 0, usize::MAX)?
            .into_iter()
            .filter(|o| sel.matches(o))
            .collect();
        let total = all.len();
        let items = all.into_iter().skip(offset).take(limit).collect();
        Ok(Page { total, items })
    }

    /// Up to `limit` objects of type `sel` with id > `after`, ordered by id (keyset paging).
    pub fn list_after(
        &self,
        tenant: &TenantId,
        sel: TypeSel,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredObject>, DomainError> {
        if sel.org_type.is_none() {
            return Ok(self.store.page_after(tenant, sel.kind, after, limit)?);
        }
        let mut out = Vec::new();
        let mut cursor = after.map(str::to_owned);
        loop {
            let batch =
                self.store
                    .page_after(tenant, sel.kind, cursor.as_deref(), limit.max(100))?;
            let Some(last) = batch.last() else {
                return Ok(out);
            };
            cursor = Some(last.id.clone());
            for o in batch {
                if sel.matches(&o) {
                    out.push(o);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
    }

    /// The persons of this tenant with a civic number.
    pub fn find_persons_by_civic_no(
        &self,
        tenant: &TenantId,
        civic_no: &str,
    ) -> Result<Vec<StoredObject>, DomainError> {
        let mut out = Vec::new();
        for id in self.store.find_civic_no(tenant, civic_no)? {
            if let Some(o) = self.store.get(tenant, Kind::Person, &id)? {
                out.push(o);
            }
        }
        Ok(out)
    }

    /// The person of this tenant holding an EPPN (normalised before the lookup).
    pub fn find_person_by_eppn(
        &self,
        tenant: &TenantId,
        eppn: &str,
    ) -> Result<Option<StoredObject>, DomainError> {
        let Ok(n) = normalise_eppn(eppn) else {
            return Ok(None);
        };
        match self.store.find_eppn(&n)? {
            Some((t, id)) if &t == tenant => Ok(self.store.get(tenant, Kind::Person, &id)?),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{Group, Person};
    use crate::store::memory::MemoryStore;

    fn tenant(id: &str, scopes: &[&str], policy: CivicNoPolicy) -> Arc<Tenant> {
        Arc::new(Tenant {
            id: TenantId::parse(id).unwrap(),
            name: id.into(),
            organisation_number: None,
            eppn_scopes: scopes.iter().map(|s| s.to_string()).collect(),
            civic_no_policy: policy,
            ss12000_profile: crate::domain::tenant::Ss12000Profile::Generic,
        })
    }

    fn ctx(t: Arc<Tenant>) -> WriteContext {
        WriteContext {
            tenant: t,
            protocol: Protocol::EgilScim,
            credential: "test".into(),
            now: Utc::now(),
        }
    }

    fn person(eppn: &str, civic: Option<&str>) -> Entity {
        Entity::Person(Person {
            given_name: Some("A".into()),
            family_name: Some("B".into()),
            display_name: None,
            eppns: vec![eppn.into()],
            civic_no: civic.map(Into::into),
            emails: vec![],
            security_marking: None,
            external_identifiers: vec![],
            enrolments: vec![],
            relations: vec![],
        })
    }

    fn incoming(id: &str, e: Entity) -> Incoming {
        Incoming {
            id: id.into(),
            entity: e,
            raw: "{}".into(),
        }
    }

    const P: TypeSel = TypeSel::of(Kind::Person);

    fn service() -> Provisioning {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::in_memory());
        let controls = Arc::new(Controls::load(store.clone(), &[]).unwrap());
        Provisioning::new(store, controls)
    }

    #[tokio::test]
    async fn create_then_conflict_then_upsert_bumps_version() {
        let svc = service();
        let c = ctx(tenant("a", &[], CivicNoPolicy::Warn));
        let o = svc
            .write(
                &c,
                P,
                WriteMode::Create,
                incoming("1", person("X@K.se", None)),
            )
            .await
            .unwrap();
        assert!(o.created);
        assert_eq!(o.object.meta.version, 1);
        let err = svc
            .write(
                &c,
                P,
                WriteMode::Create,
                incoming("1", person("x@k.se", None)),
            )
            .await
            .unwrap_err();
        assert_eq!(err, DomainError::Conflict(ConflictKind::AlreadyExists));
        let o = svc
            .write(
                &c,
                P,
                WriteMode::Upsert,
                incoming("1", person("y@k.se", None)),
            )
            .await
            .unwrap();
        assert!(!o.created);
        assert_eq!(o.object.meta.version, 2);
        // The old EPPN is free again, the new one is indexed.
        assert!(svc
            .find_person_by_eppn(&c.tenant.id, "x@k.se")
            .unwrap()
            .is_none());
        assert_eq!(
            svc.find_person_by_eppn(&c.tenant.id, "Y@K.SE")
                .unwrap()
                .unwrap()
                .id,
            "1"
        );
    }

    #[tokio::test]
    async fn eppn_is_unique_across_tenants_and_first_owner_keeps_it() {
        let svc = service();
        let a = ctx(tenant("a", &[], CivicNoPolicy::Warn));
        let b = ctx(tenant("b", &[], CivicNoPolicy::Warn));
        svc.write(
            &a,
            P,
            WriteMode::Create,
            incoming("1", person("x@k.se", None)),
        )
        .await
        .unwrap();
        let err = svc
            .write(
                &b,
                P,
                WriteMode::Upsert,
                incoming("2", person("X@k.se", None)),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err,
            DomainError::Conflict(ConflictKind::Unique {
                path: "person.eppns[0]".into()
            })
        );
        assert!(svc.get(&b.tenant.id, P, "2").is_err());
        assert_eq!(
            svc.find_person_by_eppn(&a.tenant.id, "x@k.se")
                .unwrap()
                .unwrap()
                .id,
            "1"
        );
        assert!(svc
            .find_person_by_eppn(&b.tenant.id, "x@k.se")
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn scope_and_civic_policies() {
        let svc = service();
        let strict = ctx(tenant("s", &["kommunen.se"], CivicNoPolicy::Strict));
        let err = svc
            .write(
                &strict,
                P,
                WriteMode::Create,
                incoming("1", person("x@other.se", None)),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, DomainError::Invalid(v) if v.rule == RuleId::EppnScope && v.path == "person.eppns[0]")
        );
        let err = svc
            .write(
                &strict,
                P,
                WriteMode::Create,
                incoming("1", person("x@skola.kommunen.se", Some("200406042904"))),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, DomainError::Invalid(v) if v.rule == RuleId::CivicNoChecksum));
        let warn = ctx(tenant("w", &[], CivicNoPolicy::Warn));
        let o = svc
            .write(
                &warn,
                P,
                WriteMode::Create,
                incoming("1", person("q@k.se", Some("200406042904"))),
            )
            .await
            .unwrap();
        assert_eq!(
            o.object.flags,
            vec![Flag {
                path: "person.civic_no".into(),
                rule: "civic_no_checksum".into()
            }]
        );
        let off = ctx(tenant("o", &[], CivicNoPolicy::Off));
        let o = svc
            .write(
                &off,
                P,
                WriteMode::Create,
                incoming("1", person("r@k.se", Some("200406042904"))),
            )
            .await
            .unwrap();
        assert!(o.object.flags.is_empty());
        let err = svc
            .write(
                &off,
                P,
                WriteMode::Create,
                incoming("2", person("s@k.se", Some("2004060429"))),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, DomainError::Invalid(v) if v.rule == RuleId::CivicNoFormat));
    }

    #[tokio::test]
    async fn type_mismatch_and_delete() {
        let svc = service();
        let c = ctx(tenant("a", &[], CivicNoPolicy::Warn));
        let g = Entity::Group(Group {
            display_name: "g".into(),
            group_type: None,
            school_type: None,
            owner: "o".into(),
            members: vec![],
        });
        svc.write(
            &c,
            TypeSel::of(Kind::Group),
            WriteMode::Create,
            incoming("1", g),
        )
        .await
        .unwrap();
        assert_eq!(
            svc.delete(&c, P, "1").await.unwrap_err(),
            DomainError::NotFound
        );
        assert_eq!(svc.delete(&c, TypeSel::of(Kind::Group), "1").await, Ok(()));
        assert_eq!(
            svc.delete(&c, TypeSel::of(Kind::Group), "1")
                .await
                .unwrap_err(),
            DomainError::NotFound
        );
        let changes = svc.store().changes(0, 10).unwrap();
        assert_eq!(changes.len(), 2);
    }
}

#[cfg(test)]
mod count_hook_tests {
    use super::*;
    use crate::domain::model::{Entity, Group};
    use crate::store::memory::MemoryStore;
    use std::sync::Mutex;

    #[tokio::test]
    async fn every_create_and_delete_is_counted_once() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::in_memory());
        let controls = Arc::new(Controls::load(store.clone(), &[]).unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let svc = Provisioning::new(store, controls).with_count_hook(Arc::new(move |t, k, d| {
            log.lock().unwrap().push((t.to_string(), k, d));
        }));
        let ctx = WriteContext {
            tenant: Arc::new(Tenant {
                id: TenantId::parse("a").unwrap(),
                name: "A".into(),
                organisation_number: None,
                eppn_scopes: vec![],
                civic_no_policy: CivicNoPolicy::Warn,
                ss12000_profile: Default::default(),
            }),
            protocol: Protocol::Ss12000Push,
            credential: "k".into(),
            now: Utc::now(),
        };
        let g = || Incoming {
            id: "g1".into(),
            entity: Entity::Group(Group {
                display_name: "g".into(),
                group_type: None,
                school_type: None,
                owner: "o".into(),
                members: vec![],
            }),
            raw: "{}".into(),
        };
        let sel = TypeSel::of(Kind::Group);
        svc.write(&ctx, sel, WriteMode::Upsert, g()).await.unwrap();
        svc.write(&ctx, sel, WriteMode::Upsert, g()).await.unwrap(); // an update: not counted
        svc.delete(&ctx, sel, "g1").await.unwrap();
        assert!(svc.delete(&ctx, sel, "g1").await.is_err()); // refused: not counted
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                ("a".to_string(), Kind::Group, 1),
                ("a".to_string(), Kind::Group, -1)
            ]
        );
    }
}
