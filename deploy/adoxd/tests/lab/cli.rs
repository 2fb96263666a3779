//! The command line: embedded defaults, `check-config`, and clear errors for bad flags.

use std::process::Command;

use hickory_proto::rr::RecordType;

use crate::support::{Adoxd, temp_config};

/// Runs adoxd to completion with its own state directory (never the machine's
/// /var/lib/adox) and its API off.
fn adoxd(args: &[&str]) -> std::process::Output {
    let state = crate::support::tempdir::Dir::new();
    Command::new(env!("CARGO_BIN_EXE_adoxd"))
        .arg("--state-dir")
        .arg(state.path())
        .args(["--api", "off"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn embedded_defaults_start_and_answer_a_local_name() {
    // The built-in IANA hints: only a local name is asked, so nothing leaves the machine.
    let d = Adoxd::start(&["--workers", "1"]);
    assert!(d.log().contains("built-in IANA root hints"));
    assert_eq!(d.query("localhost.", RecordType::A).rdata(RecordType::A), ["127.0.0.1"]);
}

#[test]
fn help_documents_every_flag() {
    let out = adoxd(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--listen",
        "--workers",
        "--root-hints",
        "--state-dir",
        "--log-level",
        "--log-format",
        "--user",
        "--group",
        "--allow-upstream",
        "--allow-client",
        "--outgoing-address",
        "check-config",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn check_config_accepts_good_and_names_the_bad_field() {
    let (_d1, good) = temp_config("[server]\nworkers = 2\n[access]\nallow_clients = [\"10.0.0.0/8\"]\n");
    let out = adoxd(&["check-config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (text, field) in [
        ("[server]\nworkerz = 2\n", "workerz"),
        ("[resolver]\nmax_depth = 0\n", "resolver.max_depth"),
        ("[access]\nallow_clients = [\"10.0.0.1/8\"]\n", "access.allow_clients[0]"),
        ("[server]\nlisten = [\"nowhere\"]\n", "server.listen[0]"),
        ("[transport]\noutgoing_v4 = \"::1\"\n", "transport.outgoing_v4"),
        ("[transport]\noutgoing_v6 = \"ff02::1\"\n", "transport.outgoing_v6"),
        ("[transport]\noutgoing_v6 = \"::ffff:127.0.0.1\"\n", "transport.outgoing_v6"),
        ("not toml at all [", "TOML"),
    ] {
        let (_d, bad) = temp_config(text);
        let out = adoxd(&["check-config", bad.to_str().unwrap()]);
        assert!(!out.status.success(), "{text} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field) || (field == "TOML" && !err.is_empty()), "{text}: {err}");
    }
    let out = adoxd(&["check-config", "/nonexistent/adox.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn bad_flags_are_clear_errors() {
    for (args, needle) in [
        (vec!["--listen", "::1:53"], "--listen"),
        (vec!["--allow-upstream", "10.1.2.3/8"], "host bits"),
        (vec!["--workers", "many"], "--workers"),
        (vec!["--log-level", "loud"], "log_level"),
        (vec!["--root-hints", "/nonexistent/root.hints", "--listen", "127.0.0.1:0"], "root hints"),
        (vec!["--outgoing-address", "nowhere"], "--outgoing-address"),
        (vec!["--outgoing-address", "127.0.0.1", "--outgoing-address", "127.0.0.2"], "one IPv4 address at most"),
        // TEST-NET-1 is not this host's: refused before anything is bound or sent.
        (vec!["--outgoing-address", "192.0.2.1", "--listen", "127.0.0.1:0"], "cannot send queries from 192.0.2.1"),
    ] {
        let out = adoxd(&args);
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn busy_port_is_a_clear_error() {
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let out = adoxd(&["--listen", &addr, "--workers", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on"));
}

#[test]
fn ipv6_listener_answers_over_udp_and_tcp() {
    let hints = crate::support::lab_dir().join("root.hints");
    let d = Adoxd::start(&["--listen", "[::1]:0", "--root-hints", hints.to_str().unwrap(), "--workers", "1"]);
    assert!(d.addr.is_ipv6());
    assert_eq!(d.query("localhost.", RecordType::AAAA).rdata(RecordType::AAAA), ["::1"]);
    let t = d.ask_tcp(&crate::support::Ask::new("localhost.", RecordType::A));
    assert_eq!(t.rdata(RecordType::A), ["127.0.0.1"]);
}

/// `--log-format json`: every line is one JSON object; and a flood of bogus answers (30
/// names under expired.lab.) logs at most 10 "DNSSEC bogus" lines per 10 s (issue 13:
/// a flood of broken zones cannot fill a disk).
#[test]
fn json_log_lines_and_per_query_problems_are_rate_limited() {
    let d = Adoxd::lab(&["--log-format", "json", "--workers", "1"]);
    for i in 0..30 {
        assert_eq!(
            d.query(&format!("n{i}.expired.lab."), RecordType::A).rcode(),
            hickory_proto::op::ResponseCode::ServFail
        );
    }
    let log = d.terminate();
    // "DNSSEC bogus" lines per 10-second window of the Unix clock (the limiter's windows;
    // 30 queries may straddle two of them).
    let mut per_window: std::collections::BTreeMap<(String, u64), u32> = std::collections::BTreeMap::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(), "{line}");
        if v["message"] == "DNSSEC bogus" {
            assert!(v["name"].as_str().is_some_and(|n| n.ends_with("expired.lab.")), "fields are flattened: {line}");
            // "YYYY-MM-DDTHH:MM:SS...": seconds of the day, whose windows are the Unix
            // clock's (a day is a whole number of 10 s windows).
            let t = v["timestamp"].as_str().unwrap();
            let hms: Vec<u64> = t[11..19].split(':').map(|x| x.parse().unwrap()).collect();
            let window = (t[..10].to_string(), (hms[0] * 3600 + hms[1] * 60 + hms[2]) / 10);
            *per_window.entry(window).or_default() += 1;
        }
    }
    let bogus: u32 = per_window.values().sum();
    assert!(bogus >= 1, "no bogus line at all");
    assert!(per_window.values().all(|n| *n <= 10), "more than 10 bogus lines in a 10 s window: {per_window:?}");
    assert!(bogus < 30, "{bogus} bogus lines for 30 bogus answers: nothing was held back");
}

/// Privilege drop (issue 13): started as root with `--user nobody`, adoxd binds port 53,
/// then every thread (main, workers, API) runs as nobody with no capability at all
/// (`/proc/PID/task/*/status`), and it still resolves. adoxd's own state files that root
/// owns (the policy journal, opened before the switch; one of an earlier run as root) are
/// nobody's, so a later start as nobody alone can write them; an operator's file stays
/// root's, and a hard link or a symlink placed under a state file's name hands nothing
/// over.
#[test]
fn started_as_root_with_a_user_every_thread_runs_as_that_user_without_capabilities() {
    let me = std::fs::read_to_string("/proc/self/status").unwrap();
    let euid = me.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap().split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(euid, "0", "the lab tests run as root");
    let state = crate::support::tempdir::Dir::new();
    let state_path = state.path().to_str().unwrap().to_string();
    // What adoxd writes or reads again as that user is that user's: the state directory
    // and the token files (SIGHUP reads them again).
    let tokens = crate::support::tempdir::Dir::new();
    let (admin, read) = (tokens.path().join("admin.tokens"), tokens.path().join("read.tokens"));
    crate::support::write_secret(&admin, &format!("{}\n", crate::support::ADMIN_TOKEN));
    crate::support::write_secret(&read, &format!("{}\n", crate::support::READ_TOKEN));
    for p in [state_path.as_str(), admin.to_str().unwrap(), read.to_str().unwrap()] {
        assert!(Command::new("chown").args(["nobody:nogroup", p]).status().unwrap().success());
    }
    let elsewhere = crate::support::tempdir::Dir::new();
    let (linked, pointed) = (elsewhere.path().join("linked"), elsewhere.path().join("pointed"));
    // (Contents adoxd reads at start without complaint.)
    std::fs::write(&linked, br#"{"zones": []}"#).unwrap();
    std::fs::write(&pointed, br#"{"anchors": []}"#).unwrap();
    std::fs::hard_link(&linked, state.path().join("zones.json")).unwrap();
    std::os::unix::fs::symlink(&pointed, state.path().join("negative-anchors.json")).unwrap();
    std::fs::write(state.path().join("fleet.json"), b"").unwrap();
    std::fs::write(state.path().join("operator.conf"), b"").unwrap();
    let d = Adoxd::lab(&[
        "--user",
        "nobody",
        "--listen",
        "127.54.0.1:53",
        "--state-dir",
        &state_path,
        "--api-token-file",
        admin.to_str().unwrap(),
        "--api-read-token-file",
        read.to_str().unwrap(),
    ]);
    assert_eq!(d.addr.port(), 53);
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rcode(), hickory_proto::op::ResponseCode::NoError);
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{}/task", d.pid())).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim().to_string();
        assert!(field("Uid:").split_whitespace().all(|u| u == "65534"), "{status}");
        assert!(field("Gid:").split_whitespace().all(|g| g == "65534"), "{status}");
        assert_eq!(u64::from_str_radix(&field("CapEff:"), 16).unwrap(), 0, "{status}");
        assert_eq!(u64::from_str_radix(&field("CapPrm:"), 16).unwrap(), 0, "{status}");
        threads += 1;
    }
    assert!(threads >= 3, "the main thread, the workers and the API's");
    let log = d.terminate();
    assert!(log.contains("switched from root; no capability kept"), "{log}");
    use std::os::unix::fs::MetadataExt;
    let owner = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().uid();
    for f in ["policies.journal", "fleet.json"] {
        assert_eq!(owner(&state.path().join(f)), 65534, "{f} is nobody's");
    }
    assert_eq!(owner(&state.path().join("operator.conf")), 0, "not adoxd's: root's");
    assert_eq!((owner(&linked), owner(&pointed)), (0, 0), "files elsewhere stay root's");
}

/// A state directory the user cannot write stops the start with the reason (learned
/// state would otherwise be lost silently).
#[test]
fn a_state_directory_the_user_cannot_write_is_a_clear_error() {
    let state = crate::support::tempdir::Dir::new();
    let out = Command::new(env!("CARGO_BIN_EXE_adoxd"))
        .args(["--user", "nobody", "--listen", "127.54.0.2:53", "--api", "off", "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("user \"nobody\" cannot write the state directory"), "{err}");
}

/// A user that does not exist stops the start with the reason.
#[test]
fn an_unknown_user_is_a_clear_error() {
    let out = adoxd(&["--user", "no-such-user-adox", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.user: user \"no-such-user-adox\" does not exist"), "{err}");
}
