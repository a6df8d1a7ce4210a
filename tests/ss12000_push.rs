//! SS12000:2020 push (`/provisioning/v1`) against the real binary: bulk jobs, per-item
//! DNP and generic rules, updateIfExists, deletes, paging tokens, isolation and a kill -9
//! in the middle of a job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{hash, Server, KEY_A, KEY_B};
use reqwest::Client;
use serde_json::{json, Value};

const KEY_DNP: &str = KEY_A;
const KEY_GEN: &str = KEY_B;

fn tenants() -> String {
    format!(
        r#"
[[tenants]]
id = "dnpkommun"
name = "DNP-kommunen"
api_keys = ["{}"]
ss12000_profile = "dnp"

[[tenants]]
id = "generisk"
name = "Generiska kommunen"
api_keys = ["{}"]
"#,
        hash(KEY_DNP),
        hash(KEY_GEN)
    )
}

fn start() -> Server {
    Server::start_with(&tenants(), "")
}

fn uid(kind: u32, i: usize) -> String {
    format!("{kind:08x}-0000-4000-8000-{i:012x}")
}

const ORG: u32 = 0x0a;
const PERSON: u32 = 0x0b;
const DUTY: u32 = 0x0c;
const GROUP: u32 = 0x0d;
const ACTIVITY: u32 = 0x0e;
const NATIONAL_TEST: u32 = 0x0f;

fn luhn(digits: &str) -> u32 {
    let sum: u32 = digits
        .bytes()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0') * if i % 2 == 0 { 2 } else { 1 };
            d / 10 + d % 10
        })
        .sum();
    (10 - sum % 10) % 10
}

fn civic(i: usize) -> String {
    let base = format!("2010{:02}{:02}{:03}", 1 + i % 12, 1 + i % 28, i % 1000);
    format!("{base}{}", luhn(&base[2..]))
}

/// A pupil (i < 450) or a member of staff, valid under the DNP profile.
fn person(i: usize) -> Value {
    let mut p = json!({
        "id": uid(PERSON, i),
        "givenName": format!("Kim{i}"),
        "familyName": "Qvist",
        "eduPersonPrincipalNames": [format!("u{i:05}z@edu.kommunen.se")],
        "civicNo": {"value": civic(i), "nationality": "SE"},
    });
    if i < 450 {
        let unit = uid(ORG, 1 + i % 3);
        p["enrolments"] = if i % 3 == 2 {
            json!([{"enroledAt": {"id": unit}, "schoolType": "GY", "educationCode": "NA"}])
        } else {
            json!([{"enroledAt": {"id": unit}, "schoolType": "GR", "schoolYear": 1 + i % 9}])
        };
        p["emails"] = json!([{"value": format!("u{i}@elev.kommunen.se"), "type": "Skola elev"}]);
    } else {
        p["emails"] = json!([{"value": format!("s{i}@kommunen.se"), "type": "Skola personal"}]);
    }
    p
}

fn duty(i: usize) -> Value {
    json!({"id": uid(DUTY, i), "person": {"id": uid(PERSON, 450 + i)},
           "dutyAt": {"id": uid(ORG, 1 + i % 3)}, "dutyRole": "Lärare"})
}

fn group(i: usize, members: &[usize]) -> Value {
    let ty = if i < 18 { "Klass" } else { "Undervisning" };
    json!({"id": uid(GROUP, i), "displayName": format!("G{i}"), "groupType": ty, "schoolType": "GR",
           "organisation": {"id": uid(ORG, 1 + i % 3)},
           "groupMemberships": members.iter().map(|m| json!({"person": {"id": uid(PERSON, *m)}})).collect::<Vec<_>>()})
}

fn activity(i: usize) -> Value {
    json!({"id": uid(ACTIVITY, i), "displayName": format!("MA åk 6 grupp {i}"), "activityType": "Undervisning",
           "organisation": {"id": uid(ORG, 1 + i % 3)}, "groups": [{"id": uid(GROUP, 18 + i)}],
           "teachers": [{"duty": {"id": uid(DUTY, i)}}], "parentActivity": {"id": uid(NATIONAL_TEST, i % 3)}})
}

fn organisation(i: usize) -> Value {
    if i == 0 {
        json!({"id": uid(ORG, 0), "displayName": "Kommunen", "organisationType": "Huvudman", "schoolUnitCode": "00000000"})
    } else {
        json!({"id": uid(ORG, i), "displayName": format!("Skola {i}"), "organisationType": "Skolenhet",
               "schoolUnitCode": format!("{:08}", 10000000 + i), "schoolTypes": ["GR", "GY"],
               "parentOrganisation": {"id": uid(ORG, 0)}})
    }
}

