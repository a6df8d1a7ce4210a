//! The login API's wire format (`/login/v1`): request and response types with their
//! OpenAPI schemas, parsing, rendering of the domain's login views, and the JSON error
//! format. Plain JSON, snake_case, ids as UUIDs; no personal data in errors.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::login::{
    Account, ActivityRoster, ChangeView, GroupRoster, Ided, LoginQuery, MemberView, NoMatch, Role,
    TeacherRef, Warning,
};
use crate::domain::model::{Group, Kind, Protocol};
use crate::domain::{DomainError, RuleId};
use crate::store::Op;

/// The media type of every answer.
pub const MEDIA_TYPE: &str = "application/json";

// ----------------------------------------------------------------------------------------
// Requests
// ----------------------------------------------------------------------------------------

/// An identifier from another identity system, with the context that issued it.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalIdInput {
    /// The identifier, e.g. the eduID EPPN `abc123@eduid.se`.
    #[schema(min_length = 1, max_length = 1024)]
    pub value: String,
    /// Who issued it, e.g. `https://eduid.se`.
    #[schema(min_length = 1, max_length = 1024)]
    pub context: String,
}

/// A verified login to map to a provisioned person. Give `eppn`, or `external_id` for
/// identities from a shared identity system (eduID).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"eppn": "stjo@skola.kommunen.se", "idp_entity_id": "https://idp.kommunen.se/idp"}))]
pub struct ResolveRequest {
    /// eduPersonPrincipalName from the assertion (compared case-insensitively).
    #[schema(max_length = 1024)]
    pub eppn: Option<String>,
    /// The identity provider's SAML entity ID (or OIDC issuer) that asserted the login.
    #[schema(max_length = 1024)]
    pub idp_entity_id: Option<String>,
    pub external_id: Option<ExternalIdInput>,
    /// Civic number (12 digits), checked as a second factor only where the school owner
    /// enabled it; never used to find a person.
    #[schema(max_length = 64)]
    pub civic_no: Option<String>,
}

/// Longest accepted identifier (EPPN, entity ID, external identifier or its context).
pub const MAX_IDENTIFIER_CHARS: usize = 1024;
/// Longest accepted civic number field.
pub const MAX_CIVIC_NO_CHARS: usize = 64;

fn check_len(path: &str, v: Option<&str>, min: usize, max: usize) -> Result<(), DomainError> {
    match v.map(|s| s.chars().count()) {
        Some(n) if n < min || n > max => Err(DomainError::invalid(
            path,
            RuleId::Size,
            format!("expected {min} to {max} characters"),
        )),
        _ => Ok(()),
    }
}

impl ResolveRequest {
    /// The size limits the schema states (the domain decides everything else).
    pub fn check(&self, prefix: &str) -> Result<(), DomainError> {
        if self.eppn.is_none() && self.external_id.is_none() {
            return Err(DomainError::invalid(
                format!("{prefix}eppn"),
                RuleId::Required,
                "give an eppn or an external_id",
            ));
        }
        let max = MAX_IDENTIFIER_CHARS;
        check_len(&format!("{prefix}eppn"), self.eppn.as_deref(), 0, max)?;
        check_len(
            &format!("{prefix}idp_entity_id"),
            self.idp_entity_id.as_deref(),
            0,
            max,
        )?;
        check_len(
            &format!("{prefix}civic_no"),
            self.civic_no.as_deref(),
            0,
            MAX_CIVIC_NO_CHARS,
        )?;
        if let Some(x) = &self.external_id {
            check_len(
                &format!("{prefix}external_id.value"),
                Some(&x.value),
                1,
                max,
            )?;
            check_len(
                &format!("{prefix}external_id.context"),
                Some(&x.context),
                1,
                max,
            )?;
        }
        Ok(())
    }

    pub fn query(self) -> LoginQuery {
        LoginQuery {
            eppn: self.eppn,
            idp_entity_id: self.idp_entity_id,
            external_id: self.external_id.map(|x| (x.value, x.context)),
            civic_no: self.civic_no,
            caller: None,
        }
    }
}

/// Up to 1,000 lookups answered in one request.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    #[schema(min_items = 1, max_items = 1000)]
    pub lookups: Vec<ResolveRequest>,
}

