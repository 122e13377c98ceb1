//! The first five minutes, as a newcomer lives them: the README's first command, run as written
//! in a fresh clone, serves a hub that answers `/healthz`; and every `tidings ...` or
//! `cargo run ... -- ...` command line of every README parses with the binary's own parser
//! (and, for `serve`, passes the configuration check).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;
use tidings::cli::{Cli, Command as Sub};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// The READMEs a newcomer reads: the root one and each example's.
fn readmes() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let examples = std::fs::read_dir(root().join("examples")).expect("examples/");
    for entry in examples {
        let readme = entry.expect("an entry").path().join("README.md");
        if readme.exists() {
            files.push(readme);
        }
    }
    files
}

/// The command lines of the ```sh blocks of `markdown`: continuation lines joined, comments cut.
fn shell_lines(markdown: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_sh = !in_sh && (trimmed == "```sh" || trimmed == "```bash");
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = strip_comment(trimmed);
        if let Some(head) = code.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(code);
        let whole = std::mem::take(&mut pending).trim().to_owned();
        if !whole.is_empty() {
            lines.push(whole);
        }
    }
    lines
}

/// `code` without a trailing `# comment` (a `#` outside quotes, after a space).
fn strip_comment(code: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let bytes = code.as_bytes();
    for (i, c) in code.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && (i == 0 || bytes[i - 1] == b' ') => {
                return code[..i].trim_end()
            }
            _ => {}
        }
    }
    code
}

