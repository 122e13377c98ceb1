//! Event log backends, one file each. Every backend passes the behavioural suite in
//! `tests/log_suite/`.

pub mod sqlite;
