//! The login API against the real binary: resolve after an EGIL push (pupil, teacher,
//! principal), forward references, EPPN case and scope rules, identity-provider binding,
//! suspended tenants, credential separation, deletion and the change feed, batch limits,
//! rosters and the served OpenAPI document.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{json, Value};

const PRODUCT_KEY: &str = "key-for-the-test-platform-pppppppp";
const KEY_FREE: &str = "key-for-unscoped-tenant-ffffffffffff";
const IDP_A: &str = "https://idp.kommunen.se/idp";
const IDP_B: &str = "https://idp.grannkommun.se/idp";

const STEFAN: &str = "39732dea-e4a6-4d8f-96de-925a679c56ff"; // pupil, GY
const PER: &str = "2b3a480f-d0b9-4c09-bbac-70f915964b02"; // pupil, GR
const BABS: &str = "75c666db-e60e-4687-bdd3-1af191fa6799"; // teacher at both units
const SOFIE: &str = "cb0c9a3f-d4e6-461e-8b4e-4a678cf01183"; // principal

fn config() -> String {
    format!(
        r#"
[[tenants]]
id = "kommunen"
name = "Kommunen"
organisation_number = "SE2120000001"
api_keys = ["{}"]
eppn_scopes = ["kommunen.se"]
idp_entity_ids = ["{IDP_A}"]

[[tenants]]
id = "grannkommun"
name = "Grannkommunen"
api_keys = ["{}"]
eppn_scopes = ["grannkommun.se"]
idp_entity_ids = ["{IDP_B}"]

[[tenants]]
id = "fri"
name = "Fria skolan"
api_keys = ["{}"]

[[products]]
id = "provplattform"
name = "Provplattformen"
api_keys = ["{}"]
"#,
        hash(KEY_A),
        hash(KEY_B),
        hash(KEY_FREE),
        hash(PRODUCT_KEY)
    )
}

async fn login(
    c: &reqwest::Client,
    s: &Server,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let ct = if body.is_empty() {
        None
    } else {
        Some("application/json")
    };
    json(
        send(
            c,
            method,
            &s.url(&format!("/login/v1{path}")),
            key,
            ct,
            body,
        )
        .await,
    )
    .await
}

async fn resolve(c: &reqwest::Client, s: &Server, body: Value) -> (u16, Value) {
    login(c, s, "POST", "/resolve", Some(PRODUCT_KEY), Some(body)).await
}

/// The change feed after `cursor`.
async fn changes_after(c: &reqwest::Client, s: &Server, cursor: &str) -> (u16, Value) {
    let path = format!("/changes?cursor={cursor}");
    login(c, s, "GET", &path, Some(PRODUCT_KEY), None).await
}

async fn pushed() -> (Server, reqwest::Client) {
    let s = Server::start_with(&config(), "");
    let c = client();
    assert_eq!(push_fixtures(&s, &c, KEY_A).await, vec![201; 26]);
    (s, c)
}

fn names(v: &Value, key: &str) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x[key].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

async fn egil(
    c: &reqwest::Client,
    s: &Server,
    method: &str,
    path: &str,
    key: &str,
    body: Value,
) -> (u16, Value) {
    json(
        send(
            c,
            method,
            &s.url(&format!("/egil{path}")),
            Some(key),
            Some(SCIM),
            body.to_string().into_bytes(),
        )
        .await,
    )
    .await
}

