//! Outbound transports to authoritative servers: framing and session state. The resolver
//! decides which one to use (see `policy`); these carry. Do53 lives in the worker's
//! reactor (`worker/exec.rs`); DoT and its TLS settings are here.

pub mod dane;
pub mod dot;
pub mod tls;
