//! One behaviour suite every [`Store`] implementation must pass.

use std::sync::Arc;

use chrono::Utc;

use super::{AuditOp, Decision, Link, Op, Store, WriteEvent};
use crate::domain::model::{
    gateway_id, Activity, Duty, Enrolment, Entity, ExternalIdentifier, Group, Meta, OrgType,
    OrgUnit, Person,
};
use crate::domain::{ConflictKind, DomainError, Kind, Protocol, StoredObject, TenantId};

fn t(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn ev() -> WriteEvent {
    WriteEvent {
        protocol: Protocol::EgilScim,
        credential: "k1".into(),
        at: Utc::now(),
    }
}

fn person(tenant: &TenantId, id: &str, eppn: &str, civic: Option<&str>) -> StoredObject {
    StoredObject {
        tenant: tenant.clone(),
        id: id.into(),
        entity: Entity::Person(Person {
            given_name: None,
            family_name: None,
            display_name: None,
            eppns: vec![eppn.into()],
            civic_no: civic.map(Into::into),
            emails: vec![],
            security_marking: None,
            external_identifiers: vec![],
            enrolments: vec![],
            relations: vec![],
        }),
        meta: Meta {
            created: Utc::now(),
            last_modified: Utc::now(),
            version: 1,
            protocol: Protocol::EgilScim,
            credential: "k1".into(),
        },
        raw: "{\"x\":1}".into(),
        flags: vec![],
    }
}

async fn put(s: &dyn Store, o: StoredObject) -> Result<(), DomainError> {
    let (tenant, kind, id) = (o.tenant.clone(), o.kind(), o.id.clone());
    let mut o = Some(o);
    let c = s.write(&tenant, kind, &id, &ev(), &mut |_| {
        Ok(Decision::Put(Box::new(o.take().unwrap())))
    })?;
    c.durable.wait().await.map_err(DomainError::from)
}

async fn del(s: &dyn Store, tenant: &TenantId, kind: Kind, id: &str) -> Result<(), DomainError> {
    let c = s.write(tenant, kind, id, &ev(), &mut |_| Ok(Decision::Delete))?;
    c.durable.wait().await.map_err(DomainError::from)
}

pub async fn run(s: Arc<dyn Store>) {
    let (a, b) = (t("a"), t("b"));
    // Round trip, raw kept byte for byte.
    put(&*s, person(&a, "p1", "x@k.se", Some("200406042903")))
        .await
        .unwrap();
    let got = s.get(&a, Kind::Person, "p1").unwrap().unwrap();
    assert_eq!(got.raw, "{\"x\":1}");
    // Tenants and kinds are separate namespaces.
    assert!(s.get(&b, Kind::Person, "p1").unwrap().is_none());
    assert!(s.get(&a, Kind::Group, "p1").unwrap().is_none());
    // Indexes.
    assert_eq!(
        s.find_eppn("x@k.se").unwrap(),
        Some((a.clone(), "p1".into()))
    );
    let by_eppn = |e: &str| {
        s.find_eppn_person(e)
            .unwrap()
            .map(|p| (p.tenant, p.id, p.model.entity.clone()))
    };
    assert_eq!(
        by_eppn("x@k.se"),
        Some((a.clone(), "p1".into(), got.entity.clone()))
    );
    assert_eq!(
        s.find_civic_no(&a, "200406042903").unwrap(),
        vec!["p1".to_string()]
    );
    assert!(s.find_civic_no(&b, "200406042903").unwrap().is_empty());
    // Unique EPPN across tenants: the write is refused and nothing changes.
    let err = put(&*s, person(&b, "p9", "x@k.se", None))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DomainError::Conflict(ConflictKind::Unique {
            path: "person.eppns[0]".into()
        })
    );
    assert!(s.get(&b, Kind::Person, "p9").unwrap().is_none());
    assert_eq!(s.count(&b, Kind::Person).unwrap(), 0);
    // Re-writing the same person with the same EPPN is fine; changing it frees the old.
    put(&*s, person(&a, "p1", "x@k.se", None)).await.unwrap();
    assert!(s.find_civic_no(&a, "200406042903").unwrap().is_empty());
    // An update that keeps the EPPN still updates the person found by it.
    assert!(matches!(
        by_eppn("x@k.se").map(|x| x.2),
        Some(Entity::Person(p)) if p.civic_no.is_none()
    ));
    put(&*s, person(&a, "p1", "y@k.se", None)).await.unwrap();
    assert_eq!(s.find_eppn("x@k.se").unwrap(), None);
    // The person found by EPPN is the one stored now, not the one indexed first.
    assert_eq!(by_eppn("x@k.se"), None);
    assert_eq!(
        by_eppn("y@k.se"),
        Some((
            a.clone(),
            "p1".into(),
            s.get(&a, Kind::Person, "p1").unwrap().unwrap().entity
        ))
    );
    assert!(matches!(
        by_eppn("y@k.se").map(|x| x.2),
        Some(Entity::Person(p)) if p.eppns == ["y@k.se"] && p.civic_no.is_none()
    ));
    put(&*s, person(&b, "p9", "x@k.se", None)).await.unwrap();
    // The decide closure sees the current object and its error aborts the write.
    let err = s
        .write(&a, Kind::Person, "p1", &ev(), &mut |cur| {
            assert!(cur.is_some());
            Err(DomainError::NotFound)
        })
        .err()
        .unwrap();
    assert_eq!(err, DomainError::NotFound);
    // Paging is ordered by id and stable.
    for i in 0..25 {
        let g = StoredObject {
            entity: Entity::Group(Group {
                display_name: format!("g{i}"),
                group_type: None,
                school_type: None,
                owner: "o".into(),
                members: vec![],
            }),
            ..person(&a, &format!("g{i:02}"), "unused@k.se", None)
        };
        put(&*s, g).await.unwrap();
    }
    assert_eq!(s.count(&a, Kind::Group).unwrap(), 25);
    let p1 = s.page(&a, Kind::Group, 0, 10).unwrap();
    let p3 = s.page(&a, Kind::Group, 20, 10).unwrap();
    assert_eq!(p1.len(), 10);
    assert_eq!(p3.len(), 5);
    assert_eq!(p1[0].id, "g00");
    assert_eq!(p3[4].id, "g24");
    assert!(s.page(&a, Kind::Group, 25, 10).unwrap().is_empty());
    assert!(s.page(&b, Kind::Group, 0, 10).unwrap().is_empty());
    // Delete removes object and indexes; change feed and audit record every write.
    del(&*s, &b, Kind::Person, "p9").await.unwrap();
    assert_eq!(s.find_eppn("x@k.se").unwrap(), None);
    assert_eq!(by_eppn("x@k.se"), None);
    let changes = s.changes(0, 1000).unwrap();
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(changes.last().unwrap().op, Op::Delete);
    let after = changes[changes.len() - 2].seq;
    assert_eq!(s.changes(after, 10).unwrap().len(), 1);
    let audit_b = s.audit(&b, 0, 100).unwrap();
    assert_eq!(
        audit_b.iter().map(|r| r.op).collect::<Vec<_>>(),
        vec![AuditOp::Create, AuditOp::Delete]
    );
    assert!(audit_b
        .iter()
        .all(|r| r.tenant == b && r.credential == "k1"));
    // Audit retention: entries before the cutoff go (in every tenant), later ones stay.
    let c = t("c");
    let old = Utc::now() - chrono::Duration::days(30);
    for (id, at) in [("o1", old), ("o2", old), ("n1", Utc::now())] {
        let event = WriteEvent { at, ..ev() };
        let g = person(&c, id, &format!("{id}@c.se"), None);
        let mut g = Some(g);
        s.write(&c, Kind::Person, id, &event, &mut |_| {
            Ok(Decision::Put(Box::new(g.take().unwrap())))
        })
        .unwrap()
        .durable
        .wait()
        .await
        .unwrap();
    }
    let a_before = s.audit(&a, 0, 1000).unwrap().len();
    let cutoff = Utc::now() - chrono::Duration::days(7);
    assert_eq!(s.purge_audit_before(cutoff).unwrap(), 2);
    let left = s.audit(&c, 0, 100).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, "n1");
    assert_eq!(s.audit(&a, 0, 1000).unwrap().len(), a_before);
    assert_eq!(s.purge_audit_before(cutoff).unwrap(), 0);
    // The objects themselves are untouched by the purge.
    assert!(s.get(&c, Kind::Person, "o1").unwrap().is_some());
    assert_eq!(s.get_setting("x/y").unwrap(), None);
    s.put_setting("x/y", b"1".to_vec())
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(s.get_setting("x/y").unwrap(), Some(b"1".to_vec()));
    s.check_health().unwrap();
    s.flush().unwrap();
    jobs(&*s).await;
    relations(&*s).await;
    models(&*s).await;
    eppn_persons(&*s).await;
}

