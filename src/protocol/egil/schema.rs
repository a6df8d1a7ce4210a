//! The JSON Schemas of the seven EGIL types, embedded from `schemas/egil/` and compiled
//! once at start. Validation errors become [`Violation`]s with SCIM attribute paths
//! (`urn:…:User.enrolments[0].schoolYear`) and messages that never repeat the value.

use std::collections::HashMap;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use jsonschema::{Draft, Validator};
use serde_json::Value;

use super::types::EgilType;
use crate::domain::{RuleId, Violation};

/// The schema documents as shipped (also served, converted, by `/Schemas`).
pub fn source(t: EgilType) -> &'static str {
    match t {
        EgilType::Organisations => include_str!("../../../schemas/egil/Organisation.schema.json"),
        EgilType::SchoolUnitGroups => {
            include_str!("../../../schemas/egil/SchoolUnitGroup.schema.json")
        }
        EgilType::SchoolUnits => include_str!("../../../schemas/egil/SchoolUnit.schema.json"),
        EgilType::Users => include_str!("../../../schemas/egil/User.schema.json"),
        EgilType::Employments => include_str!("../../../schemas/egil/Employment.schema.json"),
        EgilType::StudentGroups => include_str!("../../../schemas/egil/StudentGroup.schema.json"),
        EgilType::Activities => include_str!("../../../schemas/egil/Activity.schema.json"),
    }
}

/// The most errors reported for one body.
const MAX_REPORTED: usize = 10;

pub struct Schemas {
    compiled: HashMap<EgilType, (Value, Validator)>,
}

impl Schemas {
    pub fn compile() -> Result<Self, String> {
        let mut compiled = HashMap::new();
        for t in EgilType::ALL {
            let doc: Value = serde_json::from_str(source(t))
                .map_err(|e| format!("schema {}: {e}", t.endpoint()))?;
            let v = jsonschema::options()
                .with_draft(Draft::Draft202012)
                .build(&doc)
                .map_err(|e| format!("schema {}: {e}", t.endpoint()))?;
            compiled.insert(t, (doc, v));
        }
        Ok(Self { compiled })
    }

    /// The parsed schema document of a type.
    pub fn document(&self, t: EgilType) -> Option<&Value> {
        self.compiled.get(&t).map(|(d, _)| d)
    }

    /// Validates a body; returns every violation (at most [`MAX_REPORTED`]), in document
    /// order of the schema.
    pub fn validate(&self, t: EgilType, instance: &Value) -> Vec<Violation> {
        let Some((_, v)) = self.compiled.get(&t) else {
            return Vec::new();
        };
        v.iter_errors(instance)
            .take(MAX_REPORTED)
            .map(|e| {
                let mut path = scim_path(e.instance_path().segments());
                let (rule, detail) = describe(e.kind(), &mut path);
                Violation::new(path, rule, detail)
            })
            .collect()
    }
}

/// `/a/b/0/c` → `a.b[0].c`.
pub(crate) fn scim_path<'a>(segments: impl Iterator<Item = LocationSegment<'a>>) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            LocationSegment::Property(p) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&p);
            }
            LocationSegment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

pub(crate) fn describe(kind: &ValidationErrorKind, path: &mut String) -> (RuleId, String) {
    match kind {
        ValidationErrorKind::Required { property } => {
            if let Some(p) = property.as_str() {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(p);
            }
            (RuleId::Required, "required attribute is missing".into())
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => t.as_str().to_owned(),
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            (RuleId::Type, format!("expected {expected}"))
        }
        ValidationErrorKind::Pattern { pattern } => {
            if pattern.contains("{8}-") {
                (
                    RuleId::Uuid,
                    "expected a UUID (8-4-4-4-12 hexadecimal digits)".into(),
                )
            } else if pattern == "^[0-9]{8}$" {
                (RuleId::Pattern, "expected exactly 8 digits".into())
            } else if pattern == "^[0-9]{12}$" {
                (
                    RuleId::CivicNoFormat,
                    "expected 12 digits (YYYYMMDDNNNC)".into(),
                )
            } else {
                (
                    RuleId::Pattern,
                    format!("does not match the pattern {pattern}"),
                )
            }
        }
        ValidationErrorKind::MinLength { limit: 1 } => (RuleId::Size, "must not be empty".into()),
        ValidationErrorKind::MinLength { limit } => {
            (RuleId::Size, format!("must be at least {limit} characters"))
        }
        ValidationErrorKind::MaxLength { limit } => {
            (RuleId::Size, format!("must be at most {limit} characters"))
        }
        ValidationErrorKind::MinItems { limit } => {
            (RuleId::Size, format!("must have at least {limit} items"))
        }
        ValidationErrorKind::MaxItems { limit } => {
            (RuleId::Size, format!("must have at most {limit} items"))
        }
        ValidationErrorKind::Enum { .. } | ValidationErrorKind::Constant { .. } => {
            (RuleId::Enum, "is not one of the allowed values".into())
        }
        other => (
            RuleId::Schema,
            format!("violates the schema keyword '{}'", other.keyword()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn all_embedded_schemas_compile() {
        let s = Schemas::compile().unwrap();
        for t in EgilType::ALL {
            assert!(s.document(t).is_some());
        }
    }

    #[test]
    fn paths_name_the_extension_attribute() {
        let s = Schemas::compile().unwrap();
        let body = json!({
            "externalId": "39732dea-e4a6-4d8f-96de-925a679c56ff",
            "userName": "a@b.se", "displayName": "x", "name": {"familyName": "f", "givenName": "g"},
            "urn:scim:schemas:extension:sis:school:1.0:User": {"enrolments": [{"value": "39732dea-e4a6-4d8f-96de-925a679c56ff", "schoolYear": "10"}]}
        });
        let v = s.validate(EgilType::Users, &body);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].to_string(), "urn:scim:schemas:extension:sis:school:1.0:User.enrolments[0].schoolYear: expected integer (rule type)");
    }
}