#[tokio::test]
async fn resolve_pupil_teacher_and_principal_after_egil_push() {
    let (s, c) = pushed().await;

    // The GY pupil: school unit, enrolment, groups, activities with the national test.
    let (st, a) = resolve(
        &c,
        &s,
        json!({"eppn": "stjo@skola.kommunen.se", "idp_entity_id": IDP_A}),
    )
    .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["huvudman"]["tenant_id"], "kommunen");
    assert_eq!(a["huvudman"]["name"], "Kommunen");
    assert_eq!(a["huvudman"]["organisation_number"], "SE2120000001");
    assert_eq!(a["person"]["source_id"], STEFAN);
    assert_eq!(a["person"]["given_name"], "Stefan");
    assert_eq!(a["person"]["eppns"], json!(["stjo@skola.kommunen.se"]));
    assert_eq!(a["person"]["emails"][0]["value"], "stjo@skolan.kommunen.se");
    assert_eq!(a["person"]["security_marking"], false);
    assert_ne!(
        a["account_id"], STEFAN,
        "the account id is the gateway's own"
    );
    assert_eq!(a["roles"], json!(["pupil"]));
    assert_eq!(a["school_units"].as_array().unwrap().len(), 1);
    assert_eq!(a["school_units"][0]["school_unit_code"], "11111111");
    assert_eq!(a["school_units"][0]["name"], "skolenhet2");
    assert_eq!(a["school_units"][0]["roles"], json!(["pupil"]));
    assert_eq!(a["enrolments"][0]["program_code"], "NANAT");
    assert_eq!(a["enrolments"][0]["school_year"], 10);
    assert_eq!(
        names(&a["groups"], "name"),
        vec!["DNP-SVASVA03_GY", "grupp3"]
    );
    assert!(a["groups"]
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g["membership_role"] == "pupil"));
    assert_eq!(
        names(&a["activities"], "name"),
        vec!["DNP-SVASVA03_GY-Activity", "grupp3-Activity"]
    );
    let dnp = a["activities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "DNP-SVASVA03_GY-Activity")
        .unwrap();
    assert_eq!(
        dnp["parent_activity"],
        "a1935bf4-a6f3-5890-9c47-a611d22eba23"
    );
    assert_eq!(dnp["role"], "pupil");
    assert_eq!(
        dnp["teachers"][0]["duty_source_id"],
        "3b86c590-551e-5464-84ee-d505effff97e"
    );
    assert!(dnp["teachers"][0]["account_id"].is_string());
    assert_eq!(a["last_provisioned"]["protocol"], "egil_scim");
    assert_eq!(a["warnings"], json!([]));
    assert_eq!(a["civic_no_checked"], false);

    // The same account by id, and stable across re-provisioning of the same source id.
    let id = a["account_id"].as_str().unwrap().to_owned();
    let (st, again) = login(
        &c,
        &s,
        "GET",
        &format!("/accounts/{id}"),
        Some(PRODUCT_KEY),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(again["person"]["source_id"], STEFAN);
    let body = std::fs::read(fixtures_dir().join("06-POST-User.body")).unwrap();
    let r = send(
        &c,
        "PUT",
        &s.url(&format!("/egil/Users/{STEFAN}")),
        Some(KEY_A),
        Some(SCIM),
        body,
    )
    .await;
    assert_eq!(r.status(), 200);
    let (_, again) = resolve(&c, &s, json!({"eppn": "stjo@skola.kommunen.se"})).await;
    assert_eq!(again["account_id"], id);

    // The teacher with employments at both units: every activity taught, their groups.
    let (st, t) = resolve(
        &c,
        &s,
        json!({"eppn": "baje@skola.kommunen.se", "idp_entity_id": IDP_A}),
    )
    .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["person"]["source_id"], BABS);
    assert_eq!(t["roles"], json!(["teacher"]));
    assert_eq!(
        names(&t["school_units"], "name"),
        vec!["skolenhet1", "skolenhet2"]
    );
    assert_eq!(t["duties"].as_array().unwrap().len(), 2);
    assert_eq!(t["duties"][0]["title"], "Lärare");
    assert_eq!(
        names(&t["activities"], "name"),
        vec![
            "DNP-GRGRMAT01_6-Activity",
            "DNP-SVASVA03_GY-Activity",
            "grupp1-Activity",
            "grupp2-Activity",
            "grupp3-Activity"
        ]
    );
    assert!(t["activities"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["role"] == "teacher"));
    assert_eq!(t["groups"].as_array().unwrap().len(), 5);
    assert!(t["groups"]
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g["membership_role"] == "teacher"));

    // The principal.
    let (st, p) = resolve(&c, &s, json!({"eppn": "soda@skola.kommunen.se"})).await;
    assert_eq!(st, 200);
    assert_eq!(p["person"]["source_id"], SOFIE);
    assert_eq!(p["roles"], json!(["principal"]));
    assert_eq!(p["school_units"][0]["school_unit_code"], "11111111");
    assert_eq!(p["school_units"][0]["roles"], json!(["principal"]));
    assert_eq!(p["activities"], json!([]));

    // Rosters: the GR national-test group and its activity.
    let (_, per) = resolve(&c, &s, json!({"eppn": "pejo@skola.kommunen.se"})).await;
    let act = per["activities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "DNP-GRGRMAT01_6-Activity")
        .unwrap()
        .clone();
    assert_eq!(
        act["parent_activity"],
        "b229977a-7bd3-58ad-b7a2-3fdc774840fd"
    );
    let gid = act["groups"][0]["id"].as_str().unwrap();
    let (st, g) = login(
        &c,
        &s,
        "GET",
        &format!("/groups/{gid}/members"),
        Some(PRODUCT_KEY),
        None,
    )
    .await;
    assert_eq!(st, 200, "{g}");
    assert_eq!(g["group"]["name"], "DNP-GRGRMAT01_6");
    assert_eq!(names(&g["members"], "source_id"), {
        let mut v = vec![
            PER.to_owned(),
            "aeb9dfad-c824-49e2-89d6-84cf5e33feef".to_owned(),
        ];
        v.sort();
        v
    });
    let aid = act["id"].as_str().unwrap();
    let (st, r) = login(
        &c,
        &s,
        "GET",
        &format!("/activities/{aid}"),
        Some(PRODUCT_KEY),
        None,
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        r["activity"]["parent_activity"],
        "b229977a-7bd3-58ad-b7a2-3fdc774840fd"
    );
    assert_eq!(r["pupils"].as_array().unwrap().len(), 2);
    let teachers: Vec<&str> = r["teachers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["person"]["source_id"].as_str().unwrap())
        .collect();
    assert_eq!(teachers.len(), 2);
    assert!(teachers.contains(&BABS));
    // Unknown or malformed ids are 404 with a reason.
    for path in [
        "/accounts/00000000-0000-4000-8000-000000000000".to_owned(),
        "/accounts/not-a-uuid".to_owned(),
        format!("/accounts/{gid}"),
        format!("/groups/{aid}/members"),
    ] {
        let (st, e) = login(&c, &s, "GET", &path, Some(PRODUCT_KEY), None).await;
        assert_eq!((st, e["reason"].as_str()), (404, Some("unknown")), "{path}");
    }
}

#[tokio::test]
async fn eppn_case_variants_resolve_to_the_same_account() {
    let (s, c) = pushed().await;
    let mut ids = Vec::new();
    for e in [
        "stjo@skola.kommunen.se",
        "STJO@SKOLA.KOMMUNEN.SE",
        "Stjo@Skola.Kommunen.Se",
        "  stjo@skola.kommunen.se ",
    ] {
        let (st, a) = resolve(&c, &s, json!({"eppn": e})).await;
        assert_eq!(st, 200, "{e}");
        ids.push(a["account_id"].clone());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    let (st, e) = resolve(&c, &s, json!({"eppn": "stjo@skola.kommunen.se.evil"})).await;
    assert_eq!((st, e["reason"].as_str()), (404, Some("unknown")));
}

#[tokio::test]
async fn scope_refused_at_provisioning_and_second_tenant_cannot_claim_an_eppn() {
    let (s, c) = pushed().await;
    // Outside the tenant's scopes: 400 naming the rule, nothing stored.
    let mut user: Value =
        serde_json::from_slice(&std::fs::read(fixtures_dir().join("05-POST-User.body")).unwrap())
            .unwrap();
    user["externalId"] = json!("11111111-2222-4333-8444-555555555555");
    user["userName"] = json!("pejo@grannkommun.se");
    let (st, e) = egil(&c, &s, "POST", "/Users", KEY_A, user.clone()).await;
    assert_eq!(st, 400, "{e}");
    assert!(e["detail"].as_str().unwrap().contains("eppn_scope"), "{e}");
    let (st, _) = resolve(&c, &s, json!({"eppn": "pejo@grannkommun.se"})).await;
    assert_eq!(st, 404);

    // A tenant without scope limits claims kommunen's EPPN (case variant): 409, and the
    // first owner keeps it.
    user["userName"] = json!("PEJO@skola.kommunen.se");
    let (st, e) = egil(&c, &s, "POST", "/Users", KEY_FREE, user).await;
    assert_eq!(st, 409, "{e}");
    let (st, a) = resolve(&c, &s, json!({"eppn": "pejo@skola.kommunen.se"})).await;
    assert_eq!(st, 200);
    assert_eq!(a["huvudman"]["tenant_id"], "kommunen");
    assert_eq!(a["person"]["source_id"], PER);
}

#[tokio::test]
async fn idp_of_another_tenant_gets_no_match() {
    let (s, c) = pushed().await;
    for idp in [IDP_B, "https://evil.example/idp", ""] {
        let (st, e) = resolve(
            &c,
            &s,
            json!({"eppn": "stjo@skola.kommunen.se", "idp_entity_id": idp}),
        )
        .await;
        assert_eq!(st, 404, "{idp}: {e}");
        assert_eq!(e, json!({"error": "no_match", "reason": "idp_mismatch"}));
    }
    // The refusal is logged for audit, without the EPPN.
    let log = std::fs::read_to_string(s.log_path()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("login refused") && l.contains(IDP_B))
        .expect("an audit line");
    assert!(line.contains("idp_mismatch") && line.contains("kommunen"));
    assert!(!log.contains("stjo@skola"), "no EPPN in the log");
    // And in the school owner's audit trail: whose account, which IdP, which product.
    let (st, page) = admin_call(
        &c,
        &s,
        "GET",
        "/admin/v1/tenants/kommunen/audit?limit=1000",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(st, 200, "{page}");
    let refused: Vec<&Value> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["op"] == "login_refused")
        .collect();
    assert_eq!(refused.len(), 3, "{page}");
    assert_eq!(refused[0]["kind"], "person");
    assert_eq!(refused[0]["id"], STEFAN);
    assert_eq!(refused[0]["credential"], "provplattform");
    assert_eq!(
        refused[0]["detail"],
        format!("idp_mismatch from {IDP_B}").as_str()
    );
    assert!(refused[0].get("protocol").is_none());
    assert!(
        !page.to_string().contains("stjo@skola"),
        "no EPPN in the trail"
    );
    // The other school owner's trail does not show it.
    let (_, other) = admin_call(
        &c,
        &s,
        "GET",
        "/admin/v1/tenants/grannkommun/audit?limit=1000",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(other["entries"], json!([]), "{other}");
}

#[tokio::test]
async fn suspended_tenant_matches_nothing() {
    let (mut s, c) = pushed().await;
    let (st, a) = resolve(&c, &s, json!({"eppn": "stjo@skola.kommunen.se"})).await;
    assert_eq!(st, 200);
    let id = a["account_id"].as_str().unwrap().to_owned();
    // Freeze kommunen's logins in the store (as the admin API does) and restart.
    s.kill9();
    {
        let store: Arc<dyn skolgrind::store::Store> =
            Arc::new(skolgrind::store::sled_kv::SledStore::open_dir(&s.data_dir()).unwrap());
        let t = skolgrind::domain::TenantId::parse("kommunen").unwrap();
        let controls = skolgrind::domain::Controls::load(store, std::slice::from_ref(&t)).unwrap();
        controls
            .update_tenant(&t, |c| {
                c.logins_frozen = Some(skolgrind::domain::Suspension {
                    reason: "incident".into(),
                    since: chrono::Utc::now(),
                    by: "test".into(),
                })
            })
            .await
            .unwrap();
    }
    s.restart_after_kill();
    let (st, e) = resolve(&c, &s, json!({"eppn": "stjo@skola.kommunen.se"})).await;
    assert_eq!((st, e["reason"].as_str()), (404, Some("tenant_suspended")));
    let (st, e) = login(
        &c,
        &s,
        "GET",
        &format!("/accounts/{id}"),
        Some(PRODUCT_KEY),
        None,
    )
    .await;
    assert_eq!((st, e["reason"].as_str()), (404, Some("tenant_suspended")));
}

#[tokio::test]
async fn product_and_school_owner_credentials_are_separate() {
    let (s, c) = pushed().await;
    let body = json!({"eppn": "stjo@skola.kommunen.se"});
    // A school owner's valid key on the login API: 403.
    let (st, e) = login(&c, &s, "POST", "/resolve", Some(KEY_A), Some(body.clone())).await;
    assert_eq!((st, e["error"].as_str()), (403, Some("forbidden")));
    for path in ["/accounts/00000000-0000-4000-8000-000000000000", "/changes"] {
        let (st, _) = login(&c, &s, "GET", path, Some(KEY_B), None).await;
        assert_eq!(st, 403, "{path}");
    }
    // A product's valid key on provisioning: 403, nothing written.
    let r = send(
        &c,
        "GET",
        &s.url("/egil/Users"),
        Some(PRODUCT_KEY),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.status(), 403);
    let user = std::fs::read(fixtures_dir().join("05-POST-User.body")).unwrap();
    let r = send(
        &c,
        "PUT",
        &s.url(&format!("/egil/Users/{PER}")),
        Some(PRODUCT_KEY),
        Some(SCIM),
        user,
    )
    .await;
    assert_eq!(r.status(), 403);
    // Unknown or missing keys stay 401 on both.
    for key in [Some("no-such-key"), None] {
        let (st, _) = login(&c, &s, "POST", "/resolve", key, Some(body.clone())).await;
        assert_eq!(st, 401);
        let r = send(&c, "GET", &s.url("/egil/Users"), key, None, vec![]).await;
        assert_eq!(r.status(), 401);
    }
    // The product key works.
    let (st, _) = login(&c, &s, "POST", "/resolve", Some(PRODUCT_KEY), Some(body)).await;
    assert_eq!(st, 200);
}

/// A school unit's rename changes the view of everyone at it (their `school_units` show
/// its name): the change lists exactly the accounts whose resolve shows that unit.
#[tokio::test]
async fn school_unit_change_lists_the_accounts_at_it() {
    let (s, c) = pushed().await;
    let (_, all) = login(&c, &s, "GET", "/changes", Some(PRODUCT_KEY), None).await;
    let cursor = all["next_cursor"].as_str().unwrap().to_owned();
    let (_, per) = resolve(&c, &s, json!({"eppn": "pejo@skola.kommunen.se"})).await;
    let unit = per["school_units"][0]["source_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Everyone provisioned, and who of them is at the unit.
    let mut at_unit = Vec::new();
    let mut elsewhere = Vec::new();
    for (m, p, _, body) in fixtures() {
        let v: Value = serde_json::from_slice(&body).unwrap();
        if m != "POST" || p != "/Users" {
            continue;
        }
        let eppn = v["userName"].as_str().unwrap();
        let (st, a) = resolve(&c, &s, json!({"eppn": eppn})).await;
        assert_eq!(st, 200, "{eppn}");
        let id = a["account_id"].as_str().unwrap().to_owned();
        let here = a["school_units"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["source_id"] == unit.as_str());
        if here {
            at_unit.push(id)
        } else {
            elsewhere.push(id)
        }
    }
    assert!(
        at_unit.len() >= 2,
        "a pupil and a teacher at least: {at_unit:?}"
    );
    assert!(!elsewhere.is_empty(), "someone is at another unit only");
    // Rename the unit as EGIL would: PUT of its document with a new name.
    let (_, path, ct, body) = fixtures()
        .into_iter()
        .find(|(m, p, _, b)| {
            m == "POST"
                && p == "/SchoolUnits"
                && serde_json::from_slice::<Value>(b).unwrap()["externalId"] == unit.as_str()
        })
        .unwrap();
    let mut doc: Value = serde_json::from_slice(&body).unwrap();
    doc["displayName"] = json!("Omdöpt skola");
    let r = send(
        &c,
        "PUT",
        &s.url(&format!("/egil{path}/{unit}")),
        Some(KEY_A),
        Some(&ct),
        serde_json::to_vec(&doc).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (_, feed) = changes_after(&c, &s, &cursor).await;
    let changes = feed["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["kind"], "org_unit");
    let mut listed: Vec<String> = changes[0]["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    at_unit.sort();
    assert_eq!(listed, at_unit);
    let (_, again) = resolve(&c, &s, json!({"eppn": "pejo@skola.kommunen.se"})).await;
    assert_eq!(again["school_units"][0]["name"], "Omdöpt skola");
}

#[tokio::test]
async fn deleted_person_disappears_and_appears_in_the_change_feed() {
    let (s, c) = pushed().await;
    let (st, feed) = login(&c, &s, "GET", "/changes?limit=10", Some(PRODUCT_KEY), None).await;
    assert_eq!(st, 200);
    assert_eq!(feed["changes"].as_array().unwrap().len(), 10);
    let (_, all) = login(&c, &s, "GET", "/changes", Some(PRODUCT_KEY), None).await;
    assert_eq!(all["changes"].as_array().unwrap().len(), 26);
    let persons = all["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["kind"] == "person" && x["op"] == "create")
        .count();
    assert_eq!(persons, 7);
    let cursor = all["next_cursor"].as_str().unwrap().to_owned();

    let (_, a) = resolve(&c, &s, json!({"eppn": "pejo@skola.kommunen.se"})).await;
    let id = a["account_id"].as_str().unwrap().to_owned();
    // Account-level: each entry lists the accounts whose view it changed. The group
    // entries list their members, the activity entries their pupils and teachers.
    let listing = |who: &str| -> Vec<(String, String)> {
        all["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["accounts"].as_array().unwrap().iter().any(|a| a == who))
            .map(|x| {
                (
                    x["kind"].as_str().unwrap().to_owned(),
                    x["source_id"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let per_entries = listing(&id);
    assert!(
        per_entries.contains(&("person".into(), PER.into())),
        "{per_entries:?}"
    );
    for (kind, group) in a["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| ("group", g["source_id"].as_str().unwrap()))
    {
        assert!(
            per_entries.contains(&(kind.into(), group.into())),
            "{group}: {per_entries:?}"
        );
    }
    for act in a["activities"].as_array().unwrap() {
        let act = act["source_id"].as_str().unwrap();
        assert!(
            per_entries.contains(&("activity".into(), act.into())),
            "{act}: {per_entries:?}"
        );
    }
    let (_, babs) = resolve(&c, &s, json!({"eppn": "baje@skola.kommunen.se"})).await;
    let babs_entries = listing(babs["account_id"].as_str().unwrap());
    assert!(
        babs_entries.iter().any(|(k, _)| k == "duty"),
        "{babs_entries:?}"
    );
    assert!(
        babs_entries.iter().any(|(k, _)| k == "activity"),
        "{babs_entries:?}"
    );
    let r = send(
        &c,
        "DELETE",
        &s.url(&format!("/egil/Users/{PER}")),
        Some(KEY_A),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.status(), 204);
    let (st, e) = resolve(&c, &s, json!({"eppn": "pejo@skola.kommunen.se"})).await;
    assert_eq!((st, e["reason"].as_str()), (404, Some("unknown")));
    let (st, _) = login(
        &c,
        &s,
        "GET",
        &format!("/accounts/{id}"),
        Some(PRODUCT_KEY),
        None,
    )
    .await;
    assert_eq!(st, 404);
    let (st, feed) = changes_after(&c, &s, &cursor).await;
    assert_eq!(st, 200);
    assert_eq!(
        feed["changes"],
        json!([{
            "cursor": feed["next_cursor"],
            "tenant_id": "kommunen",
            "kind": "person",
            "id": id,
            "source_id": PER,
            "op": "delete",
            "at": feed["changes"][0]["at"],
            "accounts": [id],
        }])
    );
    // Nothing newer: the cursor stays.
    let next = feed["next_cursor"].as_str().unwrap();
    let (_, empty) = changes_after(&c, &s, next).await;
    assert_eq!(empty, json!({"changes": [], "next_cursor": next}));
    // The group that still lists the deleted pupil reports it, not a 500.
    let (_, lisa) = resolve(&c, &s, json!({"eppn": "lini@skola.kommunen.se"})).await;
    let grupp1 = lisa["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "grupp1")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, g) = login(
        &c,
        &s,
        "GET",
        &format!("/groups/{grupp1}/members"),
        Some(PRODUCT_KEY),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(g["members"].as_array().unwrap().len(), 1);
    assert_eq!(g["warnings"][0]["source_id"], PER);
    assert_eq!(g["warnings"][0]["code"], "dangling_reference");
    // Bad cursors and limits are client errors.
    for q in [
        "cursor=abc",
        "cursor=-1",
        "limit=0",
        "limit=10001",
        "cursor=99999999999999999999",
    ] {
        let (st, _) = login(
            &c,
            &s,
            "GET",
            &format!("/changes?{q}"),
            Some(PRODUCT_KEY),
            None,
        )
        .await;
        assert_eq!(st, 400, "{q}");
    }
}

#[tokio::test]
async fn forward_references_resolve_after_the_late_object_arrives() {
    let s = Server::start_with(&config(), "");
    let c = client();
    let unit = "aaaaaaaa-0000-4000-8000-000000000001";
    let pupil = "aaaaaaaa-0000-4000-8000-000000000002";
    let group = "aaaaaaaa-0000-4000-8000-000000000003";
    let activity = "aaaaaaaa-0000-4000-8000-000000000004";
    let user_schema = "urn:scim:schemas:extension:sis:school:1.0:User";
    let mut user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", user_schema],
        "externalId": pupil,
        "userName": "elev@skola.grannkommun.se",
        "displayName": "Elev Eleven",
        "name": {"givenName": "Elev", "familyName": "Eleven"},
    });
    user[user_schema] =
        json!({"enrolments": [{"value": unit, "schoolYear": 9, "schoolType": "GR"}]});
    // The activity arrives first, then the pupil; the group and the unit are missing.
    let (st, e) = egil(
        &c,
        &s,
        "POST",
        "/Activities",
        KEY_B,
        json!({
            "schemas": ["urn:scim:schemas:extension:sis:school:1.0:Activity"],
            "externalId": activity,
            "displayName": "NP Matematik åk 9",
            "owner": {"value": unit},
            "groups": [{"value": group}],
            "parentActivity": [{"value": "b229977a-7bd3-58ad-b7a2-3fdc774840fd"}],
        }),
    )
    .await;
    assert_eq!(st, 201, "{e}");
    let (st, e) = egil(&c, &s, "POST", "/Users", KEY_B, user).await;
    assert_eq!(st, 201, "{e}");
    let (st, a) = resolve(
        &c,
        &s,
        json!({"eppn": "elev@skola.grannkommun.se", "idp_entity_id": IDP_B}),
    )
    .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["groups"], json!([]));
    assert_eq!(a["activities"], json!([]));
    assert_eq!(a["school_units"][0]["source_id"], unit);
    assert!(a["school_units"][0].get("name").is_none());
    assert_eq!(
        a["warnings"],
        json!([{"code": "dangling_reference", "kind": "org_unit", "source_id": unit,
                "referenced_by": "person", "referenced_by_source_id": pupil}])
    );
    // The group arrives: its activity (sent earlier) now reaches the pupil.
    let (st, _) = egil(
        &c,
        &s,
        "POST",
        "/StudentGroups",
        KEY_B,
        json!({
            "schemas": ["urn:scim:schemas:extension:sis:school:1.0:StudentGroup"],
            "externalId": group,
            "displayName": "9A",
            "owner": {"value": unit},
            "studentMemberships": [{"value": pupil}],
        }),
    )
    .await;
    assert_eq!(st, 201);
    let (_, a) = resolve(&c, &s, json!({"eppn": "elev@skola.grannkommun.se"})).await;
    assert_eq!(names(&a["groups"], "name"), vec!["9A"]);
    assert_eq!(a["activities"][0]["name"], "NP Matematik åk 9");
    assert_eq!(
        a["activities"][0]["parent_activity"],
        "b229977a-7bd3-58ad-b7a2-3fdc774840fd"
    );
    // The school unit arrives: no warnings left.
    let (st, _) = egil(
        &c,
        &s,
        "POST",
        "/SchoolUnits",
        KEY_B,
        json!({
            "schemas": ["urn:scim:schemas:extension:sis:school:1.0:SchoolUnit"],
            "externalId": unit,
            "displayName": "Grannskolan",
            "schoolUnitCode": "87654321",
        }),
    )
    .await;
    assert_eq!(st, 201);
    let (_, a) = resolve(&c, &s, json!({"eppn": "elev@skola.grannkommun.se"})).await;
    assert_eq!(a["school_units"][0]["name"], "Grannskolan");
    assert_eq!(a["warnings"], json!([]));
    // Kommunen's IdP cannot assert grannkommun's pupil.
    let (st, e) = resolve(
        &c,
        &s,
        json!({"eppn": "elev@skola.grannkommun.se", "idp_entity_id": IDP_A}),
    )
    .await;
    assert_eq!((st, e["reason"].as_str()), (404, Some("idp_mismatch")));
}

#[tokio::test]
async fn batch_limits_and_order() {
    let (s, _) = pushed().await;
    // A fresh connection per request: the 1,000-lookup answer is large and slow in a debug
    // build under a parallel test run, and a pooled connection may meet the server's
    // keep-alive expiry.
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap();
    let lookups = json!([
        {"eppn": "stjo@skola.kommunen.se"},
        {"eppn": "nobody@skola.kommunen.se"},
        {"eppn": "baje@skola.kommunen.se", "idp_entity_id": IDP_B},
        {"eppn": "soda@skola.kommunen.se"},
    ]);
    let (st, r) = login(
        &c,
        &s,
        "POST",
        "/resolve:batch",
        Some(PRODUCT_KEY),
        Some(json!({"lookups": lookups})),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    let statuses: Vec<u64> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![200, 404, 404, 200]);
    assert_eq!(r["results"][0]["account"]["person"]["source_id"], STEFAN);
    assert_eq!(r["results"][1]["reason"], "unknown");
    assert_eq!(r["results"][2]["reason"], "idp_mismatch");
    assert_eq!(r["results"][3]["account"]["person"]["source_id"], SOFIE);
    // A lookup without any identifier makes the request invalid.
    let (st, e) = login(
        &c,
        &s,
        "POST",
        "/resolve:batch",
        Some(PRODUCT_KEY),
        Some(json!({"lookups": [{"eppn": "soda@skola.kommunen.se"}, {"idp_entity_id": IDP_A}]})),
    )
    .await;
    assert_eq!((st, e["path"].as_str()), (400, Some("lookups[1].eppn")));
    // 1,000 is the limit; 0 and 1,001 are refused.
    let many = |n: usize| json!({"lookups": vec![json!({"eppn": "stjo@skola.kommunen.se"}); n]});
    let (st, r) = login(
        &c,
        &s,
        "POST",
        "/resolve:batch",
        Some(PRODUCT_KEY),
        Some(many(1000)),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(r["results"].as_array().unwrap().len(), 1000);
    for n in [0, 1001] {
        let (st, e) = login(
            &c,
            &s,
            "POST",
            "/resolve:batch",
            Some(PRODUCT_KEY),
            Some(many(n)),
        )
        .await;
        assert_eq!((st, e["rule"].as_str()), (400, Some("size")), "{n}");
    }
    // Malformed bodies: 400 or 415, never a 500.
    let bad = |ct: Option<&'static str>, body: &'static str| (ct, body);
    for (ct, body) in [
        bad(Some("application/json"), "{"),
        bad(Some("application/json"), r#"{"eppn": 5}"#),
        bad(
            Some("application/json"),
            r#"{"eppn": "x@y.se", "surprise": 1}"#,
        ),
        bad(Some("text/plain"), r#"{"eppn": "x@y.se"}"#),
        bad(None, r#"{"eppn": "x@y.se"}"#),
    ] {
        let r = send(
            &c,
            "POST",
            &s.url("/login/v1/resolve"),
            Some(PRODUCT_KEY),
            ct,
            body.as_bytes().to_vec(),
        )
        .await;
        let st = r.status().as_u16();
        assert!(st == 400 || st == 415, "{body}: {st}");
        assert_eq!(r.headers()["content-type"], "application/json");
    }
}

#[tokio::test]
async fn openapi_document_and_offline_docs_are_served() {
    let s = Server::start_with(&config(), "");
    let c = client();
    let (st, doc) = json(c.get(s.url("/login/v1/openapi.json")).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/login/v1/resolve",
        "/login/v1/resolve:batch",
        "/login/v1/accounts/{id}",
        "/login/v1/groups/{id}/members",
        "/login/v1/activities/{id}",
        "/login/v1/changes",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} missing");
        // Both quotas' answers are documented: the product's and the unauthenticated IP's.
        let op = doc["paths"][p]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap();
        let content = &op["responses"]["429"]["content"];
        assert!(content["application/json"].is_object(), "{p}: {op}");
        assert!(content["application/problem+json"].is_object(), "{p}: {op}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["name"],
        "X-API-Key"
    );
    let r = c.get(s.url("/login/v1/docs/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("swagger"));
    let r = c
        .get(s.url("/login/v1/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the UI's assets are in the binary");
    // Wrong methods are 405 with Allow.
    let r = c.get(s.url("/login/v1/resolve")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
}

/// Product calls are authenticated: a login storm from one address never draws from that
/// address's quota for calls without credentials.
#[tokio::test]
async fn product_calls_do_not_use_the_unauthenticated_ip_quota() {
    let s = Server::start_with(
        &config(),
        "[rate_limits]\nunauthenticated_per_ip = { requests = 3, per_seconds = 60 }\n",
    );
    let c = client();
    for i in 0..20 {
        let (st, v) = resolve(
            &c,
            &s,
            json!({"eppn": format!("nobody{i}@skola.kommunen.se")}),
        )
        .await;
        assert_eq!(st, 404, "call {i}: {v}");
        assert_eq!(v["reason"], "unknown");
    }
    // Calls without credentials still use it up (the fourth refusal exhausts it).
    for _ in 0..4 {
        let (st, _) = login(
            &c,
            &s,
            "POST",
            "/resolve",
            None,
            Some(json!({"eppn": "x@skola.kommunen.se"})),
        )
        .await;
        assert_eq!(st, 401);
    }
    let (st, _) = login(
        &c,
        &s,
        "POST",
        "/resolve",
        None,
        Some(json!({"eppn": "x@skola.kommunen.se"})),
    )
    .await;
    assert_eq!(st, 429);
}

/// Each product has its own quota counted in lookups (a batch draws one per lookup); a
/// product that used it up gets 429 with Retry-After, other products and the school
/// owners' provisioning go on.
#[tokio::test]
async fn product_quota_counts_lookups_and_stops_only_that_product() {
    const OTHER_PRODUCT: &str = "key-for-another-product-qqqqqqqqqqq";
    let config = format!(
        "{}\n[[products]]\nid = \"annan\"\nname = \"Annan produkt\"\napi_keys = [\"{}\"]\n",
        config(),
        hash(OTHER_PRODUCT)
    );
    let s = Server::start_with(
        &config,
        "[rate_limits]\nproduct_lookups = { requests = 5, per_seconds = 60 }\n",
    );
    let c = client();
    let one = json!({"eppn": "nobody@kommunen.se"});
    let batch = |n: usize| json!({"lookups": vec![one.clone(); n]});
    let (st, v) = login(
        &c,
        &s,
        "POST",
        "/resolve:batch",
        Some(PRODUCT_KEY),
        Some(batch(3)),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = resolve(&c, &s, one.clone()).await;
    assert_eq!(st, 404);
    // One lookup left: a batch of three is refused whole.
    let r = send(
        &c,
        "POST",
        &s.url("/login/v1/resolve:batch"),
        Some(PRODUCT_KEY),
        Some("application/json"),
        batch(3).to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.headers()["x-ratelimit-limit"], "5");
    let (st, _) = resolve(&c, &s, one.clone()).await;
    assert_eq!(st, 404, "the last lookup still fits");
    let (st, v) = resolve(&c, &s, one.clone()).await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(
        v["error"], "rate_limited",
        "the API's own error format: {v}"
    );
    // Another product, and the school owner's provisioning, are not held back.
    let (st, _) = login(
        &c,
        &s,
        "POST",
        "/resolve",
        Some(OTHER_PRODUCT),
        Some(one.clone()),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = egil(&c, &s, "GET", "/Users", KEY_A, Value::Null).await;
    assert_eq!(st, 200);
}
