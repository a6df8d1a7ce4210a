//! A full municipality push in the exact EGIL wire format, and the follow-up runs the EGIL
//! client makes: identical re-push, member change, name change, user removal,
//! `--rebuild-cache` paging, tenant isolation and credentials.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;

const ORG: &str = "d80428c4-8788-47d7-aca7-761681fbe66a";
const STEFAN: &str = "39732dea-e4a6-4d8f-96de-925a679c56ff";
const LISA: &str = "aeb9dfad-c824-49e2-89d6-84cf5e33feef";
const PER: &str = "2b3a480f-d0b9-4c09-bbac-70f915964b02";
const GR_UNIT: &str = "8d371858-3fbd-4af2-ae33-84225ead4a1b";

fn fixture_body(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(name)).unwrap()
}

fn external_id(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["externalId"].as_str().unwrap().to_owned()
}

/// A StudentGroup body in the client's template style (leading newline, tabs, blank lines).
fn group_body(id: &str, name: &str, members: &[&str]) -> Vec<u8> {
    let m: Vec<String> = members
        .iter()
        .map(|u| {
            format!(
                "\n    \n    {{\n      \"value\": \"{u}\",\n      \"$ref\": \"Users/{u}\"\n    }}"
            )
        })
        .collect();
    format!(
        "\n{{\n  \"schemas\": [\n    \"urn:scim:schemas:extension:sis:school:1.0:StudentGroup\"\n  ],\n  \"externalId\": \"{id}\",\n  \"displayName\": \"{name}\",\n  \"studentGroupType\": \"Klass\",\n  \"owner\": {{\n    \"value\": \"{GR_UNIT}\",\n    \"$ref\": \"SchoolUnits/{GR_UNIT}\"\n  }},\n  \"schoolType\": \"GR\",\n  \"studentMemberships\": [{} \n    \n  ]\n}}",
        m.join(",")
    )
    .into_bytes()
}

