//! The canonical model every protocol maps into (see `docs/canonical-model.md`).
//!
//! Objects are keyed by `(tenant, kind, id)` where `id` is the source UUID in lower case.
//! References between objects are stored as ids and resolved when read, because clients
//! send objects in any order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::tenant::TenantId;

/// The storage kind of an object: one key namespace per kind within a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    OrgUnit,
    Person,
    Duty,
    Group,
    Activity,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::OrgUnit,
        Kind::Person,
        Kind::Duty,
        Kind::Group,
        Kind::Activity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OrgUnit => "org_unit",
            Kind::Person => "person",
            Kind::Duty => "duty",
            Kind::Group => "group",
            Kind::Activity => "activity",
        }
    }
}

/// Organisation unit types: the SS12000:2020 `organisationType` values that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgType {
    /// The school owner itself (2018 Organisation, 2020 `Huvudman`).
    Huvudman,
    /// A grouping of school units (2018 SchoolUnitGroup, 2020 `Skola`).
    SchoolUnitGroup,
    /// A school unit with a school unit code (2018 SchoolUnit, 2020 `Skolenhet`).
    SchoolUnit,
    /// Any other 2020 organisation type (Förvaltning, Rektorsområde, …).
    Other,
}

/// Which wire protocol delivered an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    EgilScim,
    Ss12000Push,
    Ss12000Pull,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::EgilScim => "egil_scim",
            Protocol::Ss12000Push => "ss12000_push",
            Protocol::Ss12000Pull => "ss12000_pull",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgUnit {
    pub org_type: OrgType,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub school_unit_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub municipality_code: Option<String>,
    /// The nearest parent unit (2018: the SchoolUnitGroup, else the Organisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The school owner unit (2018 `organisation` reference), when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organisation: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub school_types: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalIdentifier {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default)]
    pub globally_unique: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolment {
    /// The school unit (org unit id).
    pub school_unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub school_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub school_year: Option<i64>,
    /// Upper-secondary programme (2018 `programCode`, 2020 `educationCode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
    pub person: String,
    pub relation_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// EPPNs, normalised to lower case. The first one is the primary login name.
    #[serde(default)]
    pub eppns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub civic_no: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<Email>,
    /// Protected identity (2018 boolean; 2020 enum values other than "Ingen" map to true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_marking: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_identifiers: Vec<ExternalIdentifier>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enrolments: Vec<Enrolment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relations: Vec<Relation>,
}

/// A duty at a school unit (SS12000:2018 Employment, SS12000:2020 Duty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duty {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    pub school_unit: String,
    /// The role as sent (`Lärare`, `Rektor`, …): an open set.
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub school_type: Option<String>,
    /// The owning org unit (2018 `owner`, 2020 `organisation`).
    pub owner: String,
    /// Person ids.
    #[serde(default)]
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_type: Option<String>,
    pub owner: String,
    /// Group ids.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Duty ids (2018 Employment ids).
    #[serde(default)]
    pub teachers: Vec<String>,
    /// The national-test activities this activity is an occasion of (not objects we hold).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_activities: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entity {
    OrgUnit(OrgUnit),
    Person(Person),
    Duty(Duty),
    Group(Group),
    Activity(Activity),
}

impl Entity {
    pub fn kind(&self) -> Kind {
        match self {
            Entity::OrgUnit(_) => Kind::OrgUnit,
            Entity::Person(_) => Kind::Person,
            Entity::Duty(_) => Kind::Duty,
            Entity::Group(_) => Kind::Group,
            Entity::Activity(_) => Kind::Activity,
        }
    }

    pub fn org_type(&self) -> Option<OrgType> {
        match self {
            Entity::OrgUnit(o) => Some(o.org_type),
            _ => None,
        }
    }

