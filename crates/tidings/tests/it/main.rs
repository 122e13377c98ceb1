//! The integration tests of the `tidings` crate, one module per area, linked into one test binary
//! (one link of the whole crate instead of one per file). Run one area with
//! `cargo test -p tidings --test it auth::`. Shared helpers live in `common/`.

mod common;

mod admin;
mod auth;
mod bad_input;
mod cli;
mod cli_failures;
mod cluster_pg;
mod cluster_redis;
mod crash;
mod dashboard;
mod edge;
mod first_run;
mod idempotent_publish;
mod js_client;
mod live_handover;
mod mercure_generations;
mod operations;
mod parsers_prop;
mod poll;
mod presence;
mod prune_race;
mod publish;
mod resume;
mod selectors;
mod slow_subscriber;
mod subscribe;
mod tls_h2;
mod token_cli;
mod until;
mod webhooks;
