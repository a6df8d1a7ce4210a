//! A table of bad payloads: each is refused with the right status and a detail that names
//! the attribute path and the rule; nothing is stored and the server stays healthy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};

const ID: &str = "39732dea-e4a6-4d8f-96de-925a679c56ff";
const UNIT: &str = "8d371858-3fbd-4af2-ae33-84225ead4a1b";
const EXT: &str = "urn:scim:schemas:extension:sis:school:1.0:User";

fn user() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", EXT],
        "externalId": ID,
        "userName": "stjo@strikt.example",
        "displayName": "Stefan Johansson",
        "name": {"familyName": "Johansson", "givenName": "Stefan"},
        "emails": [{"value": "stjo@skolan.strikt.example"}],
        EXT: {
            "enrolments": [{"value": UNIT, "$ref": format!("SchoolUnits/{UNIT}"), "schoolYear": 10, "schoolType": "GY", "programCode": "NANAT"}],
            "civicNo": "200406042903"
        }
    })
}

fn unit() -> Value {
    json!({"externalId": UNIT, "displayName": "skolenhet1", "schoolUnitCode": "12345678",
           "organisation": {"value": "d80428c4-8788-47d7-aca7-761681fbe66a"}, "municipalityCode": "9999"})
}

fn employment() -> Value {
    json!({"externalId": "163cbddb-9fd0-53df-81e4-e022c5dd5c71", "employedAt": {"value": UNIT},
           "user": {"value": ID}, "employmentRole": "Lärare", "signature": "stjo"})
}

fn group() -> Value {
    json!({"externalId": "39074b36-e0ed-4443-a501-5148992014b9", "displayName": "grupp1", "studentGroupType": "Klass",
           "owner": {"value": UNIT}, "schoolType": "GR", "studentMemberships": [{"value": ID}, {"value": "2b3a480f-d0b9-4c09-bbac-70f915964b02"}]})
}

fn activity() -> Value {
    json!({"externalId": "ce4d51e5-f563-5105-8a13-849088f1fc2d", "displayName": "a", "owner": {"value": UNIT},
           "groups": [{"value": "39074b36-e0ed-4443-a501-5148992014b9"}], "teachers": [{"value": "163cbddb-9fd0-53df-81e4-e022c5dd5c71"}],
           "parentActivity": [{"value": "b229977a-7bd3-58ad-b7a2-3fdc774840fd"}]})
}

/// Sets a value at a JSON pointer (`None` removes it).
fn with(mut v: Value, pointer: &str, new: Option<Value>) -> Vec<u8> {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let last = last.replace("~1", "/");
    let target = if parent.is_empty() {
        &mut v
    } else {
        v.pointer_mut(parent).unwrap()
    };
    match (target, new) {
        (Value::Object(m), Some(n)) => {
            m.insert(last, n);
        }
        (Value::Object(m), None) => {
            m.remove(&last);
        }
        (Value::Array(a), Some(n)) => a[last.parse::<usize>().unwrap()] = n,
        _ => panic!("bad pointer {pointer}"),
    }
    serde_json::to_vec(&v).unwrap()
}

struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
    status: u16,
    /// Must start the `detail` (the attribute path and the first words of the rule).
    detail: String,
}

fn case(
    name: &'static str,
    endpoint: &str,
    body: Vec<u8>,
    status: u16,
    detail: impl Into<String>,
) -> Case {
    Case {
        name,
        method: "POST",
        path: format!("/egil/{endpoint}"),
        content_type: SCIM,
        body,
        status,
        detail: detail.into(),
    }
}