const U1: &str = "0b5c5bde-9bd6-4c43-a6ad-3bd0bbcd3e7f";
const U2: &str = "7e0b4f8e-2d3c-4a55-9a3e-1c2b3d4e5f60";

/// A person found by EPPN comes with the relations from it, whether its id is a UUID
/// (found through the in-memory hints) or not (through the index), and follows EPPN
/// changes, moves between tenants and deletes.
async fn eppn_persons(s: &dyn Store) {
    let (a, b) = (t("ea"), t("eb"));
    let found = |eppn: &str| {
        s.find_eppn_person(eppn).unwrap().map(|p| {
            let links = s.links_from(&p.tenant, &p.id).unwrap();
            assert_eq!(p.links, links, "the relations read along are the person's");
            (p.tenant, p.id, p.model.entity.clone(), p.links.to_vec())
        })
    };
    for id in [U1, "elev-17"] {
        put(s, person(&a, id, "kim@ea.se", None)).await.unwrap();
        put(s, group(&a, "ga", &[id])).await.unwrap();
        put(s, duty(&a, "da", id)).await.unwrap();
        let entity = s.get(&a, Kind::Person, id).unwrap().unwrap().entity;
        let mut links = vec![
            (Link::PersonDuties, "da".to_owned()),
            (Link::PersonGroups, "ga".to_owned()),
        ];
        links.sort_by_key(|(l, _)| l.as_str());
        let got = found("kim@ea.se").unwrap();
        assert_eq!(got, (a.clone(), id.to_owned(), entity, links), "{id}");
        // The EPPN changes: the old one no longer finds the person.
        put(s, person(&a, id, "kim.n@ea.se", None)).await.unwrap();
        assert_eq!(found("kim@ea.se"), None);
        assert_eq!(found("kim.n@ea.se").unwrap().1, id);
        // It moves to a person of another tenant.
        put(s, person(&a, id, "kim.m@ea.se", None)).await.unwrap();
        put(s, person(&b, U2, "kim.n@ea.se", None)).await.unwrap();
        let moved = found("kim.n@ea.se").unwrap();
        assert_eq!(
            (moved.0, moved.1.as_str(), moved.3),
            (b.clone(), U2, vec![])
        );
        // Deleted persons are not found, their relations stay with the group.
        del(s, &b, Kind::Person, U2).await.unwrap();
        del(s, &a, Kind::Person, id).await.unwrap();
        assert_eq!(found("kim.n@ea.se"), None);
        assert_eq!(found("kim.m@ea.se"), None);
        assert_eq!(
            s.linked(&a, Link::PersonGroups, id).unwrap(),
            vec!["ga".to_owned()]
        );
        del(s, &a, Kind::Group, "ga").await.unwrap();
        del(s, &a, Kind::Duty, "da").await.unwrap();
    }
}

