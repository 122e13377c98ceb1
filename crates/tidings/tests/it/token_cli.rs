//! `tidings token` (issue 12): the real binary mints tokens of both Mercure generations from the
//! key and audience the hub reads (`TIDINGS_JWT_KEY`, `TIDINGS_JWT_AUDIENCE`), and one hub
//! accepts them: a draft publisher and a stable-line publisher publish private events, a draft
//! subscriber with a URL pattern and a stable-line subscriber read exactly what they grant.

use std::process::Stdio;

use crate::common::*;
use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::Value;
use tidings::auth::KeyConfig;
use tokio::process::Command;

const KEY: &str = "a development secret, 0123456789abcdef0123456789";
const AUDIENCE: &str = "https://hub.example.com/.well-known/mercure";

/// Runs `tidings token ARGS` with the hub's key and audience in the environment.
async fn token(args: &[&str]) -> Result<String, String> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
    for (name, _) in std::env::vars() {
        if name.starts_with("TIDINGS_") {
            command.env_remove(name);
        }
    }
    command
        .arg("token")
        .args(args)
        .env("TIDINGS_JWT_KEY", KEY)
        .env("TIDINGS_JWT_AUDIENCE", AUDIENCE)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = within(WAIT, "tidings token", command.output())
        .await
        .expect("run tidings token");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap().trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The claims and header of a token, unverified (the hub verifies; this only looks).
fn decode(token: &str) -> (Value, Value) {
    use base64::Engine;
    let part = |i: usize| -> Value {
        let raw = token.split('.').nth(i).expect("three parts");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON")
    };
    (part(0), part(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_tokens_of_both_generations_work_on_one_hub() {
    let hub = spawn_hub_with(|c| {
        let key = KeyConfig {
            algorithm: Algorithm::HS256,
            key: KEY.into(),
            jwks: None,
        };
        c.auth.publisher = Some(key.clone());
        c.auth.subscriber = Some(key);
        c.auth.audience = Some(AUDIENCE.into());
    })
    .await;
    let draft_pub = token(&["--draft", "--publish", "*"]).await.unwrap();
    let (header, claims) = decode(&draft_pub);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(claims["aud"], AUDIENCE);
    assert!(claims["exp"].as_u64().is_some());
    assert_eq!(
        claims["authorization_details"][0]["type"],
        "https://mercure.rocks/authorization-detail"
    );
    let stable_pub = token(&["--publish", "books/{id}"]).await.unwrap();
    let (header, claims) = decode(&stable_pub);
    assert!(header.get("typ").is_none() || header["typ"] == "JWT");
    assert_eq!(claims["mercure"]["publish"][0], "books/{id}");

    let draft_sub = token(&[
        "--draft",
        "--subscribe-urlpattern",
        "https://example.com/books/:id",
        "--subject",
        "reader",
        "--payload",
        r#"{"name":"Reader"}"#,
    ])
    .await
    .unwrap();
    let stable_sub = token(&["--subscribe", "books/{id}", "--expires", "10m"])
        .await
        .unwrap();

    let mut draft_stream = {
        let auth = format!("Bearer {draft_sub}");
        hub.sse(
            "/.well-known/mercure?match_urlpattern=https%3A%2F%2Fexample.com%2Fbooks%2F%3Aid",
            &[("authorization", &auth)],
        )
        .await
    };
    let mut stable_stream = hub
        .sse(
            &format!("/.well-known/mercure?topic=books/{{id}}&authorization={stable_sub}"),
            &[],
        )
        .await;
    for (publisher, topic) in [
        (&draft_pub, "https://example.com/books/1"),
        (&stable_pub, "books/2"),
    ] {
        let reply = hub
            .post_form_as(
                Some(publisher),
                &[("topic", topic), ("data", topic), ("private", "on")],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{topic}: {}", reply.body);
    }
    assert_eq!(
        draft_stream.next().await.data,
        "https://example.com/books/1"
    );
    assert_eq!(stable_stream.next().await.data, "books/2");

    // A stable-line token may not publish outside its selectors.
    let reply = hub
        .post_form_as(Some(&stable_pub), &[("topic", "other")])
        .await;
    reply.assert_refused(403, "outside the minted selectors");
}

#[tokio::test]
async fn bad_token_requests_fail_with_a_reason() {
    let err = token(&["--draft", "--publish", "*", "--expires", "0"])
        .await
        .unwrap_err();
    assert!(err.contains("expire"), "{err}");
    let err = token(&["--payload", "[1]", "--subscribe", "a"])
        .await
        .unwrap_err();
    assert!(err.contains("payload"), "{err}");
    let err = token(&["--publish-urlpattern", "https://x/:id"])
        .await
        .unwrap_err();
    assert!(err.contains("--draft"), "{err}");
    let err = token(&["--jwt-alg", "none", "--publish", "*"])
        .await
        .unwrap_err();
    assert!(err.contains("none"), "{err}");
    // A secret the hub would refuse to verify with is not signed with either.
    let err = token(&["--jwt-key", "short", "--publish", "*"])
        .await
        .unwrap_err();
    assert!(err.contains("32 bytes"), "{err}");
}

/// `--jwt-key @FILE` reads the key as the hub does: a key file's final newline is not part of
/// the secret, so the token verifies on a hub given the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_signs_as_the_hub_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwt.key");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    let hub = spawn_hub_with(|c| {
        c.auth.publisher = Some(KeyConfig {
            algorithm: Algorithm::HS256,
            key: KEY.into(),
            jwks: None,
        });
    })
    .await;
    let key_arg = format!("@{}", path.display());
    let publisher = token(&["--jwt-key", &key_arg, "--publish", "*"])
        .await
        .unwrap();
    let reply = hub
        .post_form_as(Some(&publisher), &[("topic", "books/1"), ("data", "x")])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}