    /// Every id this object refers to, with the kind it should have. Used to report
    /// dangling references when reading; never checked on write.
    pub fn references(&self) -> Vec<(Kind, &str)> {
        let mut out = Vec::new();
        match self {
            Entity::OrgUnit(o) => {
                out.extend(o.parent.iter().map(|p| (Kind::OrgUnit, p.as_str())));
                out.extend(o.organisation.iter().map(|p| (Kind::OrgUnit, p.as_str())));
            }
            Entity::Person(p) => {
                out.extend(
                    p.enrolments
                        .iter()
                        .map(|e| (Kind::OrgUnit, e.school_unit.as_str())),
                );
                out.extend(
                    p.relations
                        .iter()
                        .map(|r| (Kind::Person, r.person.as_str())),
                );
            }
            Entity::Duty(d) => {
                out.push((Kind::OrgUnit, d.school_unit.as_str()));
                out.extend(d.person.iter().map(|p| (Kind::Person, p.as_str())));
            }
            Entity::Group(g) => {
                out.push((Kind::OrgUnit, g.owner.as_str()));
                out.extend(g.members.iter().map(|m| (Kind::Person, m.as_str())));
            }
            Entity::Activity(a) => {
                out.push((Kind::OrgUnit, a.owner.as_str()));
                out.extend(a.groups.iter().map(|g| (Kind::Group, g.as_str())));
                out.extend(a.teachers.iter().map(|t| (Kind::Duty, t.as_str())));
            }
        }
        out
    }
}

/// Bookkeeping kept with every object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub created: DateTime<Utc>,
    pub last_modified: DateTime<Utc>,
    /// Incremented on every accepted write; starts at 1.
    pub version: u64,
    /// Provenance of the last write.
    pub protocol: Protocol,
    /// Which credential wrote it last (a label, never the secret).
    pub credential: String,
}

/// A data-quality flag kept on an object that was accepted despite it (e.g. a civic number
/// with a bad checksum under the `warn` policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    pub path: String,
    pub rule: String,
}

/// What the store holds for each object: the canonical form, the raw accepted document
/// (byte for byte as received, so nothing the client sent is lost) and bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    pub tenant: TenantId,
    pub id: String,
    pub entity: Entity,
    pub meta: Meta,
    /// Stored under its own key (see `store::kv`), so reads that only need the model do not
    /// carry it; values written before that held it inline, hence the default.
    #[serde(default, skip_serializing)]
    pub raw: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
}

/// The part of a stored object the read side (login API) needs: the canonical entity and
/// its bookkeeping, without the document as sent. Shared (`Arc`) because the store caches
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ObjectModel {
    pub entity: Entity,
    pub meta: Meta,
}

/// Looks up an object's model as stored now (see [`Entity::account_persons`]).
pub type ReadModel<'a, E> =
    dyn FnMut(Kind, &str) -> Result<Option<std::sync::Arc<ObjectModel>>, E> + 'a;

/// Who is at a school unit, as stored now: the persons enrolled at it and the duties at
/// it (source ids).
#[derive(Debug, Default)]
pub struct AtUnit {
    pub enrolled: Vec<String>,
    pub duties: Vec<String>,
}

/// Looks up who is at a school unit.
pub type ReadAtUnit<'a, E> = dyn FnMut(&str) -> Result<AtUnit, E> + 'a;