/// Bulk jobs: stored with their items and queued in acceptance order; marks are written
/// with the object in one batch; results recorded; finishing dequeues; delete removes all.
async fn jobs(s: &dyn Store) {
    use crate::domain::jobs::{ItemResult, ItemStatus, JobHeader, JobMark, JobOp};
    let (a, b) = (t("a"), t("b"));
    let header = |tenant: &TenantId, id: &str| JobHeader {
        id: id.into(),
        tenant: tenant.clone(),
        resource: "persons".into(),
        op: JobOp::Create,
        credential: "k1".into(),
        accepted: Utc::now(),
        finished: None,
        items: 2,
    };
    let items = vec!["{\"id\":\"j1\"}".to_string(), "\"x\"".to_string()];
    s.put_job(&header(&a, "job1"), &items)
        .unwrap()
        .wait()
        .await
        .unwrap();
    s.put_job(&header(&b, "job2"), &items[..1])
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(
        s.get_job(&a, "job1").unwrap(),
        Some(header(&a, "job1")).map(|mut h| {
            h.accepted = s.get_job(&a, "job1").unwrap().unwrap().accepted;
            h
        })
    );
    assert!(
        s.get_job(&b, "job1").unwrap().is_none(),
        "jobs are per tenant"
    );
    assert_eq!(s.job_items(&a, "job1").unwrap(), items);
    assert_eq!(
        s.pending_jobs().unwrap(),
        vec![
            (a.clone(), "job1".to_string()),
            (b.clone(), "job2".to_string())
        ]
    );
    // A marked write: the object and the mark land together.
    let mark = JobMark {
        job: "job1".into(),
        index: 0,
        payload: b"[]".to_vec(),
    };
    let mut o = Some(person(&a, "jp1", "jobs@k.se", None));
    let c = s
        .write_marked(
            &a,
            Kind::Person,
            "jp1",
            &ev(),
            &mut |_| Ok(Decision::Put(Box::new(o.take().unwrap()))),
            &mark,
        )
        .unwrap();
    c.durable.wait().await.unwrap();
    assert_eq!(
        s.job_marks(&a, "job1").unwrap(),
        vec![(0, Op::Create, b"[]".to_vec())]
    );
    // A refused marked write leaves no mark.
    let err = s
        .write_marked(
            &a,
            Kind::Person,
            "jp2",
            &ev(),
            &mut |_| Err(DomainError::NotFound),
            &JobMark {
                index: 1,
                ..mark.clone()
            },
        )
        .err()
        .unwrap();
    assert_eq!(err, DomainError::NotFound);
    assert_eq!(s.job_marks(&a, "job1").unwrap().len(), 1);
    let r = |id: &str| ItemResult {
        id: id.into(),
        status: ItemStatus::Success,
        status_code: 201,
        created: true,
        errors: vec![],
        warnings: vec![],
        at: Utc::now(),
    };
    s.put_job_results(&a, "job1", &[(0, r("j1"))], None)
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(s.job_results(&a, "job1").unwrap().len(), 1);
    assert_eq!(s.pending_jobs().unwrap().len(), 2);
    let mut fin = s.get_job(&a, "job1").unwrap().unwrap();
    fin.finished = Some(Utc::now());
    s.put_job_results(&a, "job1", &[(1, r("x"))], Some(&fin))
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(
        s.pending_jobs().unwrap(),
        vec![(b.clone(), "job2".to_string())]
    );
    assert_eq!(
        s.get_job(&a, "job1").unwrap().unwrap().finished,
        fin.finished
    );
    assert_eq!(
        s.job_results(&a, "job1")
            .unwrap()
            .iter()
            .map(|(i, r)| (*i, r.id.clone()))
            .collect::<Vec<_>>(),
        vec![(0, "j1".to_string()), (1, "x".to_string())]
    );
    assert_eq!(s.list_jobs().unwrap().len(), 2);
    s.delete_job(&a, "job1").unwrap().wait().await.unwrap();
    assert!(s.get_job(&a, "job1").unwrap().is_none());
    assert!(s.job_items(&a, "job1").unwrap().is_empty());
    assert!(s.job_marks(&a, "job1").unwrap().is_empty());
    assert!(s.job_results(&a, "job1").unwrap().is_empty());
    s.delete_job(&b, "job2").unwrap().wait().await.unwrap();
    assert!(
        s.pending_jobs().unwrap().is_empty(),
        "deleting a queued job dequeues it"
    );
    // Keyset paging.
    let first = s.page_after(&a, Kind::Group, None, 3).unwrap();
    assert_eq!(
        first.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
        vec!["g00", "g01", "g02"]
    );
    let next = s.page_after(&a, Kind::Group, Some("g02"), 3).unwrap();
    assert_eq!(next[0].id, "g03");
    assert!(s
        .page_after(&a, Kind::Group, Some("g24"), 3)
        .unwrap()
        .is_empty());
    assert!(s.page_after(&b, Kind::Group, None, 3).unwrap().is_empty());
}

#[tokio::test]
async fn memory_store_conforms() {
    run(Arc::new(super::memory::MemoryStore::in_memory())).await;
}

#[tokio::test]
async fn sled_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    run(Arc::new(
        super::sled_kv::SledStore::open_dir(dir.path()).unwrap(),
    ))
    .await;
}

/// Opens a store in a directory a just-dropped handle used.
type Reopen = fn(&std::path::Path) -> Box<dyn Store>;

fn reopen_sled(d: &std::path::Path) -> Box<dyn Store> {
    Box::new(super::kv::KvStore::new(super::sled_kv::reopen(d)))
}

fn reopen_redb(d: &std::path::Path) -> Box<dyn Store> {
    Box::new(super::redb_kv::RedbStore::open_dir(d).unwrap())
}

async fn keeps_data_across_reopen(open: Reopen) {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        put(&*s, person(&t("a"), "p1", "x@k.se", None))
            .await
            .unwrap();
    }
    let s = open(dir.path());
    assert!(s.get(&t("a"), Kind::Person, "p1").unwrap().is_some());
    let before = s.changes(0, 10).unwrap().last().unwrap().seq;
    put(&*s, person(&t("a"), "p2", "z@k.se", None))
        .await
        .unwrap();
    assert!(
        s.changes(0, 10).unwrap().last().unwrap().seq > before,
        "sequence numbers grow across restarts"
    );
}

