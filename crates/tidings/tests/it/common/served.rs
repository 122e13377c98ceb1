//! The real binary: a `tidings serve` process for crash and cluster tests.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};

use super::{HubClient, WAIT};

/// A `tidings serve` process and the address it logged.
pub struct Served {
    pub child: Child,
    pub addr: SocketAddr,
    /// Everything it wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
}

impl Served {
    /// `tidings serve --listen 127.0.0.1:0 --store STORE ARGS...`, without any `TIDINGS_*`
    /// variable of the test's environment; waits until it logs its address.
    pub fn start(store: impl AsRef<OsStr>, args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--store"])
            .arg(store)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, _) in std::env::vars() {
            if name.starts_with("TIDINGS_") {
                command.env_remove(name);
            }
        }
        let mut child = command.spawn().expect("start tidings serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            // Keeps draining stderr so the hub never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let plain = strip_ansi(&line);
                    if plain.contains("tidings hub listening") {
                        if let Some(addr) = plain
                            .split_whitespace()
                            .find_map(|w| w.strip_prefix("address="))
                        {
                            let _ = tx.send(addr.to_owned());
                        }
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&plain);
                    log.push('\n');
                }
            });
        }
        let addr = match rx.recv_timeout(WAIT) {
            Ok(addr) => addr.parse().expect("a socket address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the hub did not log its address; stderr:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Self { child, addr, log }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The HTTP helpers, pointed at this process.
    pub fn http(&self) -> HubClient {
        HubClient::new(self.base())
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
