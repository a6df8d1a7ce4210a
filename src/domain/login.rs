//! The login service: from a verified Skolfederation login (EPPN and identity provider, or
//! an external identifier such as an eduID) to the provisioned person, with the groups and
//! activities that person is in, resolved at read time from the canonical model.
//!
//! Matching rules (see `docs/login-api.md`):
//! * an EPPN is compared case-insensitively (normalised as at provisioning) through the
//!   global EPPN index, so at most one person in one tenant can match;
//! * the EPPN's scope must still be among the owning tenant's allowed scopes;
//! * an identity provider, when given, must be bound to the owning tenant; for a match
//!   through an external identifier it must at least not be bound to another tenant;
//! * EPPNs in a shared scope (eduID) never match by scope: only through an external
//!   identifier with its context;
//! * a civic number is never a key; a tenant may enable it as a second factor;
//! * a frozen or no longer configured tenant matches nothing.
//!
//! A refusal is a [`NoMatch`] with a reason the product can act on, never another tenant's
//! data. Every read stays inside the tenant that owns the matched person.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::controls::Controls;
use super::error::{DomainError, RuleId};
use super::model::{gateway_id, Activity, Duty, Entity, Group, Kind, OrgUnit, Person, Protocol};
use super::rules::{eppn_scope, normalise_eppn};
use super::tenant::{Tenant, TenantId};
use crate::store::{ChangeRecord, Link, Links, Op, Store};

/// The most lookups one batch may carry.
pub const MAX_BATCH: usize = 1000;
/// The most change-feed entries one page may carry.
pub const MAX_CHANGES_PAGE: usize = 10_000;

/// How a tenant's logins are bound (from the tenant's configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginBinding {
    /// The Skolfederation identity providers (SAML entity IDs / OIDC issuers) of this
    /// school owner.
    pub idp_entity_ids: Vec<String>,
    /// Whether a civic number sent with a login is checked as a second factor.
    pub civic_no_second_factor: bool,
}

/// A login to resolve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginQuery {
    pub eppn: Option<String>,
    pub idp_entity_id: Option<String>,
    /// `(value, context)` of an external identifier (eduID: context `https://eduid.se`).
    pub external_id: Option<(String, String)>,
    pub civic_no: Option<String>,
    /// Who asks (the product id), for the audit trail of refused logins.
    pub caller: Option<String>,
}

/// Why a login matched no account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoMatch {
    /// No provisioned person carries this identifier (or a second factor did not match).
    Unknown,
    /// The identifier's scope is not (or no longer) allowed for the owning school owner,
    /// or it is a shared scope that only matches through an external identifier.
    ScopeMismatch,
    /// The identity provider is not bound to the school owner that owns the account.
    IdpMismatch,
    /// The owning school owner's logins are frozen (or it is no longer configured).
    TenantSuspended,
    /// The external identifier is carried by persons of several school owners.
    Ambiguous,
}

impl NoMatch {
    pub const ALL: [NoMatch; 5] = [
        NoMatch::Unknown,
        NoMatch::ScopeMismatch,
        NoMatch::IdpMismatch,
        NoMatch::TenantSuspended,
        NoMatch::Ambiguous,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NoMatch::Unknown => "unknown",
            NoMatch::ScopeMismatch => "scope_mismatch",
            NoMatch::IdpMismatch => "idp_mismatch",
            NoMatch::TenantSuspended => "tenant_suspended",
            NoMatch::Ambiguous => "ambiguous",
        }
    }
}

/// What a person is, derived from enrolments and duties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Pupil,
    Teacher,
    Principal,
    OtherStaff,
}

impl Role {
    /// The role of a duty as sent (an open set of Swedish titles).
    pub fn of_duty(role: &str) -> Role {
        match role.trim().to_lowercase().as_str() {
            "lärare" | "larare" | "förskollärare" | "fritidspedagog" | "speciallärare" => {
                Role::Teacher
            }
            "rektor" | "biträdande rektor" => Role::Principal,
            _ => Role::OtherStaff,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Pupil => "pupil",
            Role::Teacher => "teacher",
            Role::Principal => "principal",
            Role::OtherStaff => "other_staff",
        }
    }
}

/// A reference that did not resolve when the view was built: the referenced object has
/// not arrived (yet) or was deleted. Ids only, never personal data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Warning {
    pub kind: Kind,
    pub id: String,
    pub referenced_by: Kind,
    pub referenced_by_id: String,
}