#[tokio::test]
async fn sled_store_keeps_data_across_reopen() {
    keeps_data_across_reopen(reopen_sled).await;
}

#[tokio::test]
async fn redb_store_keeps_data_across_reopen() {
    keeps_data_across_reopen(reopen_redb).await;
}

#[tokio::test]
async fn redb_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    run(Arc::new(
        super::redb_kv::RedbStore::open_dir(dir.path()).unwrap(),
    ))
    .await;
}

#[test]
fn a_directory_of_one_engine_is_not_opened_with_the_other() {
    use super::StoreEngine;
    let dir = tempfile::tempdir().unwrap();
    let mb = 8 * 1024 * 1024;
    drop(super::open(StoreEngine::Sled, dir.path(), mb, mb).unwrap());
    let err = super::open(StoreEngine::Redb, dir.path(), mb, mb)
        .err()
        .unwrap();
    assert!(err.contains("holds a sled store"), "{err}");
    assert!(!super::redb_kv::file_in(dir.path()).exists());
    let dir = tempfile::tempdir().unwrap();
    drop(super::open(StoreEngine::Redb, dir.path(), mb, mb).unwrap());
    let err = super::open(StoreEngine::Sled, dir.path(), mb, mb)
        .err()
        .unwrap();
    assert!(err.contains("holds a redb store"), "{err}");
    assert!(!dir.path().join("conf").exists());
}

fn object(tenant: &TenantId, id: &str, entity: Entity) -> StoredObject {
    StoredObject {
        entity,
        ..person(tenant, id, "unused@k.se", None)
    }
}

fn group(tenant: &TenantId, id: &str, members: &[&str]) -> StoredObject {
    object(
        tenant,
        id,
        Entity::Group(Group {
            display_name: id.into(),
            group_type: None,
            school_type: None,
            owner: "o".into(),
            members: members.iter().map(|m| m.to_string()).collect(),
        }),
    )
}

fn activity(tenant: &TenantId, id: &str, groups: &[&str], teachers: &[&str]) -> StoredObject {
    object(
        tenant,
        id,
        Entity::Activity(Activity {
            display_name: id.into(),
            activity_type: None,
            owner: "o".into(),
            groups: groups.iter().map(|m| m.to_string()).collect(),
            teachers: teachers.iter().map(|m| m.to_string()).collect(),
            parent_activities: vec![],
        }),
    )
}

fn duty(tenant: &TenantId, id: &str, person: &str) -> StoredObject {
    object(
        tenant,
        id,
        Entity::Duty(Duty {
            person: Some(person.into()),
            school_unit: "u".into(),
            role: "Lärare".into(),
            signature: None,
        }),
    )
}

/// The read-side indexes follow every write of the object they come from, in any order
/// of arrival, and stay per tenant.
async fn relations(s: &dyn Store) {
    let (a, b) = (t("ra"), t("rb"));
    let ids = |v: Vec<String>| v;
    // The activity arrives before its group and duty: the relation exists at once.
    put(s, activity(&a, "act1", &["g1", "g2"], &["d1"]))
        .await
        .unwrap();
    assert_eq!(
        ids(s.linked(&a, Link::GroupActivities, "g1").unwrap()),
        vec!["act1"]
    );
    assert_eq!(
        s.linked(&a, Link::DutyActivities, "d1").unwrap(),
        vec!["act1"]
    );
    put(s, group(&a, "g1", &["p1", "p2"])).await.unwrap();
    put(s, group(&a, "g2", &["p1"])).await.unwrap();
    put(s, duty(&a, "d1", "p7")).await.unwrap();
    assert_eq!(
        s.linked(&a, Link::PersonGroups, "p1").unwrap(),
        vec!["g1", "g2"]
    );
    assert_eq!(s.linked(&a, Link::PersonGroups, "p2").unwrap(), vec!["g1"]);
    assert_eq!(s.linked(&a, Link::PersonDuties, "p7").unwrap(), vec!["d1"]);
    // Another tenant with the same ids is a separate namespace.
    assert!(s.linked(&b, Link::PersonGroups, "p1").unwrap().is_empty());
    put(s, group(&b, "g1", &["p1"])).await.unwrap();
    assert_eq!(s.linked(&b, Link::PersonGroups, "p1").unwrap(), vec!["g1"]);
    assert_eq!(
        s.linked(&a, Link::PersonGroups, "p1").unwrap(),
        vec!["g1", "g2"]
    );
    // A replace drops what the old version contributed.
    put(s, group(&a, "g1", &["p2", "p3"])).await.unwrap();
    assert_eq!(s.linked(&a, Link::PersonGroups, "p1").unwrap(), vec!["g2"]);
    assert_eq!(s.linked(&a, Link::PersonGroups, "p3").unwrap(), vec!["g1"]);
    put(s, activity(&a, "act1", &["g2"], &[])).await.unwrap();
    assert!(s
        .linked(&a, Link::GroupActivities, "g1")
        .unwrap()
        .is_empty());
    assert!(s.linked(&a, Link::DutyActivities, "d1").unwrap().is_empty());
    // A prefix of an id is not the id.
    put(s, group(&a, "g10", &["p10"])).await.unwrap();
    assert!(!s
        .linked(&a, Link::PersonGroups, "p1")
        .unwrap()
        .contains(&"g10".to_string()));
    // Gateway ids resolve to their object and disappear with it.
    let gid = gateway_id(&a, Kind::Group, "g2");
    assert_ne!(gid, gateway_id(&b, Kind::Group, "g2"));
    assert_eq!(
        s.find_gateway_id(&gid).unwrap(),
        Some((a.clone(), Kind::Group, "g2".into()))
    );
    del(s, &a, Kind::Group, "g2").await.unwrap();
    assert_eq!(s.find_gateway_id(&gid).unwrap(), None);
    assert!(s.linked(&a, Link::PersonGroups, "p1").unwrap().is_empty());
    // External identifiers: per context, several owners possible, removed with the person.
    let with_x = |tenant: &TenantId, id: &str, eppn: &str, ctx: &str| {
        let mut o = person(tenant, id, eppn, None);
        if let Entity::Person(p) = &mut o.entity {
            p.external_identifiers = vec![ExternalIdentifier {
                value: "abc@eduid.se".into(),
                context: Some(ctx.into()),
                globally_unique: true,
            }];
        }
        o
    };
    put(s, with_x(&a, "px", "px@a.se", "https://eduid.se"))
        .await
        .unwrap();
    put(s, with_x(&b, "py", "py@b.se", "https://other.example/a/b"))
        .await
        .unwrap();
    assert_eq!(
        s.find_external_id("https://eduid.se", "abc@eduid.se")
            .unwrap(),
        vec![(a.clone(), "px".to_string())]
    );
    assert!(s
        .find_external_id("https://eduid.se", "abc")
        .unwrap()
        .is_empty());
    put(s, with_x(&b, "pz", "pz@b.se", "https://eduid.se"))
        .await
        .unwrap();
    assert_eq!(
        s.find_external_id("https://eduid.se", "abc@eduid.se")
            .unwrap()
            .len(),
        2
    );
    del(s, &a, Kind::Person, "px").await.unwrap();
    assert_eq!(
        s.find_external_id("https://eduid.se", "abc@eduid.se")
            .unwrap(),
        vec![(b.clone(), "pz".to_string())]
    );
}

