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
    for f in ["config/adox.toml", "config/isp-production.toml", "container/adox.toml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_adoxd")).arg("check-config").arg(deploy(f)).output().unwrap();
        assert!(out.status.success(), "{f}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The Kubernetes ConfigMap's adox.toml (the block under `adox.toml: |`) passes
/// `check-config`, so the manifests never ship a configuration adoxd refuses.
#[test]
fn the_kubernetes_configmap_configuration_passes_check_config() {
    let yaml = std::fs::read_to_string(deploy("k8s/configmap.yaml")).unwrap();
    let toml: String = yaml
        .lines()
        .skip_while(|l| l.trim() != "adox.toml: |")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(toml.contains("[server]") && toml.contains("[api]"), "{toml}");
    let dir = crate::support::tempdir::Dir::new();
    let path = dir.path().join("adox.toml");
    std::fs::write(&path, &toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_adoxd")).arg("check-config").arg(&path).output().unwrap();
    assert!(out.status.success(), "{toml}\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    for name in ["adoxd.service", "adoxd-xdp.service"] {
        let unit = std::fs::read_to_string(deploy(&format!("systemd/{name}"))).unwrap();
        let unit = unit.replace("/usr/local/bin/adoxd", env!("CARGO_BIN_EXE_adoxd"));
        let dir = crate::support::tempdir::Dir::new();
        let path = dir.path().join(name);
        std::fs::write(&path, unit).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze (package systemd)");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.trim().is_empty(), "systemd-analyze verify {name}: {text}");
    }
}

/// The container image is no open resolver behind NAT: where every client may appear with
/// the bridge's private address, its configuration lets in nothing but loopback.
#[test]
fn the_container_configuration_allows_no_private_address() {
    let text = std::fs::read_to_string(deploy("container/adox.toml")).unwrap();
    let cfg = adox_dataplane::Config::from_toml(&text).unwrap();
    let access = adox_dataplane::acl::AccessPolicy::new(&cfg.client_prefixes().unwrap(), &[]);
    for bridge in ["172.17.0.1", "10.88.0.1", "192.168.1.1", "fd00::1"] {
        assert!(!access.client_allowed(bridge.parse().unwrap()), "{bridge} is allowed");
    }
    assert!(access.client_allowed("127.0.0.1".parse().unwrap()));
}