/// An object with its ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Ided<T> {
    pub gateway_id: Uuid,
    pub source_id: String,
    pub value: T,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SchoolUnitView {
    pub source_id: String,
    /// `None` when the school unit has not arrived.
    pub unit: Option<OrgUnit>,
    pub roles: BTreeSet<Role>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupView {
    pub group: Ided<Group>,
    /// `Pupil` for a member, `Teacher` for a teacher of one of the group's activities.
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TeacherRef {
    pub duty_id: String,
    /// The teacher's account, when the duty and its person are known.
    pub account_id: Option<Uuid>,
    pub role: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActivityView {
    pub activity: Ided<Activity>,
    /// Gateway ids of the activity's groups, in the activity's order.
    pub group_ids: Vec<(String, Uuid)>,
    pub teachers: Vec<TeacherRef>,
    pub role: Role,
}

/// The login view of one provisioned person.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub account_id: Uuid,
    pub tenant: Arc<Tenant>,
    pub person_id: String,
    pub person: Person,
    pub roles: BTreeSet<Role>,
    pub school_units: Vec<SchoolUnitView>,
    pub duties: Vec<Ided<Duty>>,
    /// Without their members (`members` is empty): the group roster lists them.
    pub groups: Vec<GroupView>,
    pub activities: Vec<ActivityView>,
    pub last_provisioned: DateTime<Utc>,
    pub protocol: Protocol,
    /// Whether a civic number was checked as a second factor for this answer.
    pub civic_no_checked: bool,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    Found(Box<Account>),
    NoMatch(NoMatch),
}

/// A person as listed in a roster.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    pub account_id: Uuid,
    pub source_id: String,
    pub person: Person,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupRoster {
    pub tenant: Arc<Tenant>,
    pub group: Ided<Group>,
    pub members: Vec<MemberView>,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActivityRoster {
    pub tenant: Arc<Tenant>,
    pub activity: Ided<Activity>,
    pub groups: Vec<Ided<Group>>,
    pub pupils: Vec<MemberView>,
    pub teachers: Vec<(TeacherRef, Option<MemberView>)>,
    pub warnings: Vec<Warning>,
}

/// One change-feed entry as the login API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeView {
    pub seq: u64,
    pub tenant: TenantId,
    pub kind: Kind,
    pub source_id: String,
    pub gateway_id: Uuid,
    pub op: Op,
    pub at: DateTime<Utc>,
    /// Account ids whose view this change alters (see `ChangeRecord::accounts`).
    pub accounts: Vec<Uuid>,
}

pub struct LoginService {
    store: Arc<dyn Store>,
    controls: Arc<Controls>,
    tenants: HashMap<TenantId, (Arc<Tenant>, LoginBinding)>,
    /// Identity provider → the tenant it is bound to.
    idps: HashMap<String, TenantId>,
    shared_scopes: Vec<String>,
    /// External-identifier context → the IdPs that may assert identifiers of it.
    context_idps: BTreeMap<String, Vec<String>>,
}

/// Reads of one view, with the warnings for references that did not resolve.
struct Reader<'a> {
    store: &'a dyn Store,
    tenant: &'a TenantId,
    warnings: BTreeSet<Warning>,
}

impl Reader<'_> {
    fn get(
        &mut self,
        kind: Kind,
        id: &str,
        from: (Kind, &str),
    ) -> Result<Option<Entity>, DomainError> {
        self.get_with(kind, id, from, |e| e.clone())
    }

    /// Like [`Reader::get`], taking from the (shared, cached) model only what `take` copies.
    fn get_with<T>(
        &mut self,
        kind: Kind,
        id: &str,
        from: (Kind, &str),
        take: impl FnOnce(&Entity) -> T,
    ) -> Result<Option<T>, DomainError> {
        match self.store.get_model(self.tenant, kind, id)? {
            Some(o) if o.kind() == kind => Ok(Some(take(&o.entity))),
            _ => {
                self.warnings.insert(Warning {
                    kind,
                    id: id.to_owned(),
                    referenced_by: from.0,
                    referenced_by_id: from.1.to_owned(),
                });
                Ok(None)
            }
        }
    }

    fn ided<T>(&self, kind: Kind, id: &str, value: T) -> Ided<T> {
        Ided {
            gateway_id: gateway_id(self.tenant, kind, id),
            source_id: id.to_owned(),
            value,
        }
    }

    fn group(&mut self, id: &str, from: (Kind, &str)) -> Result<Option<Group>, DomainError> {
        Ok(match self.get(Kind::Group, id, from)? {
            Some(Entity::Group(g)) => Some(g),
            _ => None,
        })
    }

    /// A group without its members, as an account view shows it: copying a class's member
    /// list for every login of the class is most of the cost of a cached group.
    fn group_head(&mut self, id: &str, from: (Kind, &str)) -> Result<Option<Group>, DomainError> {
        Ok(self
            .get_with(Kind::Group, id, from, |e| match e {
                Entity::Group(g) => Some(Group {
                    display_name: g.display_name.clone(),
                    group_type: g.group_type.clone(),
                    school_type: g.school_type.clone(),
                    owner: g.owner.clone(),
                    members: Vec::new(),
                }),
                _ => None,
            })?
            .flatten())
    }

    fn activity(&mut self, id: &str, from: (Kind, &str)) -> Result<Option<Activity>, DomainError> {
        Ok(match self.get(Kind::Activity, id, from)? {
            Some(Entity::Activity(a)) => Some(a),
            _ => None,
        })
    }

    fn duty(&mut self, id: &str, from: (Kind, &str)) -> Result<Option<Duty>, DomainError> {
        Ok(match self.get(Kind::Duty, id, from)? {
            Some(Entity::Duty(d)) => Some(d),
            _ => None,
        })
    }

    fn person(&mut self, id: &str, from: (Kind, &str)) -> Result<Option<Person>, DomainError> {
        Ok(match self.get(Kind::Person, id, from)? {
            Some(Entity::Person(p)) => Some(p),
            _ => None,
        })
    }

    fn member(&mut self, id: &str, from: (Kind, &str)) -> Result<Option<MemberView>, DomainError> {
        Ok(self.person(id, from)?.map(|person| MemberView {
            account_id: gateway_id(self.tenant, Kind::Person, id),
            source_id: id.to_owned(),
            person,
        }))
    }

    fn teacher(&mut self, duty_id: &str, from: (Kind, &str)) -> Result<TeacherRef, DomainError> {
        let d = self
            .get_with(Kind::Duty, duty_id, from, |e| match e {
                Entity::Duty(d) => Some((d.person.clone(), d.role.clone())),
                _ => None,
            })?
            .flatten();
        Ok(TeacherRef {
            duty_id: duty_id.to_owned(),
            account_id: d
                .as_ref()
                .and_then(|(person, _)| person.as_deref())
                .map(|p| gateway_id(self.tenant, Kind::Person, p)),
            role: d.map(|(_, role)| role),
        })
    }

    fn warnings(self) -> Vec<Warning> {
        self.warnings.into_iter().collect()
    }
}

