//! The dashboard's routes: `/` and its embedded assets, their security headers, a clear 404 for
//! an unknown asset, and `/dashboard/info.json` telling the open development mode apart. (The
//! page itself is tested in Chromium: `clients/js/test/e2e/dashboard.test.ts`.)

use crate::common::{spawn_hub, spawn_hub_with};
use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use tidings::auth::KeyConfig;

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_their_headers() {
    let hub = spawn_hub().await;
    let page = hub.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(page.body.contains("/dashboard/app.js"), "{}", page.body);
    let csp = page.header("content-security-policy");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.header("x-content-type-options"), "nosniff");

    for (asset, kind, marker) in [
        ("app.js", "text/javascript", "subscribe"),
        ("chart.js", "text/javascript", "drawRates"),
        ("app.css", "text/css", "#chart"),
        ("tidings.js", "text/javascript", "export {"),
    ] {
        let reply = hub.get(&format!("/dashboard/{asset}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{asset}");
        assert!(reply.header("content-type").starts_with(kind), "{asset}");
        assert!(reply.body.contains(marker), "{asset} lacks {marker}");
    }
    // The page imports every asset it names from the hub itself.
    for asset in ["/dashboard/app.css", "/dashboard/app.js"] {
        assert!(page.body.contains(asset), "{asset}");
    }
}

#[tokio::test]
async fn unknown_assets_and_methods_are_refused_with_a_reason() {
    let hub = spawn_hub().await;
    let reason = hub
        .get("/dashboard/../../Cargo.toml")
        .await
        .assert_refused(404, "a path outside the assets");
    assert!(reason.contains("no such"), "{reason}");
    hub.get("/dashboard/secret.js")
        .await
        .assert_refused(404, "an unknown asset");
    let post = hub.send(hub.client.post(hub.url("/")).body("x")).await;
    post.assert_refused(405, "POST /");
}

#[tokio::test]
async fn info_tells_the_open_mode_from_a_keyed_hub() {
    let open = spawn_hub().await;
    let info = open.get("/dashboard/info.json").await;
    assert_eq!(info.status, StatusCode::OK);
    assert_eq!(info.json()["open"], true, "{}", info.body);
    assert_eq!(info.header("cache-control"), "no-store");

    let keyed = spawn_hub_with(|config| {
        config.auth.publisher = Some(KeyConfig {
            algorithm: Algorithm::HS256,
            key: "a publisher secret of 32 bytes or more, for the test".to_owned(),
            jwks: None,
        });
    })
    .await;
    let info = keyed.get("/dashboard/info.json").await;
    assert_eq!(info.json()["open"], false, "{}", info.body);
    // The page is the same static frame either way: it holds no data.
    assert_eq!(keyed.get("/").await.body, open.get("/").await.body);
}
