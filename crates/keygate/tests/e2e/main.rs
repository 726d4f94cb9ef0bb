#![allow(
    unreachable_pub,
    reason = "helpers are shared between the modules of this one test binary"
)]

//! End-to-end tests: the real `keygate` binary, real function processes, real HTTP on ephemeral
//! ports. One test binary with topic modules.
//!
//! The tests need the example and test-function binaries built beside `keygate`
//! (`cargo build --workspace` does it; the README's test command runs it first).

mod admin;
mod authorizers;
mod config_errors;
mod config_file;
mod console;
mod deploy;
mod enforcement;
mod first_hour;
mod flood;
mod functions;
mod integrations;
mod introspection;
mod jwt;
mod keys;
mod logs;
mod multi_node;
mod plans;
mod readme;
mod runtimes;
mod seed;
mod support;
mod tables;
mod tls;
mod watchdog;
