//! With the `xdp` feature, builds the XDP program (`src/xdp/redirect.bpf.c`) with clang
//! (`CLANG` overrides which); without it, nothing. A build script reports failure by
//! panicking, with the reason.
#![allow(clippy::expect_used, clippy::panic, reason = "a build script fails by panicking")]
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/xdp/redirect.bpf.c");
    println!("cargo:rerun-if-env-changed=CLANG");
    if std::env::var_os("CARGO_FEATURE_XDP").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("redirect.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"]);
    // Debian keeps asm/types.h under the host's multiarch directory.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = PathBuf::from(format!("/usr/include/{arch}-linux-gnu"));
    if multiarch.is_dir() {
        cmd.arg("-I").arg(multiarch);
    }
    cmd.args(["-c", "src/xdp/redirect.bpf.c", "-o"]).arg(&out);
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("the xdp feature needs clang to build its XDP program ({clang}: {e}); apt-get install clang libbpf-dev libxdp-dev")
    });
    assert!(status.success(), "{clang} failed on src/xdp/redirect.bpf.c (needs libbpf-dev for bpf/bpf_helpers.h)");
}