/// Parses a JSON body, answering a wrong one with a 400 that names the problem but never
/// repeats the input.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DomainError> {
    serde_json::from_slice(body).map_err(|e| {
        let rule = if e.is_syntax() || e.is_eof() {
            RuleId::Syntax
        } else {
            RuleId::Type
        };
        let detail = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!(
                    "the body is not well-formed JSON (line {}, column {})",
                    e.line(),
                    e.column()
                )
            }
            // serde's data messages name fields and expected types, never values.
            _ => format!(
                "the body does not match the schema: {}",
                strip_position(&e.to_string())
            ),
        };
        DomainError::invalid("", rule, detail)
    })
}

fn strip_position(s: &str) -> String {
    match s.find(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

// ----------------------------------------------------------------------------------------
// Responses
// ----------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleOut {
    Pupil,
    Teacher,
    Principal,
    OtherStaff,
}

impl From<Role> for RoleOut {
    fn from(r: Role) -> Self {
        match r {
            Role::Pupil => RoleOut::Pupil,
            Role::Teacher => RoleOut::Teacher,
            Role::Principal => RoleOut::Principal,
            Role::OtherStaff => RoleOut::OtherStaff,
        }
    }
}

fn roles(r: &BTreeSet<Role>) -> Vec<RoleOut> {
    r.iter().copied().map(RoleOut::from).collect()
}

/// The school owner (huvudman) that provisioned the account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Huvudman {
    pub tenant_id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organisation_number: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EmailOut {
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PersonOut {
    /// The school owner's source id of the person.
    pub source_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub emails: Vec<EmailOut>,
    /// EPPNs in lower case; the first is the primary login name.
    pub eppns: Vec<String>,
    /// Protected identity: hide this person's data from others.
    pub security_marking: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SchoolUnitOut {
    pub source_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub school_unit_code: Option<String>,
    /// Absent when the school unit has not been provisioned (see `warnings`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub roles: Vec<RoleOut>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnrolmentOut {
    pub school_unit_source_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub school_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub school_year: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program_code: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DutyOut {
    pub source_id: String,
    pub school_unit_source_id: String,
    /// The role as provisioned (`Lärare`, `Rektor`, …).
    pub title: String,
    pub role: RoleOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupOut {
    /// Gateway id of the group (for `/groups/{id}/members`).
    pub id: Uuid,
    pub source_id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub school_type: Option<String>,
    /// `pupil` for a member; `teacher` for a teacher of one of the group's activities.
    pub membership_role: RoleOut,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupRefOut {
    pub id: Uuid,
    pub source_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TeacherOut {
    /// Source id of the duty (EGIL Employment) that teaches.
    pub duty_source_id: String,
    /// The teacher's account, when the duty and its person are provisioned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActivityOut {
    /// Gateway id of the activity (for `/activities/{id}`).
    pub id: Uuid,
    pub source_id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity_type: Option<String>,
    pub groups: Vec<GroupRefOut>,
    pub teachers: Vec<TeacherOut>,
    /// The national test this activity is an occasion of (the first parent activity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_activity: Option<String>,
    pub parent_activities: Vec<String>,
    /// The account's part in it: `pupil` (through a group) or `teacher`.
    pub role: RoleOut,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProvisionedOut {
    pub at: DateTime<Utc>,
    pub protocol: ProtocolOut,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolOut {
    EgilScim,
    Ss12000Push,
    Ss12000Pull,
}

impl From<Protocol> for ProtocolOut {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::EgilScim => ProtocolOut::EgilScim,
            Protocol::Ss12000Push => ProtocolOut::Ss12000Push,
            Protocol::Ss12000Pull => ProtocolOut::Ss12000Pull,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KindOut {
    OrgUnit,
    Person,
    Duty,
    Group,
    Activity,
}

impl From<Kind> for KindOut {
    fn from(k: Kind) -> Self {
        match k {
            Kind::OrgUnit => KindOut::OrgUnit,
            Kind::Person => KindOut::Person,
            Kind::Duty => KindOut::Duty,
            Kind::Group => KindOut::Group,
            Kind::Activity => KindOut::Activity,
        }
    }
}

/// A reference that did not resolve: the object has not arrived (yet) or was deleted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WarningOut {
    /// Always `dangling_reference` today.
    pub code: String,
    pub kind: KindOut,
    pub source_id: String,
    pub referenced_by: KindOut,
    pub referenced_by_source_id: String,
}

fn warnings(w: &[Warning]) -> Vec<WarningOut> {
    w.iter()
        .map(|w| WarningOut {
            code: "dangling_reference".into(),
            kind: w.kind.into(),
            source_id: w.id.clone(),
            referenced_by: w.referenced_by.into(),
            referenced_by_source_id: w.referenced_by_id.clone(),
        })
        .collect()
}

/// A provisioned person as the product sees it at login.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountOut {
    /// The gateway's stable account id (UUIDv5 of school owner and source id).
    pub account_id: Uuid,
    pub huvudman: Huvudman,
    pub person: PersonOut,
    pub roles: Vec<RoleOut>,
    pub school_units: Vec<SchoolUnitOut>,
    pub enrolments: Vec<EnrolmentOut>,
    pub duties: Vec<DutyOut>,
    pub groups: Vec<GroupOut>,
    pub activities: Vec<ActivityOut>,
    pub last_provisioned: ProvisionedOut,
    /// Whether a civic number was checked as a second factor for this answer.
    pub civic_no_checked: bool,
    pub warnings: Vec<WarningOut>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasonOut {
    Unknown,
    ScopeMismatch,
    IdpMismatch,
    TenantSuspended,
    Ambiguous,
}

impl From<NoMatch> for ReasonOut {
    fn from(n: NoMatch) -> Self {
        match n {
            NoMatch::Unknown => ReasonOut::Unknown,
            NoMatch::ScopeMismatch => ReasonOut::ScopeMismatch,
            NoMatch::IdpMismatch => ReasonOut::IdpMismatch,
            NoMatch::TenantSuspended => ReasonOut::TenantSuspended,
            NoMatch::Ambiguous => ReasonOut::Ambiguous,
        }
    }
}

/// No account for this login (or id). `reason` tells the product what to do.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NoMatchOut {
    /// Always `no_match`.
    pub error: String,
    pub reason: ReasonOut,
}

pub fn no_match(n: NoMatch) -> NoMatchOut {
    NoMatchOut {
        error: "no_match".into(),
        reason: n.into(),
    }
}

/// An error: a stable code, a short explanation, and for invalid input the attribute path
/// and rule. Never the offending value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorOut {
    pub error: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// One answer of a batch: `status` 200 with `account`, 404 with `reason`, or another
/// status with `error`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchResultOut {
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<ReasonOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorOut>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    /// One result per lookup, in the order of the request.
    pub results: Vec<BatchResultOut>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberOut {
    pub account_id: Uuid,
    pub source_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub eppns: Vec<String>,
    pub security_marking: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupInfoOut {
    pub id: Uuid,
    pub source_id: String,
    pub tenant_id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub school_type: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupMembersOut {
    pub group: GroupInfoOut,
    pub members: Vec<MemberOut>,
    pub warnings: Vec<WarningOut>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RosterTeacherOut {
    pub duty_source_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The teacher, when the duty and its person are provisioned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub person: Option<MemberOut>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActivityInfoOut {
    pub id: Uuid,
    pub source_id: String,
    pub tenant_id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_activity: Option<String>,
    pub parent_activities: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActivityRosterOut {
    pub activity: ActivityInfoOut,
    pub groups: Vec<GroupInfoOut>,
    /// Members of the activity's groups.
    pub pupils: Vec<MemberOut>,
    pub teachers: Vec<RosterTeacherOut>,
    pub warnings: Vec<WarningOut>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpOut {
    Create,
    Update,
    Delete,
}

impl From<Op> for OpOut {
    fn from(o: Op) -> Self {
        match o {
            Op::Create => OpOut::Create,
            Op::Update => OpOut::Update,
            Op::Delete => OpOut::Delete,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChangeOut {
    /// The cursor just after this entry.
    pub cursor: String,
    pub tenant_id: String,
    pub kind: KindOut,
    /// Gateway id; for `kind` `person` this is the account id.
    pub id: Uuid,
    pub source_id: String,
    pub op: OpOut,
    pub at: DateTime<Utc>,
    /// The accounts whose view this change alters: the person itself; a group's members
    /// before and after; a duty's person; an activity's pupils (through its groups) and
    /// teachers, before and after. Refresh these with `GET /accounts/{id}` (404: gone).
    /// A school unit's change lists none.
    pub accounts: Vec<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChangesOut {
    /// Oldest first. Accounts are `kind` `person`; group and activity entries tell the
    /// product which rosters to read again.
    pub changes: Vec<ChangeOut>,
    /// Pass as `cursor` to continue; equal to the request's cursor when nothing is new.
    pub next_cursor: String,
}

// ----------------------------------------------------------------------------------------
// Rendering
// ----------------------------------------------------------------------------------------

pub fn account(a: &Account) -> AccountOut {
    let p = &a.person;
    AccountOut {
        account_id: a.account_id,
        huvudman: Huvudman {
            tenant_id: a.tenant.id.to_string(),
            name: a.tenant.name.clone(),
            organisation_number: a.tenant.organisation_number.clone(),
        },
        person: PersonOut {
            source_id: a.person_id.clone(),
            given_name: p.given_name.clone(),
            family_name: p.family_name.clone(),
            display_name: p.display_name.clone(),
            emails: p
                .emails
                .iter()
                .map(|e| EmailOut {
                    value: e.value.clone(),
                    kind: e.kind.clone(),
                })
                .collect(),
            eppns: p.eppns.clone(),
            security_marking: p.security_marking.unwrap_or(false),
        },
        roles: roles(&a.roles),
        school_units: a
            .school_units
            .iter()
            .map(|u| SchoolUnitOut {
                source_id: u.source_id.clone(),
                school_unit_code: u.unit.as_ref().and_then(|o| o.school_unit_code.clone()),
                name: u.unit.as_ref().map(|o| o.display_name.clone()),
                roles: roles(&u.roles),
            })
            .collect(),
        enrolments: p
            .enrolments
            .iter()
            .map(|e| EnrolmentOut {
                school_unit_source_id: e.school_unit.clone(),
                school_type: e.school_type.clone(),
                school_year: e.school_year,
                program_code: e.program_code.clone(),
            })
            .collect(),
        duties: a
            .duties
            .iter()
            .map(|d| DutyOut {
                source_id: d.source_id.clone(),
                school_unit_source_id: d.value.school_unit.clone(),
                title: d.value.role.clone(),
                role: Role::of_duty(&d.value.role).into(),
                signature: d.value.signature.clone(),
            })
            .collect(),
        groups: a
            .groups
            .iter()
            .map(|g| GroupOut {
                id: g.group.gateway_id,
                source_id: g.group.source_id.clone(),
                name: g.group.value.display_name.clone(),
                group_type: g.group.value.group_type.clone(),
                school_type: g.group.value.school_type.clone(),
                membership_role: g.role.into(),
            })
            .collect(),
        activities: a
            .activities
            .iter()
            .map(|v| {
                let act = &v.activity.value;
                ActivityOut {
                    id: v.activity.gateway_id,
                    source_id: v.activity.source_id.clone(),
                    name: act.display_name.clone(),
                    activity_type: act.activity_type.clone(),
                    groups: v
                        .group_ids
                        .iter()
                        .map(|(s, id)| GroupRefOut {
                            id: *id,
                            source_id: s.clone(),
                        })
                        .collect(),
                    teachers: v.teachers.iter().map(teacher).collect(),
                    parent_activity: act.parent_activities.first().cloned(),
                    parent_activities: act.parent_activities.clone(),
                    role: v.role.into(),
                }
            })
            .collect(),
        last_provisioned: ProvisionedOut {
            at: a.last_provisioned,
            protocol: a.protocol.into(),
        },
        civic_no_checked: a.civic_no_checked,
        warnings: warnings(&a.warnings),
    }
}

fn teacher(t: &TeacherRef) -> TeacherOut {
    TeacherOut {
        duty_source_id: t.duty_id.clone(),
        account_id: t.account_id,
        title: t.role.clone(),
    }
}

fn member(m: &MemberView) -> MemberOut {
    MemberOut {
        account_id: m.account_id,
        source_id: m.source_id.clone(),
        given_name: m.person.given_name.clone(),
        family_name: m.person.family_name.clone(),
        display_name: m.person.display_name.clone(),
        eppns: m.person.eppns.clone(),
        security_marking: m.person.security_marking.unwrap_or(false),
    }
}

fn group_info(g: &Ided<Group>, tenant: &str) -> GroupInfoOut {
    GroupInfoOut {
        id: g.gateway_id,
        source_id: g.source_id.clone(),
        tenant_id: tenant.to_owned(),
        name: g.value.display_name.clone(),
        group_type: g.value.group_type.clone(),
        school_type: g.value.school_type.clone(),
    }
}

pub fn group_members(r: &GroupRoster) -> GroupMembersOut {
    GroupMembersOut {
        group: group_info(&r.group, r.tenant.id.as_str()),
        members: r.members.iter().map(member).collect(),
        warnings: warnings(&r.warnings),
    }
}

pub fn activity_roster(r: &ActivityRoster) -> ActivityRosterOut {
    let t = r.tenant.id.as_str();
    let a = &r.activity.value;
    ActivityRosterOut {
        activity: ActivityInfoOut {
            id: r.activity.gateway_id,
            source_id: r.activity.source_id.clone(),
            tenant_id: t.to_owned(),
            name: a.display_name.clone(),
            activity_type: a.activity_type.clone(),
            parent_activity: a.parent_activities.first().cloned(),
            parent_activities: a.parent_activities.clone(),
        },
        groups: r.groups.iter().map(|g| group_info(g, t)).collect(),
        pupils: r.pupils.iter().map(member).collect(),
        teachers: r
            .teachers
            .iter()
            .map(|(t, p)| RosterTeacherOut {
                duty_source_id: t.duty_id.clone(),
                title: t.role.clone(),
                person: p.as_ref().map(member),
            })
            .collect(),
        warnings: warnings(&r.warnings),
    }
}

pub fn changes(items: &[ChangeView], next: u64) -> ChangesOut {
    ChangesOut {
        changes: items
            .iter()
            .map(|c| ChangeOut {
                cursor: c.seq.to_string(),
                tenant_id: c.tenant.to_string(),
                kind: c.kind.into(),
                id: c.gateway_id,
                source_id: c.source_id.clone(),
                op: c.op.into(),
                at: c.at,
                accounts: c.accounts.clone(),
            })
            .collect(),
        next_cursor: next.to_string(),
    }
}

/// The status and body of a domain error in this API's format.
pub fn error(e: &DomainError) -> (u16, ErrorOut) {
    let plain = |code: &str, detail: &str| ErrorOut {
        error: code.into(),
        detail: detail.into(),
        path: None,
        rule: None,
    };
    match e {
        DomainError::Invalid(v) => (
            400,
            ErrorOut {
                error: "invalid".into(),
                detail: v.to_string(),
                path: Some(v.path.clone()),
                rule: Some(v.rule.as_str().into()),
            },
        ),
        DomainError::PayloadTooLarge { limit } => (
            413,
            plain(
                "payload_too_large",
                &format!("the body exceeds {limit} bytes"),
            ),
        ),
        DomainError::UnsupportedMediaType => (
            415,
            plain("unsupported_media_type", "send application/json"),
        ),
        DomainError::Conflict(_) => (409, plain("conflict", "conflict")),
        DomainError::NotFound => (404, plain("not_found", "no such resource")),
        DomainError::Unauthorized => (
            401,
            plain(
                "unauthorized",
                "a valid product API key is required (X-API-Key)",
            ),
        ),
        DomainError::Forbidden => (
            403,
            plain(
                "forbidden",
                "this credential is not allowed here (the login API is for products)",
            ),
        ),
        DomainError::RateLimited { .. } => (429, plain("rate_limited", "too many requests")),
        DomainError::Suspended { .. } | DomainError::Unavailable => (
            503,
            plain("unavailable", "the service is temporarily unavailable"),
        ),
        DomainError::Internal => (500, plain("internal", "internal error")),
    }
}