/// The cached model follows every write of its object.
async fn models(s: &dyn Store) {
    let a = t("m");
    assert!(s.get_model(&a, Kind::Person, "q1").unwrap().is_none());
    put(s, person(&a, "q1", "q1@m.se", None)).await.unwrap();
    let eppns = |s: &dyn Store| match s.get_model(&a, Kind::Person, "q1").unwrap() {
        Some(m) => match &m.entity {
            Entity::Person(p) => p.eppns.clone(),
            _ => panic!("not a person"),
        },
        None => vec![],
    };
    assert_eq!(eppns(s), vec!["q1@m.se"]);
    // Cached now; an update must not be hidden by the cache.
    put(s, person(&a, "q1", "q1b@m.se", None)).await.unwrap();
    assert_eq!(eppns(s), vec!["q1b@m.se"]);
    let m = s.get_model(&a, Kind::Person, "q1").unwrap().unwrap();
    assert_eq!(m.meta, s.get(&a, Kind::Person, "q1").unwrap().unwrap().meta);
    del(s, &a, Kind::Person, "q1").await.unwrap();
    assert!(eppns(s).is_empty());
    // The document as sent is not part of the model but survives in the full object.
    put(s, person(&a, "q2", "q2@m.se", None)).await.unwrap();
    let page = s.page(&a, Kind::Person, 0, 10).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].raw, "{\"x\":1}");
    assert_eq!(s.page_after(&a, Kind::Person, None, 10).unwrap(), page);
    // The change feed names the accounts a change alters: a group's members before and
    // after.
    put(s, group(&a, "mg", &["q2", "q4"])).await.unwrap();
    put(s, group(&a, "mg", &["q3", "q4"])).await.unwrap();
    let last = s.changes(0, 100_000).unwrap().pop().unwrap();
    assert_eq!((last.kind, last.id.as_str()), (Kind::Group, "mg"));
    assert_eq!(last.accounts, ["q2", "q3", "q4"]);
    // A school unit's change lists the pupils enrolled at it and the persons of its
    // duties (as stored now), not persons elsewhere.
    let enrolled = |id: &str, unit: &str| {
        let mut p = person(&a, id, &format!("{id}@m.se"), None);
        if let Entity::Person(x) = &mut p.entity {
            x.enrolments = vec![Enrolment {
                school_unit: unit.into(),
                school_type: None,
                school_year: None,
                program_code: None,
            }];
        }
        p
    };
    put(s, enrolled("q5", "u")).await.unwrap();
    put(s, enrolled("q6", "other")).await.unwrap();
    put(s, duty(&a, "d9", "q7")).await.unwrap(); // at "u"
    let unit = |name: &str| {
        object(
            &a,
            "u",
            Entity::OrgUnit(OrgUnit {
                org_type: OrgType::SchoolUnit,
                display_name: name.into(),
                school_unit_code: None,
                municipality_code: None,
                parent: None,
                organisation: None,
                school_types: vec![],
            }),
        )
    };
    put(s, unit("Skolan")).await.unwrap();
    let last = s.changes(0, 100_000).unwrap().pop().unwrap();
    assert_eq!((last.kind, last.id.as_str()), (Kind::OrgUnit, "u"));
    assert_eq!(last.accounts, ["q5", "q7"]);
    // The pupil moves to the other unit: the next change of "u" no longer lists it.
    put(s, enrolled("q5", "other")).await.unwrap();
    put(s, unit("Skolan 2")).await.unwrap();
    assert_eq!(
        s.changes(0, 100_000).unwrap().pop().unwrap().accounts,
        ["q7"]
    );
}

/// A reader that read an object just before a write and fills the cache just after it
/// must not leave the old model behind: the engine below pauses the reader between its
/// read and its cache insert while the write happens.
/// A key-value engine whose reads on one thread, of keys (or scan prefixes) under one
/// prefix, can be paused once after the read: `gate` = (thread, prefix, "read" sender,
/// "go on" receiver).
mod gated {
    use super::super::kv::{Kv, KvOp};
    use super::super::memory::MemoryKv;
    use std::sync::mpsc::{Receiver, Sender};
    use std::sync::Mutex;

    pub type Gate = (std::thread::ThreadId, Vec<u8>, Sender<()>, Receiver<()>);

    #[derive(Default)]
    pub struct GatedKv {
        inner: MemoryKv,
        pub gate: Mutex<Option<Gate>>,
    }

