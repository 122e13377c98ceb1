//! Publishing over HTTP: Mercure form fields, JSON objects and arrays, the path form, and
//! publisher-supplied ids. What was stored is checked through the polling endpoint.

use crate::common::{ids_of, spawn_hub};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_publish_answers_the_id_as_text_with_the_discovery_link() {
    let hub = spawn_hub().await;
    let reply = hub
        .post_form(&[("topic", "books/1"), ("data", "hello world & more")])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(
        reply.header("content-type").starts_with("text/plain"),
        "content-type {:?}",
        reply.header("content-type")
    );
    let link = reply.header("link");
    assert!(
        link.contains("rel=\"mercure\"") && link.contains("/.well-known/mercure"),
        "link {link:?}"
    );
    let id = reply.body.clone();
    assert!(!id.is_empty() && !id.contains('\n'), "id {id:?}");

    let stored = hub.history("topic=books/1").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], id.as_str());
    assert_eq!(stored[0]["data"], "hello world & more");
    assert_eq!(stored[0]["topics"], json!(["books/1"]));
    assert_eq!(stored[0]["type"], json!(null));
    assert_eq!(stored[0]["private"], json!(false));

    // Hub-made ids are unique.
    let second = hub.publish("books/1", "again").await;
    assert_ne!(second, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_fields_type_retry_alternate_topics_and_unknown_fields() {
    let hub = spawn_hub().await;
    // No Content-Type at all is read as a form, as Mercure publishers send it.
    let bare = hub
        .post(
            "/.well-known/mercure",
            None,
            "topic=bare&data=no+content+type",
        )
        .await;
    assert_eq!(bare.status, StatusCode::OK, "{}", bare.body);
    // A charset parameter does not change the media type.
    let with_charset = hub
        .post(
            "/.well-known/mercure",
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
            "topic=bare&data=charset",
        )
        .await;
    assert_eq!(with_charset.status, StatusCode::OK, "{}", with_charset.body);

    let id = hub
        .publish_fields(&[
            ("topic", "orders/7"),
            ("topic", "customers/3"),
            ("data", "{\"state\":\"paid\"}"),
            ("type", "order.paid"),
            ("retry", "2500"),
            ("unknown-field", "ignored as Mercure asks"),
        ])
        .await;
    let stored = hub.history("topic=customers/3").await;
    assert_eq!(stored.len(), 1, "an alternate topic selects the event");
    let e = &stored[0];
    assert_eq!(e["id"], id.as_str());
    assert_eq!(e["topics"], json!(["orders/7", "customers/3"]));
    assert_eq!(e["type"], "order.paid");
    assert_eq!(e["retry"], 2500);
    assert_eq!(e["data"], "{\"state\":\"paid\"}");
    assert!(e["stored_at"].as_str().is_some_and(|s| s.ends_with('Z')));

    assert_eq!(hub.history("topic=bare").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_object_answers_id_and_any_data_value_is_serialized() {
    let hub = spawn_hub().await;
    let reply = hub
        .post_json(
            "/.well-known/mercure",
            &json!({"topic": "jobs/1", "type": "status", "data": {"state": "done", "n": [1, 2]}, "retry": 100}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.header("link").contains("rel=\"mercure\""));
    let body = reply.json();
    let id = body["id"].as_str().expect("an id").to_owned();
    assert!(
        body.get("ids").is_none(),
        "one object answers one id: {body}"
    );

    let string_data = hub
        .publish_json(&json!({"topics": ["jobs/1", "all-jobs"], "data": "plain text"}))
        .await;
    let no_data = hub.publish_json(&json!({"topic": ["jobs/1"]})).await;

    let stored = hub.history("topic=jobs/1").await;
    assert_eq!(ids_of(&stored), [id.clone(), string_data, no_data]);
    let data: serde_json::Value =
        serde_json::from_str(stored[0]["data"].as_str().unwrap()).expect("data is JSON text");
    assert_eq!(data, json!({"state": "done", "n": [1, 2]}));
    assert_eq!(stored[0]["type"], "status");
    assert_eq!(stored[0]["retry"], 100);
    assert_eq!(stored[1]["data"], "plain text");
    assert_eq!(stored[1]["topics"], json!(["jobs/1", "all-jobs"]));
    assert_eq!(stored[2]["data"], "");
    // Content-Type parameters are allowed on JSON too.
    let charset = hub
        .post(
            "/.well-known/mercure",
            Some("Application/JSON; charset=utf-8"),
            json!({"topic": "jobs/2"}).to_string(),
        )
        .await;
    assert_eq!(charset.status, StatusCode::OK, "{}", charset.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_array_is_published_in_order_and_answers_all_ids() {
    let hub = spawn_hub().await;
    let before = hub.publish("batch", "before").await;
    let reply = hub
        .post_json(
            "/.well-known/mercure",
            &json!([
                {"topic": "batch", "data": "one"},
                {"topic": "batch", "data": "two", "id": "batch-two"},
                {"topics": ["other", "batch"], "data": "three", "type": "t"},
            ]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let ids: Vec<String> = reply.json()["ids"]
        .as_array()
        .expect("an array answers ids")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[1], "batch-two");
    let after = hub.publish("batch", "after").await;

    let stored = hub.history("topic=batch").await;
    let want: Vec<String> = [before].into_iter().chain(ids).chain([after]).collect();
    assert_eq!(
        ids_of(&stored),
        want,
        "the batch is contiguous and in order"
    );
    let data: Vec<&str> = stored.iter().map(|e| e["data"].as_str().unwrap()).collect();
    assert_eq!(data, ["before", "one", "two", "three", "after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_is_atomic() {
    let hub = spawn_hub().await;
    hub.publish_fields(&[("topic", "atomic"), ("id", "taken"), ("data", "first")])
        .await;
    // A duplicate of a stored id in the middle of a batch: nothing of the batch is stored.
    let reply = hub
        .post_json(
            "/.well-known/mercure",
            &json!([
                {"topic": "atomic", "id": "fresh-1", "data": "x"},
                {"topic": "atomic", "id": "taken", "data": "y"},
                {"topic": "atomic", "id": "fresh-2", "data": "z"},
            ]),
        )
        .await;
    reply.assert_refused(409, "batch with a stored id");
    // A duplicate inside the batch itself.
    let reply = hub
        .post_json(
            "/.well-known/mercure",
            &json!([
                {"topic": "atomic", "id": "twice", "data": "x"},
                {"topic": "atomic", "id": "twice", "data": "y"},
            ]),
        )
        .await;
    reply.assert_refused(409, "batch repeating an id");
    // An invalid event anywhere refuses the whole batch.
    let reply = hub
        .post_json(
            "/.well-known/mercure",
            &json!([{"topic": "atomic", "id": "fresh-3"}, {"data": "no topic"}]),
        )
        .await;
    reply.assert_refused(400, "batch with an invalid event");

    let stored = hub.history("topic=*").await;
    assert_eq!(ids_of(&stored), ["taken"], "only the first event is stored");
    assert_eq!(stored[0]["data"], "first");
    // The refused ids are still free.
    hub.publish_fields(&[("topic", "atomic"), ("id", "fresh-1")])
        .await;
    hub.publish_fields(&[("topic", "atomic"), ("id", "twice")])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_form_publishes_to_the_topic_named_by_the_path() {
    let hub = spawn_hub().await;
    let reply = hub
        .post_json(
            "/events/jobs/42",
            &json!({"type": "status", "data": {"state": "running"}, "id": "job-42-running"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json(), json!({"id": "job-42-running"}));
    assert!(reply.header("link").contains("rel=\"mercure\""));

    let form = hub
        .post(
            "/events/jobs/42",
            Some("application/x-www-form-urlencoded"),
            "type=status&data=done",
        )
        .await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    let form_id = form.json()["id"].as_str().unwrap().to_owned();

    let empty = hub.post("/events/jobs/42", None, "").await;
    assert_eq!(
        empty.status,
        StatusCode::OK,
        "an empty body is an event without data"
    );
    let empty_id = empty.json()["id"].as_str().unwrap().to_owned();

    let stored = hub.history("topic=jobs/42").await;
    assert_eq!(
        ids_of(&stored),
        ["job-42-running".to_owned(), form_id, empty_id]
    );
    assert_eq!(stored[0]["topics"], json!(["jobs/42"]));
    assert_eq!(stored[0]["data"], "{\"state\":\"running\"}");
    assert_eq!(stored[1]["type"], "status");
    assert_eq!(stored[1]["data"], "done");
    assert_eq!(stored[2]["data"], "");
    assert!(hub.history("topic=jobs/43").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_ids_are_kept_and_a_duplicate_is_refused_without_storing() {
    let hub = spawn_hub().await;
    let id = hub
        .publish_fields(&[
            ("topic", "dup"),
            ("id", "order-1:created"),
            ("data", "original"),
        ])
        .await;
    assert_eq!(id, "order-1:created");

    let form = hub
        .post_form(&[
            ("topic", "dup"),
            ("id", "order-1:created"),
            ("data", "impostor"),
        ])
        .await;
    let reason = form.assert_refused(409, "form duplicate");
    assert!(reason.contains("order-1:created"), "{reason}");
    let json = hub
        .post_json(
            "/.well-known/mercure",
            &json!({"topic": "elsewhere", "id": "order-1:created", "data": "impostor"}),
        )
        .await;
    json.assert_refused(409, "JSON duplicate");
    let path = hub
        .post_json(
            "/events/dup",
            &json!({"id": "order-1:created", "data": "impostor"}),
        )
        .await;
    path.assert_refused(409, "path duplicate");

    let stored = hub.history("topic=*").await;
    assert_eq!(ids_of(&stored), ["order-1:created"]);
    assert_eq!(stored[0]["data"], "original");
    let stats = hub.stats().await;
    assert_eq!(stats["events_stored"], 1, "{stats}");
    assert_eq!(stats["published"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_events_are_stored_but_not_shown_to_anonymous_readers() {
    let hub = spawn_hub().await;
    let mut sub = hub.subscribe("topic=secret").await;
    hub.publish_fields(&[("topic", "secret"), ("data", "hidden"), ("private", "on")])
        .await;
    let public = hub.publish("secret", "visible").await;
    assert_eq!(
        sub.next().await.id,
        public,
        "the private event is not streamed"
    );
    assert_eq!(ids_of(&hub.history("topic=secret").await), [public]);
    assert_eq!(hub.stats().await["events_stored"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_retry_is_stored_exactly() {
    let hub = spawn_hub().await;
    let reply = hub
        .post_form(&[("topic", "r"), ("retry", "18446744073709551615")])
        .await;
    // u64::MAX is a valid retry: stored and sent exactly.
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let stored = hub.history("topic=r").await;
    assert_eq!(
        stored[0]["retry"].as_u64(),
        Some(u64::MAX),
        "the acknowledged retry was changed"
    );
}
