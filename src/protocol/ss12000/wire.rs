//! From an SS12000:2020 item (already schema-valid) to the canonical model.
//!
//! | SS12000:2020 | canonical |
//! |---|---|
//! | Organisation | OrgUnit; `organisationType` Huvudman → huvudman, Skola → school_unit_group, Skolenhet (default) → school_unit, others → other; `parentOrganisation` → parent |
//! | Person | Person; `eduPersonPrincipalNames` → eppns, `civicNo.value` → civic_no, `securityMarking` ≠ Ingen → protected, `enrolments[].enroledAt` → school unit, `educationCode` → programme, `responsibles` → relations |
//! | Duty | Duty; `dutyAt` → school unit, `person`, `dutyRole` → role, `signature` |
//! | Group | Group; `organisation` → owner, `groupMemberships[].person` → members |
//! | Activity | Activity; `organisation` → owner, `groups`, `teachers[].duty` → teachers, `parentActivity` → one parent activity |

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::types::Ss12Type;
use crate::domain::model::{
    Activity, Duty, Email, Enrolment, Entity, ExternalIdentifier, Group, OrgUnit, Person, Relation,
};
use crate::domain::rules::normalise_uuid;
use crate::domain::service::Incoming;
use crate::domain::{DomainError, OrgType, RuleId};