impl LoginService {
    pub fn new(
        store: Arc<dyn Store>,
        controls: Arc<Controls>,
        tenants: Vec<(Arc<Tenant>, LoginBinding)>,
        shared_scopes: Vec<String>,
    ) -> Self {
        let mut idps = HashMap::new();
        for (t, b) in &tenants {
            for idp in &b.idp_entity_ids {
                idps.insert(idp.clone(), t.id.clone());
            }
        }
        Self {
            store,
            controls,
            tenants: tenants
                .into_iter()
                .map(|(t, b)| (t.id.clone(), (t, b)))
                .collect(),
            idps,
            shared_scopes,
            context_idps: BTreeMap::new(),
        }
    }

    /// Binds external-identifier contexts to the identity providers that may assert them
    /// (eduID's IdP for `https://eduid.se`).
    pub fn with_context_idps(mut self, m: BTreeMap<String, Vec<String>>) -> Self {
        self.context_idps = m;
        self
    }

    fn is_shared_scope(&self, scope: &str) -> bool {
        self.shared_scopes.iter().any(|s| {
            scope == s
                || (scope.len() > s.len()
                    && scope.ends_with(s.as_str())
                    && scope.as_bytes()[scope.len() - s.len() - 1] == b'.')
        })
    }

    /// The configured, not frozen tenant, or the reason to refuse.
    fn active_tenant(&self, t: &TenantId) -> Result<&(Arc<Tenant>, LoginBinding), NoMatch> {
        match self.tenants.get(t) {
            Some(tb) if !self.controls.logins_frozen(t) => Ok(tb),
            _ => Err(NoMatch::TenantSuspended),
        }
    }

    /// Resolves one login.
    pub fn resolve(&self, q: &LoginQuery) -> Result<Resolution, DomainError> {
        match self.locate(q)? {
            Ok(account) => Ok(Resolution::Found(Box::new(account))),
            Err(reason) => Ok(Resolution::NoMatch(reason)),
        }
    }

    /// Resolves up to [`MAX_BATCH`] logins; each answer stands alone.
    pub fn resolve_batch(
        &self,
        qs: &[LoginQuery],
    ) -> Result<Vec<Result<Resolution, DomainError>>, DomainError> {
        if qs.is_empty() || qs.len() > MAX_BATCH {
            return Err(DomainError::invalid(
                "lookups",
                RuleId::Size,
                "a batch holds 1 to 1000 lookups",
            ));
        }
        Ok(qs.iter().map(|q| self.resolve(q)).collect())
    }

    fn locate(&self, q: &LoginQuery) -> Result<Result<Account, NoMatch>, DomainError> {
        // Normalised once; an EPPN in a shared scope (eduID) belongs to no school owner and
        // matches only through an external identifier.
        let eppn = q.eppn.as_deref().map(normalise_eppn);
        let own_eppn = match &eppn {
            Some(Ok(n)) if !self.is_shared_scope(eppn_scope(n)) => Some(n.as_str()),
            _ => None,
        };
        // Found by EPPN with the relations from it; through an external identifier it is
        // read below.
        let mut person_read = None;
        let ((tenant_id, person_id), binding) = match (own_eppn, &q.external_id) {
            (Some(n), _) => {
                // The person comes with its relations: usually one read.
                let Some(p) = self.store.find_eppn_person(n)? else {
                    return Ok(Err(NoMatch::Unknown));
                };
                person_read = Some((p.model, p.links));
                let found = (p.tenant, p.id);
                let (tenant, binding) = match self.active_tenant(&found.0) {
                    Ok(tb) => tb,
                    Err(r) => return Ok(Err(r)),
                };
                if !tenant.allows_scope(eppn_scope(n)) {
                    return Ok(Err(NoMatch::ScopeMismatch));
                }
                if let Some(idp) = &q.idp_entity_id {
                    if !binding.idp_entity_ids.iter().any(|i| i == idp) {
                        self.audit_refusal(q, &found, idp, NoMatch::IdpMismatch);
                        return Ok(Err(NoMatch::IdpMismatch));
                    }
                }
                (found, binding)
            }
            (None, Some((value, context))) => {
                let mut found = self.store.find_external_id(context, value)?;
                let Some(first) = found.pop() else {
                    return Ok(Err(NoMatch::Unknown));
                };
                if !found.is_empty() {
                    return Ok(Err(NoMatch::Ambiguous));
                }
                let binding = match self.active_tenant(&first.0) {
                    Ok((_, binding)) => binding,
                    Err(r) => return Ok(Err(r)),
                };
                // A context bound to identity providers (eduID's) is asserted only by
                // them; otherwise an IdP bound to a school owner may only assert that
                // school owner's people.
                let idp = q.idp_entity_id.as_deref();
                let refused = match self.context_idps.get(context.as_str()) {
                    Some(allowed) => !idp.is_some_and(|i| allowed.iter().any(|a| a == i)),
                    None => idp.is_some_and(|i| self.idps.get(i).is_some_and(|t| *t != first.0)),
                };
                if refused {
                    self.audit_refusal(q, &first, idp.unwrap_or(""), NoMatch::IdpMismatch);
                    return Ok(Err(NoMatch::IdpMismatch));
                }
                (first, binding)
            }
            (None, None) => {
                return match eppn {
                    Some(Ok(_)) => Ok(Err(NoMatch::ScopeMismatch)),
                    Some(Err(_)) => Ok(Err(NoMatch::Unknown)),
                    None => Err(DomainError::invalid(
                        "eppn",
                        RuleId::Required,
                        "give an eppn or an external_id",
                    )),
                };
            }
        };
        let (person_obj, links) = match person_read {
            Some((p, links)) => (p, Some(links)),
            None => match self.store.get_model(&tenant_id, Kind::Person, &person_id)? {
                Some(p) => (p, None),
                // The index and the object are written together; a miss is a concurrent
                // delete.
                None => return Ok(Err(NoMatch::Unknown)),
            },
        };
        let mut civic_no_checked = false;
        if let (Some(given), true) = (&q.civic_no, binding.civic_no_second_factor) {
            let stored = match &person_obj.entity {
                Entity::Person(p) => p.civic_no.as_deref(),
                _ => None,
            };
            if stored != Some(given.trim()) {
                return Ok(Err(NoMatch::Unknown));
            }
            civic_no_checked = true;
        }
        let mut account =
            match self.account_view(&tenant_id, &person_id, Some((person_obj, links)))? {
                Some(a) => a,
                None => return Ok(Err(NoMatch::Unknown)),
            };
        account.civic_no_checked = civic_no_checked;
        Ok(Ok(account))
    }

