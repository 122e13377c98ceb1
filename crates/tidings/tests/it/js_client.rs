//! The TypeScript client (`clients/js`) as part of `cargo test`: its type check, linter and unit
//! tests, the check that the client bundle embedded in the hub (`/dashboard/tidings.js`) is what
//! its sources build to, and the end-to-end suite in Debian's Chromium against this build's hub
//! binary (hub restarts, expiring tokens, a buffering nginx, ten tabs, React's `useJob`, the
//! dashboard). `npm ci` runs first when `clients/js/node_modules` is missing.
//!
//! Locally, a missing Node, Chromium, nginx or Python skips what needs it, loudly; under
//! `CI=true` it fails instead.

use std::path::{Path, PathBuf};
use std::process::Command;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/js")
}

/// Whether `program --version` runs.
fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Skips (locally) or fails (under CI) when something the suite needs is missing.
fn missing(what: &str) {
    let message = format!("{what} is missing: the TypeScript client's tests need it");
    assert!(!ci(), "{message} (CI=true)");
    eprintln!("SKIPPED: {message}");
}

/// Runs `npm args...` in clients/js; on failure, panics with the step's output.
fn npm(step: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new("npm")
        .args(args)
        .current_dir(client_dir())
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{step}: could not run npm: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{step} failed:\n{text}");
    text
}

#[test]
fn typescript_client() {
    if !runs("node") || !runs("npm") {
        return missing("Node.js (node and npm)");
    }
    if !client_dir().join("node_modules").is_dir() {
        npm("npm ci", &["ci", "--no-audit", "--no-fund"], &[]);
    }
    npm("type check (tsc --noEmit)", &["run", "typecheck"], &[]);
    npm("linter (eslint)", &["run", "lint"], &[]);
    npm("unit tests (vitest)", &["test"], &[]);
    npm(
        "the embedded client bundle is fresh",
        &["run", "bundle:check"],
        &[],
    );

    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let needs = [
        (chromium.as_str(), "Chromium (apt-get install chromium)"),
        ("/usr/sbin/nginx", "nginx (apt-get install nginx)"),
    ];
    for (path, what) in needs {
        if !Path::new(path).exists() {
            return missing(what);
        }
    }
    if !runs("python3") {
        return missing("python3 (the jobs example's job.py)");
    }
    npm(
        "end-to-end suite (Chromium, the real hub)",
        &["run", "e2e"],
        &[
            ("TIDINGS_BIN", env!("CARGO_BIN_EXE_tidings")),
            ("CHROMIUM", &chromium),
        ],
    );
    // The counts of each scenario: events sent, received, duplicated.
    let counts = client_dir().join("test-results/e2e-counts.jsonl");
    for line in std::fs::read_to_string(&counts).unwrap_or_default().lines() {
        eprintln!("E2E {line}");
    }
}