/// Splits a command line as a POSIX shell would for these simple lines: quotes group and are
/// removed, `$(...)` inside double quotes stays literal text.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let (mut single, mut double) = (false, false);
    for c in line.chars() {
        match c {
            '\'' if !double => {
                single = !single;
                in_word = true;
            }
            '"' if !single => {
                double = !double;
                in_word = true;
            }
            c if c.is_whitespace() && !single && !double => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(!single && !double, "unbalanced quotes in {line:?}");
    if in_word {
        words.push(word);
    }
    words
}

/// The arguments the `tidings` binary receives from a README line, when it runs it.
fn tidings_args(line: &str) -> Option<Vec<String>> {
    // Other commands (curl with a JSON body over several lines, say) are not split at all.
    if !(line.starts_with("tidings ") || line.starts_with("cargo run")) {
        return None;
    }
    let words = words(line);
    let args: Vec<String> = match words.first().map(String::as_str) {
        Some("tidings") => words[1..].to_vec(),
        Some("cargo") if words.get(1).map(String::as_str) == Some("run") => {
            let dashes = words.iter().position(|w| w == "--")?;
            words[dashes + 1..].to_vec()
        }
        _ => return None,
    };
    // `[--type session]`: the README's notation for optional flags; try them given.
    Some(
        args.into_iter()
            .map(|a| a.trim_start_matches('[').trim_end_matches(']').to_owned())
            .collect(),
    )
}

#[test]
fn every_readme_command_parses_with_the_binarys_parser() {
    let mut checked = 0;
    for readme in readmes() {
        let text = std::fs::read_to_string(&readme).expect("read the README");
        for line in shell_lines(&text) {
            let Some(args) = tidings_args(&line) else {
                continue;
            };
            let cli = match Cli::try_parse_from(std::iter::once("tidings".to_owned()).chain(args)) {
                Ok(cli) => cli,
                // `tidings --help`, `tidings serve --help`: clap answers them itself.
                Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
                    checked += 1;
                    continue;
                }
                Err(e) => panic!("{}: `{line}` does not parse:\n{e}", readme.display()),
            };
            if let Sub::Serve(mut serve) = cli.command {
                // Key files (`@pub.pem`) are the reader's own; the rest must pass the check
                // `serve` makes before it opens anything (paths from the repository root, where
                // the README runs them).
                let reads_files = [
                    &serve.publisher_jwt_key,
                    &serve.subscriber_jwt_key,
                    &serve.jwt_key,
                ]
                .iter()
                .any(|k| k.as_deref().is_some_and(|k| k.starts_with('@')));
                if let Some(config) = &serve.config {
                    serve.config = Some(root().join(config));
                }
                if !reads_files {
                    if let Err(e) = serve.resolve() {
                        panic!("{}: `{line}` is refused: {e:#}", readme.display());
                    }
                }
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "only {checked} commands found: is the extraction broken?"
    );
}

#[test]
fn the_extraction_sees_what_a_shell_would() {
    let md = "```sh\ntidings tail --topic 'jobs/{id}' \\\n    --type done   # a comment\n```\n";
    assert_eq!(
        shell_lines(md),
        ["tidings tail --topic 'jobs/{id}'  --type done"]
    );
    assert_eq!(
        tidings_args(&shell_lines(md)[0]).unwrap(),
        ["tail", "--topic", "jobs/{id}", "--type", "done"]
    );
    assert_eq!(
        words(r#"serve --jwt-key "$(openssl rand -hex 32)" --data '{"ok":true}'"#),
        [
            "serve",
            "--jwt-key",
            "$(openssl rand -hex 32)",
            "--data",
            r#"{"ok":true}"#
        ]
    );
    assert_eq!(strip_comment("curl 'a#b' # c"), "curl 'a#b'");
}

/// The README's first command, in a fresh clone of this repository, reaches `/healthz`. The
/// command line is run as written; the build goes to its own directory under this checkout's
/// target directory (`first-run/`, kept between runs) with the release profile's optimizer
/// turned off through Cargo's environment (`CARGO_PROFILE_RELEASE_OPT_LEVEL=0`, no debug info):
/// what is checked is that the command picks the hub's binary, builds from a clean clone and
/// serves with its defaults, and an optimized build of every dependency would add a quarter of
/// an hour to each CI run on a small machine. Only the address is moved off 8080
/// (`TIDINGS_LISTEN`), so the test can run beside a hub a developer has open.
#[test]
fn the_readmes_first_command_serves_a_hub_from_a_fresh_clone() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let first = shell_lines(&readme)
        .into_iter()
        .next()
        .expect("a first command");
    assert!(
        first.starts_with("cargo run"),
        "the first command is {first:?}"
    );
    let clone = tempfile::tempdir().unwrap();
    let status = Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(root())
        .arg(clone.path())
        .status()
        .expect("run git clone");
    assert!(status.success(), "git clone failed");
    // target/tmp is inside the target directory this test was built in.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("first-run");
    let mut command = Command::new("sh");
    command
        .args(["-c", &format!("exec {first}")])
        .current_dir(clone.path())
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "true")
        .env("TIDINGS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("RUSTFLAGS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars() {
        if name.starts_with("TIDINGS_") && name != "TIDINGS_LISTEN" {
            command.env_remove(name);
        }
    }
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().expect("run the first command");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    // A fresh build of everything at opt-level 0 (minutes on a loaded 2-core machine).
    let deadline = std::time::Instant::now() + Duration::from_secs(40 * 60);
    let addr = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains("tidings hub listening") {
                    if let Some(addr) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("address="))
                    {
                        break addr.to_owned();
                    }
                }
            }
            Err(_) => {
                stop(&mut child);
                panic!("`{first}` never served; its output:\n{log}");
            }
        }
    };
    let health = std::net::TcpStream::connect(&addr).and_then(|mut s| {
        use std::io::{Read, Write};
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    });
    stop(&mut child);
    let answer = health.expect("GET /healthz");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#"{"status":"ok"}"#), "{answer}");
    assert!(
        clone.path().join("tidings.db").exists(),
        "the events went to ./tidings.db"
    );
}

/// Ends `cargo run` and the hub it started (its whole process group): SIGTERM to the group,
/// then SIGKILL to the child if it has not exited within 10 s, so the test never hangs.
fn stop(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-s", "TERM", "--", &format!("-{}", child.id())])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
