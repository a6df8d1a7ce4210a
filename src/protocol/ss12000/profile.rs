//! Validation profiles for SS12000:2020 pushes, chosen per tenant (`ss12000_profile`).
//!
//! The JSON Schema (`schemas/ss12000/`) is the contract both profiles share; these rules
//! come on top and report through the job result as LogEntry errors (the item is refused)
//! or warnings (the item is stored). Every note names the attribute and the value; the
//! value is shown only to the school owner that sent it and never logged. Message ids are
//! stable (table in `docs/ss12000-push.md`).

use std::sync::Arc;

use serde_json::Value;

use super::types::Ss12Type;
use crate::domain::jobs::Note;
use crate::domain::model::{Entity, Person};
use crate::domain::{Kind, ObjectModel, Ss12000Profile};

/// What the rules may read of the school owner's stored data.
pub struct Lookups<'a> {
    /// An object as stored now.
    pub object: &'a dyn Fn(Kind, &str) -> Option<Arc<ObjectModel>>,
    /// Whether a stored duty names this person.
    pub has_duty: &'a dyn Fn(&str) -> bool,
}

/// The e-mail type the DNP requires of school staff.
const STAFF_EMAIL: &str = "Skola personal";

/// School types the DNP accepts.
pub const DNP_SCHOOL_TYPES: [&str; 5] = ["GR", "SP", "SAM", "GY", "VUXGY"];
/// The two deprecated SS12000:2020 duty roles, not in the DNP's 17.
const DEPRECATED_ROLES: [&str; 2] = ["Övrig pedagogisk personal", "Förskolechef"];

#[derive(Debug, Default)]
pub struct Checked {
    pub errors: Vec<Note>,
    pub warnings: Vec<Note>,
}

/// Message categories as Skolverket names them.
pub const INVALID_VALUE: &str = "Ogiltigt värde";
pub const INVALID_FORMAT: &str = "Ogiltigt format";
pub const MISSING_VALUE: &str = "Saknat värde";
pub const DEFICIENT_VALUE: &str = "Bristfälligt värde";
pub const UNKNOWN_REFERENCE: &str = "Okänd referens";

pub fn note(
    code: &str,
    status: u16,
    message_type: &str,
    message: &str,
    attribute: impl Into<String>,
    value: Option<&Value>,
) -> Note {
    Note {
        code: code.into(),
        status_code: status,
        message_type: message_type.into(),
        message: message.into(),
        attribute: Some(attribute.into()),
        value: value.and_then(scalar),
    }
}

/// A scalar as text (strings without quotes); objects and arrays are not echoed.
pub fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

struct Ctx<'a> {
    profile: Ss12000Profile,
    lookups: &'a Lookups<'a>,
    out: Checked,
}

impl Ctx<'_> {
    fn error(&mut self, code: &str, mt: &str, msg: &str, attr: String, v: Option<&Value>) {
        self.out.errors.push(note(code, 400, mt, msg, attr, v));
    }

    fn warn(&mut self, code: &str, mt: &str, msg: &str, attr: String, v: Option<&Value>) {
        self.out.warnings.push(note(code, 400, mt, msg, attr, v));
    }

    fn dnp(&self) -> bool {
        self.profile == Ss12000Profile::Dnp
    }

    /// A reference to an object we should hold: in the DNP profile an error when
    /// `strict_in_dnp`, else a warning. Returns the object when it is held.
    fn reference(
        &mut self,
        code: &str,
        kind: Kind,
        attr: String,
        r: Option<&Value>,
        strict_in_dnp: bool,
    ) -> Option<Arc<ObjectModel>> {
        let id = r.and_then(|r| r.get("id")).and_then(Value::as_str)?;
        if let Some(found) = (self.lookups.object)(kind, &id.to_ascii_lowercase()) {
            return Some(found);
        }
        let msg = match kind {
            Kind::Person => "the referenced person is not known (send persons first)",
            Kind::Group => "the referenced group is not known (send groups before activities)",
            Kind::Duty => "the referenced duty is not known (send duties before activities)",
            _ => "the referenced object is not known",
        };
        let v = Value::String(id.to_owned());
        if strict_in_dnp && self.dnp() {
            self.error(code, UNKNOWN_REFERENCE, msg, attr, Some(&v));
        } else {
            self.warn(code, UNKNOWN_REFERENCE, msg, attr, Some(&v));
        }
        None
    }

    /// SIS requires it, the DNP does not send it: a warning in the generic profile.
    fn sis_required(&mut self, item: &Value, attr: &str, prefix: &str) {
        if !self.dnp() && item.get(attr).is_none() {
            self.warn(
                "7701",
                MISSING_VALUE,
                "attribute required by SS12000:2020 is missing",
                format!("{prefix}.{attr}"),
                None,
            );
        }
    }
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Applies the tenant's profile to a schema-valid item. `exists` says whether this tenant
/// holds an object of a kind with an id (lower case).
pub fn check(profile: Ss12000Profile, t: Ss12Type, item: &Value, lookups: &Lookups<'_>) -> Checked {
    let mut c = Ctx {
        profile,
        lookups,
        out: Checked::default(),
    };
    match t {
        Ss12Type::Persons => person(&mut c, item),
        Ss12Type::Duties => duty(&mut c, item),
        Ss12Type::Groups => group(&mut c, item),
        Ss12Type::Activities => activity(&mut c, item),
        Ss12Type::Organisations => organisation(&mut c, item),
    }
    c.out
}