    impl GatedKv {
        fn pause(&self, key: &[u8]) {
            let mut gate = self.gate.lock().unwrap();
            if gate
                .as_ref()
                .is_some_and(|g| g.0 == std::thread::current().id() && key.starts_with(&g.1))
            {
                let (_, _, read, go) = gate.take().unwrap();
                drop(gate);
                read.send(()).unwrap();
                go.recv().unwrap();
            }
        }

        /// Reads the whole scan first, pauses, then hands it on.
        fn gated_scan(
            &self,
            prefix: &[u8],
            after: Option<&[u8]>,
            f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
        ) -> Result<(), super::super::StoreError> {
            let mut read = Vec::new();
            let mut all = |k: &[u8], v: &[u8]| {
                read.push((k.to_vec(), v.to_vec()));
                true
            };
            match after {
                None => self.inner.scan(prefix, &mut all)?,
                Some(a) => self.inner.scan_after(prefix, a, &mut all)?,
            }
            self.pause(prefix);
            for (k, v) in read {
                if !f(&k, &v) {
                    break;
                }
            }
            Ok(())
        }
    }

    impl Kv for GatedKv {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, super::super::StoreError> {
            let v = self.inner.get(key);
            self.pause(key);
            v
        }
        fn scan(
            &self,
            prefix: &[u8],
            f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
        ) -> Result<(), super::super::StoreError> {
            self.gated_scan(prefix, None, f)
        }
        fn scan_after(
            &self,
            prefix: &[u8],
            after: &[u8],
            f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
        ) -> Result<(), super::super::StoreError> {
            self.gated_scan(prefix, Some(after), f)
        }
        fn apply(&self, ops: Vec<KvOp>) -> Result<(), super::super::StoreError> {
            self.inner.apply(ops)
        }
        fn next_seq(&self) -> Result<u64, super::super::StoreError> {
            self.inner.next_seq()
        }
        fn durable(&self) -> super::super::Durable {
            self.inner.durable()
        }
        fn flush(&self) -> Result<(), super::super::StoreError> {
            self.inner.flush()
        }
    }
}

fn named_group(a: &TenantId, name: &str) -> StoredObject {
    let mut g = group(a, "g1", &["p1"]);
    if let Entity::Group(x) = &mut g.entity {
        x.display_name = name.into();
    }
    g
}

/// Runs `read` on a thread whose read under `prefix` pauses while `named_group("new")`
/// is written; returns what `read` returned.
async fn write_during_read<T: Send + 'static>(
    s: &Arc<super::kv::KvStore<gated::GatedKv>>,
    a: &TenantId,
    prefix: &[u8],
    read: impl FnOnce() -> T + Send + 'static,
) -> T {
    use std::sync::mpsc::channel;
    let (read_tx, read_rx) = channel();
    let (go_tx, go_rx) = channel();
    let (start_tx, start_rx) = channel::<()>();
    let reader = std::thread::spawn(move || {
        start_rx.recv().unwrap();
        read()
    });
    *s.engine().gate.lock().unwrap() =
        Some((reader.thread().id(), prefix.to_vec(), read_tx, go_rx));
    start_tx.send(()).unwrap();
    read_rx.recv().unwrap();
    // The reader holds the old value; the write lands before it fills the cache.
    put(&**s, named_group(a, "new")).await.unwrap();
    go_tx.send(()).unwrap();
    reader.join().unwrap()
}

#[tokio::test]
async fn model_cache_never_keeps_a_stale_model() {
    let s = Arc::new(super::kv::KvStore::new(gated::GatedKv::default()));
    let a = t("a");
    // A group: the cache keeps shared objects (not persons, see `Cached::shared`).
    put(&*s, named_group(&a, "old")).await.unwrap();
    let reader = {
        let (s, a) = (s.clone(), a.clone());
        move || s.get_model(&a, Kind::Group, "g1").unwrap()
    };
    let seen = write_during_read(&s, &a, b"o/a/group/", reader)
        .await
        .unwrap();
    assert!(matches!(&seen.entity, Entity::Group(g) if g.display_name == "old"));
    let m = s.get_model(&a, Kind::Group, "g1").unwrap().unwrap();
    assert!(matches!(&m.entity, Entity::Group(g) if g.display_name == "new"));
}

/// The warm-up reads shared objects into the cache, not persons, and a write that lands
/// between its read and its insert leaves no stale entry.
#[tokio::test]
async fn cache_warm_up_fills_shared_objects_and_never_keeps_a_stale_one() {
    let s = Arc::new(super::kv::KvStore::new(gated::GatedKv::default()));
    let a = t("a");
    put(&*s, named_group(&a, "old")).await.unwrap();
    put(&*s, activity(&a, "act1", &["g1"], &["d1"]))
        .await
        .unwrap();
    put(&*s, duty(&a, "d1", "p7")).await.unwrap();
    put(&*s, person(&a, "p7", "p7@k.se", None)).await.unwrap();
    let warmer = {
        let (s, a) = (s.clone(), a.clone());
        move || s.warm_cache(&a).unwrap()
    };
    // The group's entry is dropped again; the activity and duty are cached.
    assert_eq!(write_during_read(&s, &a, b"o/a/group/", warmer).await, 2);
    let m = s.get_model(&a, Kind::Group, "g1").unwrap().unwrap();
    assert!(matches!(&m.entity, Entity::Group(g) if g.display_name == "new"));
    // A second warm-up adds the group (now read after the write) and nothing else.
    assert_eq!(
        s.warm_cache(&a).unwrap(),
        0,
        "the read above cached the group"
    );
    assert_eq!(s.cached_models(), 3, "group, activity and duty; no person");
}

