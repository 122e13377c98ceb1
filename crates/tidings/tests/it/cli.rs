//! The client commands of the real binary against a served hub: `tidings publish` and
//! `tidings tail`.

use std::process::{Output, Stdio};

use crate::common::{spawn_hub, within, TestHub, WAIT};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

fn tidings(hub: &TestHub) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
    for (name, _) in std::env::vars() {
        if name.starts_with("TIDINGS_") {
            command.env_remove(name);
        }
    }
    command
        .env("TIDINGS_HUB", &hub.base)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run(mut command: Command) -> Output {
    within(WAIT, "the tidings command", command.output())
        .await
        .expect("run tidings")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

fn lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_prints_the_id_and_stores_every_field() {
    let hub = spawn_hub().await;
    let mut command = tidings(&hub);
    command.args([
        "publish",
        "--topic",
        "cli/a",
        "--topic",
        "cli/b",
        "--data",
        "hello & bye\nline 2",
        "--type",
        "greet",
        "--id",
        "cli-1",
        "--retry",
        "300",
    ]);
    let output = run(command).await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output).trim_end(), "cli-1");

    let stored = hub.history("topic=cli/b").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], "cli-1");
    assert_eq!(stored[0]["topics"], json!(["cli/a", "cli/b"]));
    assert_eq!(stored[0]["data"], "hello & bye\nline 2");
    assert_eq!(stored[0]["type"], "greet");
    assert_eq!(stored[0]["retry"], 300);

    // Data from standard input, and an explicit --hub.
    let mut command = tidings(&hub);
    command
        .args([
            "publish", "--hub", &hub.base, "--topic", "cli/a", "--data", "-",
        ])
        .stdin(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all("from stdin ✓".as_bytes()).await.unwrap();
    drop(stdin);
    let output = within(WAIT, "publish from stdin", child.wait_with_output())
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let id = stdout(&output).trim_end().to_owned();
    let stored = hub.history("topic=cli/a").await;
    assert_eq!(stored[1]["id"], id.as_str());
    assert_eq!(stored[1]["data"], "from stdin ✓");

    // A refusal is an error exit with the hub's reason.
    let mut command = tidings(&hub);
    command.args(["publish", "--topic", "cli/a", "--id", "cli-1"]);
    let output = run(command).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("409") && stderr.contains("cli-1"),
        "{stderr}"
    );
    assert_eq!(hub.history("topic=*").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_replays_from_earliest_and_follows_live_events() {
    let hub = spawn_hub().await;
    let mut published = Vec::new();
    for i in 0..3 {
        published.push(hub.publish("cli/t", &format!("old {i}")).await);
        hub.publish("cli/other", "x").await;
    }
    let mut command = tidings(&hub);
    command.args([
        "tail",
        "--topic",
        "cli/t",
        "--last-event-id",
        "earliest",
        "--count",
        "3",
    ]);
    let output = run(command).await;
    assert!(output.status.success(), "{output:?}");
    let got = lines(&output);
    let ids: Vec<&str> = got.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, published);
    assert_eq!(got[0]["data"], "old 0");
    assert_eq!(got[0]["type"], "message");

    // Following live events after a known id: start it, then publish (no race: it resumes
    // after `published[2]` whenever it connects).
    let mut command = tidings(&hub);
    command.args([
        "tail",
        "--topic",
        "cli/{x}",
        "--type",
        "done",
        "--last-event-id",
        &published[2],
        "--count",
        "2",
    ]);
    let child = command.spawn().unwrap();
    let skipped = hub.publish("cli/t", "untyped, filtered out").await;
    let a = hub
        .publish_fields(&[("topic", "cli/t"), ("type", "done"), ("data", "a")])
        .await;
    let b = hub
        .publish_fields(&[("topic", "cli/u"), ("type", "done"), ("data", "b\nc")])
        .await;
    let output = within(WAIT, "tail --count 2", child.wait_with_output())
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let got = lines(&output);
    assert_eq!(
        got,
        [
            json!({"id": a, "topics": ["cli/t"], "type": "done", "data": "a"}),
            json!({"id": b, "topics": ["cli/u"], "type": "done", "data": "b\nc"}),
        ]
    );
    assert_ne!(skipped, a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_reports_a_refused_subscription() {
    let hub = spawn_hub().await;
    let mut command = tidings(&hub);
    command.args(["tail", "--topic", "jobs/{id"]);
    let output = run(command).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("400"), "{stderr}");
}

/// `--durability` is SQLite's: with a PostgreSQL or Redis store, `serve` stops at once with a
/// reason, before it opens the store or binds its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_with_a_postgres_or_redis_store_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for store in ["postgres://127.0.0.1/test", "redis://127.0.0.1:6379/"] {
        for durability in ["normal", "full"] {
            let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
            for (name, _) in std::env::vars() {
                if name.starts_with("TIDINGS_") {
                    command.env_remove(name);
                }
            }
            command
                .args(["serve", "--listen", "127.0.0.1:0", "--store", store])
                .args(["--durability", durability])
                .current_dir(dir.path())
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let output = run(command).await;
            assert!(!output.status.success(), "{store} with {durability} served");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("SQLite store only"), "{stderr}");
        }
    }
}

/// The README's first command, `cargo run --release -- serve`, needs `cargo run` at the
/// workspace root to find exactly one binary: the hub. Cargo picks among the binaries of the
/// workspace's default members, so they must hold `tidings` alone (not `tidings-bench`).
#[test]
fn cargo_run_at_the_root_runs_the_hub() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let defaults = meta["workspace_default_members"]
        .as_array()
        .expect("workspace_default_members");
    let binaries: Vec<&str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| defaults.contains(&p["id"]))
        .flat_map(|p| p["targets"].as_array().expect("targets").iter())
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.contains(&json!("bin")))
        })
        .map(|t| t["name"].as_str().expect("target name"))
        .collect();
    assert_eq!(
        binaries,
        ["tidings"],
        "what `cargo run` would have to choose from"
    );
}