fn members(v: &Value) -> Vec<String> {
    v["studentMemberships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn full_push_and_follow_up_runs() {
    let s = Server::start();
    let c = client();

    // Initial run: 26 POSTs, byte for byte as the client sends them, all 201.
    let statuses = push_fixtures(&s, &c, KEY_A).await;
    assert_eq!(statuses, vec![201; 26]);

    // Every created resource reads back with id = externalId, meta and the DNP attributes.
    let (st, stefan) = json(
        send(
            &c,
            "GET",
            &s.url(&format!("/egil/Users/{STEFAN}")),
            Some(KEY_A),
            None,
            vec![],
        )
        .await,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(stefan["id"], STEFAN);
    assert_eq!(stefan["meta"]["resourceType"], "User");
    assert_eq!(
        stefan["meta"]["location"],
        s.url(&format!("/egil/Users/{STEFAN}"))
    );
    let ext = &stefan["urn:scim:schemas:extension:sis:school:1.0:User"];
    assert_eq!(ext["civicNo"], "200406042903");
    assert_eq!(ext["enrolments"][0]["programCode"], "NANAT");
    assert_eq!(ext["enrolments"][0]["schoolYear"], 10);
    let (_, acts) = json(
        send(
            &c,
            "GET",
            &s.url("/egil/Activities"),
            Some(KEY_A),
            None,
            vec![],
        )
        .await,
    )
    .await;
    let parents: Vec<&str> = acts["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["parentActivity"][0]["value"].as_str())
        .collect();
    assert_eq!(parents.len(), 2, "both DNP activities keep parentActivity");
    assert!(parents.contains(&"b229977a-7bd3-58ad-b7a2-3fdc774840fd"));
    let (_, emp) = json(
        send(
            &c,
            "GET",
            &s.url("/egil/Employments"),
            Some(KEY_A),
            None,
            vec![],
        )
        .await,
    )
    .await;
    assert_eq!(emp["totalResults"], 5);
    assert!(emp["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["employmentRole"] == "Lärare"));
    let (_, lisa) = json(
        send(
            &c,
            "GET",
            &s.url(&format!("/egil/Users/{LISA}")),
            Some(KEY_A),
            None,
            vec![],
        )
        .await,
    )
    .await;
    assert_eq!(lisa["displayName"], "Lisa \"Li\" Nilsson");

    // A second push of identical data: creates are refused with 409 uniqueness, which makes
    // the client PUT next run; the PUTs succeed with 200 and change nothing but the version.
    for (m, p, ct, body) in fixtures() {
        let r = send(
            &c,
            &m,
            &s.url(&format!("/egil{p}")),
            Some(KEY_A),
            Some(&ct),
            body.clone(),
        )
        .await;
        let (st, v) = json(r).await;
        assert_eq!(st, 409, "{p}");
        assert_eq!(v["scimType"], "uniqueness");
        let id = external_id(&body);
        let (st, v) = json(
            send(
                &c,
                "PUT",
                &s.url(&format!("/egil{p}/{id}")),
                Some(KEY_A),
                Some(&ct),
                body,
            )
            .await,
        )
        .await;
        assert_eq!(st, 200, "{p}");
        assert_eq!(v["meta"]["version"], "W/\"2\"");
    }

    // Member change: a PUT of the whole group replaces the membership set.
    let grupp1 = external_id(&fixture_body("18-POST-StudentGroup.body"));
    let r = send(
        &c,
        "PUT",
        &s.url(&format!("/egil/StudentGroups/{grupp1}")),
        Some(KEY_A),
        Some(SCIM),
        group_body(&grupp1, "grupp1", &[PER]),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (_, g) = json(
        send(
            &c,
            "GET",
            &s.url(&format!("/egil/StudentGroups/{grupp1}")),
            Some(KEY_A),
            None,
            vec![],
        )
        .await,
    )
    .await;
    assert_eq!(members(&g), vec![PER.to_string()]);

    // Name change: one PUT of the user.
    let renamed = String::from_utf8(fixture_body("06-POST-User.body"))
        .unwrap()
        .replace("\"Stefan\"", "\"Stefanie\"")
        .replace("Stefan Johansson", "Stefanie Johansson");
    let r = send(
        &c,
        "PUT",
        &s.url(&format!("/egil/Users/{STEFAN}")),
        Some(KEY_A),
        Some(SCIM),
        renamed.into_bytes(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (_, u) = json(
        send(
            &c,
            "GET",
            &s.url(&format!("/egil/Users/{STEFAN}")),
            Some(KEY_A),
            None,
            vec![],
        )
        .await,
    )
    .await;
    assert_eq!(u["name"]["givenName"], "Stefanie");
    assert_eq!(u["displayName"], "Stefanie Johansson");

    // User removal: PUTs of the user's groups without the user, then the DELETE with the
    // form content type libcurl adds.
    for (file, name) in [
        ("19-POST-StudentGroup.body", "grupp2"),
        ("21-POST-StudentGroup.body", "DNP-GRGRMAT01_6"),
    ] {
        let gid = external_id(&fixture_body(file));
        let remaining: Vec<&str> = if name == "grupp2" { vec![] } else { vec![PER] };
        let r = send(
            &c,
            "PUT",
            &s.url(&format!("/egil/StudentGroups/{gid}")),
            Some(KEY_A),
            Some(SCIM),
            group_body(&gid, name, &remaining),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let r = send(
        &c,
        "DELETE",
        &s.url(&format!("/egil/Users/{LISA}")),
        Some(KEY_A),
        Some("application/x-www-form-urlencoded"),
        vec![],
    )
    .await;
    assert_eq!(r.status(), 204);
    assert!(r.text().await.unwrap().is_empty());
    let r = send(
        &c,
        "GET",
        &s.url(&format!("/egil/Users/{LISA}")),
        Some(KEY_A),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = send(
        &c,
        "DELETE",
        &s.url(&format!("/egil/Users/{LISA}")),
        Some(KEY_A),
        Some("application/x-www-form-urlencoded"),
        vec![],
    )
    .await;
    assert_eq!(r.status(), 404);

    // --rebuild-cache: GET /Users, then ?startIndex=N until totalResults are read. With a
    // page size of 2 the pages must neither overlap nor skip.
    let mut seen = Vec::new();
    let mut start = 1;
    loop {
        let (st, page) = json(
            send(
                &c,
                "GET",
                &s.url(&format!("/egil/Users?startIndex={start}&count=2")),
                Some(KEY_A),
                None,
                vec![],
            )
            .await,
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(
            page["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:ListResponse"
        );
        assert_eq!(page["startIndex"], start);
        let res = page["Resources"].as_array().unwrap();
        assert_eq!(page["itemsPerPage"], res.len());
        seen.extend(res.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        if seen.len() >= page["totalResults"].as_u64().unwrap() as usize || res.is_empty() {
            assert_eq!(page["totalResults"], 6);
            break;
        }
        start += res.len();
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "pages are ordered by id and do not overlap");
    assert_eq!(seen.len(), 6);
    // Without count, one page holds everything (default page size 1,000).
    let (_, all) =
        json(send(&c, "GET", &s.url("/egil/Users"), Some(KEY_A), None, vec![]).await).await;
    assert_eq!(all["itemsPerPage"], 6);
    // Types are separate: an Organisation id is not a SchoolUnit.
    let r = send(
        &c,
        "GET",
        &s.url(&format!("/egil/SchoolUnits/{ORG}")),
        Some(KEY_A),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.status(), 404);
    let (_, orgs) = json(
        send(
            &c,
            "GET",
            &s.url("/egil/Organisations"),
            Some(KEY_A),
            None,
            vec![],
        )
        .await,
    )
    .await;
    assert_eq!(orgs["totalResults"], 1);

    // Filters.
    let (_, f) = json(
        send(
            &c,
            "GET",
            &s.url("/egil/Users?filter=userName%20eq%20%22PEJO%40Skola.Kommunen.se%22"),
            Some(KEY_A),
            None,
            vec![],
        )
        .await,
    )
    .await;
    assert_eq!(f["totalResults"], 1);
    assert_eq!(f["Resources"][0]["id"], PER);
    let (_, f) = json(
        send(
            &c,
            "GET",
            &s.url(&format!(
                "/egil/Users?filter=externalId%20eq%20%22{}%22",
                STEFAN.to_uppercase()
            )),
            Some(KEY_A),
            None,
            vec![],
        )
        .await,
    )
    .await;
    assert_eq!(f["Resources"][0]["id"], STEFAN);
    let (st, f) = json(
        send(
            &c,
            "GET",
            &s.url("/egil/Users?filter=displayName%20co%20%22x%22"),
            Some(KEY_A),
            None,
            vec![],
        )
        .await,
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(f["scimType"], "invalidFilter");

    // Tenant isolation: another tenant's ids do not exist for you.
    for (m, ct) in [
        ("GET", None),
        ("DELETE", Some("application/x-www-form-urlencoded")),
    ] {
        let r = send(
            &c,
            m,
            &s.url(&format!("/egil/Users/{STEFAN}")),
            Some(KEY_B),
            ct,
            vec![],
        )
        .await;
        assert_eq!(r.status(), 404, "{m}");
    }
    let (_, b_users) =
        json(send(&c, "GET", &s.url("/egil/Users"), Some(KEY_B), None, vec![]).await).await;
    assert_eq!(b_users["totalResults"], 0);
    let (_, f) = json(
        send(
            &c,
            "GET",
            &s.url("/egil/Users?filter=userName%20eq%20%22pejo%40skola.kommunen.se%22"),
            Some(KEY_B),
            None,
            vec![],
        )
        .await,
    )
    .await;
    assert_eq!(f["totalResults"], 0);
    // Tenant B cannot claim tenant A's EPPN either; A keeps it.
    let r = send(
        &c,
        "PUT",
        &s.url(&format!("/egil/Users/{STEFAN}")),
        Some(KEY_B),
        Some(SCIM),
        fixture_body("06-POST-User.body"),
    )
    .await;
    let (st, v) = json(r).await;
    assert_eq!(st, 409);
    assert!(
        v["detail"].as_str().unwrap().starts_with("userName:"),
        "{v}"
    );
    let r = send(
        &c,
        "GET",
        &s.url(&format!("/egil/Users/{STEFAN}")),
        Some(KEY_A),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.status(), 200);

    // Credentials: missing or wrong key → 401 with a SCIM error body.
    for key in [None, Some("wrong"), Some("")] {
        let (st, v) = json(send(&c, "GET", &s.url("/egil/Users"), key, None, vec![]).await).await;
        assert_eq!(st, 401);
        assert_eq!(
            v["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:Error"
        );
        assert_eq!(v["status"], "401");
        let r = send(
            &c,
            "POST",
            &s.url("/egil/Users"),
            key,
            Some(SCIM),
            fixture_body("05-POST-User.body"),
        )
        .await;
        assert_eq!(r.status(), 401);
        let r = send(
            &c,
            "DELETE",
            &s.url(&format!("/egil/Users/{PER}")),
            key,
            None,
            vec![],
        )
        .await;
        assert_eq!(r.status(), 401);
    }
    let r = send(
        &c,
        "GET",
        &s.url(&format!("/egil/Users/{PER}")),
        Some(KEY_A),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.status(), 200, "refused requests changed nothing");
}

#[tokio::test]
async fn protocol_details() {
    let s = Server::start();
    let c = client();
    // Forward references: an Activity before its group, teachers and owner exist.
    let r = send(
        &c,
        "POST",
        &s.url("/egil/Activities"),
        Some(KEY_A),
        Some(SCIM),
        fixture_body("26-POST-Activity.body"),
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers().get("location").unwrap().to_str().unwrap(),
        s.url("/egil/Activities/ce4d51e5-f563-5105-8a13-849088f1fc2d")
    );
    assert_eq!(r.headers().get("content-type").unwrap(), SCIM);

    // Legacy single `group` is read as `groups`.
    let legacy = br#"{"externalId":"11111111-2222-4333-8444-555555555555","displayName":"old-Activity",
        "owner":{"value":"8d371858-3fbd-4af2-ae33-84225ead4a1b"},"group":{"value":"39074b36-e0ed-4443-a501-5148992014b9"}}"#;
    let (st, v) = json(
        send(
            &c,
            "POST",
            &s.url("/egil/Activities"),
            Some(KEY_A),
            Some("application/json; charset=utf-8"),
            legacy.to_vec(),
        )
        .await,
    )
    .await;
    assert_eq!(st, 201);
    assert_eq!(
        v["groups"][0]["value"],
        "39074b36-e0ed-4443-a501-5148992014b9"
    );
    assert!(v.get("group").is_none());

    // PUT to an unknown id creates it and still answers 200.
    let body = fixture_body("01-POST-Organisation.body");
    let r = send(
        &c,
        "PUT",
        &s.url(&format!("/egil/Organisations/{ORG}")),
        Some(KEY_A),
        Some(SCIM),
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 200);
    // PUT to the collection with the id only in the body.
    let r = send(
        &c,
        "PUT",
        &s.url("/egil/Organisations"),
        Some(KEY_A),
        Some(SCIM),
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 200);
    // The URL id and the body's externalId must agree.
    let (st, v) = json(
        send(
            &c,
            "PUT",
            &s.url(&format!("/egil/Organisations/{STEFAN}")),
            Some(KEY_A),
            Some(SCIM),
            body.clone(),
        )
        .await,
    )
    .await;
    assert_eq!(st, 400);
    assert!(
        v["detail"].as_str().unwrap().starts_with("externalId:"),
        "{v}"
    );
    // The same id under another type is a conflict, not a silent retype.
    let (st, _) = json(
        send(
            &c,
            "PUT",
            &s.url(&format!("/egil/SchoolUnitGroups/{ORG}")),
            Some(KEY_A),
            Some(SCIM),
            body.clone(),
        )
        .await,
    )
    .await;
    assert_eq!(st, 409);
    // Media types: others → 415 on POST and PUT.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let r = send(
            &c,
            "POST",
            &s.url("/egil/Organisations"),
            Some(KEY_A),
            ct,
            body.clone(),
        )
        .await;
        assert_eq!(r.status(), 415, "{ct:?}");
    }
    // Double slashes from legacy URL concatenation are tolerated.
    let r = send(
        &c,
        "GET",
        &s.url(&format!("//egil//Organisations/{ORG}")),
        Some(KEY_A),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.status(), 200);
    // Unsupported methods and endpoints answer in SCIM.
    let r = send(
        &c,
        "PATCH",
        &s.url(&format!("/egil/Organisations/{ORG}")),
        Some(KEY_A),
        Some(SCIM),
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status(), 405);
    let r = send(
        &c,
        "GET",
        &s.url("/egil/Subjects"),
        Some(KEY_A),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.status(), 404);

    // Discovery documents describe the seven types.
    let (st, rt) =
        json(send(&c, "GET", &s.url("/egil/ResourceTypes"), None, None, vec![]).await).await;
    assert_eq!(st, 200);
    assert_eq!(rt["totalResults"], 7);
    let (_, sc) = json(send(&c, "GET", &s.url("/egil/Schemas"), None, None, vec![]).await).await;
    assert_eq!(sc["totalResults"], 8);
    let (_, spc) = json(
        send(
            &c,
            "GET",
            &s.url("/egil/ServiceProviderConfig"),
            None,
            None,
            vec![],
        )
        .await,
    )
    .await;
    assert_eq!(spc["patch"]["supported"], false);
    assert_eq!(spc["filter"]["supported"], true);
    for path in [
        "/egil/ServiceProviderConfig",
        "/egil/ResourceTypes",
        "/egil/Schemas",
    ] {
        for m in ["POST", "PUT"] {
            let r = send(&c, m, &s.url(path), Some(KEY_A), Some(SCIM), b"{}".to_vec()).await;
            assert_eq!(r.status(), 405, "{m} {path}");
        }
    }

    // HTTP/2 (h2c prior knowledge) and HTTP/1.1 keep-alive both work.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = send(
        &h2,
        "GET",
        &s.url(&format!("/egil/Organisations/{ORG}")),
        Some(KEY_A),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let r = send(
        &c,
        "GET",
        &s.url(&format!("/egil/Organisations/{ORG}")),
        Some(KEY_A),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert!(r.headers().get("x-request-id").is_some());
}