/// Values of format version 1 held the document inline; opening such a store moves it to
/// its own key and both reads keep working.
#[tokio::test]
async fn version_one_values_are_migrated() {
    use super::kv::Kv;
    let s = super::memory::MemoryStore::in_memory();
    let a = t("a");
    let mut o = person(&a, "p1", "x@k.se", None);
    o.raw = "{\"old\":true}".into();
    let mut v1 = vec![1u8];
    let mut json = serde_json::to_value(&o).unwrap();
    json["raw"] = serde_json::Value::String(o.raw.clone());
    serde_json::to_writer(&mut v1, &json).unwrap();
    s.engine()
        .apply(vec![(b"o/a/person/p1".to_vec(), Some(v1))])
        .unwrap();
    assert_eq!(s.get(&a, Kind::Person, "p1").unwrap().unwrap().raw, o.raw);
    assert!(s.get_model(&a, Kind::Person, "p1").unwrap().is_some());
    s.ensure_indexes().unwrap();
    assert_eq!(
        s.engine().get(b"r/a/person/p1").unwrap(),
        Some(o.raw.clone().into_bytes())
    );
    let after = s.get(&a, Kind::Person, "p1").unwrap().unwrap();
    assert_eq!(after.raw, o.raw);
    assert_eq!(after.entity, o.entity);
    assert_eq!(
        s.find_gateway_id(&gateway_id(&a, Kind::Person, "p1"))
            .unwrap()
            .map(|x| x.2),
        Some("p1".into())
    );
}

/// Stores of index versions 5 (EPPN entry = owner) and 6 (EPPN entry = owner + the
/// person's value) have no person record next to the relations: logins read the person
/// from its own key until the store is opened, which writes the records and makes every
/// EPPN entry the owner alone.
#[tokio::test]
async fn eppn_index_values_of_versions_five_and_six_are_read_and_rewritten() {
    use super::kv::Kv;
    let s = super::memory::MemoryStore::in_memory();
    let a = t("a");
    put(&s, person(&a, "p1", "x@k.se", None)).await.unwrap();
    put(&s, person(&a, "p2", "y@k.se", None)).await.unwrap();
    put(&s, group(&a, "g1", &["p1", "p2"])).await.unwrap();
    let stored = |id: &str| s.get(&a, Kind::Person, id).unwrap().unwrap().entity;
    let (p1, p2) = (stored("p1"), stored("p2"));
    let p2_value = s.engine().get(b"o/a/person/p2").unwrap().unwrap();
    let mut v6 = vec![1u8];
    v6.extend_from_slice(&4u32.to_be_bytes());
    v6.extend_from_slice(b"a/p2");
    v6.extend_from_slice(&p2_value);
    s.engine()
        .apply(vec![
            (b"e/x@k.se".to_vec(), Some(b"a/p1".to_vec())),
            (b"e/y@k.se".to_vec(), Some(v6)),
            (b"l/a/p1/".to_vec(), None),
            (b"l/a/p2/".to_vec(), None),
            (b"s/store/index_version".to_vec(), Some(b"6".to_vec())),
        ])
        .unwrap();
    let found = |s: &super::memory::MemoryStore, eppn: &str| {
        s.find_eppn_person(eppn)
            .unwrap()
            .map(|p| (p.tenant, p.id, p.model.entity.clone(), p.links.to_vec()))
    };
    let in_g1 = vec![(Link::PersonGroups, "g1".to_owned())];
    let want = |id: &str, e: &Entity| Some((a.clone(), id.to_owned(), e.clone(), in_g1.clone()));
    assert_eq!(found(&s, "x@k.se"), want("p1", &p1));
    assert_eq!(found(&s, "y@k.se"), want("p2", &p2));
    assert_eq!(
        s.find_eppn("y@k.se").unwrap(),
        Some((a.clone(), "p2".into()))
    );
    s.ensure_indexes().unwrap();
    assert_eq!(s.engine().get(b"e/y@k.se").unwrap(), Some(b"a/p2".to_vec()));
    assert_eq!(s.engine().get(b"l/a/p2/").unwrap(), Some(p2_value));
    assert!(s.engine().get(b"l/a/p1/").unwrap().is_some());
    assert_eq!(found(&s, "x@k.se"), want("p1", &p1));
    assert_eq!(found(&s, "y@k.se"), want("p2", &p2));
}

/// A hint that points to the wrong person, a deleted one or nowhere useful never changes
/// who is found: the index decides.
#[tokio::test]
async fn wrong_eppn_hints_do_not_change_who_is_found() {
    let s = super::memory::MemoryStore::in_memory();
    let (a, b) = (t("a"), t("b"));
    put(&s, person(&a, U1, "x@k.se", None)).await.unwrap();
    put(&s, person(&b, U2, "y@k.se", None)).await.unwrap();
    let owner = |eppn: &str| s.find_eppn_person(eppn).unwrap().map(|p| (p.tenant, p.id));
    // y's hint points to a person of another tenant that exists.
    s.hints().set("y@k.se", &a, U1);
    assert_eq!(owner("y@k.se"), Some((b.clone(), U2.to_owned())));
    // An unknown EPPN hinted at an existing person.
    s.hints().set("z@k.se", &a, U1);
    assert_eq!(owner("z@k.se"), None);
    // A hint to a person that does not exist.
    s.hints()
        .set("x@k.se", &b, "1c9a0c3e-5f1e-4b1a-8d7e-6f5a4b3c2d1e");
    assert_eq!(owner("x@k.se"), Some((a.clone(), U1.to_owned())));
    // No hint at all.
    s.hints().clear();
    assert_eq!(owner("x@k.se"), Some((a.clone(), U1.to_owned())));
    assert_eq!(owner("y@k.se"), Some((b.clone(), U2.to_owned())));
}

/// Opening a store fills the hints from the index.
#[tokio::test]
async fn opening_a_store_fills_the_eppn_hints() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = super::sled_kv::SledStore::open_dir(dir.path()).unwrap();
        put(&s, person(&t("a"), U1, "x@k.se", None)).await.unwrap();
        put(&s, person(&t("b"), U2, "y@k.se", None)).await.unwrap();
        put(&s, person(&t("b"), "elev-17", "z@k.se", None))
            .await
            .unwrap();
        assert_eq!(s.hints().len(), 2);
    }
    let s = super::sled_kv::SledStore::open_dir(dir.path()).unwrap();
    assert_eq!(s.hints().len(), 2, "ids that are not UUIDs get none");
    assert_eq!(s.hints().get("y@k.se"), Some((t("b"), U2.to_owned())));
    assert_eq!(s.find_eppn_person("z@k.se").unwrap().unwrap().id, "elev-17");
}