impl Entity {
    /// Adds to `out` the persons (source ids) whose login account view this version of
    /// object `id` feeds: a person itself, a group's members, a duty's person, an
    /// activity's pupils (members of its groups) and teachers (its duties' persons), a
    /// school unit's enrolled pupils and the persons of its duties (their views show its
    /// name and code). `read` looks up a group or duty as stored now, `at_unit` who is at a
    /// school unit.
    pub fn account_persons<E>(
        &self,
        id: &str,
        read: &mut ReadModel<'_, E>,
        at_unit: &mut ReadAtUnit<'_, E>,
        out: &mut std::collections::BTreeSet<String>,
    ) -> Result<(), E> {
        match self {
            Entity::Person(_) => {
                out.insert(id.to_owned());
            }
            Entity::Group(g) => out.extend(g.members.iter().cloned()),
            Entity::Duty(d) => out.extend(d.person.iter().cloned()),
            Entity::Activity(a) => {
                for g in &a.groups {
                    if let Some(m) = read(Kind::Group, g)? {
                        if let Entity::Group(g) = &m.entity {
                            out.extend(g.members.iter().cloned());
                        }
                    }
                }
                for d in &a.teachers {
                    if let Some(m) = read(Kind::Duty, d)? {
                        if let Entity::Duty(d) = &m.entity {
                            out.extend(d.person.iter().cloned());
                        }
                    }
                }
            }
            Entity::OrgUnit(_) => {
                let at = at_unit(id)?;
                out.extend(at.enrolled);
                for d in &at.duties {
                    if let Some(m) = read(Kind::Duty, d)? {
                        if let Entity::Duty(d) = &m.entity {
                            out.extend(d.person.iter().cloned());
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl ObjectModel {
    pub fn kind(&self) -> Kind {
        self.entity.kind()
    }
}

impl StoredObject {
    pub fn kind(&self) -> Kind {
        self.entity.kind()
    }
}

/// The namespace of gateway ids (UUIDv5). Never change it: account ids handed to products
/// are derived from it.
const GATEWAY_ID_NAMESPACE: uuid::Uuid = uuid::uuid!("3f6c2b1e-5a0d-4c8e-9b7f-2d4e6a8c0b19");

/// The gateway's own id of an object: a UUIDv5 over tenant, kind and source id. It is
/// stable across re-provisioning of the same source id and never equals the school owner's
/// source UUID, so two school owners using the same source id get different gateway ids.
///
/// Computed as UUIDv5 is defined (SHA-1 over namespace and name, version and variant
/// set), with the `sha1` crate: it uses the CPU's SHA instructions where present, where
/// `uuid`'s own v5 hashes in portable code. A login computes several (2% of its time at a
/// million persons before).
pub fn gateway_id(tenant: &TenantId, kind: Kind, id: &str) -> uuid::Uuid {
    use sha1::{Digest, Sha1};
    let digest = Sha1::new()
        .chain_update(GATEWAY_ID_NAMESPACE.as_bytes())
        .chain_update(tenant.as_str())
        .chain_update("/")
        .chain_update(kind.as_str())
        .chain_update("/")
        .chain_update(id)
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

impl Kind {
    /// The inverse of [`Kind::as_str`].
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[cfg(test)]
mod gateway_id_tests {
    use super::*;

    /// Account and object ids are what products store: the name they are derived from
    /// (`{tenant}/{kind}/{id}` in the gateway's namespace) must never change. Pinned
    /// values, computed independently (Python's uuid.uuid5).
    #[test]
    fn gateway_ids_are_pinned() {
        let t = TenantId::parse("kommunen").unwrap();
        assert_eq!(
            gateway_id(&t, Kind::Person, "7f1e2d3c-0000-4000-8000-000000000001").to_string(),
            "fb5cfe8f-b27b-5263-8e79-4bbe520072ca"
        );
        assert_eq!(
            gateway_id(&t, Kind::Group, "g1").to_string(),
            "d185550e-8898-57fd-8fa8-3524a710475a"
        );
    }

    proptest::proptest! {
        #[test]
        fn gateway_ids_are_uuid_v5_of_the_name(id in "[a-z0-9åäö/-]{0,40}", k in 0usize..Kind::ALL.len()) {
            let t = TenantId::parse("kommunen").unwrap();
            let kind = Kind::ALL[k];
            let name = format!("kommunen/{}/{id}", kind.as_str());
            proptest::prop_assert_eq!(
                gateway_id(&t, kind, &id),
                uuid::Uuid::new_v5(&GATEWAY_ID_NAMESPACE, name.as_bytes())
            );
        }
    }
}
