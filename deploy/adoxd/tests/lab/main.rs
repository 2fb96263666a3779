//! Integration tests of `adoxd` against real authoritative servers: the lab of
//! `deploy/lab` (NSD and BIND 9 on 127.53.x.y), brought up once per run by the README's
//! test command. Each test starts its own adoxd on a free port.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub, reason = "test code")]

mod acl;
mod admission;
mod api;
mod cli;
mod concurrency;
mod deleg;
mod deploy_files;
mod dnssec;
mod dnstap;
mod doh;
mod encrypted;
mod fairness;
mod faults;
mod fleet;
mod malformed;
mod oracle;
mod resolution;
mod restart;
mod rpz;
mod special_use;
mod support;
mod tcp;
#[cfg(feature = "xdp")]
mod xdp;
mod zones;