#[derive(Deserialize)]
struct Ref {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WOrg {
    display_name: String,
    organisation_type: Option<String>,
    parent_organisation: Option<Ref>,
    school_unit_code: Option<String>,
    municipality_code: Option<String>,
    #[serde(default)]
    school_types: Vec<String>,
}

#[derive(Deserialize)]
struct WCivic {
    value: String,
}

#[derive(Deserialize)]
struct WEmail {
    value: String,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WExtId {
    value: String,
    context: String,
    #[serde(default)]
    globally_unique: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WEnrolment {
    enroled_at: Ref,
    school_type: String,
    school_year: Option<i64>,
    education_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WResponsible {
    person: Ref,
    relation_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WPerson {
    given_name: String,
    middle_name: Option<String>,
    family_name: String,
    #[serde(default)]
    edu_person_principal_names: Vec<String>,
    civic_no: Option<WCivic>,
    #[serde(default)]
    emails: Vec<WEmail>,
    security_marking: Option<String>,
    #[serde(default)]
    external_identifiers: Vec<WExtId>,
    #[serde(default)]
    enrolments: Vec<WEnrolment>,
    #[serde(default)]
    responsibles: Vec<WResponsible>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WDuty {
    person: Option<Ref>,
    duty_at: Ref,
    duty_role: String,
    signature: Option<String>,
}

#[derive(Deserialize)]
struct WMembership {
    person: Ref,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WGroup {
    display_name: String,
    group_type: String,
    school_type: Option<String>,
    organisation: Ref,
    #[serde(default)]
    group_memberships: Vec<WMembership>,
}

#[derive(Deserialize)]
struct WTeacher {
    duty: Ref,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WActivity {
    display_name: String,
    activity_type: Option<String>,
    organisation: Ref,
    groups: Vec<Ref>,
    #[serde(default)]
    teachers: Vec<WTeacher>,
    parent_activity: Option<Ref>,
}

fn typed<T: DeserializeOwned>(v: &Value) -> Result<T, DomainError> {
    T::deserialize(v).map_err(|_| {
        // Schema validation runs first, so this is only reached by shapes the schema
        // leaves open; the serde message may quote values, so it is not passed on.
        DomainError::invalid(
            "",
            RuleId::Schema,
            "the item does not have the expected shape",
        )
    })
}

fn id(path: &str, r: &Ref) -> Result<String, DomainError> {
    normalise_uuid(&r.id).map_err(|rule| {
        DomainError::invalid(
            path,
            rule,
            "expected a UUID (8-4-4-4-12 hexadecimal digits)",
        )
    })
}

pub fn org_type(organisation_type: Option<&str>) -> OrgType {
    match organisation_type.unwrap_or("Skolenhet") {
        "Huvudman" => OrgType::Huvudman,
        "Skola" => OrgType::SchoolUnitGroup,
        "Skolenhet" => OrgType::SchoolUnit,
        _ => OrgType::Other,
    }
}

/// Maps a schema-valid item to the canonical model; `raw` is kept with the object.
pub fn to_incoming(t: Ss12Type, v: &Value, raw: String) -> Result<Incoming, DomainError> {
    let item_id = v.get("id").and_then(Value::as_str).ok_or_else(|| {
        DomainError::invalid("id", RuleId::Required, "required attribute is missing")
    })?;
    let item_id = normalise_uuid(item_id).map_err(|r| {
        DomainError::invalid("id", r, "expected a UUID (8-4-4-4-12 hexadecimal digits)")
    })?;
    let entity = match t {
        Ss12Type::Organisations => {
            let o: WOrg = typed(v)?;
            Entity::OrgUnit(OrgUnit {
                org_type: org_type(o.organisation_type.as_deref()),
                display_name: o.display_name,
                school_unit_code: o.school_unit_code,
                municipality_code: o.municipality_code,
                parent: o
                    .parent_organisation
                    .as_ref()
                    .map(|r| id("parentOrganisation.id", r))
                    .transpose()?,
                organisation: None,
                school_types: o.school_types,
            })
        }
        Ss12Type::Persons => {
            let p: WPerson = typed(v)?;
            let display = match &p.middle_name {
                Some(m) => format!("{} {} {}", p.given_name, m, p.family_name),
                None => format!("{} {}", p.given_name, p.family_name),
            };
            let mut enrolments = Vec::with_capacity(p.enrolments.len());
            for (i, e) in p.enrolments.into_iter().enumerate() {
                enrolments.push(Enrolment {
                    school_unit: id(&format!("enrolments[{i}].enroledAt.id"), &e.enroled_at)?,
                    school_type: Some(e.school_type),
                    school_year: e.school_year,
                    program_code: e.education_code,
                });
            }
            let mut relations = Vec::with_capacity(p.responsibles.len());
            for (i, r) in p.responsibles.into_iter().enumerate() {
                relations.push(Relation {
                    person: id(&format!("responsibles[{i}].person.id"), &r.person)?,
                    relation_type: r.relation_type.unwrap_or_default(),
                });
            }
            Entity::Person(Person {
                given_name: Some(p.given_name),
                family_name: Some(p.family_name),
                display_name: Some(display),
                eppns: p.edu_person_principal_names,
                civic_no: p.civic_no.map(|c| c.value),
                emails: p
                    .emails
                    .into_iter()
                    .map(|e| Email {
                        value: e.value,
                        kind: e.kind,
                    })
                    .collect(),
                security_marking: p.security_marking.map(|s| s != "Ingen"),
                external_identifiers: p
                    .external_identifiers
                    .into_iter()
                    .map(|x| ExternalIdentifier {
                        value: x.value,
                        context: Some(x.context),
                        globally_unique: x.globally_unique,
                    })
                    .collect(),
                enrolments,
                relations,
            })
        }
        Ss12Type::Duties => {
            let d: WDuty = typed(v)?;
            Entity::Duty(Duty {
                person: d.person.as_ref().map(|r| id("person.id", r)).transpose()?,
                school_unit: id("dutyAt.id", &d.duty_at)?,
                role: d.duty_role,
                signature: d.signature,
            })
        }
        Ss12Type::Groups => {
            let g: WGroup = typed(v)?;
            let mut members = Vec::with_capacity(g.group_memberships.len());
            for (i, m) in g.group_memberships.iter().enumerate() {
                let p = id(&format!("groupMemberships[{i}].person.id"), &m.person)?;
                if !members.contains(&p) {
                    members.push(p);
                }
            }
            Entity::Group(Group {
                display_name: g.display_name,
                group_type: Some(g.group_type),
                school_type: g.school_type,
                owner: id("organisation.id", &g.organisation)?,
                members,
            })
        }
        Ss12Type::Activities => {
            let a: WActivity = typed(v)?;
            let mut groups = Vec::with_capacity(a.groups.len());
            for (i, g) in a.groups.iter().enumerate() {
                groups.push(id(&format!("groups[{i}].id"), g)?);
            }
            let mut teachers = Vec::with_capacity(a.teachers.len());
            for (i, t) in a.teachers.iter().enumerate() {
                teachers.push(id(&format!("teachers[{i}].duty.id"), &t.duty)?);
            }
            Entity::Activity(Activity {
                display_name: a.display_name,
                activity_type: a.activity_type,
                owner: id("organisation.id", &a.organisation)?,
                groups,
                teachers,
                parent_activities: a
                    .parent_activity
                    .as_ref()
                    .map(|r| id("parentActivity.id", r))
                    .transpose()?
                    .into_iter()
                    .collect(),
            })
        }
    };
    Ok(Incoming {
        id: item_id,
        entity,
        raw,
    })
}

/// A canonical attribute path from the domain rules in wire terms.
pub fn wire_path(canonical: &str) -> String {
    if let Some(rest) = canonical.strip_prefix("person.eppns") {
        return format!("eduPersonPrincipalNames{rest}");
    }
    match canonical {
        "person.civic_no" => "civicNo.value".into(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_every_type() {
        let u = "3FA85F64-5717-4562-B3FC-2C963F66AFA6";
        let p = json!({"id": u, "givenName": "Anna", "familyName": "Berg",
            "eduPersonPrincipalNames": ["anna@skola.se"], "civicNo": {"value": "200901272385", "nationality": "SE"},
            "securityMarking": "Ingen",
            "enrolments": [{"enroledAt": {"id": u}, "schoolType": "GY", "educationCode": "NA"}],
            "emails": [{"value": "anna@skola.se", "type": "Skola elev"}]});
        let i = to_incoming(Ss12Type::Persons, &p, p.to_string()).unwrap();
        assert_eq!(i.id, u.to_lowercase());
        let Entity::Person(pp) = i.entity else {
            panic!()
        };
        assert_eq!(pp.civic_no.as_deref(), Some("200901272385"));
        assert_eq!(pp.security_marking, Some(false));
        assert_eq!(pp.enrolments[0].program_code.as_deref(), Some("NA"));
        assert_eq!(pp.display_name.as_deref(), Some("Anna Berg"));
        let a = json!({"id": u, "displayName": "MA", "activityType": "Undervisning",
            "organisation": {"id": u}, "groups": [{"id": u}], "teachers": [{"duty": {"id": u}}],
            "parentActivity": {"id": u}});
        let Entity::Activity(aa) = to_incoming(Ss12Type::Activities, &a, String::new())
            .unwrap()
            .entity
        else {
            panic!()
        };
        assert_eq!(aa.parent_activities, vec![u.to_lowercase()]);
        assert_eq!(aa.teachers.len(), 1);
        let o = json!({"id": u, "displayName": "Skolan", "schoolUnitCode": "12345678"});
        assert_eq!(
            to_incoming(Ss12Type::Organisations, &o, String::new())
                .unwrap()
                .entity
                .org_type(),
            Some(OrgType::SchoolUnit)
        );
        assert_eq!(wire_path("person.eppns[0]"), "eduPersonPrincipalNames[0]");
    }
}
