//! The shipped deploy files stay valid: both example configurations pass `check-config`,
//! and the systemd unit passes `systemd-analyze verify` (with ExecStart pointed at the
//! binary under test, since /usr/local/bin/adoxd is not installed here).

use std::path::Path;
use std::process::Command;

fn deploy(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(path)
}

#[test]
fn example_configurations_pass_check_config() {
    for f in ["config/adox.toml", "config/isp-production.toml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_adoxd")).arg("check-config").arg(deploy(f)).output().unwrap();
        assert!(out.status.success(), "{f}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(deploy("systemd/adoxd.service")).unwrap();
    let unit = unit.replace("/usr/local/bin/adoxd", env!("CARGO_BIN_EXE_adoxd"));
    let dir = crate::support::tempdir::Dir::new();
    let path = dir.path().join("adoxd.service");
    std::fs::write(&path, unit).unwrap();
    let out =
        Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze (package systemd)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "systemd-analyze verify: {text}");
}
