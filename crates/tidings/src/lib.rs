//! The Tidings server and CLI as a library: configuration, the HTTP surface and the client
//! commands. `main.rs` only parses the command line and calls in here.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod http;
pub mod ingest;
pub mod net;

pub use app::App;
pub use config::Config;