fn person(c: &mut Ctx<'_>, p: &Value) {
    let eppns = arr(p, "eduPersonPrincipalNames");
    for (i, e) in arr(p, "enrolments").iter().enumerate() {
        if !c.dnp() {
            if e.get("startDate").is_none() {
                c.sis_required(e, "startDate", &format!("Enrolment[{i}]"));
            }
            continue;
        }
        let st = e.get("schoolType");
        let st_s = st.and_then(Value::as_str).unwrap_or_default();
        if !DNP_SCHOOL_TYPES.contains(&st_s) {
            c.error(
                "7105",
                INVALID_VALUE,
                "school type not accepted (GR, SP, SAM, GY, VUXGY)",
                format!("Enrolment[{i}].schoolType"),
                st,
            );
        }
        let year = e.get("schoolYear");
        if matches!(st_s, "GR" | "SP" | "SAM") && year.is_none() {
            c.error(
                "7106",
                MISSING_VALUE,
                "schoolYear is required for GR, SP and SAM",
                format!("Enrolment[{i}].schoolYear"),
                None,
            );
        }
        if let Some(y) = year.and_then(Value::as_i64) {
            if !(1..=10).contains(&y) {
                c.error(
                    "7107",
                    INVALID_VALUE,
                    "schoolYear must be between 1 and 10",
                    format!("Enrolment[{i}].schoolYear"),
                    year,
                );
            }
        }
        if st_s == "GY" && e.get("educationCode").is_none() {
            c.error(
                "7108",
                MISSING_VALUE,
                "educationCode is required for GY",
                format!("Enrolment[{i}].educationCode"),
                None,
            );
        }
    }
    for (i, r) in arr(p, "responsibles").iter().enumerate() {
        c.reference(
            "7606",
            Kind::Person,
            format!("responsibles[{i}].person.id"),
            r.get("person"),
            false,
        );
    }
    if !c.dnp() {
        return;
    }
    match eppns.len() {
        0 => c.error(
            "7101",
            MISSING_VALUE,
            "a person must have exactly one eduPersonPrincipalName",
            "eduPersonPrincipalNames".into(),
            None,
        ),
        1 => {}
        _ => c.error(
            "7102",
            INVALID_VALUE,
            "a person must have exactly one eduPersonPrincipalName",
            "eduPersonPrincipalNames".into(),
            eppns.get(1),
        ),
    }
    // Staff rules (the DNP's "e-mail is mandatory for staff" and "pupil and staff roles use
    // different EPPNs"): a person is staff when a stored duty names it. Duties often come
    // after their persons, so the duty item is checked too; both are warnings, as the
    // final state is known only when everything has arrived.
    let is_staff = p
        .get("id")
        .and_then(Value::as_str)
        .is_some_and(|id| (c.lookups.has_duty)(&id.to_ascii_lowercase()));
    if is_staff {
        let has_staff_email = arr(p, "emails")
            .iter()
            .any(|e| e.get("type").and_then(Value::as_str) == Some(STAFF_EMAIL));
        if !has_staff_email {
            c.warn(
                "7112",
                MISSING_VALUE,
                "this person holds a duty: staff must have an e-mail of type Skola personal",
                "emails".into(),
                None,
            );
        }
        if !arr(p, "enrolments").is_empty() {
            c.warn(
                "7113",
                INVALID_VALUE,
                "this person holds a duty and has an enrolment: pupil and staff roles need different persons with different EPPNs",
                "enrolments".into(),
                None,
            );
        }
    }
    match p.get("civicNo") {
        None => c.error(
            "7103",
            MISSING_VALUE,
            "civicNo is required",
            "civicNo".into(),
            None,
        ),
        Some(civic) => {
            if let Some(n) = civic.get("nationality") {
                if n.as_str() != Some("SE") {
                    c.error(
                        "7104",
                        INVALID_VALUE,
                        "only Swedish civic numbers (nationality SE) are accepted",
                        "civicNo.nationality".into(),
                        Some(n),
                    );
                }
            }
        }
    }
    for (i, e) in arr(p, "emails").iter().enumerate() {
        let ty = e.get("type");
        if !matches!(
            ty.and_then(Value::as_str),
            Some("Skola elev" | "Skola personal")
        ) {
            c.error(
                "7109",
                INVALID_VALUE,
                "e-mail type must be 'Skola elev' or 'Skola personal'",
                format!("emails[{i}].type"),
                ty,
            );
        }
    }
    let ext = arr(p, "externalIdentifiers");
    if ext.len() > 1 {
        c.error(
            "7110",
            INVALID_VALUE,
            "at most one external identifier (the staff eduID EPPN)",
            "externalIdentifiers".into(),
            None,
        );
    }
    for (i, x) in ext.iter().enumerate() {
        let ctx = x.get("context");
        if ctx.and_then(Value::as_str) != Some("https://eduid.se") {
            c.error(
                "7111",
                INVALID_VALUE,
                "externalIdentifiers context must be https://eduid.se",
                format!("externalIdentifiers[{i}].context"),
                ctx,
            );
        }
    }
    if let Some(e) = eppns.first() {
        if eppn_reveals_name(e.as_str().unwrap_or_default(), p) {
            c.warn(
                "3047",
                DEFICIENT_VALUE,
                "the EPPN contains the first three letters of the family name, or the first two of the family name and of the given name; see Skolverket's EPPN guidelines",
                "eppn".into(),
                Some(e),
            );
        }
    }
}