/// A stored value that does not decode is reported without quoting it: store errors are
/// logged, and serde_json's own message would carry the EPPN below.
#[test]
fn undecodable_values_are_reported_without_their_content() {
    use super::kv::Kv;
    let s = super::memory::MemoryStore::in_memory();
    let mut v = vec![2u8];
    v.extend_from_slice(
        br#"{"tenant":"a","id":"p1","entity":{"kind":"person","eppns":"anna.svensson@skola.se"}}"#,
    );
    s.engine()
        .apply(vec![(b"o/a/person/p1".to_vec(), Some(v))])
        .unwrap();
    let Err(super::StoreError::Corrupt(msg)) = s.get_model(&t("a"), Kind::Person, "p1") else {
        panic!("decoded a bad value");
    };
    assert!(msg.starts_with("JSON Data error at line 1 column"), "{msg}");
    assert!(!msg.contains("anna"), "{msg}");
}

#[tokio::test]
async fn indexes_are_rebuilt_for_older_data() {
    use super::kv::Kv;
    let s = super::memory::MemoryStore::in_memory();
    let a = t("a");
    put(&s, group(&a, "g1", &["p1"])).await.unwrap();
    // Simulate data written before the read-side indexes existed.
    let mut stale = Vec::new();
    s.engine()
        .scan(b"", &mut |k, _| {
            if k.starts_with(b"l/") || k.starts_with(b"g/") || k.starts_with(b"s/store/") {
                stale.push((k.to_vec(), None));
            }
            true
        })
        .unwrap();
    assert!(!stale.is_empty());
    s.engine().apply(stale).unwrap();
    assert!(s.linked(&a, Link::PersonGroups, "p1").unwrap().is_empty());
    s.ensure_indexes().unwrap();
    assert_eq!(s.linked(&a, Link::PersonGroups, "p1").unwrap(), vec!["g1"]);
    assert!(s
        .find_gateway_id(&gateway_id(&a, Kind::Group, "g1"))
        .unwrap()
        .is_some());
}

async fn closes_with_unawaited_durability_handles(open: Reopen) {
    let dir = tempfile::tempdir().unwrap();
    let a = t("a");
    let s = open(dir.path());
    let c = s
        .write(&a, Kind::Person, "p1", &ev(), &mut |_| {
            Ok(Decision::Put(Box::new(person(&a, "p1", "x@k.se", None))))
        })
        .unwrap();
    // Closing must not wait for a handle nobody awaited (it would hang forever); the
    // committer finishes the queued round at close, so the handle reports success.
    drop(s);
    assert!(c.durable.wait().await.is_ok());
    let s = open(dir.path());
    assert!(s.get(&a, Kind::Person, "p1").unwrap().is_some());
}

#[tokio::test]
async fn sled_store_closes_with_unawaited_durability_handles() {
    closes_with_unawaited_durability_handles(reopen_sled).await;
}

#[tokio::test]
async fn redb_store_closes_with_unawaited_durability_handles() {
    closes_with_unawaited_durability_handles(reopen_redb).await;
}

/// A store copied to the other engine holds the same objects, indexes, change feed and
/// audit trail, and its sequence numbers continue after the source's.
#[tokio::test]
async fn a_store_is_copied_between_engines() {
    use super::StoreEngine::{Redb, Sled};
    let root = tempfile::tempdir().unwrap();
    let (from, to, back) = (
        root.path().join("from"),
        root.path().join("to"),
        root.path().join("back"),
    );
    let a = t("a");
    let (changes, audit) = {
        let s = super::sled_kv::SledStore::open_dir(&from).unwrap();
        for i in 0..30 {
            put(
                &s,
                person(&a, &format!("p{i:02}"), &format!("p{i}@k.se"), None),
            )
            .await
            .unwrap();
        }
        put(&s, group(&a, "g1", &["p01", "p02"])).await.unwrap();
        (s.changes(0, 1000).unwrap(), s.audit(&a, 0, 1000).unwrap())
    };
    assert!(
        super::copy_store(Sled, &root.path().join("none"), Redb, &to)
            .unwrap_err()
            .contains("holds no store")
    );
    let copied = super::copy_store(Sled, &from, Redb, &to).unwrap();
    assert!(copied > 31 * 4, "{copied}");
    assert!(super::copy_store(Sled, &from, Redb, &to)
        .unwrap_err()
        .contains("already holds a store"));
    let s = super::redb_kv::RedbStore::open_dir(&to).unwrap();
    assert_eq!(s.changes(0, 1000).unwrap(), changes);
    assert_eq!(s.audit(&a, 0, 1000).unwrap(), audit);
    assert_eq!(
        s.get(&a, Kind::Person, "p07").unwrap().unwrap().raw,
        "{\"x\":1}"
    );
    assert_eq!(
        s.find_eppn("p7@k.se").unwrap(),
        Some((a.clone(), "p07".to_owned()))
    );
    assert_eq!(s.linked(&a, Link::PersonGroups, "p02").unwrap(), ["g1"]);
    put(&s, person(&a, "p99", "p99@k.se", None)).await.unwrap();
    let last = changes.last().unwrap().seq;
    assert!(s.changes(0, 1000).unwrap().last().unwrap().seq > last);
    // And back to sled: numbers continue after the copy's.
    let high = s.changes(0, 1000).unwrap().last().unwrap().seq;
    drop(s);
    super::copy_store(Redb, &to, Sled, &back).unwrap();
    let s = super::kv::KvStore::new(super::sled_kv::reopen(&back));
    put(&s, person(&a, "p98", "p98@k.se", None)).await.unwrap();
    assert!(s.changes(0, 1000).unwrap().last().unwrap().seq > high);
}
