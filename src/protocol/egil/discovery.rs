//! SCIM discovery documents, built from the same embedded JSON Schemas that validate
//! input, so what is announced is exactly what is checked.

use serde_json::{json, Map, Value};

use super::schema::Schemas;
use super::types::{EgilType, CORE_USER_SCHEMA, USER_EXTENSION};

const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";

/// The largest page `GET /{Type}` returns.
pub const MAX_PAGE: usize = 10_000;
/// The page size when the client gives no `count`.
pub const DEFAULT_PAGE: usize = 1_000;

pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://github.com/skolgrind/skolgrind",
        "patch": {"supported": false},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_PAGE},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "API key",
            "description": "A per-school-owner API key in the X-API-Key header (federated TLS and bearer tokens where configured).",
            "primary": true
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")}
    })
}

pub fn resource_types(base: &str) -> Vec<Value> {
    EgilType::ALL
        .into_iter()
        .map(|t| resource_type(t, base))
        .collect()
}

pub fn resource_type(t: EgilType, base: &str) -> Value {
    let mut v = json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": t.resource_type(),
        "name": t.resource_type(),
        "endpoint": format!("/{}", t.endpoint()),
        "description": format!("SS12000:2018 {} (EGIL profile)", t.resource_type()),
        "schema": t.schema_urn(),
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/{}", t.resource_type())}
    });
    if t == EgilType::Users {
        v["schemaExtensions"] = json!([{"schema": USER_EXTENSION, "required": false}]);
    }
    v
}

/// One SCIM schema document per URN (the User type has two: core and extension).
pub fn schemas(s: &Schemas, base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for t in EgilType::ALL {
        let Some(doc) = s.document(t) else { continue };
        let defs = doc.get("$defs").cloned().unwrap_or(Value::Null);
        if t == EgilType::Users {
            let mut core = doc.clone();
            if let Some(p) = core.get_mut("properties").and_then(Value::as_object_mut) {
                p.shift_remove(USER_EXTENSION);
            }
            out.push(schema_doc(CORE_USER_SCHEMA, "User", &core, &defs, base));
            if let Some(ext) = doc.pointer(&format!(
                "/properties/{}",
                USER_EXTENSION.replace('~', "~0").replace('/', "~1")
            )) {
                out.push(schema_doc(
                    USER_EXTENSION,
                    "SS12000 user extension",
                    ext,
                    &defs,
                    base,
                ));
            }
        } else {
            out.push(schema_doc(
                t.schema_urn(),
                t.resource_type(),
                doc,
                &defs,
                base,
            ));
        }
    }
    out
}

fn schema_doc(id: &str, name: &str, node: &Value, defs: &Value, base: &str) -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": id,
        "name": name,
        "description": node.get("description").cloned().unwrap_or(Value::String(String::new())),
        "attributes": attributes(node, defs),
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")}
    })
}

fn resolve<'a>(node: &'a Value, defs: &'a Value) -> &'a Value {
    match node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        Some(name) => defs.get(name).unwrap_or(node),
        None => node,
    }
}

fn attributes(node: &Value, defs: &Value) -> Vec<Value> {
    let required: Vec<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = node.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "schemas" | "id" | "meta"))
        .map(|(name, p)| attribute(name, p, required.contains(&name.as_str()), defs))
        .collect()
}

fn attribute(name: &str, declared: &Value, required: bool, defs: &Value) -> Value {
    let node = resolve(declared, defs);
    let (multi, item) = match node.get("type").and_then(Value::as_str) {
        Some("array") => (
            true,
            node.get("items")
                .map(|i| resolve(i, defs))
                .unwrap_or(&Value::Null),
        ),
        _ => (false, node),
    };
    let scim_type = match (name, item.get("type").and_then(Value::as_str)) {
        ("$ref", _) => "reference",
        (_, Some("integer")) => "integer",
        (_, Some("number")) => "decimal",
        (_, Some("boolean")) => "boolean",
        (_, Some("object")) => "complex",
        _ => "string",
    };
    let mut a = Map::new();
    a.insert("name".into(), json!(name));
    a.insert("type".into(), json!(scim_type));
    a.insert("multiValued".into(), json!(multi));
    let annotation = |k: &str| {
        declared
            .get(k)
            .or_else(|| node.get(k))
            .or_else(|| item.get(k))
    };
    if let Some(d) = annotation("description") {
        a.insert("description".into(), d.clone());
    }
    // JSON Schema `examples` are the code lists' known values: SCIM canonicalValues.
    if let Some(ex) = annotation("examples") {
        a.insert("canonicalValues".into(), ex.clone());
    }
    a.insert("required".into(), json!(required));
    a.insert("caseExact".into(), json!(false));
    a.insert("mutability".into(), json!("readWrite"));
    a.insert("returned".into(), json!("default"));
    a.insert(
        "uniqueness".into(),
        json!(if name == "externalId" || name == "userName" {
            "server"
        } else {
            "none"
        }),
    );
    if scim_type == "reference" {
        a.insert("referenceTypes".into(), json!(["uri"]));
    }
    if scim_type == "complex" {
        a.insert("subAttributes".into(), json!(attributes(item, defs)));
    }
    Value::Object(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_describe_every_type_and_the_extension() {
        let s = Schemas::compile().unwrap();
        let docs = schemas(&s, "http://x/egil");
        let ids: Vec<&str> = docs.iter().filter_map(|d| d["id"].as_str()).collect();
        assert_eq!(ids.len(), 8);
        assert!(ids.contains(&USER_EXTENSION));
        let ext = docs.iter().find(|d| d["id"] == USER_EXTENSION).unwrap();
        let enrol = ext["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "enrolments")
            .unwrap();
        assert_eq!(enrol["multiValued"], true);
        assert_eq!(enrol["type"], "complex");
        let year = enrol["subAttributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "schoolYear")
            .unwrap();
        assert_eq!(year["type"], "integer");
        let st = enrol["subAttributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "schoolType")
            .unwrap();
        assert!(st["canonicalValues"]
            .as_array()
            .unwrap()
            .contains(&json!("VUXGY")));
        let core = docs.iter().find(|d| d["id"] == CORE_USER_SCHEMA).unwrap();
        let un = core["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "userName")
            .unwrap();
        assert_eq!(un["required"], true);
        assert!(core["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["name"] != USER_EXTENSION));
    }
}
