//! Day-two changes under load: a zero-downtime restart (`--takeover`: a new adoxd takes
//! the running one's listening sockets) and a SIGHUP reload, each while clients ask
//! without pause, and no query goes unanswered.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::faults::Hostile;
use crate::support::{Adoxd, Ask, Response, temp_config, tempdir};

/// A stub zone at a server that answers 300 ms late: misses that are under way when a
/// process hands over.
const LAG_ZONE: &str =
    "[[zones]]\nname = \"lag.internal.\"\nkind = \"stub\"\nservers = [\"127.53.40.24\"]\ninsecure = true\n";

/// 16 clients asking `addr` until stopped: each asks, waits up to 4 s for the answer,
/// pauses 5 ms (about 3,000 queries/s in all: a load the debug build of the test run
/// serves without shedding, which drops misses on purpose), asks again. Mostly hits; one
/// in four a miss (a fresh name under alpha.lab.), of which one in two under
/// lag.internal. (300 ms).
struct Load {
    running: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    servfail: Arc<AtomicU64>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let (sent, answered, servfail) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let clients = (0..16)
            .map(|c| {
                let (running, sent, answered, servfail) =
                    (running.clone(), sent.clone(), answered.clone(), servfail.clone());
                std::thread::spawn(move || {
                    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
                    let mut buf = vec![0u8; 4096];
                    let mut i = 0u32;
                    while running.load(Ordering::SeqCst) {
                        i += 1;
                        let name = match i % 4 {
                            0 if i.is_multiple_of(8) => format!("r{c}x{i}.lag.internal."),
                            0 => format!("r{c}x{i}.alpha.lab."),
                            1 => "www.alpha.lab.".to_string(),
                            2 => "www.beta.lab.".to_string(),
                            _ => "mail.alpha.lab.".to_string(),
                        };
                        let mut ask = Ask::new(&name, RecordType::A);
                        ask.id = (i & 0xFFFF) as u16;
                        s.send_to(&ask.wire(), addr).unwrap();
                        sent.fetch_add(1, Ordering::SeqCst);
                        let mut got = false;
                        // A reply to an earlier (timed-out) query is skipped; a timeout
                        // ends the wait.
                        while let Ok((n, _)) = s.recv_from(&mut buf) {
                            let r = Response::parse(buf[..n].to_vec());
                            if r.msg.metadata.id != ask.id {
                                continue;
                            }
                            answered.fetch_add(1, Ordering::SeqCst);
                            if r.rcode() == ResponseCode::ServFail {
                                servfail.fetch_add(1, Ordering::SeqCst);
                            }
                            got = true;
                            break;
                        }
                        if !got {
                            eprintln!("client {c}: no answer to {name} (query {i})");
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Self { running, sent, answered, servfail, clients }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }

    /// Stops the clients: (sent, answered, SERVFAIL).
    fn stop(self) -> (u64, u64, u64) {
        self.running.store(false, Ordering::SeqCst);
        for c in self.clients {
            c.join().unwrap();
        }
        (self.sent.load(Ordering::SeqCst), self.answered.load(Ordering::SeqCst), self.servfail.load(Ordering::SeqCst))
    }
}

/// Under the load, a second adoxd started with `--takeover` on the same state directory
/// takes over; the first answers what it owes and exits 0. Every query sent in the whole
/// run is answered, none with SERVFAIL, nothing is shed, and the new process served part
/// of the load.
#[test]
fn a_takeover_under_load_loses_no_query() {
    let _lag = Hostile::start("lag", "lag.internal.", "127.53.40.24");
    let (_cfg_dir, cfg) = temp_config(LAG_ZONE);
    let port = crate::support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let state = tempdir::Dir::new();
    let state_dir = state.path().to_str().unwrap();
    let mut args = vec!["--listen", &listen, "--state-dir", state_dir, "--workers", "2"];
    args.extend(["--config", cfg.to_str().unwrap()]);
    let mut old = Adoxd::lab(&args);
    assert_eq!(old.query("www.alpha.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.10"]);
    let load = Load::start(old.addr);
    std::thread::sleep(Duration::from_millis(1_000));
    let before = load.answered();
    let started = Instant::now();
    args.push("--takeover");
    let new = Adoxd::lab(&args);
    let status = old.exited_within(Duration::from_secs(15)).expect("the old adoxd exits after the takeover");
    assert!(status.success(), "old adoxd: {status}\n{}", old.log());
    eprintln!("takeover: the old process was gone {:?} after the new one started", started.elapsed());
    std::thread::sleep(Duration::from_millis(1_500));
    let (sent, answered, servfail) = load.stop();
    eprintln!(
        "takeover under load: {sent} queries sent, {answered} answered, {servfail} SERVFAIL ({before} before the takeover)"
    );
    assert!(sent > before + 300, "the load went on: {sent} sent, {before} before");
    assert_eq!(answered, sent, "every query answered");
    assert_eq!(servfail, 0);
    let log = new.terminate();
    for (who, log) in [("old", old.log()), ("new", log.clone())] {
        assert_eq!(Adoxd::stat(&log, "overload_shed"), 0, "{who}: no query shed");
    }
    let (served, hits) = (Adoxd::stat(&log, "queries_udp"), Adoxd::stat(&log, "cache_hits"));
    eprintln!(
        "new process: {served} queries, {hits} packet-cache hits ({:.0}%)",
        100.0 * hits as f64 / served.max(1) as f64
    );
    assert!(served > 200, "the new process served the load after the takeover: {served}");
    assert!(old.log().contains("handed over"), "{}", old.log());
}

/// Under the load, a SIGHUP reload that changes the client ACL (and adds a local zone)
/// loses no query and applies both.
#[test]
fn a_reload_under_load_loses_no_query() {
    let _lag = Hostile::start("lag", "lag.internal.", "127.53.40.25");
    let zone = LAG_ZONE.replace("127.53.40.24", "127.53.40.25");
    let (dir, cfg) = temp_config(&format!("[access]\nallow_clients = [\"127.0.0.0/8\"]\n\n{zone}"));
    let d = Adoxd::lab(&["--workers", "2", "--config", cfg.to_str().unwrap()]);
    let load = Load::start(d.addr);
    std::thread::sleep(Duration::from_millis(1_000));
    let changed = format!(
        "[access]\nallow_clients = [\"127.0.0.0/8\", \"192.0.2.0/24\"]\n\n{zone}\n[[zones]]\nname = \"new.internal.\"\nkind = \"local\"\nrecords = [\"www A 192.0.2.55\"]\n"
    );
    std::fs::write(&cfg, changed).unwrap();
    d.hup();
    std::thread::sleep(Duration::from_millis(1_500));
    let (sent, answered, servfail) = load.stop();
    eprintln!("reload under load: {sent} queries sent, {answered} answered, {servfail} SERVFAIL");
    assert_eq!(answered, sent, "every query answered");
    assert_eq!(servfail, 0);
    assert_eq!(
        d.query("www.new.internal.", RecordType::A).rdata(RecordType::A),
        ["192.0.2.55"],
        "the new zone is in force"
    );
    let log = d.terminate();
    assert!(log.contains("configuration reloaded") && log.contains("access") && log.contains("zones"), "{log}");
    drop(dir);
}

/// `POST /v1/reload` reads the file again: what can change live (`[local_zones]`, the
/// configuration's negative trust anchors) is in force at once, a section that needs a
/// restart is named, and a bad file is refused with the reason and changes nothing.
#[test]
fn a_reload_through_the_api_applies_what_it_can_and_names_the_rest() {
    let (_dir, cfg) = temp_config("[local_zones]\ntest = true\n");
    let d = Adoxd::lab(&["--workers", "1", "--config", cfg.to_str().unwrap()]);
    let soa_owner = |r: &Response| r.msg.authorities.first().map(|a| a.name.to_ascii());
    let r = d.query("www.test.", RecordType::A);
    assert_eq!((r.rcode(), soa_owner(&r)), (ResponseCode::NXDomain, Some("test.".into())), "answered locally");
    assert_eq!(d.query("www.expired.lab.", RecordType::A).rcode(), ResponseCode::ServFail);
    std::fs::write(
        &cfg,
        "[local_zones]\ntest = false\n\n[dnssec]\nnegative_trust_anchors = [\"expired.lab\"]\n\n[cache]\nmax_ttl_s = 600\n",
    )
    .unwrap();
    let r = d.admin().send_json("POST", "/v1/reload", &serde_json::json!({})).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json().unwrap();
    let applied: Vec<&str> = report["applied"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(applied.contains(&"local_zones") && applied.contains(&"dnssec.negative_trust_anchors"), "{report}");
    assert_eq!(report["needs_restart"], serde_json::json!(["cache"]));
    let r = d.query("www.test.", RecordType::A);
    assert_eq!((r.rcode(), soa_owner(&r)), (ResponseCode::NXDomain, Some(".".into())), "now from the lab root");
    assert_eq!(d.query("www.expired.lab.", RecordType::A).rcode(), ResponseCode::NoError, "not validated now");
    std::fs::write(&cfg, "[cache]\nmax_ttl_s = 0\n").unwrap();
    let r = d.admin().send_json("POST", "/v1/reload", &serde_json::json!({})).unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("cache.max_ttl_s"), "{}", r.text());
    assert_eq!(d.query("www.expired.lab.", RecordType::A).rcode(), ResponseCode::NoError, "the running one stays");
}

/// Takeovers in a row across worker counts (2, then 1, then 2 again: the sockets travel in
/// the groups the first process bound) lose no query; a takeover that asks for other
/// listen addresses is refused before the running adoxd stops anything, and it serves on,
/// API included.
#[test]
fn takeovers_across_worker_counts_lose_no_query_and_a_mismatched_one_is_refused() {
    let _lag = Hostile::start("lag", "lag.internal.", "127.53.40.26");
    let (_cfg_dir, cfg) = temp_config(&LAG_ZONE.replace("127.53.40.24", "127.53.40.26"));
    let port = crate::support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let state = tempdir::Dir::new();
    let state_dir = state.path().to_str().unwrap();
    let args = |workers: &'static str, takeover: bool| {
        let mut a = vec!["--listen", &listen, "--state-dir", state_dir, "--config", cfg.to_str().unwrap()];
        a.extend(["--workers", workers]);
        if takeover {
            a.push("--takeover");
        }
        a
    };
    let mut first = Adoxd::lab(&args("2", false));
    let load = Load::start(first.addr);
    std::thread::sleep(Duration::from_millis(500));
    // Other listen addresses: refused, and the running process carries on.
    let other = format!("127.0.0.1:{}", crate::support::free_port());
    let hints = crate::support::lab_dir().join("root.hints");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_adoxd"))
        .args(["--listen", &other, "--state-dir", state_dir, "--api", "off", "--takeover"])
        .arg("--root-hints")
        .arg(&hints)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(first.admin().get("/readyz").unwrap().status, 200, "the API is still up");
    let mut second = Adoxd::lab(&args("1", true));
    assert!(first.exited_within(Duration::from_secs(15)).expect("the first exits").success());
    std::thread::sleep(Duration::from_millis(500));
    let third = Adoxd::lab(&args("2", true));
    assert!(second.exited_within(Duration::from_secs(15)).expect("the second exits").success());
    std::thread::sleep(Duration::from_millis(800));
    let (sent, answered, servfail) = load.stop();
    eprintln!("two takeovers (2 -> 1 -> 2 workers) under load: {sent} sent, {answered} answered, {servfail} SERVFAIL");
    assert_eq!((answered, servfail), (sent, 0));
    let log = third.terminate();
    assert!(Adoxd::stat(&log, "queries_udp") > 100, "the third process served");
}

/// A reload applies the rest of what can change live: the configuration's `[[policy]]`
/// tables (API policies kept), cache budgets (a smaller record cache evicts at once),
/// `[limits]`, and the root hints and trust anchor files, read again: here adoxd moves
/// from the lab's root to a private one (`deploy/lab/rollroot`) and its anchor, and
/// validates a name only that root has.
#[test]
fn a_reload_applies_policies_cache_sizes_limits_root_hints_and_anchors() {
    let private = crate::dnssec::RollingRoot::up("127.53.50.2");
    let lab = crate::support::lab_dir();
    let config = |hints: &std::path::Path, anchor: &std::path::Path, mode: &str, cache: u64, per_client: u32| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n\
             [resolver]\nroot_hints = {hints:?}\n\n[dnssec]\ntrust_anchor_file = {anchor:?}\n\n\
             [cache]\nrecord_cache_bytes = {cache}\npacket_cache_bytes = {cache}\n\n\
             [limits]\nmax_resolutions_per_client = {per_client}\n\n\
             [[policy]]\nzone = \"alpha.lab\"\nmode = \"{mode}\"\n"
        )
    };
    let (_dir, cfg) =
        temp_config(&config(&lab.join("root.hints"), &lab.join("trust-anchor.ds"), "opportunistic", 64 << 20, 64));
    let d = Adoxd::lab_from_config(&["--config", cfg.to_str().unwrap()]);
    let api_policy = serde_json::json!({"zone": "beta.lab", "mode": "cleartext"});
    assert_eq!(d.admin().send_json("POST", "/v1/policies", &api_policy).unwrap().status, 201);
    assert_eq!(d.query("probe.", RecordType::TXT).rcode(), ResponseCode::NXDomain, "the lab root has no probe.");
    // About 750 bytes each (the record cache holds records in wire form): well past 1 MiB.
    for i in 0..2000 {
        d.query(&format!("n{i}.alpha.lab."), RecordType::A);
    }
    let stats = |d: &Adoxd| d.admin().get("/v1/stats").unwrap().json().unwrap();
    let before = stats(&d)["record_cache_bytes"].as_u64().unwrap();
    let small: u64 = 1 << 20;
    assert!(before > small, "the cache holds more than the new budget before the reload: {before}");

    let reload = |d: &Adoxd| {
        let r = d.admin().send_json("POST", "/v1/reload", &serde_json::json!({})).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let report = r.json().unwrap();
        assert_eq!(report["needs_restart"], serde_json::json!([]), "{report}");
        assert_eq!(report["refused"], serde_json::json!([]), "{report}");
        report["applied"].as_array().unwrap().iter().filter_map(|v| v.as_str().map(str::to_string)).collect::<Vec<_>>()
    };
    // The cache budgets alone: the smaller record cache evicts at once.
    std::fs::write(&cfg, config(&lab.join("root.hints"), &lab.join("trust-anchor.ds"), "opportunistic", small, 64))
        .unwrap();
    assert_eq!(reload(&d), ["api tokens", "cache sizes and limits"]);
    let after = stats(&d)["record_cache_bytes"].as_u64().unwrap();
    assert!(after <= small && after > 0, "{after}");
    let r = d.query("n1.alpha.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "EDE {:?}; log:\n{}", r.ede(), d.log());

    let root = private.root();
    std::fs::write(&cfg, config(&root.join("root.hints"), &root.join("anchor.ds"), "strict", small, 2)).unwrap();
    let applied = reload(&d);
    for section in ["policy", "cache sizes and limits", "resolver.root_hints", "dnssec trust anchors"] {
        assert!(applied.iter().any(|a| a == section), "{section} not applied: {applied:?}");
    }
    // The private root, validated with its own anchor.
    let r = d.ask(&Ask::new("probe.", RecordType::TXT).dnssec());
    assert_eq!(r.rcode(), ResponseCode::NoError, "{:?}", r.ede());
    assert!(r.ad(), "validated with the new anchor");
    // The configuration's policy changed in place; the API's stayed.
    let list = d.admin().get("/v1/policies").unwrap().json().unwrap();
    let modes: Vec<(String, String)> = list["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["zone"].as_str().unwrap().to_string(), p["mode"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        modes,
        [("alpha.lab.".to_string(), "strict".to_string()), ("beta.lab.".to_string(), "cleartext".to_string())]
    );
    // The same file again changes nothing (the files are read, compared, and kept).
    let r = d.admin().send_json("POST", "/v1/reload", &serde_json::json!({})).unwrap();
    assert_eq!(r.json().unwrap()["applied"].as_array().unwrap().iter().filter(|v| *v != "api tokens").count(), 0);
    // The anchor file dropped under custom root hints: nothing can be validated any more,
    // and /readyz says so from then on, as it would at start.
    let readyz = |d: &Adoxd| d.admin().get("/readyz").unwrap().json().unwrap()["detail"].to_string();
    assert!(!readyz(&d).contains("nothing is validated"), "{}", readyz(&d));
    let hints_only =
        format!("[server]\nlisten = [\"127.0.0.1:0\"]\n\n[resolver]\nroot_hints = {:?}\n", root.join("root.hints"));
    std::fs::write(&cfg, hints_only).unwrap();
    assert!(reload(&d).iter().any(|a| a == "dnssec trust anchors"));
    assert!(readyz(&d).contains("nothing is validated"), "{}", readyz(&d));
}

/// A reload that changes the listen addresses under load: a new address is answered at
/// once while the old one goes on answering (new sockets before old ones close), and when
/// the old one is removed, the slow queries it had already read (300 ms misses) are still
/// answered; then it answers no more. No query to an address in service is lost.
#[test]
fn a_reload_moves_the_listen_address_under_load_and_loses_no_query() {
    let _lag = Hostile::start("lag", "lag.internal.", "127.53.40.27");
    let free = || SocketAddr::from(([127, 0, 0, 1], crate::support::free_port()));
    let (first, second) = (free(), free());
    let zone = LAG_ZONE.replace("127.53.40.24", "127.53.40.27");
    let lab = crate::support::lab_dir();
    let (hints, anchor) = (lab.join("root.hints"), lab.join("trust-anchor.ds"));
    let config = |listen: &[SocketAddr]| {
        let list: Vec<String> = listen.iter().map(|a| format!("\"{a}\"")).collect();
        format!(
            "[server]\nlisten = [{}]\n\n[resolver]\nroot_hints = {hints:?}\n\n[dnssec]\ntrust_anchor_file = {anchor:?}\n\n{zone}",
            list.join(", ")
        )
    };
    let (_dir, cfg) = temp_config(&config(&[first]));
    let d = Adoxd::lab_from_config(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(d.addr, first);
    let reload = || {
        let r = d.admin().send_json("POST", "/v1/reload", &serde_json::json!({})).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let report = r.json().unwrap();
        assert!(report["applied"].as_array().unwrap().iter().any(|a| a == "server.listen"), "{report}");
        assert_eq!(report["needs_restart"], serde_json::json!([]), "{report}");
    };
    let on_first = Load::start(first);
    std::thread::sleep(Duration::from_millis(800));
    std::fs::write(&cfg, config(&[first, second])).unwrap();
    reload();
    let on_second = Load::start(second);
    std::thread::sleep(Duration::from_millis(800));
    let (sent, answered, _) = on_first.stop();
    assert_eq!(answered, sent, "the first address, through the reload that added the second");

    // Slow misses read from the first address, then the address removed.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    for i in 0..8u16 {
        let mut ask = Ask::new(&format!("gone{i}.lag.internal."), RecordType::A);
        ask.id = i;
        client.send_to(&ask.wire(), first).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(&cfg, config(&[second])).unwrap();
    reload();
    let mut buf = vec![0u8; 4096];
    let mut ids = std::collections::BTreeSet::new();
    while ids.len() < 8 {
        let Ok((n, _)) = client.recv_from(&mut buf) else { break };
        ids.insert(Response::parse(buf[..n].to_vec()).msg.metadata.id);
    }
    assert_eq!(ids.len(), 8, "queries read before the removal are answered: {ids:?}");
    std::thread::sleep(Duration::from_millis(800));
    let (sent, answered, _) = on_second.stop();
    assert_eq!(answered, sent, "the second address, through both reloads");
    // The first address answers no more.
    client.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    client.send_to(&Ask::new("www.alpha.lab.", RecordType::A).wire(), first).unwrap();
    assert!(client.recv_from(&mut buf).is_err(), "the removed address still answers");
    let stats = d.admin().get("/v1/stats").unwrap().json().unwrap();
    assert!(stats["totals"]["queries_udp"].as_u64().unwrap() > 100, "{stats}");
}