/// Skolverket's EPPN quality rule (warning 3047).
pub fn eppn_reveals_name(eppn: &str, p: &Value) -> bool {
    let local = eppn.split('@').next().unwrap_or_default().to_lowercase();
    let lower = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphabetic())
            .collect::<String>()
    };
    let (family, given) = (lower("familyName"), lower("givenName"));
    let take = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    let f3 = take(&family, 3);
    let f2g2 = format!("{}{}", take(&family, 2), take(&given, 2));
    (f3.chars().count() == 3 && local.contains(&f3))
        || (f2g2.chars().count() == 4 && local.contains(&f2g2))
}

/// The staff rules seen from a duty: its (stored) person needs a staff e-mail and must
/// not also be a pupil.
fn staff_person(c: &mut Ctx<'_>, id: &str, m: &ObjectModel) {
    let Entity::Person(Person {
        emails, enrolments, ..
    }) = &m.entity
    else {
        return;
    };
    let v = Value::String(id.to_owned());
    if !emails
        .iter()
        .any(|e| e.kind.as_deref() == Some(STAFF_EMAIL))
    {
        c.warn(
            "7203",
            DEFICIENT_VALUE,
            "the duty's person has no e-mail of type Skola personal (mandatory for staff)",
            "person.id".into(),
            Some(&v),
        );
    }
    if !enrolments.is_empty() {
        c.warn(
            "7204",
            INVALID_VALUE,
            "the duty's person has an enrolment: pupil and staff roles need different persons with different EPPNs",
            "person.id".into(),
            Some(&v),
        );
    }
}

fn duty(c: &mut Ctx<'_>, d: &Value) {
    match d.get("person") {
        None if c.dnp() => c.error(
            "7201",
            MISSING_VALUE,
            "a duty must name its person",
            "person".into(),
            None,
        ),
        None => {}
        Some(r) => {
            let person = c.reference("7602", Kind::Person, "person.id".into(), Some(r), true);
            let id = r.get("id").and_then(Value::as_str);
            if let (true, Some(m), Some(id)) = (c.dnp(), person, id) {
                staff_person(c, id, &m);
            }
        }
    }
    if c.dnp() {
        let role = d.get("dutyRole");
        if DEPRECATED_ROLES.contains(&role.and_then(Value::as_str).unwrap_or_default()) {
            c.error(
                "7202",
                INVALID_VALUE,
                "deprecated duty role, not accepted",
                "dutyRole".into(),
                role,
            );
        }
    } else {
        c.sis_required(d, "startDate", "Duty");
    }
}

