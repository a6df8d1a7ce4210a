//! The JSON Schemas of the five push types, embedded from `schemas/ss12000/` and compiled
//! once. Violations carry attribute paths in wire terms (`enrolments[0].schoolYear`).

use std::collections::HashMap;

use jsonschema::{Draft, Validator};
use serde_json::Value;

use super::types::Ss12Type;
use crate::domain::Violation;
use crate::protocol::egil::schema::{describe, scim_path};

pub fn source(t: Ss12Type) -> &'static str {
    match t {
        Ss12Type::Organisations => {
            include_str!("../../../schemas/ss12000/Organisation.schema.json")
        }
        Ss12Type::Persons => include_str!("../../../schemas/ss12000/Person.schema.json"),
        Ss12Type::Duties => include_str!("../../../schemas/ss12000/Duty.schema.json"),
        Ss12Type::Groups => include_str!("../../../schemas/ss12000/Group.schema.json"),
        Ss12Type::Activities => include_str!("../../../schemas/ss12000/Activity.schema.json"),
    }
}

/// The most violations reported for one item.
const MAX_REPORTED: usize = 10;

pub struct Schemas {
    compiled: HashMap<Ss12Type, Validator>,
}

impl Schemas {
    pub fn compile() -> Result<Self, String> {
        let mut compiled = HashMap::new();
        for t in Ss12Type::ALL {
            let doc: Value = serde_json::from_str(source(t))
                .map_err(|e| format!("schema ss12000/{}: {e}", t.object_type()))?;
            let v = jsonschema::options()
                .with_draft(Draft::Draft202012)
                .build(&doc)
                .map_err(|e| format!("schema ss12000/{}: {e}", t.object_type()))?;
            compiled.insert(t, v);
        }
        Ok(Self { compiled })
    }

    pub fn validate(&self, t: Ss12Type, instance: &Value) -> Vec<Violation> {
        let Some(v) = self.compiled.get(&t) else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn all_schemas_compile_and_name_paths() {
        let s = Schemas::compile().unwrap();
        let p = json!({"id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "givenName": "A", "familyName": "B",
            "enrolments": [{"enroledAt": {"id": "3fa85f64-5717-4562-b3fc-2c963f66afa6"}, "schoolType": "GR", "schoolYear": "6"}]});
        let v = s.validate(Ss12Type::Persons, &p);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].path, "enrolments[0].schoolYear");
        let g = json!({"id": "x", "displayName": "g", "groupType": "Klass", "organisation": {"id": "3fa85f64-5717-4562-b3fc-2c963f66afa6"}});
        let v = s.validate(Ss12Type::Groups, &g);
        assert_eq!(v[0].path, "id");
        assert_eq!(v[0].rule, crate::domain::RuleId::Uuid);
    }
}