    /// Records a refused login in the tenant's audit trail (which person's account, which
    /// identity provider, why and for which product; never the identifier itself) and in
    /// the log. The answer does not wait for the entry to reach the disk: a refusal
    /// promises nothing, and the next group commit takes it along.
    fn audit_refusal(
        &self,
        q: &LoginQuery,
        person: &(TenantId, String),
        idp: &str,
        reason: NoMatch,
    ) {
        let (tenant, person_id) = person;
        tracing::warn!(
            target: "skolgrind::audit",
            tenant = %tenant,
            idp_entity_id = %idp,
            reason = reason.as_str(),
            "login refused"
        );
        let record = crate::store::AuditRecord {
            seq: 0,
            at: chrono::Utc::now(),
            tenant: tenant.clone(),
            credential: q.caller.clone().unwrap_or_else(|| "login".into()),
            protocol: None,
            kind: Kind::Person,
            id: person_id.clone(),
            op: crate::store::AuditOp::LoginRefused,
            detail: Some(format!("{} from {idp}", reason.as_str())),
        };
        if let Err(e) = self.store.append_audit(record) {
            tracing::error!(tenant = %tenant, error = %e, "could not record a refused login in the audit trail");
        }
    }

    /// The account behind a gateway id (`GET /accounts/{id}`).
    pub fn account(&self, gid: &Uuid) -> Result<Result<Account, NoMatch>, DomainError> {
        let Some((t, kind, id)) = self.store.find_gateway_id(gid)? else {
            return Ok(Err(NoMatch::Unknown));
        };
        if kind != Kind::Person {
            return Ok(Err(NoMatch::Unknown));
        }
        if let Err(r) = self.active_tenant(&t) {
            return Ok(Err(r));
        }
        Ok(self.account_view(&t, &id, None)?.ok_or(NoMatch::Unknown))
    }

    /// The account view of a person (`read`: the person's object when already read, with
    /// the relations from it when read along).
    fn account_view(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
        read: Option<(Arc<crate::domain::ObjectModel>, Option<Links>)>,
    ) -> Result<Option<Account>, DomainError> {
        let Ok((tenant, _)) = self.active_tenant(tenant_id) else {
            return Ok(None);
        };
        let (obj, links) = match read {
            Some(r) => r,
            None => match self.store.get_model(tenant_id, Kind::Person, person_id)? {
                Some(o) => (o, None),
                None => return Ok(None),
            },
        };
        let (last_provisioned, protocol) = (obj.meta.last_modified, obj.meta.protocol);
        // A person read for this login is ours alone: taken without a copy.
        let Entity::Person(person) = Arc::unwrap_or_clone(obj).entity else {
            return Ok(None);
        };
        let store = &*self.store;
        let mut r = Reader {
            store,
            tenant: tenant_id,
            warnings: BTreeSet::new(),
        };
        let me = (Kind::Person, person_id);
        let mut roles = BTreeSet::new();
        let mut units: BTreeMap<String, BTreeSet<Role>> = BTreeMap::new();
        for e in &person.enrolments {
            roles.insert(Role::Pupil);
            units
                .entry(e.school_unit.clone())
                .or_default()
                .insert(Role::Pupil);
        }
        let mine = match links {
            Some(l) => l,
            None => store.links_from(tenant_id, person_id)?,
        };
        let mine = |link: Link| {
            mine.iter()
                .filter(move |(l, _)| *l == link)
                .map(|(_, to)| to.clone())
        };
        let mut duties = Vec::new();
        for d in mine(Link::PersonDuties) {
            if let Some(duty) = r.duty(&d, me)? {
                let role = Role::of_duty(&duty.role);
                roles.insert(role);
                units
                    .entry(duty.school_unit.clone())
                    .or_default()
                    .insert(role);
                duties.push(r.ided(Kind::Duty, &d, duty));
            }
        }
        // Groups the person is a member of, then activities of those groups (as a pupil)
        // and activities taught through a duty (as a teacher, with their groups).
        let mut groups: BTreeMap<String, GroupView> = BTreeMap::new();
        for g in mine(Link::PersonGroups) {
            if let Some(group) = r.group_head(&g, me)? {
                groups.insert(
                    g.clone(),
                    GroupView {
                        group: r.ided(Kind::Group, &g, group),
                        role: Role::Pupil,
                    },
                );
            }
        }
        let mut activity_roles: BTreeMap<String, Role> = BTreeMap::new();
        for g in groups.keys() {
            for a in store.linked(tenant_id, Link::GroupActivities, g)? {
                activity_roles.entry(a).or_insert(Role::Pupil);
            }
        }
        for d in &duties {
            for a in store.linked(tenant_id, Link::DutyActivities, &d.source_id)? {
                activity_roles.insert(a, Role::Teacher);
            }
        }
        let mut activities = Vec::new();
        for (a, role) in activity_roles {
            let Some(act) = r.activity(&a, me)? else {
                continue;
            };
            let from = (Kind::Activity, a.as_str());
            let group_ids = act
                .groups
                .iter()
                .map(|g| (g.clone(), gateway_id(tenant_id, Kind::Group, g)))
                .collect();
            if role == Role::Teacher {
                for g in &act.groups {
                    if groups.contains_key(g) {
                        continue;
                    }
                    if let Some(group) = r.group_head(g, from)? {
                        groups.insert(
                            g.clone(),
                            GroupView {
                                group: r.ided(Kind::Group, g, group),
                                role: Role::Teacher,
                            },
                        );
                    }
                }
            }
            let mut teachers = Vec::with_capacity(act.teachers.len());
            for d in &act.teachers {
                teachers.push(r.teacher(d, from)?);
            }
            activities.push(ActivityView {
                activity: r.ided(Kind::Activity, &a, act),
                group_ids,
                teachers,
                role,
            });
        }
        let mut school_units = Vec::with_capacity(units.len());
        for (u, unit_roles) in units {
            let unit = match r.get(Kind::OrgUnit, &u, me)? {
                Some(Entity::OrgUnit(o)) => Some(o),
                _ => None,
            };
            school_units.push(SchoolUnitView {
                source_id: u,
                unit,
                roles: unit_roles,
            });
        }
        Ok(Some(Account {
            account_id: gateway_id(tenant_id, Kind::Person, person_id),
            tenant: tenant.clone(),
            person_id: person_id.to_owned(),
            person,
            roles,
            school_units,
            duties,
            groups: groups.into_values().collect(),
            activities,
            last_provisioned,
            protocol,
            civic_no_checked: false,
            warnings: r.warnings(),
        }))
    }