async fn call(
    c: &Client,
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let mut r = c.request(method.parse().unwrap(), url);
    if let Some(k) = key {
        r = r.header("X-API-Key", k);
    }
    if let Some(b) = body {
        r = r
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let res = r.send().await.unwrap();
    let loc = res
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let (s, v) = common::json(res).await;
    (s, v, loc)
}

/// Submits a bulk request; returns the job id (asserting 202 and the Location header).
async fn submit(
    s: &Server,
    c: &Client,
    key: &str,
    method: &str,
    path: &str,
    data: Vec<Value>,
) -> String {
    let (status, v, loc) = call(
        c,
        method,
        &s.url(&format!("/provisioning/v1/{path}")),
        Some(key),
        Some(json!({"data": data})),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let job = v["jobId"].as_str().unwrap().to_owned();
    let ty = path.split('/').next().unwrap();
    assert!(loc
        .unwrap()
        .ends_with(&format!("/provisioning/v1/{ty}/bulk/jobs/{job}")));
    job
}

/// Polls `isCompleted` until true, then returns the job status document.
async fn wait(s: &Server, c: &Client, key: &str, ty: &str, job: &str) -> Value {
    for _ in 0..1200 {
        let (st, v, _) = call(
            c,
            "GET",
            &s.url(&format!(
                "/provisioning/v1/{ty}/bulk/jobs/{job}/isCompleted"
            )),
            Some(key),
            None,
        )
        .await;
        assert_eq!(st, 200, "{v}");
        if v == Value::Bool(true) {
            let (st, v, _) = call(
                c,
                "GET",
                &s.url(&format!("/provisioning/v1/{ty}/bulk/jobs/{job}")),
                Some(key),
                None,
            )
            .await;
            assert_eq!(st, 200);
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {job} did not complete");
}

async fn push(
    s: &Server,
    c: &Client,
    key: &str,
    method: &str,
    path: &str,
    data: Vec<Value>,
) -> Vec<Value> {
    let job = submit(s, c, key, method, path, data).await;
    let ty = path.split('/').next().unwrap();
    let v = wait(s, c, key, ty, &job).await;
    assert_eq!(v["jobId"], job.as_str());
    v["responses"].as_array().unwrap().clone()
}

fn statuses(rs: &[Value]) -> Vec<String> {
    rs.iter()
        .map(|r| r["response"]["status"].as_str().unwrap().to_owned())
        .collect()
}

async fn push_data_set(s: &Server, c: &Client, key: &str) {
    let orgs: Vec<Value> = (0..4).map(organisation).collect();
    let rs = push(s, c, key, "POST", "organisations/bulk", orgs).await;
    assert!(statuses(&rs).iter().all(|s| s == "Success"), "{rs:?}");
    // Persons in requests of 200 (about 80 KB each, under Skolverket's 200 KB).
    for chunk in (0..500).collect::<Vec<_>>().chunks(200) {
        let rs = push(
            s,
            c,
            key,
            "POST",
            "persons/bulk",
            chunk.iter().map(|i| person(*i)).collect(),
        )
        .await;
        assert_eq!(rs.len(), chunk.len());
        for r in &rs {
            assert_eq!(r["response"]["status"], "Success", "{r}");
            assert_eq!(r["response"]["statusCode"], 201);
            assert!(r["response"]["location"]
                .as_str()
                .unwrap()
                .ends_with(&format!(
                    "/provisioning/v1/persons/{}",
                    r["id"].as_str().unwrap()
                )));
        }
    }
    let rs = push(
        s,
        c,
        key,
        "POST",
        "duties/bulk",
        (0..50).map(duty).collect(),
    )
    .await;
    assert!(statuses(&rs).iter().all(|s| s == "Success"), "{rs:?}");
    // 18 classes of 25 pupils, 10 teaching groups of 20.
    let mut groups: Vec<Value> = (0..18)
        .map(|g| group(g, &(g * 25..g * 25 + 25).collect::<Vec<_>>()))
        .collect();
    groups.extend(
        (18..28).map(|g| group(g, &((g - 18) * 20..(g - 18) * 20 + 20).collect::<Vec<_>>())),
    );
    let rs = push(s, c, key, "POST", "groups/bulk", groups).await;
    assert!(statuses(&rs).iter().all(|s| s == "Success"), "{rs:?}");
    let rs = push(
        s,
        c,
        key,
        "POST",
        "activities/bulk",
        (0..10).map(activity).collect(),
    )
    .await;
    assert!(statuses(&rs).iter().all(|s| s == "Success"), "{rs:?}");
}

#[tokio::test]
async fn dnp_data_set_is_pushed_in_bulk_and_read_back() {
    let s = start();
    let c = common::client();
    push_data_set(&s, &c, KEY_DNP).await;
    // Page through all persons with limit 100: 500 distinct, in 5 pages, last token null.
    let mut seen = std::collections::BTreeSet::new();
    let mut url = s.url("/provisioning/v1/persons?limit=100");
    let mut pages = 0;
    loop {
        let (st, v, _) = call(&c, "GET", &url, Some(KEY_DNP), None).await;
        assert_eq!(st, 200, "{v}");
        pages += 1;
        for p in v["data"].as_array().unwrap() {
            assert!(
                p.get("enrolments").is_none(),
                "the list has the documented subset only"
            );
            assert!(p["meta"]["created"].is_string());
            seen.insert(p["id"].as_str().unwrap().to_owned());
        }
        match v["pageToken"].as_str() {
            Some(t) => url = s.url(&format!("/provisioning/v1/persons?limit=100&pageToken={t}")),
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (500, 5));
    // Default limit 50.
    let (_, v, _) = call(
        &c,
        "GET",
        &s.url("/provisioning/v1/groups"),
        Some(KEY_DNP),
        None,
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 28);
    assert!(v["pageToken"].is_null());
    // Full objects by id and by lookup.
    let (st, v, _) = call(
        &c,
        "GET",
        &s.url(&format!("/provisioning/v1/persons/{}", uid(PERSON, 7))),
        Some(KEY_DNP),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["enrolments"][0]["schoolYear"], 8);
    let (st, v, _) = call(
        &c,
        "GET",
        &s.url(&format!(
            "/provisioning/v1/activities/{}",
            uid(ACTIVITY, 3).to_uppercase()
        )),
        Some(KEY_DNP),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["parentActivity"]["id"], uid(NATIONAL_TEST, 0));
    let (st, v, _) = call(&c, "POST", &s.url("/provisioning/v1/persons/lookup"), Some(KEY_DNP),
        Some(json!({"ids": [uid(PERSON, 1)], "civicNos": [civic(2), civic(1)], "eduPersonPrincipalNames": ["U00003Z@edu.kommunen.se"]}))).await;
    assert_eq!(st, 200, "{v}");
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![uid(PERSON, 1), uid(PERSON, 2), uid(PERSON, 3)]);
    let (st, v, _) = call(
        &c,
        "POST",
        &s.url("/provisioning/v1/groups/lookup"),
        Some(KEY_DNP),
        Some(json!({"ids": [uid(GROUP, 0), uid(GROUP, 99)]})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v[0]["groupMemberships"].as_array().unwrap().len(), 25);
    assert_eq!(v.as_array().unwrap().len(), 1);
    // The data landed in the canonical model shared with EGIL: the EGIL view of the person.
    let (st, _, _) = call(
        &c,
        "GET",
        &s.url(&format!("/egil/Users/{}", uid(PERSON, 7))),
        Some(KEY_DNP),
        None,
    )
    .await;
    assert_eq!(st, 200);
    // showOnlyError on a clean job lists nothing.
    let job = submit(
        &s,
        &c,
        KEY_DNP,
        "POST",
        "duties/bulk?updateIfExists=true",
        vec![duty(0)],
    )
    .await;
    wait(&s, &c, KEY_DNP, "duties", &job).await;
    let (_, v, _) = call(
        &c,
        "GET",
        &s.url(&format!(
            "/provisioning/v1/duties/bulk/jobs/{job}?showOnlyError=true"
        )),
        Some(KEY_DNP),
        None,
    )
    .await;
    assert_eq!(v["responses"], json!([]));
}

fn with(mut v: Value, key: &str, val: Value) -> Value {
    v[key] = val;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

/// (type, item, expected status, expected message ids of errors or warnings, attribute of the first)
type Case = (
    &'static str,
    Value,
    &'static str,
    Vec<&'static str>,
    &'static str,
);

fn dnp_cases() -> Vec<Case> {
    let p = |i: usize| person(i);
    let id = |k: u32, i: usize| uid(k, 1000 + i);
    let pid = |i: usize| with(p(i), "id", json!(id(PERSON, i)));
    let pe = |i: usize| {
        with(
            pid(i),
            "eduPersonPrincipalNames",
            json!([format!("c{i:04}w@edu.kommunen.se")]),
        )
    };
    let en = |e: Value| json!([e]);
    let unit = json!({"id": uid(ORG, 1)});
    vec![
        ("persons", pe(1), "Success", vec![], ""),
        (
            "persons",
            without(pe(2), "eduPersonPrincipalNames"),
            "Error",
            vec!["7101"],
            "eduPersonPrincipalNames",
        ),
        (
            "persons",
            with(
                pe(3),
                "eduPersonPrincipalNames",
                json!(["c3a@edu.kommunen.se", "c3b@edu.kommunen.se"]),
            ),
            "Error",
            vec!["7102"],
            "eduPersonPrincipalNames",
        ),
        (
            "persons",
            without(pe(4), "civicNo"),
            "Error",
            vec!["7103"],
            "civicNo",
        ),
        (
            "persons",
            with(
                pe(5),
                "civicNo",
                json!({"value": civic(5), "nationality": "NO"}),
            ),
            "Error",
            vec!["7104"],
            "civicNo.nationality",
        ),
        (
            "persons",
            with(
                pe(6),
                "enrolments",
                en(json!({"enroledAt": unit, "schoolType": "FS"})),
            ),
            "Error",
            vec!["7105"],
            "Enrolment[0].schoolType",
        ),
        (
            "persons",
            with(
                pe(7),
                "enrolments",
                en(json!({"enroledAt": unit, "schoolType": "GR"})),
            ),
            "Error",
            vec!["7106"],
            "Enrolment[0].schoolYear",
        ),
        (
            "persons",
            with(
                pe(8),
                "enrolments",
                en(json!({"enroledAt": unit, "schoolType": "SP", "schoolYear": 0})),
            ),
            "Error",
            vec!["7107"],
            "Enrolment[0].schoolYear",
        ),
        (
            "persons",
            with(
                pe(9),
                "enrolments",
                en(json!({"enroledAt": unit, "schoolType": "GY"})),
            ),
            "Error",
            vec!["7108"],
            "Enrolment[0].educationCode",
        ),
        (
            "persons",
            with(
                pe(10),
                "emails",
                json!([{"value": "x@y.se", "type": "Privat"}]),
            ),
            "Error",
            vec!["7109"],
            "emails[0].type",
        ),
        (
            "persons",
            with(
                pe(11),
                "externalIdentifiers",
                json!([{"value": "a@eduid.se", "context": "https://eduid.se"}, {"value": "b@eduid.se", "context": "https://eduid.se"}]),
            ),
            "Error",
            vec!["7110"],
            "externalIdentifiers",
        ),
        (
            "persons",
            with(
                pe(12),
                "externalIdentifiers",
                json!([{"value": "a@x.se", "context": "https://example.org"}]),
            ),
            "Error",
            vec!["7111"],
            "externalIdentifiers[0].context",
        ),
        (
            "persons",
            with(
                with(pe(13), "familyName", json!("Efraimsdotter")),
                "eduPersonPrincipalNames",
                json!(["efraimsdotter09@edu.kommunen.se"]),
            ),
            "Warning",
            vec!["3047"],
            "eppn",
        ),
        (
            "persons",
            without(pe(14), "givenName"),
            "Error",
            vec!["7000"],
            "givenName",
        ),
        (
            "persons",
            with(pe(15), "id", json!("not-a-uuid")),
            "Error",
            vec!["7001"],
            "id",
        ),
        (
            "persons",
            with(pe(16), "civicNo", json!({"value": "20100101123"})),
            "Error",
            vec!["7001"],
            "civicNo.value",
        ),
        // A temporary number from the pupil register (DNP: YYYYMMDDTFnn) is accepted;
        // other letters are not.
        (
            "persons",
            with(
                pe(20),
                "civicNo",
                json!({"value": "20100101TF20", "nationality": "SE"}),
            ),
            "Success",
            vec![],
            "",
        ),
        (
            "persons",
            with(
                pe(21),
                "civicNo",
                json!({"value": "20100101TX20", "nationality": "SE"}),
            ),
            "Error",
            vec!["7001"],
            "civicNo.value",
        ),
        (
            "persons",
            with(pe(17), "eduPersonPrincipalNames", json!(["no-at-sign"])),
            "Error",
            vec!["7010"],
            "eduPersonPrincipalNames[0]",
        ),
        (
            "persons",
            with(
                pe(18),
                "eduPersonPrincipalNames",
                json!(["u00000z@edu.kommunen.se"]),
            ),
            "Error",
            vec!["7021"],
            "eduPersonPrincipalNames[0]",
        ),
        (
            "persons",
            with(
                pe(19),
                "enrolments",
                en(json!({"enroledAt": unit, "schoolType": "XX"})),
            ),
            "Error",
            vec!["7002"],
            "enrolments[0].schoolType",
        ),
        (
            "duties",
            with(duty(0), "id", json!(id(DUTY, 0))),
            "Success",
            vec![],
            "",
        ),
        (
            "duties",
            without(with(duty(1), "id", json!(id(DUTY, 1))), "person"),
            "Error",
            vec!["7201"],
            "person",
        ),
        (
            "duties",
            with(
                with(duty(2), "id", json!(id(DUTY, 2))),
                "person",
                json!({"id": uid(PERSON, 9999)}),
            ),
            "Error",
            vec!["7602"],
            "person.id",
        ),
        (
            "duties",
            with(
                with(duty(3), "id", json!(id(DUTY, 3))),
                "dutyRole",
                json!("Förskolechef"),
            ),
            "Error",
            vec!["7202"],
            "dutyRole",
        ),
        (
            "duties",
            with(
                with(duty(4), "id", json!(id(DUTY, 4))),
                "dutyRole",
                json!("Vaktmästare"),
            ),
            "Error",
            vec!["7002"],
            "dutyRole",
        ),
        (
            "groups",
            with(group(1, &[1]), "id", json!(id(GROUP, 1))),
            "Success",
            vec![],
            "",
        ),
        (
            "groups",
            with(
                with(group(2, &[]), "id", json!(id(GROUP, 2))),
                "groupType",
                json!("Mentor"),
            ),
            "Error",
            vec!["7301"],
            "groupType",
        ),
        (
            "groups",
            without(with(group(3, &[]), "id", json!(id(GROUP, 3))), "schoolType"),
            "Error",
            vec!["7302"],
            "schoolType",
        ),
        (
            "groups",
            with(
                with(group(4, &[]), "id", json!(id(GROUP, 4))),
                "schoolType",
                json!("GYS"),
            ),
            "Error",
            vec!["7303"],
            "schoolType",
        ),
        (
            "groups",
            with(group(5, &[2, 9999]), "id", json!(id(GROUP, 5))),
            "Warning",
            vec!["7601"],
            "groupMemberships[1].person.id",
        ),
        (
            "activities",
            with(activity(1), "id", json!(id(ACTIVITY, 1))),
            "Success",
            vec![],
            "",
        ),
        (
            "activities",
            without(
                with(activity(2), "id", json!(id(ACTIVITY, 2))),
                "activityType",
            ),
            "Error",
            vec!["7401"],
            "activityType",
        ),
        (
            "activities",
            with(
                with(activity(3), "id", json!(id(ACTIVITY, 3))),
                "activityType",
                json!("Elevaktivitet"),
            ),
            "Error",
            vec!["7402"],
            "activityType",
        ),
        (
            "activities",
            without(
                with(activity(4), "id", json!(id(ACTIVITY, 4))),
                "parentActivity",
            ),
            "Error",
            vec!["7403"],
            "parentActivity",
        ),
        (
            "activities",
            with(
                with(activity(5), "id", json!(id(ACTIVITY, 5))),
                "groups",
                json!([{"id": uid(GROUP, 9999)}]),
            ),
            "Error",
            vec!["7603"],
            "groups[0].id",
        ),
        (
            "activities",
            with(
                with(activity(6), "id", json!(id(ACTIVITY, 6))),
                "teachers",
                json!([{"duty": {"id": uid(DUTY, 9999)}}]),
            ),
            "Error",
            vec!["7604"],
            "teachers[0].duty.id",
        ),
        (
            "activities",
            with(
                with(activity(7), "id", json!(id(ACTIVITY, 7))),
                "groups",
                json!([]),
            ),
            "Error",
            vec!["7001"],
            "groups",
        ),
        (
            "organisations",
            without(
                with(organisation(1), "id", json!(id(ORG, 1))),
                "schoolUnitCode",
            ),
            "Error",
            vec!["7501"],
            "schoolUnitCode",
        ),
    ]
}

async fn run_cases(s: &Server, c: &Client, key: &str, cases: Vec<Case>) {
    assert!(cases.len() >= 25 || key == KEY_GEN);
    for ty in ["organisations", "persons", "duties", "groups", "activities"] {
        let mine: Vec<&Case> = cases.iter().filter(|c| c.0 == ty).collect();
        if mine.is_empty() {
            continue;
        }
        let rs = push(
            s,
            c,
            key,
            "POST",
            &format!("{ty}/bulk"),
            mine.iter().map(|c| c.1.clone()).collect(),
        )
        .await;
        assert_eq!(rs.len(), mine.len());
        for (r, (_, item, status, codes, attr)) in rs.iter().zip(&mine) {
            let resp = &r["response"];
            assert_eq!(resp["status"], *status, "{item} → {r}");
            assert_eq!(r["id"], item["id"]);
            let notes = if *status == "Warning" {
                &resp["warnings"]
            } else {
                &resp["errors"]
            };
            let got: Vec<&str> = notes
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["id"].as_str().unwrap())
                .collect();
            assert_eq!(got, *codes, "{item} → {r}");
            if let Some(n) = notes.get(0) {
                assert_eq!(n["attributeName"], *attr, "{r}");
                assert_eq!(n["resourceId"], item["id"]);
                assert_eq!(
                    n["severityLevel"],
                    if *status == "Warning" {
                        "Warning"
                    } else {
                        "Error"
                    }
                );
                assert!(n["timeOfOccurance"].is_string() && n["message"].is_string());
            }
            let stored = call(
                c,
                "GET",
                &s.url(&format!(
                    "/provisioning/v1/{ty}/{}",
                    item["id"].as_str().unwrap()
                )),
                Some(key),
                None,
            )
            .await
            .0;
            if *status == "Error" {
                assert_ne!(resp["statusCode"], 201);
                assert!(
                    stored == 404 || stored == 400,
                    "a refused item is not stored: {item}"
                );
            } else {
                assert_eq!(resp["statusCode"], 201);
                assert_eq!(stored, 200, "an accepted item is stored: {item}");
            }
        }
    }
}

/// The DNP's staff rules need other objects: a person is staff when a duty names it, so
/// they are checked from both sides, as warnings (the final state is known only when all
/// has arrived): staff need an e-mail of type `Skola personal` (7112 on the person, 7203
/// on the duty) and pupil and staff roles need different persons/EPPNs (7113, 7204).
#[tokio::test]
async fn dnp_staff_rules_are_checked_from_both_sides() {
    let s = start();
    let c = common::client();
    push_data_set(&s, &c, KEY_DNP).await;
    let codes = |r: &Value| -> Vec<String> {
        r["response"]["warnings"]
            .as_array()
            .map(|w| {
                w.iter()
                    .map(|n| n["id"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    // A duty naming a pupil (enrolled, only a `Skola elev` e-mail).
    let pupil_duty = with(duty(90), "person", json!({"id": uid(PERSON, 3)}));
    let rs = push(&s, &c, KEY_DNP, "POST", "duties/bulk", vec![pupil_duty]).await;
    assert_eq!(rs[0]["response"]["status"], "Warning", "{rs:?}");
    assert_eq!(codes(&rs[0]), ["7203", "7204"]);
    assert_eq!(
        rs[0]["response"]["warnings"][0]["attributeName"],
        "person.id"
    );
    // A staff member with a duty, sent again without e-mail and with an enrolment.
    let staff = with(
        with(person(450), "emails", json!([])),
        "enrolments",
        json!([{"enroledAt": {"id": uid(ORG, 1)}, "schoolType": "GR", "schoolYear": 6}]),
    );
    let rs = push(
        &s,
        &c,
        KEY_DNP,
        "POST",
        "persons/bulk?updateIfExists=true",
        vec![staff],
    )
    .await;
    assert_eq!(rs[0]["response"]["status"], "Warning", "{rs:?}");
    assert_eq!(codes(&rs[0]), ["7112", "7113"]);
    // The same person as it was (staff e-mail, no enrolment) is clean again, and so is a
    // pupil without a duty.
    let rs = push(
        &s,
        &c,
        KEY_DNP,
        "POST",
        "persons/bulk?updateIfExists=true",
        vec![person(450), person(4)],
    )
    .await;
    assert_eq!(statuses(&rs), ["Success", "Success"], "{rs:?}");
}

#[tokio::test]
async fn dnp_profile_reports_every_rule_per_item() {
    let s = start();
    let c = common::client();
    push_data_set(&s, &c, KEY_DNP).await;
    let cases = dnp_cases();
    assert!(cases.len() >= 30);
    run_cases(&s, &c, KEY_DNP, cases).await;
    // The warning carries the offending value (to the school owner only) …
    let job = submit(
        &s,
        &c,
        KEY_DNP,
        "POST",
        "persons/bulk?updateIfExists=true",
        vec![with(
            with(person(460), "familyName", json!("Zetterlund")),
            "eduPersonPrincipalNames",
            json!(["zet460@edu.kommunen.se"]),
        )],
    )
    .await;
    let v = wait(&s, &c, KEY_DNP, "persons", &job).await;
    assert_eq!(
        v["responses"][0]["response"]["warnings"][0]["attributeValue"],
        "zet460@edu.kommunen.se"
    );
    assert_eq!(v["responses"][0]["response"]["statusCode"], 200);
    // … and never reaches the log.
    let log = std::fs::read_to_string(s.log_path()).unwrap();
    assert!(
        !log.contains("zet460") && !log.contains(&civic(460)),
        "personal data in the log"
    );
}

#[tokio::test]
async fn generic_profile_warns_on_references_and_sis_attributes() {
    let s = start();
    let c = common::client();
    let g = json!({"id": uid(GROUP, 1), "displayName": "Mentorsgrupp", "groupType": "Mentor", "organisation": {"id": uid(ORG, 1)},
                   "startDate": "2026-08-15", "groupMemberships": [{"person": {"id": uid(PERSON, 1)}}]});
    let cases: Vec<Case> = vec![
        // Person without EPPN or civic number: fine in the SIS attribute set.
        (
            "persons",
            json!({"id": uid(PERSON, 2), "givenName": "A", "familyName": "B"}),
            "Success",
            vec![],
            "",
        ),
        (
            "persons",
            json!({"id": uid(PERSON, 3), "givenName": "A", "familyName": "B", "enrolments": [{"enroledAt": {"id": uid(ORG, 1)}, "schoolType": "FS"}]}),
            "Warning",
            vec!["7701"],
            "Enrolment[0].startDate",
        ),
        (
            "groups",
            g,
            "Warning",
            vec!["7601"],
            "groupMemberships[0].person.id",
        ),
        (
            "duties",
            json!({"id": uid(DUTY, 1), "dutyAt": {"id": uid(ORG, 1)}, "dutyRole": "Förskolechef", "startDate": "2020-01-01", "person": {"id": uid(PERSON, 77)}}),
            "Warning",
            vec!["7602"],
            "person.id",
        ),
        (
            "activities",
            json!({"id": uid(ACTIVITY, 1), "displayName": "Lunch", "activityType": "Övrigt", "organisation": {"id": uid(ORG, 1)},
                              "groups": [{"id": uid(GROUP, 1)}], "startDate": "2026-08-15", "calendarEventsRequired": false}),
            "Success",
            vec![],
            "",
        ),
        (
            "activities",
            json!({"id": uid(ACTIVITY, 2), "displayName": "X", "organisation": {"id": uid(ORG, 1)}, "groups": [{"id": uid(GROUP, 5)}]}),
            "Warning",
            vec!["7701", "7701", "7603"],
            "Activity.startDate",
        ),
        (
            "organisations",
            json!({"id": uid(ORG, 1), "displayName": "Förskolan", "organisationType": "Skolenhet"}),
            "Success",
            vec![],
            "",
        ),
    ];
    run_cases(&s, &c, KEY_GEN, cases).await;
}

#[tokio::test]
async fn update_if_exists_put_and_delete() {
    let s = start();
    let c = common::client();
    let rs = push(
        &s,
        &c,
        KEY_DNP,
        "POST",
        "persons/bulk",
        vec![person(1), person(2)],
    )
    .await;
    assert_eq!(statuses(&rs), vec!["Success", "Success"]);
    // updateIfExists=false (default): existing ids are item errors (409); nothing changes.
    let changed = with(person(1), "givenName", json!("Ändrad"));
    let rs = push(
        &s,
        &c,
        KEY_DNP,
        "POST",
        "persons/bulk",
        vec![changed.clone(), person(3)],
    )
    .await;
    assert_eq!(statuses(&rs), vec!["Error", "Success"]);
    assert_eq!(rs[0]["response"]["statusCode"], 409);
    assert_eq!(rs[0]["response"]["errors"][0]["id"], "7020");
    let rs = push(
        &s,
        &c,
        KEY_DNP,
        "POST",
        "persons/bulk?updateIfExists=false",
        vec![changed.clone()],
    )
    .await;
    assert_eq!(rs[0]["response"]["statusCode"], 409);
    let (_, v, _) = call(
        &c,
        "GET",
        &s.url(&format!("/provisioning/v1/persons/{}", uid(PERSON, 1))),
        Some(KEY_DNP),
        None,
    )
    .await;
    assert_eq!(v["givenName"], "Kim1");
    // updateIfExists=true: upsert.
    let rs = push(
        &s,
        &c,
        KEY_DNP,
        "POST",
        "persons/bulk?updateIfExists=true",
        vec![changed.clone(), person(4)],
    )
    .await;
    assert_eq!(statuses(&rs), vec!["Success", "Success"]);
    assert_eq!(rs[0]["response"]["statusCode"], 200);
    assert!(rs[0]["response"].get("location").is_none());
    assert_eq!(rs[1]["response"]["statusCode"], 201);
    let (_, v, _) = call(
        &c,
        "GET",
        &s.url(&format!("/provisioning/v1/persons/{}", uid(PERSON, 1))),
        Some(KEY_DNP),
        None,
    )
    .await;
    assert_eq!(v["givenName"], "Ändrad");
    // A bad updateIfExists is refused synchronously.
    let (st, v, _) = call(
        &c,
        "POST",
        &s.url("/provisioning/v1/persons/bulk?updateIfExists=ja"),
        Some(KEY_DNP),
        Some(json!({"data": [person(5)]})),
    )
    .await;
    assert_eq!((st, v[0]["id"].as_str()), (400, Some("2025")));
    // PUT updates existing ids; an unknown id is an item error (404).
    let rs = push(
        &s,
        &c,
        KEY_DNP,
        "PUT",
        "persons/bulk",
        vec![with(person(2), "familyName", json!("Nytt")), person(6)],
    )
    .await;
    assert_eq!(statuses(&rs), vec!["Success", "Error"]);
    assert_eq!(rs[0]["response"]["statusCode"], 200);
    assert_eq!(rs[1]["response"]["statusCode"], 404);
    assert_eq!(
        call(
            &c,
            "GET",
            &s.url(&format!("/provisioning/v1/persons/{}", uid(PERSON, 6))),
            Some(KEY_DNP),
            None
        )
        .await
        .0,
        404
    );
    // Delete: bare ids; unknown → 404 item error; malformed → 400 item error.
    let rs = push(
        &s,
        &c,
        KEY_DNP,
        "POST",
        "persons/bulk/delete",
        vec![json!(uid(PERSON, 1)), json!(uid(PERSON, 6)), json!("x")],
    )
    .await;
    assert_eq!(statuses(&rs), vec!["Success", "Error", "Error"]);
    assert_eq!(rs[0]["response"]["statusCode"], 204);
    assert_eq!(rs[1]["response"]["statusCode"], 404);
    assert_eq!(rs[2]["response"]["statusCode"], 400);
    assert_eq!(
        call(
            &c,
            "GET",
            &s.url(&format!("/provisioning/v1/persons/{}", uid(PERSON, 1))),
            Some(KEY_DNP),
            None
        )
        .await
        .0,
        404
    );
    // The EPPN of a deleted person is free again.
    let rs = push(
        &s,
        &c,
        KEY_DNP,
        "POST",
        "persons/bulk",
        vec![with(
            person(7),
            "eduPersonPrincipalNames",
            json!(["u00001z@edu.kommunen.se"]),
        )],
    )
    .await;
    assert_eq!(statuses(&rs), vec!["Success"]);
    // showOnlyError lists only the errors of a job.
    let job = submit(
        &s,
        &c,
        KEY_DNP,
        "POST",
        "persons/bulk/delete",
        vec![json!(uid(PERSON, 2)), json!(uid(PERSON, 2))],
    )
    .await;
    wait(&s, &c, KEY_DNP, "persons", &job).await;
    let (_, v, _) = call(
        &c,
        "GET",
        &s.url(&format!(
            "/provisioning/v1/persons/bulk/jobs/{job}?showOnlyError=true"
        )),
        Some(KEY_DNP),
        None,
    )
    .await;
    assert_eq!(v["responses"].as_array().unwrap().len(), 1);
    assert_eq!(v["responses"][0]["response"]["status"], "Error");
}

#[tokio::test]
async fn envelope_and_request_errors_are_log_entry_arrays() {
    let s = Server::start_with(&tenants(), "[ss12000]\nmax_body_bytes = 4096\n");
    let c = common::client();
    let url = s.url("/provisioning/v1/persons/bulk");
    let raw = |body: &str, ct: &str, key: Option<&str>| {
        let mut r = c
            .post(&url)
            .header("Content-Type", ct)
            .body(body.to_owned());
        if let Some(k) = key {
            r = r.header("X-API-Key", k);
        }
        r.send()
    };
    let check = |st: u16, v: &Value, want: (u16, &str)| {
        assert_eq!(st, want.0, "{v}");
        assert!(v.is_array(), "{v}");
        assert_eq!(v[0]["id"], want.1, "{v}");
        assert_eq!(v[0]["statusCode"], want.0);
        assert_eq!(v[0]["severityLevel"], "Error");
    };
    for (body, ct, key, want) in [
        (
            "{\"data\": [",
            "application/json",
            Some(KEY_DNP),
            (400, "2000"),
        ),
        (
            "{\"items\": []}",
            "application/json",
            Some(KEY_DNP),
            (400, "2000"),
        ),
        (
            "{\"data\": []}",
            "application/json",
            Some(KEY_DNP),
            (400, "2000"),
        ),
        (
            "{\"data\": [{}]}",
            "text/plain",
            Some(KEY_DNP),
            (415, "2001"),
        ),
        ("{\"data\": [{}]}", "application/json", None, (403, "5002")),
        (
            "{\"data\": [{}]}",
            "application/json",
            Some("wrong-key"),
            (403, "5002"),
        ),
    ] {
        let (st, v) = common::json(raw(body, ct, key).await.unwrap()).await;
        check(st, &v, want);
    }
    let big = json!({"data": (0..40).map(person).collect::<Vec<_>>()}).to_string();
    assert!(big.len() > 4096);
    let (st, v) = common::json(raw(&big, "application/json", Some(KEY_DNP)).await.unwrap()).await;
    check(st, &v, (413, "5020"));
    let (st, v, _) = call(
        &c,
        "POST",
        &s.url("/provisioning/v1/persons/bulk/delete"),
        Some(KEY_DNP),
        Some(json!({"data": [{"id": uid(PERSON, 1)}]})),
    )
    .await;
    check(st, &v, (400, "2000"));
    let (st, v, _) = call(
        &c,
        "GET",
        &s.url("/provisioning/v1/persons/bulk/jobs/nope"),
        Some(KEY_DNP),
        None,
    )
    .await;
    check(st, &v, (400, "2011"));
    let (st, v, _) = call(
        &c,
        "GET",
        &s.url(&format!("/provisioning/v1/persons/bulk/jobs/{}", uid(1, 1))),
        Some(KEY_DNP),
        None,
    )
    .await;
    check(st, &v, (404, "4001"));
    let (st, v, _) = call(
        &c,
        "GET",
        &s.url("/provisioning/v1/persons/nope"),
        Some(KEY_DNP),
        None,
    )
    .await;
    check(st, &v, (400, "2011"));
    let (st, v, _) = call(
        &c,
        "POST",
        &s.url("/provisioning/v1/duties/lookup"),
        Some(KEY_DNP),
        Some(json!({"ids": ["x"]})),
    )
    .await;
    check(st, &v, (400, "2010"));
    let (st, v, _) = call(
        &c,
        "POST",
        &s.url("/provisioning/v1/duties/lookup"),
        Some(KEY_DNP),
        Some(json!({"civicNos": []})),
    )
    .await;
    check(st, &v, (400, "2010"));
    let (st, _, _) = call(
        &c,
        "GET",
        &s.url("/provisioning/v1/pupils"),
        Some(KEY_DNP),
        None,
    )
    .await;
    assert_eq!(st, 404);
    // A job is found only under its own type.
    let job = submit(&s, &c, KEY_DNP, "POST", "persons/bulk", vec![person(1)]).await;
    wait(&s, &c, KEY_DNP, "persons", &job).await;
    let (st, v, _) = call(
        &c,
        "GET",
        &s.url(&format!("/provisioning/v1/groups/bulk/jobs/{job}")),
        Some(KEY_DNP),
        None,
    )
    .await;
    check(st, &v, (404, "4001"));
    // /alive needs credentials like every operation.
    assert_eq!(
        call(
            &c,
            "GET",
            &s.url("/provisioning/v1/alive"),
            Some(KEY_DNP),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(&c, "GET", &s.url("/provisioning/v1/alive"), None, None)
            .await
            .0,
        403
    );
    let (st, v, _) = call(
        &c,
        "GET",
        &s.url("/provisioning/v1/openapi.yaml"),
        None,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert!(
        v.as_str()
            .unwrap()
            .contains("/{type}/bulk/jobs/{id}/isCompleted")
            || v.as_str().unwrap().contains("isCompleted")
    );
}

#[tokio::test]
async fn page_tokens_cannot_be_tampered_with_or_combined() {
    let s = start();
    let c = common::client();
    push(
        &s,
        &c,
        KEY_DNP,
        "POST",
        "persons/bulk",
        (0..5).map(person).collect(),
    )
    .await;
    push(
        &s,
        &c,
        KEY_GEN,
        "POST",
        "persons/bulk",
        vec![json!({"id": uid(PERSON, 900), "givenName": "A", "familyName": "B"})],
    )
    .await;
    let (st, v, _) = call(
        &c,
        "GET",
        &s.url("/provisioning/v1/persons?limit=2"),
        Some(KEY_DNP),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let token = v["pageToken"].as_str().unwrap().to_owned();
    let (st, v, _) = call(
        &c,
        "GET",
        &s.url(&format!(
            "/provisioning/v1/persons?pageToken={token}&limit=2"
        )),
        Some(KEY_DNP),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"][0]["id"], uid(PERSON, 2));
    let bad = |t: &str| t.to_owned();
    let mut flipped: Vec<char> = token.chars().collect();
    flipped[5] = if flipped[5] == 'a' { 'b' } else { 'a' };
    let flipped: String = flipped.into_iter().collect();
    for (who, q) in [
        (KEY_DNP, format!("pageToken={}", bad(&flipped))),
        (KEY_DNP, format!("pageToken={}x", token)),
        (KEY_DNP, "pageToken=eyJ0IjoiYSJ9.AAAA".to_owned()),
        (
            KEY_DNP,
            format!("pageToken={token}&meta.modified.after=2020-01-01T00:00:00Z"),
        ),
        (KEY_DNP, format!("pageToken={token}&limit=0")),
        (KEY_DNP, "limit=101".to_owned()),
        (KEY_DNP, "limit=abc".to_owned()),
        (KEY_DNP, "sortkey=id".to_owned()),
        (KEY_GEN, format!("pageToken={token}")),
    ] {
        let (st, v, _) = call(
            &c,
            "GET",
            &s.url(&format!("/provisioning/v1/persons?{q}")),
            Some(who),
            None,
        )
        .await;
        assert_eq!(st, 400, "{q}: {v}");
        assert!(v.is_array() && v[0]["id"].is_string(), "{v}");
    }
    // A token is bound to its resource type.
    let (st, _, _) = call(
        &c,
        "GET",
        &s.url(&format!("/provisioning/v1/groups?pageToken={token}")),
        Some(KEY_DNP),
        None,
    )
    .await;
    assert_eq!(st, 400);
}

#[tokio::test]
async fn tenants_never_see_each_others_objects_or_jobs() {
    let s = start();
    let c = common::client();
    let job = submit(&s, &c, KEY_DNP, "POST", "persons/bulk", vec![person(1)]).await;
    wait(&s, &c, KEY_DNP, "persons", &job).await;
    let other = |path: String| {
        let c = c.clone();
        let url = s.url(&path);
        async move { call(&c, "GET", &url, Some(KEY_GEN), None).await }
    };
    assert_eq!(
        other(format!("/provisioning/v1/persons/{}", uid(PERSON, 1)))
            .await
            .0,
        404
    );
    assert_eq!(
        other(format!("/provisioning/v1/persons/bulk/jobs/{job}"))
            .await
            .0,
        404
    );
    assert_eq!(
        other(format!(
            "/provisioning/v1/persons/bulk/jobs/{job}/isCompleted"
        ))
        .await
        .0,
        404
    );
    let (_, v, _) = other("/provisioning/v1/persons".into()).await;
    assert_eq!(v["data"], json!([]));
    let (st, v, _) = call(&c, "POST", &s.url("/provisioning/v1/persons/lookup"), Some(KEY_GEN),
        Some(json!({"ids": [uid(PERSON, 1)], "civicNos": [civic(1)], "eduPersonPrincipalNames": ["u00001z@edu.kommunen.se"]}))).await;
    assert_eq!((st, v), (200, json!([])));
    // Deleting another tenant's id is a per-item 404; the object survives.
    let rs = push(
        &s,
        &c,
        KEY_GEN,
        "POST",
        "persons/bulk/delete",
        vec![json!(uid(PERSON, 1))],
    )
    .await;
    assert_eq!(rs[0]["response"]["statusCode"], 404);
    // The other tenant cannot take the EPPN either (global uniqueness): 409 per item.
    let rs = push(
        &s,
        &c,
        KEY_GEN,
        "POST",
        "persons/bulk",
        vec![with(
            person(2),
            "eduPersonPrincipalNames",
            json!(["U00001Z@edu.kommunen.se"]),
        )],
    )
    .await;
    assert_eq!(rs[0]["response"]["statusCode"], 409);
    assert_eq!(rs[0]["response"]["errors"][0]["id"], "7021");
    assert_eq!(
        call(
            &c,
            "GET",
            &s.url(&format!("/provisioning/v1/persons/{}", uid(PERSON, 1))),
            Some(KEY_DNP),
            None
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn a_kill_mid_job_loses_no_item_and_applies_none_twice() {
    let s0 = Server::start_with(
        &tenants(),
        "[ss12000]\nmax_body_bytes = 8388608\njob_concurrency = 8\n",
    );
    let mut s = s0;
    let c = common::client();
    const N: usize = 4000;
    let data: Vec<Value> = (0..N)
        .map(|i| json!({"id": uid(PERSON, i), "givenName": "A", "familyName": "B",
                         "eduPersonPrincipalNames": [format!("k{i}@edu.kommunen.se")], "civicNo": {"value": civic(i)}}))
        .collect();
    let job = submit(&s, &c, KEY_DNP, "POST", "persons/bulk", data).await;
    // Kill as soon as some results are recorded (or at once if the job is still queued).
    let status_url = s.url(&format!("/provisioning/v1/persons/bulk/jobs/{job}"));
    let mut saw_partial = false;
    for _ in 0..400 {
        let (_, v, _) = call(&c, "GET", &status_url, Some(KEY_DNP), None).await;
        let done = statuses(v["responses"].as_array().unwrap())
            .iter()
            .filter(|s| *s != "Pending")
            .count();
        if done > 0 && done < N {
            saw_partial = true;
            break;
        }
        if done == N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.restart_after_kill();
    let v = wait(&s, &c, KEY_DNP, "persons", &job).await;
    let rs = v["responses"].as_array().unwrap();
    assert_eq!(rs.len(), N);
    for (i, r) in rs.iter().enumerate() {
        assert_eq!(r["id"], uid(PERSON, i));
        // An item applied twice would report 409 (the create would find itself).
        assert_eq!(r["response"]["status"], "Success", "{r}");
        assert_eq!(r["response"]["statusCode"], 201, "{r}");
    }
    let mut n = 0;
    let mut url = s.url("/provisioning/v1/persons?limit=100");
    loop {
        let (_, v, _) = call(&c, "GET", &url, Some(KEY_DNP), None).await;
        n += v["data"].as_array().unwrap().len();
        match v["pageToken"].as_str() {
            Some(t) => url = s.url(&format!("/provisioning/v1/persons?limit=100&pageToken={t}")),
            None => break,
        }
    }
    assert_eq!(n, N);
    eprintln!("killed with a partly processed job: {saw_partial}");
}

#[tokio::test]
async fn egil_and_ss12000_share_a_person_only_by_equal_ids() {
    let s = start();
    let c = common::client();
    let id = "39732dea-e4a6-4d8f-96de-925a679c56ff";
    let user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:scim:schemas:extension:sis:school:1.0:User"],
        "externalId": id.to_uppercase(), "userName": "stjo@skola.kommunen.se", "displayName": "Stefan Johansson",
        "name": {"familyName": "Johansson", "givenName": "Stefan"},
        "urn:scim:schemas:extension:sis:school:1.0:User": {"civicNo": "200406042903"}
    });
    let r = common::send(
        &c,
        "POST",
        &s.url("/egil/Users"),
        Some(KEY_GEN),
        Some(common::SCIM),
        user.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status().as_u16(), 201);
    // Same id: the same account, replaced by the 2020 push.
    let p = json!({"id": id, "givenName": "Stefan", "familyName": "Johansson-Ek", "eduPersonPrincipalNames": ["stjo@skola.kommunen.se"]});
    let rs = push(
        &s,
        &c,
        KEY_GEN,
        "POST",
        "persons/bulk?updateIfExists=true",
        vec![p],
    )
    .await;
    assert_eq!(rs[0]["response"]["statusCode"], 200, "{rs:?}");
    let (_, v, _) = call(
        &c,
        "GET",
        &s.url(&format!("/provisioning/v1/persons/{id}")),
        Some(KEY_GEN),
        None,
    )
    .await;
    assert_eq!(v["familyName"], "Johansson-Ek");
    // Another id with the same EPPN: another person, refused.
    let other = json!({"id": uid(PERSON, 1), "givenName": "S", "familyName": "J", "eduPersonPrincipalNames": ["STJO@skola.kommunen.se"]});
    let rs = push(&s, &c, KEY_GEN, "POST", "persons/bulk", vec![other]).await;
    assert_eq!(rs[0]["response"]["statusCode"], 409);
    assert_eq!(rs[0]["response"]["errors"][0]["id"], "7021");
}

/// A person provisioned through SS12000:2020 resolves in the login API with their groups,
/// the activity and its national test, and the teacher sees the same activity.
#[tokio::test]
async fn the_login_api_resolves_a_person_pushed_this_way() {
    const PRODUCT: &str = "key-for-the-test-platform-pppppppp";
    let config = format!(
        "{}\n[[products]]\nid = \"provplattform\"\nname = \"Provplattformen\"\napi_keys = [\"{}\"]\n",
        tenants(),
        hash(PRODUCT)
    );
    let s = Server::start_with(&config, "");
    let c = Client::new();
    push_data_set(&s, &c, KEY_DNP).await;
    let resolve = |eppn: String| {
        let c = c.clone();
        let url = s.url("/login/v1/resolve");
        async move {
            let (st, v, _) = call(
                &c,
                "POST",
                &url,
                Some(PRODUCT),
                Some(json!({ "eppn": eppn })),
            )
            .await;
            (st, v)
        }
    };
    // Pupil 0: class G0 and teaching group G18, whose activity 0 is an occasion of
    // national test 0, taught by duty 0 (person 450).
    let (st, a) = resolve("U00000Z@edu.kommunen.se".into()).await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["huvudman"]["tenant_id"], "dnpkommun");
    assert_eq!(a["person"]["source_id"], uid(PERSON, 0));
    assert_eq!(a["roles"], json!(["pupil"]));
    assert_eq!(a["last_provisioned"]["protocol"], "ss12000_push");
    let mut groups: Vec<&str> = a["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    groups.sort();
    assert_eq!(groups, ["G0", "G18"]);
    let acts = a["activities"].as_array().unwrap();
    assert_eq!(acts.len(), 1, "{a}");
    assert_eq!(acts[0]["name"], "MA åk 6 grupp 0");
    assert_eq!(acts[0]["parent_activity"], uid(NATIONAL_TEST, 0).as_str());
    assert_eq!(a["warnings"], json!([]));
    // The teacher of that activity.
    let (st, t) = resolve("u00450z@edu.kommunen.se".into()).await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["roles"], json!(["teacher"]));
    let tacts = t["activities"].as_array().unwrap();
    assert_eq!(tacts.len(), 1, "{t}");
    assert_eq!(tacts[0]["parent_activity"], uid(NATIONAL_TEST, 0).as_str());
}

/// eduID: a shared scope that belongs to no school owner. A person pushed with an eduID
/// external identifier resolves only through that identifier and its context, never by
/// the scope of the EPPN, and only when eduID's IdP asserts it; an identifier two school
/// owners both carry is ambiguous.
#[tokio::test]
async fn eduid_logins_match_only_through_external_identifiers() {
    const PRODUCT: &str = "key-for-the-test-platform-pppppppp";
    const EDUID: &str = "https://eduid.se";
    const IDP_DNP: &str = "https://idp.dnpkommun.se/idp";
    const IDP_GEN: &str = "https://idp.generisk.se/idp";
    let config = tenants()
        .replace(
            "ss12000_profile = \"dnp\"",
            &format!("ss12000_profile = \"dnp\"\nidp_entity_ids = [\"{IDP_DNP}\"]"),
        )
        .replace(
            "name = \"Generiska kommunen\"",
            &format!("name = \"Generiska kommunen\"\nidp_entity_ids = [\"{IDP_GEN}\"]"),
        )
        + &format!(
            "\n[[products]]\nid = \"provplattform\"\nname = \"Provplattformen\"\napi_keys = [\"{}\"]\n",
            hash(PRODUCT)
        );
    let s = Server::start_with(&config, "");
    let c = Client::new();
    let staff = |i: usize, eduid: &str| {
        let mut p = person(i);
        p["externalIdentifiers"] = json!([{"value": eduid, "context": EDUID}]);
        p
    };
    let rs = push(
        &s,
        &c,
        KEY_DNP,
        "POST",
        "persons/bulk",
        vec![
            staff(460, "anna.larsson@eduid.se"),
            staff(461, "delad@eduid.se"),
        ],
    )
    .await;
    assert_eq!(statuses(&rs), ["Success", "Success"], "{rs:?}");
    let mut other = staff(462, "delad@eduid.se");
    other["eduPersonPrincipalNames"] = json!([]);
    let rs = push(&s, &c, KEY_GEN, "POST", "persons/bulk", vec![other]).await;
    assert_eq!(statuses(&rs), ["Success"], "{rs:?}");

    let resolve = |body: Value| {
        let c = c.clone();
        let url = s.url("/login/v1/resolve");
        async move {
            let (st, v, _) = call(&c, "POST", &url, Some(PRODUCT), Some(body)).await;
            (st, v)
        }
    };
    let ext = |v: &str| json!({"value": v, "context": EDUID});
    // The eduID EPPN alone: eduid.se is nobody's scope.
    let (st, v) = resolve(json!({"eppn": "anna.larsson@eduid.se"})).await;
    assert_eq!(
        (st, v["reason"].as_str()),
        (404, Some("scope_mismatch")),
        "{v}"
    );
    // Through the identifier and its context, asserted by eduID's IdP.
    let (st, v) = resolve(json!({
        "eppn": "anna.larsson@eduid.se",
        "idp_entity_id": "https://login.idp.eduid.se/idp.xml",
        "external_id": ext("anna.larsson@eduid.se"),
    }))
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["huvudman"]["tenant_id"], "dnpkommun");
    assert_eq!(v["person"]["source_id"], uid(PERSON, 460));
    // The same value in another context is another identifier.
    let (st, v) = resolve(json!({"external_id": {"value": "anna.larsson@eduid.se", "context": "https://example.org"}})).await;
    assert_eq!((st, v["reason"].as_str()), (404, Some("unknown")), "{v}");
    // Only eduID's IdP asserts eduID identifiers (login.external_id_idps): not the
    // school owner's own IdP, not another's, not an unknown one, not none.
    for idp in [
        Some(IDP_DNP),
        Some(IDP_GEN),
        Some("https://evil.example/idp"),
        None,
    ] {
        let mut body = json!({"external_id": ext("anna.larsson@eduid.se")});
        if let Some(i) = idp {
            body["idp_entity_id"] = json!(i);
        }
        let (st, v) = resolve(body).await;
        assert_eq!(
            (st, v["reason"].as_str()),
            (404, Some("idp_mismatch")),
            "{idp:?}: {v}"
        );
    }
    // Carried by persons of two school owners: no guess.
    let (st, v) = resolve(json!({"external_id": ext("delad@eduid.se")})).await;
    assert_eq!((st, v["reason"].as_str()), (404, Some("ambiguous")), "{v}");
    assert!(v.get("huvudman").is_none(), "{v}");
}