fn group(c: &mut Ctx<'_>, g: &Value) {
    if c.dnp() {
        let gt = g.get("groupType");
        if !matches!(gt.and_then(Value::as_str), Some("Klass" | "Undervisning")) {
            c.error(
                "7301",
                INVALID_VALUE,
                "only groups of type Klass or Undervisning are accepted",
                "groupType".into(),
                gt,
            );
        }
        match g.get("schoolType") {
            None => c.error(
                "7302",
                MISSING_VALUE,
                "schoolType is required",
                "schoolType".into(),
                None,
            ),
            Some(st) => {
                if !DNP_SCHOOL_TYPES.contains(&st.as_str().unwrap_or_default()) {
                    c.error(
                        "7303",
                        INVALID_VALUE,
                        "school type not accepted (GR, SP, SAM, GY, VUXGY)",
                        "schoolType".into(),
                        Some(st),
                    );
                }
            }
        }
    } else {
        c.sis_required(g, "startDate", "Group");
    }
    // As Skolverket since 1.3.2: unknown pupils make a warning, the group is stored.
    for (i, m) in arr(g, "groupMemberships").iter().enumerate() {
        c.reference(
            "7601",
            Kind::Person,
            format!("groupMemberships[{i}].person.id"),
            m.get("person"),
            false,
        );
    }
}

fn activity(c: &mut Ctx<'_>, a: &Value) {
    if c.dnp() {
        let at = a.get("activityType");
        match at.and_then(Value::as_str) {
            None => c.error(
                "7401",
                MISSING_VALUE,
                "activityType is required",
                "activityType".into(),
                None,
            ),
            Some("Undervisning") => {}
            Some(_) => c.error(
                "7402",
                INVALID_VALUE,
                "only activities of type Undervisning are accepted",
                "activityType".into(),
                at,
            ),
        }
        if a.get("parentActivity").is_none() {
            c.error(
                "7403",
                MISSING_VALUE,
                "parentActivity (the national test activity) is required",
                "parentActivity".into(),
                None,
            );
        }
    } else {
        c.sis_required(a, "startDate", "Activity");
        c.sis_required(a, "calendarEventsRequired", "Activity");
    }
    for (i, g) in arr(a, "groups").iter().enumerate() {
        c.reference(
            "7603",
            Kind::Group,
            format!("groups[{i}].id"),
            Some(g),
            true,
        );
    }
    for (i, t) in arr(a, "teachers").iter().enumerate() {
        c.reference(
            "7604",
            Kind::Duty,
            format!("teachers[{i}].duty.id"),
            t.get("duty"),
            true,
        );
    }
}

fn organisation(c: &mut Ctx<'_>, o: &Value) {
    if c.dnp() {
        if o.get("schoolUnitCode").is_none() {
            c.error(
                "7501",
                MISSING_VALUE,
                "schoolUnitCode is required",
                "schoolUnitCode".into(),
                None,
            );
        }
    } else {
        c.sis_required(o, "organisationType", "Organisation");
    }
    if o.get("parentOrganisation").is_some() {
        c.reference(
            "7605",
            Kind::OrgUnit,
            "parentOrganisation.id".into(),
            o.get("parentOrganisation"),
            false,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn eppn_quality() {
        let p = json!({"givenName": "Efraim", "familyName": "Efraimsdotter"});
        assert!(eppn_reveals_name("efraimsdotter09@edu.se", &p));
        assert!(eppn_reveals_name("xefef1@edu.se", &p));
        assert!(!eppn_reveals_name("k7q2m9@edu.se", &p));
        assert!(
            !eppn_reveals_name("k7q2m9@efr.se", &p),
            "only the local part counts"
        );
    }

    #[test]
    fn generic_profile_only_warns() {
        let nothing = |_: Kind, _: &str| None;
        let none = Lookups {
            object: &nothing,
            has_duty: &|_| false,
        };
        let g = json!({"id": "x", "displayName": "g", "groupType": "Mentor", "organisation": {"id": "a"},
            "groupMemberships": [{"person": {"id": "p"}}]});
        let c = check(Ss12000Profile::Generic, Ss12Type::Groups, &g, &none);
        assert!(c.errors.is_empty());
        assert_eq!(
            c.warnings
                .iter()
                .map(|n| n.code.as_str())
                .collect::<Vec<_>>(),
            vec!["7701", "7601"]
        );
        let c = check(Ss12000Profile::Dnp, Ss12Type::Groups, &g, &none);
        assert_eq!(
            c.errors.iter().map(|n| n.code.as_str()).collect::<Vec<_>>(),
            vec!["7301", "7302"]
        );
        assert_eq!(c.errors[0].value.as_deref(), Some("Mentor"));
    }
}