    /// The object behind a gateway id, if it is of `kind` and its tenant is active.
    fn locate_object(
        &self,
        gid: &Uuid,
        kind: Kind,
    ) -> Result<Result<(Arc<Tenant>, String), NoMatch>, DomainError> {
        let Some((t, k, id)) = self.store.find_gateway_id(gid)? else {
            return Ok(Err(NoMatch::Unknown));
        };
        if k != kind {
            return Ok(Err(NoMatch::Unknown));
        }
        Ok(self
            .active_tenant(&t)
            .map(|(tenant, _)| (tenant.clone(), id)))
    }

    /// A group with its members.
    pub fn group_roster(&self, gid: &Uuid) -> Result<Result<GroupRoster, NoMatch>, DomainError> {
        let (tenant, id) = match self.locate_object(gid, Kind::Group)? {
            Ok(x) => x,
            Err(r) => return Ok(Err(r)),
        };
        let mut r = Reader {
            store: &*self.store,
            tenant: &tenant.id,
            warnings: BTreeSet::new(),
        };
        let Some(group) = r.group(&id, (Kind::Group, &id))? else {
            return Ok(Err(NoMatch::Unknown));
        };
        r.warnings.clear();
        let mut members = Vec::with_capacity(group.members.len());
        for m in &group.members {
            if let Some(v) = r.member(m, (Kind::Group, &id))? {
                members.push(v);
            }
        }
        let group = r.ided(Kind::Group, &id, group);
        Ok(Ok(GroupRoster {
            group,
            members,
            warnings: r.warnings(),
            tenant,
        }))
    }

    /// An activity with its groups, pupils (the members of its groups) and teachers.
    pub fn activity_roster(
        &self,
        gid: &Uuid,
    ) -> Result<Result<ActivityRoster, NoMatch>, DomainError> {
        let (tenant, id) = match self.locate_object(gid, Kind::Activity)? {
            Ok(x) => x,
            Err(r) => return Ok(Err(r)),
        };
        let mut r = Reader {
            store: &*self.store,
            tenant: &tenant.id,
            warnings: BTreeSet::new(),
        };
        let from = (Kind::Activity, id.as_str());
        let Some(act) = r.activity(&id, from)? else {
            return Ok(Err(NoMatch::Unknown));
        };
        r.warnings.clear();
        let mut groups = Vec::new();
        let mut pupils = Vec::new();
        let mut seen = BTreeSet::new();
        for g in &act.groups {
            if let Some(group) = r.group(g, from)? {
                for m in &group.members {
                    if seen.insert(m.clone()) {
                        if let Some(v) = r.member(m, (Kind::Group, g))? {
                            pupils.push(v);
                        }
                    }
                }
                groups.push(r.ided(Kind::Group, g, group));
            }
        }
        let mut teachers = Vec::new();
        for d in &act.teachers {
            let t = r.teacher(d, from)?;
            let person = match r.store.get_model(r.tenant, Kind::Duty, d)? {
                Some(o) => match &o.entity {
                    Entity::Duty(Duty {
                        person: Some(p), ..
                    }) => r.member(p, (Kind::Duty, d))?,
                    _ => None,
                },
                None => None,
            };
            teachers.push((t, person));
        }
        let activity = r.ided(Kind::Activity, &id, act);
        Ok(Ok(ActivityRoster {
            activity,
            groups,
            pupils,
            teachers,
            warnings: r.warnings(),
            tenant,
        }))
    }

