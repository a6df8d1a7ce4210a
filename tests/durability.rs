//! A 2xx means the data is on disk: kill -9 the server right after a burst of
//! acknowledged writes, restart it on the same data directory and find every object.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};

use common::*;

fn user(i: usize) -> (String, Vec<u8>) {
    let id = format!("00000000-0000-4000-8000-{i:012}");
    let body = format!(
        "\n{{\n\t\"schemas\": [\"urn:ietf:params:scim:schemas:core:2.0:User\"],\n\t\"externalId\": \"{id}\",\n\t\"userName\": \"u{i}@skola.kommunen.se\",\n\t\"displayName\": \"Elev {i}\",\n\t\"name\": {{\"familyName\": \"E\", \"givenName\": \"U\"}}\n}}"
    );
    (id, body.into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9() {
    survives_kill_9(Server::start()).await;
}

/// The same on the redb engine: its group commit acknowledges only committed, fsynced
/// rounds too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9_on_redb() {
    let s = Server::start_with_server_keys("engine = \"redb\"");
    assert!(s.data_dir().join("skolgrind.redb").exists());
    survives_kill_9(s).await;
}

async fn survives_kill_9(mut s: Server) {
    let c = client();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, acked, next, url) = (c.clone(), acked.clone(), next.clone(), s.url("/egil/Users"));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= 400 {
                    return;
                }
                let (id, body) = user(i);
                let r = send(&c, "POST", &url, Some(KEY_A), Some(SCIM), body).await;
                assert_eq!(r.status(), 201);
                acked.lock().unwrap().push(id);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Also a delete and an update, acknowledged just before the kill.
    let (gone, _) = user(0);
    assert_eq!(
        send(
            &c,
            "DELETE",
            &s.url(&format!("/egil/Users/{gone}")),
            Some(KEY_A),
            None,
            vec![]
        )
        .await
        .status(),
        204
    );
    let (changed, body) = user(1);
    let body = String::from_utf8(body)
        .unwrap()
        .replace("Elev 1\"", "Elev Ett\"")
        .into_bytes();
    assert_eq!(
        send(
            &c,
            "PUT",
            &s.url(&format!("/egil/Users/{changed}")),
            Some(KEY_A),
            Some(SCIM),
            body
        )
        .await
        .status(),
        200
    );

    s.restart_after_kill();

    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 400);
    for id in &acked {
        let r = send(
            &c,
            "GET",
            &s.url(&format!("/egil/Users/{id}")),
            Some(KEY_A),
            None,
            vec![],
        )
        .await;
        let expected = if *id == gone { 404 } else { 200 };
        assert_eq!(r.status(), expected, "{id}");
    }
    let (_, v) = json(
        send(
            &c,
            "GET",
            &s.url(&format!("/egil/Users/{changed}")),
            Some(KEY_A),
            None,
            vec![],
        )
        .await,
    )
    .await;
    assert_eq!(v["displayName"], "Elev Ett");
    let (_, list) =
        json(send(&c, "GET", &s.url("/egil/Users"), Some(KEY_A), None, vec![]).await).await;
    assert_eq!(list["totalResults"], 399);
    // The EPPN index survived too: the deleted user's EPPN is free, the others are held.
    let (st, _) = json(
        send(
            &c,
            "POST",
            &s.url("/egil/Users"),
            Some(KEY_B),
            Some(SCIM),
            user(0).1,
        )
        .await,
    )
    .await;
    assert_eq!(st, 201);
    let (st, _) = json(
        send(
            &c,
            "POST",
            &s.url("/egil/Users"),
            Some(KEY_B),
            Some(SCIM),
            user(2).1,
        )
        .await,
    )
    .await;
    assert_eq!(st, 409);
}

/// The documented way from sled to redb: stop the server, `skolgrind copy-store`, point
/// `server.data_dir` and `server.engine` at the copy. Everything the school owner sent is
/// there and the copy takes writes; pointing redb at the old sled directory is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_copied_to_redb_serves_the_same_data() {
    let mut s = Server::start();
    let c = client();
    assert_eq!(push_fixtures(&s, &c, KEY_A).await, vec![201; 26]);
    // The listing as text, without the (ephemeral) base URL in meta.location.
    let listing = |s: &Server, c: &reqwest::Client| {
        let (url, base) = (s.url("/egil/Users"), s.url(""));
        let c = c.clone();
        async move {
            let r = send(&c, "GET", &url, Some(KEY_A), None, vec![]).await;
            assert_eq!(r.status(), 200);
            r.text().await.unwrap().replace(&base, "BASE")
        }
    };
    let before = listing(&s, &c).await;
    assert!(before.contains("\"totalResults\":7"), "{before}");
    s.kill9();
    let old = s.data_dir();
    let new = old.with_file_name("data-redb");
    let copy = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_skolgrind"))
            .args(["copy-store", "--from-engine", "sled", "--to-engine", "redb"])
            .arg("--from")
            .arg(&old)
            .arg("--to")
            .arg(&new)
            .output()
            .unwrap()
    };
    let out = copy();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("copied "));
    // A second copy into the same directory is refused.
    let again = copy();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a store"));
    let (old_s, new_s) = (old.display().to_string(), new.display().to_string());
    s.start_again_with(|cfg| {
        cfg.replace(
            &format!("data_dir = \"{old_s}\""),
            &format!("data_dir = \"{new_s}\"\nengine = \"redb\""),
        )
    });
    assert_eq!(listing(&s, &c).await, before);
    let (id, body) = user(7);
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
    let r = send(
        &c,
        "GET",
        &s.url(&format!("/egil/Users/{id}")),
        Some(KEY_A),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.status(), 200);
}
