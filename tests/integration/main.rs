//! flashgate's integration tests: one test binary, `--test integration`.
//!
//! Each module is what used to be its own test binary (`tests/<name>.rs`); together they
//! compile the harness (`common`) and link the library once instead of once per file.
//! `cargo test --release --test integration chaos::` runs one module's tests, as
//! `--test chaos` did. The property tests of `tests/fuzz.rs` are a separate target
//! (`--features fuzz`, scripts/fuzz.sh).
//!
//! Tests of every module run side by side, `RUST_TEST_THREADS` at a time (libtest
//! starts them in name order, so mostly one module after another). Each test starts its
//! own servers on free ports and shares nothing with the others but the HTTP client
//! (`common::send`, no pooling), so none needs the binary to itself.

mod common;
mod lifecycle;

mod buy;
mod chaos;
mod cli;
mod cluster;
mod core;
mod edge;
mod expiry;
mod harness;
mod jwt_public_keys;
mod limits;
mod manual_examples;
mod operations;
mod outbox;
mod outbox_faults;
mod payments;
mod postgres_sink;
mod proxy_e2e;
mod rabbitmq_sink;
mod raffle;
mod replica_ack;
mod resilience;
mod shutdown;
mod status_page;
mod tls_backends;
mod tls_store;
