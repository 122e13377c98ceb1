//! Event log backends, one file each. Every backend passes the behavioural suite in
//! `tests/log_suite/`.

#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;