fn cases() -> Vec<Case> {
    let ext = |p: &str| format!("/{EXT}/{p}");
    vec![
        case(
            "malformed JSON",
            "Users",
            b"{\"externalId\": ".to_vec(),
            400,
            "malformed JSON",
        ),
        case(
            "trailing garbage",
            "Users",
            b"{} x".to_vec(),
            400,
            "malformed JSON",
        ),
        case(
            "trailing comma",
            "Users",
            b"{\"externalId\": \"x\",}".to_vec(),
            400,
            "malformed JSON",
        ),
        case(
            "invalid UTF-8",
            "Users",
            b"{\"displayName\": \"\xff\xfe\"}".to_vec(),
            400,
            "the body is not valid UTF-8",
        ),
        case("empty body", "Users", Vec::new(), 400, "malformed JSON"),
        case(
            "top-level array",
            "Users",
            b"[1,2]".to_vec(),
            400,
            "expected a JSON object",
        ),
        case(
            "deep nesting",
            "Users",
            format!("{{\"x\":{}{}}}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            400,
            "malformed JSON: recursion limit exceeded",
        ),
        case(
            "missing externalId",
            "Users",
            with(user(), "/externalId", None),
            400,
            "externalId: required attribute is missing",
        ),
        case(
            "externalId not a UUID",
            "Users",
            with(user(), "/externalId", Some(json!("stefan"))),
            400,
            "externalId: expected a UUID",
        ),
        case(
            "externalId braced UUID",
            "Users",
            with(user(), "/externalId", Some(json!(format!("{{{ID}}}")))),
            400,
            "externalId: expected a UUID",
        ),
        case(
            "externalId a number",
            "Users",
            with(user(), "/externalId", Some(json!(42))),
            400,
            "externalId: expected string",
        ),
        case(
            "missing userName",
            "Users",
            with(user(), "/userName", None),
            400,
            "userName: required attribute is missing",
        ),
        case(
            "userName not an EPPN",
            "Users",
            with(user(), "/userName", Some(json!("stjo"))),
            400,
            "userName: expected an EPPN",
        ),
        case(
            "userName with two @",
            "Users",
            with(user(), "/userName", Some(json!("a@b@strikt.example"))),
            400,
            "userName: expected an EPPN",
        ),
        case(
            "userName a number",
            "Users",
            with(user(), "/userName", Some(json!(7))),
            400,
            "userName: expected string",
        ),
        case(
            "userName outside scopes",
            "Users",
            with(user(), "/userName", Some(json!("stjo@annan.example"))),
            400,
            "userName: the EPPN's scope is not among",
        ),
        case(
            "empty displayName",
            "Users",
            with(user(), "/displayName", Some(json!(""))),
            400,
            "displayName: must not be empty",
        ),
        case(
            "name without givenName",
            "Users",
            with(user(), "/name/givenName", None),
            400,
            "name.givenName: required attribute is missing",
        ),
        case(
            "emails not an array",
            "Users",
            with(user(), "/emails", Some(json!("a@b.se"))),
            400,
            "emails: expected array",
        ),
        case(
            "email value a number",
            "Users",
            with(user(), "/emails/0", Some(json!({"value": 5}))),
            400,
            "emails[0].value: expected string",
        ),
        case(
            "schoolYear as a string",
            "Users",
            with(user(), &ext("enrolments/0/schoolYear"), Some(json!("10"))),
            400,
            format!("{EXT}.enrolments[0].schoolYear: expected integer"),
        ),
        case(
            "schoolYear a fraction",
            "Users",
            with(user(), &ext("enrolments/0/schoolYear"), Some(json!(9.5))),
            400,
            format!("{EXT}.enrolments[0].schoolYear: expected integer"),
        ),
        case(
            "enrolment without value",
            "Users",
            with(user(), &ext("enrolments/0/value"), None),
            400,
            format!("{EXT}.enrolments[0].value: required attribute is missing"),
        ),
        case(
            "enrolment value not a UUID",
            "Users",
            with(
                user(),
                &ext("enrolments/0/value"),
                Some(json!("skolenhet1")),
            ),
            400,
            format!("{EXT}.enrolments[0].value: expected a UUID"),
        ),
        case(
            "civicNo 11 digits",
            "Users",
            with(user(), &ext("civicNo"), Some(json!("20040604290"))),
            400,
            format!("{EXT}.civicNo: expected 12 digits"),
        ),
        // EGIL's profile (SS12000:2018) carries 12-digit numbers only; the temporary
        // numbers SS12000:2020 allows are refused here.
        case(
            "civicNo temporary number",
            "Users",
            with(user(), &ext("civicNo"), Some(json!("20040604TF20"))),
            400,
            format!("{EXT}.civicNo: expected 12 digits"),
        ),
        case(
            "civicNo with hyphen",
            "Users",
            with(user(), &ext("civicNo"), Some(json!("20040604-2903"))),
            400,
            format!("{EXT}.civicNo: expected 12 digits"),
        ),
        case(
            "civicNo a number",
            "Users",
            with(user(), &ext("civicNo"), Some(json!(200406042903u64))),
            400,
            format!("{EXT}.civicNo: expected string"),
        ),
        case(
            "civicNo bad checksum (strict)",
            "Users",
            with(user(), &ext("civicNo"), Some(json!("200406042904"))),
            400,
            format!("{EXT}.civicNo: the civic number's check digit is wrong"),
        ),
        case(
            "civicNo bad date (strict)",
            "Users",
            with(user(), &ext("civicNo"), Some(json!("200413042903"))),
            400,
            format!("{EXT}.civicNo: the civic number does not start with a valid date"),
        ),
        case(
            "securityMarking a string",
            "Users",
            with(user(), &ext("securityMarking"), Some(json!("true"))),
            400,
            format!("{EXT}.securityMarking: expected boolean"),
        ),
        case(
            "extension not an object",
            "Users",
            with(user(), &format!("/{EXT}"), Some(json!([]))),
            400,
            format!("{EXT}: expected object"),
        ),
        case(
            "schoolUnitCode 7 digits",
            "SchoolUnits",
            with(unit(), "/schoolUnitCode", Some(json!("1234567"))),
            400,
            "schoolUnitCode: expected exactly 8 digits",
        ),
        case(
            "schoolUnitCode unanchored",
            "SchoolUnits",
            with(unit(), "/schoolUnitCode", Some(json!("X12345678Y"))),
            400,
            "schoolUnitCode: expected exactly 8 digits",
        ),
        case(
            "schoolUnitCode a number",
            "SchoolUnits",
            with(unit(), "/schoolUnitCode", Some(json!(12345678))),
            400,
            "schoolUnitCode: expected string",
        ),
        case(
            "schoolUnit without code",
            "SchoolUnits",
            with(unit(), "/schoolUnitCode", None),
            400,
            "schoolUnitCode: required attribute is missing",
        ),
        case(
            "organisation ref not a UUID",
            "SchoolUnits",
            with(unit(), "/organisation/value", Some(json!("kommunen"))),
            400,
            "organisation.value: expected a UUID",
        ),
        case(
            "employment without user",
            "Employments",
            with(employment(), "/user", None),
            400,
            "user: required attribute is missing",
        ),
        case(
            "employedAt value bad",
            "Employments",
            with(employment(), "/employedAt/value", Some(json!("x"))),
            400,
            "employedAt.value: expected a UUID",
        ),
        case(
            "empty employmentRole",
            "Employments",
            with(employment(), "/employmentRole", Some(json!(""))),
            400,
            "employmentRole: must not be empty",
        ),
        case(
            "group without owner",
            "StudentGroups",
            with(group(), "/owner", None),
            400,
            "owner: required attribute is missing",
        ),
        case(
            "member ref not a UUID",
            "StudentGroups",
            with(
                group(),
                "/studentMemberships/1",
                Some(json!({"value": "pejo"})),
            ),
            400,
            "studentMemberships[1].value: expected a UUID",
        ),
        case(
            "memberships not an array",
            "StudentGroups",
            with(group(), "/studentMemberships", Some(json!({"value": ID}))),
            400,
            "studentMemberships: expected array",
        ),
        case(
            "teacher without value",
            "Activities",
            with(
                activity(),
                "/teachers/0",
                Some(json!({"$ref": "Employments/x"})),
            ),
            400,
            "teachers[0].value: required attribute is missing",
        ),
        case(
            "parentActivity bad",
            "Activities",
            with(
                activity(),
                "/parentActivity/0/value",
                Some(json!("GRGRMAT01_6")),
            ),
            400,
            "parentActivity[0].value: expected a UUID",
        ),
        case(
            "legacy group bad",
            "Activities",
            with(activity(), "/group", Some(json!({"value": 1}))),
            400,
            "group.value: expected string",
        ),
        case(
            "body id differs",
            "Activities",
            with(activity(), "/id", Some(json!(ID))),
            400,
            "id: id and externalId differ",
        ),
        case(
            "too large",
            "Users",
            with(user(), "/padding", Some(json!("x".repeat(1024 * 1024)))),
            413,
            "the request body is larger than 1048576 bytes",
        ),
        Case {
            name: "PUT id mismatch",
            method: "PUT",
            path: format!("/egil/Users/{UNIT}"),
            content_type: SCIM,
            body: serde_json::to_vec(&user()).unwrap(),
            status: 400,
            detail: "externalId: externalId differs from the id in the URL".into(),
        },
        Case {
            name: "wrong media type",
            method: "POST",
            path: "/egil/Users".into(),
            content_type: "text/plain",
            body: serde_json::to_vec(&user()).unwrap(),
            status: 415,
            detail: "Content-Type must be".into(),
        },
        Case {
            name: "XML",
            method: "POST",
            path: "/egil/Users".into(),
            content_type: "application/xml",
            body: b"<User/>".to_vec(),
            status: 415,
            detail: "Content-Type must be".into(),
        },
    ]
}

#[tokio::test]
async fn bad_payloads_are_refused_precisely() {
    let s = Server::start();
    let c = client();
    let all = cases();
    assert!(all.len() >= 30);
    for k in &all {
        let r = send(
            &c,
            k.method,
            &s.url(&k.path),
            Some(KEY_STRICT),
            Some(k.content_type),
            k.body.clone(),
        )
        .await;
        assert_eq!(
            r.headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .as_deref(),
            Some(SCIM),
            "{}",
            k.name
        );
        let (st, v) = json(r).await;
        assert_eq!(st, k.status, "{}: {v}", k.name);
        assert_eq!(
            v["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error",
            "{}",
            k.name
        );
        assert_eq!(v["status"], k.status.to_string(), "{}", k.name);
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&k.detail),
            "{}: expected detail starting {:?}, got {:?}",
            k.name,
            k.detail,
            detail
        );
        // Never the personal data itself.
        for secret in ["200406042903", "200406042904", "Johansson", "stjo@"] {
            assert!(
                !detail.contains(secret),
                "{}: detail leaks {secret}: {detail}",
                k.name
            );
        }
        if st == 400 {
            let expected =
                if detail.starts_with("malformed") || detail.starts_with("the body is not") {
                    "invalidSyntax"
                } else {
                    "invalidValue"
                };
            assert_eq!(v["scimType"], expected, "{}", k.name);
        }
    }
    // Nothing was stored, and the server is unharmed.
    for t in [
        "Users",
        "SchoolUnits",
        "Employments",
        "StudentGroups",
        "Activities",
    ] {
        let (_, l) = json(
            send(
                &c,
                "GET",
                &s.url(&format!("/egil/{t}")),
                Some(KEY_STRICT),
                None,
                vec![],
            )
            .await,
        )
        .await;
        assert_eq!(l["totalResults"], 0, "{t}");
    }
    let r = send(&c, "GET", &s.url("/healthz"), None, None, vec![]).await;
    assert_eq!(r.status(), 200);
    // The good versions of the same bodies are accepted.
    for (t, body) in [
        ("Users", user()),
        ("SchoolUnits", unit()),
        ("Employments", employment()),
        ("StudentGroups", group()),
        ("Activities", activity()),
    ] {
        let r = send(
            &c,
            "POST",
            &s.url(&format!("/egil/{t}")),
            Some(KEY_STRICT),
            Some(SCIM),
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
        assert_eq!(r.status(), 201, "{t}");
    }
}

#[tokio::test]
async fn warn_policy_stores_and_flags_a_bad_checksum() {
    let s = Server::start();
    let c = client();
    let body = with(
        user(),
        &format!("/{EXT}/civicNo"),
        Some(json!("200406042904")),
    );
    let body = String::from_utf8(body)
        .unwrap()
        .replace("strikt.example", "kommunen.se")
        .into_bytes();
    let r = send(
        &c,
        "POST",
        &s.url("/egil/Users"),
        Some(KEY_A),
        Some(SCIM),
        body,
    )
    .await;
    assert_eq!(r.status(), 201);
}
