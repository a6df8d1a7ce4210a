//! From an EGIL SCIM body to the canonical model.
//!
//! Mapping (see `docs/canonical-model.md`):
//!
//! | EGIL | canonical |
//! |---|---|
//! | Organisation | OrgUnit `huvudman` |
//! | SchoolUnitGroup | OrgUnit `school_unit_group` |
//! | SchoolUnit | OrgUnit `school_unit`; `parent` = schoolUnitGroup, else organisation |
//! | User | Person; `userName` → `eppns[0]`; extension → civic number, enrolments, … |
//! | Employment | Duty (`employedAt` → school unit, `user` → person) |
//! | StudentGroup | Group (`studentMemberships` → members) |
//! | Activity | Activity (`group` legacy → one-element `groups`, `parentActivity` kept) |

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::schema::Schemas;
use super::types::{EgilType, USER_EXTENSION};
use crate::domain::model::{
    Activity, Duty, Email, Enrolment, Entity, Group, OrgUnit, Person, Relation,
};
use crate::domain::rules::normalise_uuid;
use crate::domain::service::Incoming;
use crate::domain::{DomainError, OrgType, RuleId};

#[derive(Deserialize)]
struct Ref {
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Common {
    external_id: String,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WOrg {
    display_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WSchoolUnit {
    display_name: String,
    school_unit_code: String,
    organisation: Option<Ref>,
    school_unit_group: Option<Ref>,
    municipality_code: Option<String>,
    #[serde(default)]
    school_types: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WName {
    family_name: String,
    given_name: String,
}

#[derive(Deserialize)]
struct WEmail {
    value: String,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WEnrolment {
    value: String,
    school_year: Option<i64>,
    school_type: Option<String>,
    program_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WRelation {
    value: String,
    relation_type: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WUserExt {
    #[serde(default)]
    enrolments: Vec<WEnrolment>,
    civic_no: Option<String>,
    security_marking: Option<bool>,
    #[serde(default)]
    user_relations: Vec<WRelation>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WUser {
    user_name: String,
    display_name: Option<String>,
    name: Option<WName>,
    #[serde(default)]
    emails: Vec<WEmail>,
    #[serde(rename = "urn:scim:schemas:extension:sis:school:1.0:User", default)]
    ext: Option<WUserExt>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WEmployment {
    employed_at: Ref,
    user: Ref,
    employment_role: String,
    signature: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WGroup {
    display_name: String,
    owner: Ref,
    student_group_type: Option<String>,
    school_type: Option<String>,
    #[serde(default)]
    student_memberships: Vec<Ref>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WActivity {
    display_name: String,
    owner: Ref,
    #[serde(default)]
    groups: Vec<Ref>,
    group: Option<Ref>,
    #[serde(default)]
    teachers: Vec<Ref>,
    #[serde(default)]
    parent_activity: Vec<Ref>,
}

/// A parsed body: the id it names and the canonical object.
#[derive(Debug)]
pub struct Parsed {
    /// `id` from the body, if the client sent one (normalised).
    pub body_id: Option<String>,
    pub incoming: Incoming,
}

fn uuid_at(path: &str, v: &str) -> Result<String, DomainError> {
    normalise_uuid(v).map_err(|r| {
        DomainError::invalid(path, r, "expected a UUID (8-4-4-4-12 hexadecimal digits)")
    })
}

fn refs_at(path: &str, refs: &[Ref]) -> Result<Vec<String>, DomainError> {
    refs.iter()
        .enumerate()
        .map(|(i, r)| uuid_at(&format!("{path}[{i}].value"), &r.value))
        .collect()
}

fn typed<T: DeserializeOwned>(v: Value) -> Result<T, DomainError> {
    // The schema has already checked every attribute the typed form reads, so this only
    // fails if the schema and the types disagree.
    serde_json::from_value(v).map_err(|_| {
        DomainError::invalid(
            "",
            RuleId::Schema,
            "the resource does not match the EGIL profile",
        )
    })
}

/// Parses and validates a body for `t`: UTF-8, JSON, schema, identifiers; then maps it.
pub fn parse(schemas: &Schemas, t: EgilType, body: &[u8]) -> Result<Parsed, DomainError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| DomainError::invalid("", RuleId::Syntax, "the body is not valid UTF-8"))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| DomainError::invalid("", RuleId::Syntax, format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(DomainError::invalid(
            "",
            RuleId::Type,
            "expected a JSON object",
        ));
    }
    let mut violations = schemas.validate(t, &value).into_iter();
    if let Some(mut first) = violations.next() {
        first.also = violations.collect();
        return Err(DomainError::Invalid(first));
    }
    let common: Common = typed(value.clone())?;
    let id = uuid_at("externalId", &common.external_id)?;
    let body_id = common.id.as_deref().map(|i| uuid_at("id", i)).transpose()?;
    if body_id.as_ref().is_some_and(|b| b != &id) {
        return Err(DomainError::invalid(
            "id",
            RuleId::IdMismatch,
            "id and externalId differ",
        ));
    }
    let entity = match t {
        EgilType::Organisations | EgilType::SchoolUnitGroups => {
            let w: WOrg = typed(value)?;
            let org_type = if t == EgilType::Organisations {
                OrgType::Huvudman
            } else {
                OrgType::SchoolUnitGroup
            };
            Entity::OrgUnit(OrgUnit {
                org_type,
                display_name: w.display_name,
                school_unit_code: None,
                municipality_code: None,
                parent: None,
                organisation: None,
                school_types: Vec::new(),
            })
        }
        EgilType::SchoolUnits => {
            let w: WSchoolUnit = typed(value)?;
            let organisation = w
                .organisation
                .map(|r| uuid_at("organisation.value", &r.value))
                .transpose()?;
            let group = w
                .school_unit_group
                .map(|r| uuid_at("schoolUnitGroup.value", &r.value))
                .transpose()?;
            Entity::OrgUnit(OrgUnit {
                org_type: OrgType::SchoolUnit,
                display_name: w.display_name,
                school_unit_code: Some(w.school_unit_code),
                municipality_code: w.municipality_code,
                parent: group.or_else(|| organisation.clone()),
                organisation,
                school_types: w.school_types,
            })
        }
        EgilType::Users => {
            let w: WUser = typed(value)?;
            let ext = w.ext.unwrap_or_default();
            let enrolments = ext
                .enrolments
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    Ok(Enrolment {
                        school_unit: uuid_at(
                            &format!("{USER_EXTENSION}.enrolments[{i}].value"),
                            &e.value,
                        )?,
                        school_type: e.school_type,
                        school_year: e.school_year,
                        program_code: e.program_code,
                    })
                })
                .collect::<Result<Vec<_>, DomainError>>()?;
            let relations = ext
                .user_relations
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    Ok(Relation {
                        person: uuid_at(
                            &format!("{USER_EXTENSION}.userRelations[{i}].value"),
                            &r.value,
                        )?,
                        relation_type: r.relation_type,
                    })
                })
                .collect::<Result<Vec<_>, DomainError>>()?;
            let (family_name, given_name) = w
                .name
                .map_or((None, None), |n| (Some(n.family_name), Some(n.given_name)));
            Entity::Person(Person {
                given_name,
                family_name,
                display_name: w.display_name,
                eppns: vec![w.user_name],
                civic_no: ext.civic_no,
                emails: w
                    .emails
                    .into_iter()
                    .map(|e| Email {
                        value: e.value,
                        kind: e.kind,
                    })
                    .collect(),
                security_marking: ext.security_marking,
                external_identifiers: Vec::new(),
                enrolments,
                relations,
            })
        }
        EgilType::Employments => {
            let w: WEmployment = typed(value)?;
            Entity::Duty(Duty {
                person: Some(uuid_at("user.value", &w.user.value)?),
                school_unit: uuid_at("employedAt.value", &w.employed_at.value)?,
                role: w.employment_role,
                signature: w.signature,
            })
        }
        EgilType::StudentGroups => {
            let w: WGroup = typed(value)?;
            Entity::Group(Group {
                display_name: w.display_name,
                group_type: w.student_group_type,
                school_type: w.school_type,
                owner: uuid_at("owner.value", &w.owner.value)?,
                members: refs_at("studentMemberships", &w.student_memberships)?,
            })
        }
        EgilType::Activities => {
            let w: WActivity = typed(value)?;
            // The legacy single `group` wins over `groups`, as in Windermere.
            let groups = match &w.group {
                Some(g) => vec![uuid_at("group.value", &g.value)?],
                None => refs_at("groups", &w.groups)?,
            };
            Entity::Activity(Activity {
                display_name: w.display_name,
                activity_type: None,
                owner: uuid_at("owner.value", &w.owner.value)?,
                groups,
                teachers: refs_at("teachers", &w.teachers)?,
                parent_activities: refs_at("parentActivity", &w.parent_activity)?,
            })
        }
    };
    Ok(Parsed {
        body_id,
        incoming: Incoming {
            id,
            entity,
            raw: text.to_owned(),
        },
    })
}

/// Canonical attribute paths (from domain rules) → EGIL wire paths.
pub fn wire_path(canonical: &str) -> String {
    if canonical.starts_with("person.eppns[") {
        "userName".to_owned()
    } else if canonical == "person.civic_no" {
        format!("{USER_EXTENSION}.civicNo")
    } else {
        canonical.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schemas() -> Schemas {
        Schemas::compile().unwrap()
    }

    #[test]
    fn legacy_group_becomes_groups() {
        let body = br#"{"externalId":"ce4d51e5-f563-5105-8a13-849088f1fc2d","displayName":"a",
            "owner":{"value":"8d371858-3fbd-4af2-ae33-84225ead4a1b"},
            "group":{"value":"DEF59679-3808-4210-a707-ebce13467206"}}"#;
        let p = parse(&schemas(), EgilType::Activities, body).unwrap();
        let Entity::Activity(a) = p.incoming.entity else {
            panic!()
        };
        assert_eq!(
            a.groups,
            vec!["def59679-3808-4210-a707-ebce13467206".to_string()]
        );
    }

    #[test]
    fn id_is_lower_cased_external_id_and_raw_is_kept() {
        let body =
            b"\n{\"externalId\":\"D80428C4-8788-47D7-ACA7-761681FBE66A\",\t\"displayName\":\"K\"}";
        let p = parse(&schemas(), EgilType::Organisations, body).unwrap();
        assert_eq!(p.incoming.id, "d80428c4-8788-47d7-aca7-761681fbe66a");
        assert_eq!(p.incoming.raw.as_bytes(), body);
    }

    #[test]
    fn syntax_errors_do_not_echo_values() {
        let err = parse(&schemas(), EgilType::Users, b"{\"civicNo\": 200406042903x}").unwrap_err();
        let DomainError::Invalid(v) = err else {
            panic!()
        };
        assert_eq!(v.rule, RuleId::Syntax);
        assert!(!v.detail.contains("200406042903"), "{}", v.detail);
    }
}