    /// Change-feed entries after `cursor` (a sequence number; 0 for the beginning), at
    /// most `limit`, and the cursor to continue from.
    pub fn changes(
        &self,
        cursor: u64,
        limit: usize,
    ) -> Result<(Vec<ChangeView>, u64), DomainError> {
        let limit = limit.clamp(1, MAX_CHANGES_PAGE);
        let records: Vec<ChangeRecord> = self.store.changes(cursor, limit)?;
        let next = records.last().map_or(cursor, |r| r.seq);
        let views = records
            .into_iter()
            .map(|r| ChangeView {
                gateway_id: gateway_id(&r.tenant, r.kind, &r.id),
                accounts: r
                    .accounts
                    .iter()
                    .map(|p| gateway_id(&r.tenant, Kind::Person, p))
                    .collect(),
                seq: r.seq,
                tenant: r.tenant,
                kind: r.kind,
                source_id: r.id,
                op: r.op,
                at: r.at,
            })
            .collect();
        Ok((views, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::controls::Suspension;
    use crate::domain::model::{Enrolment, ExternalIdentifier};
    use crate::domain::service::{Incoming, TypeSel, WriteMode};
    use crate::domain::{CivicNoPolicy, Provisioning, WriteContext};
    use crate::store::memory::MemoryStore;

    struct World {
        prov: Provisioning,
        login: LoginService,
        tenants: Vec<Arc<Tenant>>,
    }

    fn tenant(id: &str, scopes: &[&str]) -> Arc<Tenant> {
        Arc::new(Tenant {
            id: TenantId::parse(id).unwrap(),
            name: id.to_uppercase(),
            organisation_number: None,
            eppn_scopes: scopes.iter().map(|s| s.to_string()).collect(),
            civic_no_policy: CivicNoPolicy::Warn,
            ss12000_profile: Default::default(),
        })
    }

    fn world(specs: &[(&str, &[&str], &[&str], bool)]) -> World {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::in_memory());
        let controls = Arc::new(Controls::load(store.clone(), &[]).unwrap());
        let mut list = Vec::new();
        let mut tenants = Vec::new();
        for (id, scopes, idps, civic) in specs {
            let t = tenant(id, scopes);
            tenants.push(t.clone());
            list.push((
                t,
                LoginBinding {
                    idp_entity_ids: idps.iter().map(|s| s.to_string()).collect(),
                    civic_no_second_factor: *civic,
                },
            ));
        }
        World {
            prov: Provisioning::new(store.clone(), controls.clone()),
            login: LoginService::new(store, controls, list, vec!["eduid.se".into()]),
            tenants,
        }
    }

    fn ctx(t: &Arc<Tenant>) -> WriteContext {
        WriteContext {
            tenant: t.clone(),
            protocol: Protocol::EgilScim,
            credential: "test".into(),
            now: Utc::now(),
        }
    }

    fn person(eppn: &str) -> Person {
        Person {
            given_name: Some("G".into()),
            family_name: Some("F".into()),
            display_name: None,
            eppns: vec![eppn.into()],
            civic_no: None,
            emails: vec![],
            security_marking: None,
            external_identifiers: vec![],
            enrolments: vec![],
            relations: vec![],
        }
    }

    async fn put(w: &World, t: usize, id: &str, e: Entity) -> Result<(), DomainError> {
        let sel = TypeSel::of(e.kind());
        w.prov
            .write(
                &ctx(&w.tenants[t]),
                sel,
                WriteMode::Upsert,
                Incoming {
                    id: id.into(),
                    entity: e,
                    raw: "{}".into(),
                },
            )
            .await
            .map(|_| ())
    }

    fn q(eppn: &str, idp: Option<&str>) -> LoginQuery {
        LoginQuery {
            eppn: Some(eppn.into()),
            idp_entity_id: idp.map(Into::into),
            ..Default::default()
        }
    }

    fn found(r: Resolution) -> Account {
        match r {
            Resolution::Found(a) => *a,
            Resolution::NoMatch(n) => panic!("no match: {n:?}"),
        }
    }

    fn reason(r: Resolution) -> NoMatch {
        match r {
            Resolution::NoMatch(n) => n,
            Resolution::Found(_) => panic!("unexpected match"),
        }
    }

    #[tokio::test]
    async fn matching_rules() {
        let w = world(&[
            ("a", &["a.se"], &["https://idp.a"], true),
            ("b", &["b.se"], &["https://idp.b"], false),
        ]);
        let mut p = person("x@a.se");
        p.civic_no = Some("200406042903".into());
        put(&w, 0, "p1", Entity::Person(p)).await.unwrap();
        put(&w, 1, "p2", Entity::Person(person("y@b.se")))
            .await
            .unwrap();
        let a = found(
            w.login
                .resolve(&q("X@A.SE ", Some("https://idp.a")))
                .unwrap(),
        );
        assert_eq!(a.tenant.id.as_str(), "a");
        assert_eq!(a.account_id, gateway_id(&a.tenant.id, Kind::Person, "p1"));
        assert!(!a.civic_no_checked);
        // B's identity provider asserting A's EPPN: no match, whatever B has.
        assert_eq!(
            reason(
                w.login
                    .resolve(&q("x@a.se", Some("https://idp.b")))
                    .unwrap()
            ),
            NoMatch::IdpMismatch
        );
        assert_eq!(
            reason(w.login.resolve(&q("nobody@a.se", None)).unwrap()),
            NoMatch::Unknown
        );
        assert_eq!(
            reason(w.login.resolve(&q("not an eppn", None)).unwrap()),
            NoMatch::Unknown
        );
        // Civic number as a second factor in tenant a only.
        let mut cq = q("x@a.se", None);
        cq.civic_no = Some("200406042903".into());
        assert!(found(w.login.resolve(&cq).unwrap()).civic_no_checked);
        cq.civic_no = Some("200406042911".into());
        assert_eq!(reason(w.login.resolve(&cq).unwrap()), NoMatch::Unknown);
        let mut bq = q("y@b.se", None);
        bq.civic_no = Some("200406042911".into());
        assert!(!found(w.login.resolve(&bq).unwrap()).civic_no_checked);
        // Neither identifier: a client error.
        assert!(matches!(
            w.login.resolve(&LoginQuery::default()),
            Err(DomainError::Invalid(_))
        ));
        // Frozen logins.
        w.prov
            .controls()
            .update_tenant(&w.tenants[0].id, |c| {
                c.logins_frozen = Some(Suspension {
                    reason: "incident".into(),
                    since: Utc::now(),
                    by: "ops".into(),
                })
            })
            .await
            .unwrap();
        assert_eq!(
            reason(w.login.resolve(&q("x@a.se", None)).unwrap()),
            NoMatch::TenantSuspended
        );
        assert_eq!(
            w.login.account(&a.account_id).unwrap().err(),
            Some(NoMatch::TenantSuspended)
        );
        assert!(
            found(w.login.resolve(&q("y@b.se", None)).unwrap())
                .tenant
                .id
                .as_str()
                == "b"
        );
    }

    #[tokio::test]
    async fn scope_removed_from_config_stops_matching() {
        // Provisioned while the scope was allowed; the tenant's scopes changed since.
        let w = world(&[("a", &[], &[], false)]);
        put(&w, 0, "p1", Entity::Person(person("x@old.se")))
            .await
            .unwrap();
        let narrowed = LoginService::new(
            w.prov.store().clone(),
            w.prov.controls().clone(),
            vec![(tenant("a", &["new.se"]), LoginBinding::default())],
            vec![],
        );
        assert_eq!(
            reason(narrowed.resolve(&q("x@old.se", None)).unwrap()),
            NoMatch::ScopeMismatch
        );
    }

    #[tokio::test]
    async fn shared_scope_only_through_external_identifier() {
        let w = world(&[
            ("a", &[], &["https://idp.a"], false),
            ("b", &[], &["https://idp.b"], false),
        ]);
        // A tenant without scope limits provisions an eduID EPPN as its login name: it
        // must not make eduid.se "its" scope.
        let mut p = person("staff@eduid.se");
        p.external_identifiers = vec![ExternalIdentifier {
            value: "staff@eduid.se".into(),
            context: Some("https://eduid.se".into()),
            globally_unique: true,
        }];
        put(&w, 0, "p1", Entity::Person(p)).await.unwrap();
        assert_eq!(
            reason(w.login.resolve(&q("staff@eduid.se", None)).unwrap()),
            NoMatch::ScopeMismatch
        );
        let x = |value: &str, context: &str, idp: Option<&str>| LoginQuery {
            external_id: Some((value.into(), context.into())),
            idp_entity_id: idp.map(Into::into),
            ..Default::default()
        };
        let a = found(
            w.login
                .resolve(&x(
                    "staff@eduid.se",
                    "https://eduid.se",
                    Some("https://login.eduid.se"),
                ))
                .unwrap(),
        );
        assert_eq!(a.person_id, "p1");
        // Another context is another identifier.
        assert_eq!(
            reason(
                w.login
                    .resolve(&x("staff@eduid.se", "https://other", None))
                    .unwrap()
            ),
            NoMatch::Unknown
        );
        // B's own IdP may not assert A's person through the external identifier.
        assert_eq!(
            reason(
                w.login
                    .resolve(&x(
                        "staff@eduid.se",
                        "https://eduid.se",
                        Some("https://idp.b")
                    ))
                    .unwrap()
            ),
            NoMatch::IdpMismatch
        );
        // The same eduID provisioned by a second school owner: ambiguous, no guess.
        let mut p = person("t@b.se");
        p.external_identifiers = vec![ExternalIdentifier {
            value: "staff@eduid.se".into(),
            context: Some("https://eduid.se".into()),
            globally_unique: true,
        }];
        put(&w, 1, "p9", Entity::Person(p)).await.unwrap();
        assert_eq!(
            reason(
                w.login
                    .resolve(&x("staff@eduid.se", "https://eduid.se", None))
                    .unwrap()
            ),
            NoMatch::Ambiguous
        );
    }

    #[tokio::test]
    async fn account_view_resolves_relations_and_reports_dangling_ones() {
        let w = world(&[("a", &[], &[], false)]);
        let mut pupil = person("pupil@a.se");
        pupil.enrolments = vec![Enrolment {
            school_unit: "u1".into(),
            school_type: Some("GR".into()),
            school_year: Some(6),
            program_code: None,
        }];
        // Activity first, then group, then the pupil: order of arrival does not matter.
        put(
            &w,
            0,
            "a1",
            Entity::Activity(Activity {
                display_name: "DNP".into(),
                activity_type: None,
                owner: "u1".into(),
                groups: vec!["g1".into()],
                teachers: vec!["d1".into()],
                parent_activities: vec!["nat-test".into()],
            }),
        )
        .await
        .unwrap();
        put(
            &w,
            0,
            "g1",
            Entity::Group(Group {
                display_name: "6A".into(),
                group_type: None,
                school_type: None,
                owner: "u1".into(),
                members: vec!["p1".into(), "ghost".into()],
            }),
        )
        .await
        .unwrap();
        put(&w, 0, "p1", Entity::Person(pupil)).await.unwrap();
        let a = found(w.login.resolve(&q("pupil@a.se", None)).unwrap());
        assert_eq!(
            a.roles.iter().copied().collect::<Vec<_>>(),
            vec![Role::Pupil]
        );
        assert_eq!(a.groups.len(), 1);
        assert_eq!(a.activities.len(), 1);
        assert_eq!(
            a.activities[0].activity.value.parent_activities,
            vec!["nat-test"]
        );
        assert_eq!(a.activities[0].teachers[0].account_id, None);
        let dangling: Vec<(Kind, &str)> =
            a.warnings.iter().map(|w| (w.kind, w.id.as_str())).collect();
        assert!(dangling.contains(&(Kind::OrgUnit, "u1")), "{dangling:?}");
        assert!(dangling.contains(&(Kind::Duty, "d1")), "{dangling:?}");
        // The teacher's duty arrives: the teacher sees the activity and its group.
        put(&w, 0, "t1", Entity::Person(person("teacher@a.se")))
            .await
            .unwrap();
        put(
            &w,
            0,
            "d1",
            Entity::Duty(Duty {
                person: Some("t1".into()),
                school_unit: "u1".into(),
                role: "Lärare".into(),
                signature: None,
            }),
        )
        .await
        .unwrap();
        let t = found(w.login.resolve(&q("teacher@a.se", None)).unwrap());
        assert_eq!(
            t.roles.iter().copied().collect::<Vec<_>>(),
            vec![Role::Teacher]
        );
        assert_eq!(t.activities[0].role, Role::Teacher);
        assert_eq!(t.groups[0].role, Role::Teacher);
        let a = found(w.login.resolve(&q("pupil@a.se", None)).unwrap());
        assert_eq!(a.activities[0].teachers[0].account_id, Some(t.account_id));
        // Rosters.
        let g = w
            .login
            .group_roster(&a.groups[0].group.gateway_id)
            .unwrap()
            .unwrap();
        assert_eq!(g.members.len(), 1);
        assert_eq!(g.warnings[0].id, "ghost");
        let r = w
            .login
            .activity_roster(&a.activities[0].activity.gateway_id)
            .unwrap()
            .unwrap();
        assert_eq!(r.pupils.len(), 1);
        assert_eq!(
            r.teachers[0].1.as_ref().map(|m| m.account_id),
            Some(t.account_id)
        );
        // A gateway id of another kind is not an account.
        assert_eq!(
            w.login
                .account(&a.groups[0].group.gateway_id)
                .unwrap()
                .err(),
            Some(NoMatch::Unknown)
        );
    }

    #[tokio::test]
    async fn batch_limits() {
        let w = world(&[("a", &[], &[], false)]);
        assert!(w.login.resolve_batch(&[]).is_err());
        assert!(w
            .login
            .resolve_batch(&vec![q("x@a.se", None); MAX_BATCH + 1])
            .is_err());
        let r = w
            .login
            .resolve_batch(&vec![q("x@a.se", None); MAX_BATCH])
            .unwrap();
        assert_eq!(r.len(), MAX_BATCH);
    }

    mod property {
        use super::*;
        use proptest::prelude::*;

        /// One provisioning step: tenant, person id, EPPN (from small pools so that
        /// tenants collide on ids and EPPNs), or a delete.
        #[derive(Debug, Clone)]
        enum Step {
            Put { tenant: usize, id: u8, eppn: u8 },
            Delete { tenant: usize, id: u8 },
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                4 => (0..3usize, 0..6u8, 0..8u8).prop_map(|(tenant, id, eppn)| Step::Put { tenant, id, eppn }),
                1 => (0..3usize, 0..6u8).prop_map(|(tenant, id)| Step::Delete { tenant, id }),
            ]
        }

        fn eppn(n: u8) -> String {
            format!("user{n}@shared.se")
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            /// Whatever the interleaving of writes of three tenants with clashing ids and
            /// EPPNs, a resolve returns only a person of the tenant whose accepted write
            /// gave that person the EPPN, and the account id is that tenant's.
            #[test]
            fn resolve_never_crosses_tenants(steps in proptest::collection::vec(step(), 1..40), case in any::<bool>()) {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                rt.block_on(async {
                    let w = world(&[("t0", &[], &[], false), ("t1", &[], &[], false), ("t2", &[], &[], false)]);
                    // Model: eppn -> (tenant, id) of the accepted owner.
                    let mut owner: HashMap<String, (usize, u8)> = HashMap::new();
                    let mut holds: HashMap<(usize, u8), String> = HashMap::new();
                    for s in &steps {
                        match *s {
                            Step::Put { tenant, id, eppn: e } => {
                                let e = eppn(e);
                                let ok = put(&w, tenant, &format!("p{id}"), Entity::Person(person(&e))).await.is_ok();
                                let free = owner.get(&e).is_none_or(|o| *o == (tenant, id));
                                prop_assert_eq!(ok, free);
                                if ok {
                                    if let Some(old) = holds.insert((tenant, id), e.clone()) {
                                        if old != e { owner.remove(&old); }
                                    }
                                    owner.insert(e, (tenant, id));
                                }
                            }
                            Step::Delete { tenant, id } => {
                                let _ = w.prov.delete(&ctx(&w.tenants[tenant]), TypeSel::of(Kind::Person), &format!("p{id}")).await;
                                if let Some(old) = holds.remove(&(tenant, id)) { owner.remove(&old); }
                            }
                        }
                    }
                    for n in 0..8u8 {
                        let e = eppn(n);
                        let asked = if case { e.to_uppercase() } else { e.clone() };
                        match (w.login.resolve(&q(&asked, None)).unwrap(), owner.get(&e)) {
                            (Resolution::Found(a), Some(&(t, id))) => {
                                prop_assert_eq!(&a.tenant.id, &w.tenants[t].id);
                                prop_assert_eq!(&a.person_id, &format!("p{id}"));
                                prop_assert_eq!(a.account_id, gateway_id(&w.tenants[t].id, Kind::Person, &format!("p{id}")));
                                prop_assert!(a.person.eppns.contains(&e));
                            }
                            (Resolution::NoMatch(NoMatch::Unknown), None) => {}
                            (r, o) => prop_assert!(false, "resolve {:?} gave {:?}, model {:?}", e, r, o),
                        }
                    }
                    Ok(())
                })?;
            }
        }
    }
}
