//! Fleet mode against a real etcd cluster (Debian's etcd 3.4, three members on loopback)
//! and three adoxd nodes: a policy pushed through one node is in force on all three
//! (proven by a capture of each node's upstream traffic), ETags are etcd revisions across
//! nodes, a lost quorum keeps every node serving while writes answer 503, and a node that
//! was down catches up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::encrypted::Capture;
use crate::support::{Adoxd, free_port, lab_dir, tempdir};

/// A three-member etcd cluster on 127.0.0.1, each member in a directory of its own.
struct Etcd {
    dir: tempdir::Dir,
    /// (client port, peer port) per member.
    ports: Vec<(u16, u16)>,
    members: Vec<Option<Child>>,
}

impl Etcd {
    fn start() -> Self {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let mut e = Self { dir: tempdir::Dir::new(), ports, members: vec![None, None, None] };
        for i in 0..3 {
            e.start_member(i);
        }
        e.wait_healthy();
        e
    }

    fn endpoints(&self) -> Vec<String> {
        self.ports.iter().map(|(c, _)| format!("http://127.0.0.1:{c}")).collect()
    }

    fn start_member(&mut self, i: usize) {
        let cluster: Vec<String> =
            self.ports.iter().enumerate().map(|(k, (_, p))| format!("m{k}=http://127.0.0.1:{p}")).collect();
        let (c, p) = self.ports[i];
        let log = std::fs::File::create(self.dir.path().join(format!("m{i}.log"))).unwrap();
        let child = Command::new("etcd")
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("m{i}")))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{c}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{c}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{p}")])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-token", "adox-fleet-test", "--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "warn"])
            .env("ETCD_UNSUPPORTED_ARCH", "")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian's etcd-server) runs");
        self.members[i] = Some(child);
    }

    fn stop_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until a write through the whole cluster works (a leader and a quorum).
    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &self.endpoints().join(","), "--command-timeout=2s", "put", "/health-check", "1"])
                .output()
                .unwrap();
            if out.status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "etcd cluster not healthy: {}", String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..3 {
            self.stop_member(i);
        }
    }
}

/// One adoxd of the fleet: its own upstream source address (so a capture tells the nodes
/// apart) and its own state directory (kept across a restart).
struct Node {
    d: Option<Adoxd>,
    source: String,
    state: PathBuf,
    cfg: PathBuf,
}

impl Node {
    fn start(&mut self) {
        let d = Adoxd::lab(&[
            "--config",
            self.cfg.to_str().unwrap(),
            "--outgoing-address",
            &self.source,
            "--state-dir",
            self.state.to_str().unwrap(),
        ]);
        self.d = Some(d);
    }
    fn d(&self) -> &Adoxd {
        self.d.as_ref().expect("node running")
    }
    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let bytes = body.map(Value::to_string);
        let r = self.d().admin().request(method, path, &[], bytes.as_deref().map(str::as_bytes)).unwrap();
        (r.status, r.json().unwrap_or(Value::Null))
    }
    /// A write as the API's contract asks of a client: a 503 (etcd slower than
    /// `etcd_timeout_ms`, as on a loaded machine) may or may not have been made, so it is
    /// sent again; on the retry `done` (409 for a create, 404 for a delete) means the first
    /// one landed. Up to 30 s.
    fn write(&self, method: &str, path: &str, body: Option<&Value>, ok: u16, done: u16) {
        let t0 = Instant::now();
        let mut retried = false;
        loop {
            let (st, v) = self.send(method, path, body);
            if st == ok || (retried && st == done) {
                return;
            }
            assert!(st == 503 && t0.elapsed() < Duration::from_secs(30), "{method} {path}: {st} {v}");
            retried = true;
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    fn ids(&self) -> Vec<String> {
        let (st, v) = self.send("GET", "/v1/policies", None);
        assert_eq!(st, 200);
        v["policies"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect()
    }
    fn fleet(&self) -> Value {
        self.send("GET", "/v1/fleet", None).1
    }
    /// Captures this node's cleartext to dot.lab's server while it resolves a fresh name.
    fn cleartext_to_dot_lab(&self, tag: &str) -> Vec<String> {
        let filter = format!("host 127.53.6.1 and port 53 and host {}", self.source);
        let cap = Capture::start_raw(tag, &filter);
        let name = format!("fleet-{tag}-{}.dot.lab.", crate::support::rand_id());
        assert_eq!(self.d().query(&name, RecordType::A).rcode(), ResponseCode::NXDomain, "{tag}");
        cap.stop()
    }
}

/// Polls until `ok` holds, up to `limit`; the time it took.
fn within(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    t0.elapsed()
}

fn fleet_config(dir: &Path, endpoints: &[String]) -> PathBuf {
    fleet_config_with(dir, endpoints, "probing = false", "key_prefix = \"/adox-test\"")
}

/// A fleet node's configuration: `transport` and `fleet` lines added to their tables.
fn fleet_config_with(dir: &Path, endpoints: &[String], transport: &str, fleet: &str) -> PathBuf {
    let ca = lab_dir().join("tls/ca.pem");
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let text = format!(
        "[transport]\nca_file = \"{}\"\nsignals = false\n{transport}\n\n[fleet]\nbackend = \"etcd\"\n\
         etcd_endpoints = [{}]\netcd_timeout_ms = 1000\n{fleet}\n",
        ca.display(),
        list.join(", ")
    );
    let path = dir.join(format!("adox-{}.toml", crate::support::rand_id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Three fresh nodes on `cfg`, each resolving the same names in turn (the next starts
/// when the previous one's probes are over and published); the probes each started and
/// the results each published.
/// Per node: probes started after the first round, probes started by the end of the
/// second, results published by then.
fn probes_per_node(work: &Path, cfg: &Path, tag: &str) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let base = crate::support::outgoing_address().octets();
    let zones = [
        "alpha.lab",
        "beta.lab",
        "dot.lab",
        "doq.lab",
        "mixed.lab",
        "shared.lab",
        "plain.lab",
        "tls12.lab",
        "bdot.lab",
    ];
    let mut started = Vec::new();
    let mut started_by_end = Vec::new();
    let mut published = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let state = work.join(format!("{tag}-state{i}"));
        std::fs::create_dir_all(&state).unwrap();
        let source = format!("127.118.{}.{}", base[3], 20 + i);
        let mut n = Node { d: None, source, state, cfg: cfg.to_path_buf() };
        n.start();
        within(Duration::from_secs(10), "watch up", || n.fleet()["connected"] == json!(true));
        // The results the nodes before published are in by now (taken from the watch).
        std::thread::sleep(Duration::from_millis(500));
        for z in zones {
            let name = format!("shared-probes-{}.{z}.", crate::support::rand_id());
            assert!(matches!(
                n.d().query(&name, RecordType::A).rcode(),
                ResponseCode::NXDomain | ResponseCode::NoError
            ));
        }
        // Probes run beside the queries: wait until none is under way, then for a round of
        // publishing.
        within(Duration::from_secs(15), "probes over", || {
            let (_, v) = n.send("GET", "/v1/servers", None);
            !v.to_string().contains("\"probing\"")
        });
        std::thread::sleep(Duration::from_millis(2500));
        let (_, stats) = n.send("GET", "/v1/stats", None);
        started.push(stats["totals"]["probes_started"].as_u64().unwrap());
        // Again, so that a node that kept republishing would show it.
        for z in zones {
            let name = format!("shared-probes-again-{}.{z}.", crate::support::rand_id());
            n.d().query(&name, RecordType::A);
        }
        std::thread::sleep(Duration::from_millis(2500));
        published.push(n.fleet()["probes_published"].as_u64().unwrap());
        // A probe the second round started (one that failed in the first and is tried
        // again, on a loaded machine) publishes too: compare with every probe made.
        let (_, stats) = n.send("GET", "/v1/stats", None);
        started_by_end.push(stats["totals"]["probes_started"].as_u64().unwrap());
        nodes.push(n);
    }
    for n in &mut nodes {
        if let Some(d) = n.d.take() {
            d.terminate();
        }
    }
    (started, started_by_end, published)
}

/// Issue 15 item 3, measured: with `share_probes`, the second and third node of a fleet
/// take the first one's probe results and probe (almost) nothing themselves.
#[test]
fn shared_probe_results_spare_the_other_nodes_their_probes() {
    let etcd = Etcd::start();
    let work = tempdir::Dir::new();
    let off = fleet_config_with(work.path(), &etcd.endpoints(), "", "key_prefix = \"/adox-off\"");
    let on = fleet_config_with(work.path(), &etcd.endpoints(), "", "key_prefix = \"/adox-on\"\nshare_probes = true");
    let (alone, _, none) = probes_per_node(work.path(), &off, "off");
    let (shared, by_end, published) = probes_per_node(work.path(), &on, "on");
    eprintln!(
        "fleet: probes started per node, same names in turn: not shared {alone:?}, shared {shared:?}; \
         results published {published:?} (probes by the end {by_end:?})"
    );
    assert_eq!(none, [0, 0, 0], "nothing published with share_probes off");
    // A result is published when its outcome is new, not at every encrypted query that
    // renews a success: the first node publishes about what it probed, the others little.
    assert!(published[0] > 0 && published[0] <= by_end[0] + 2, "{published:?} for {by_end:?}");
    assert!(published[1] + published[2] <= by_end[1] + by_end[2] + 4, "{published:?} for {by_end:?}");
    assert!(alone.iter().all(|n| *n >= 5), "each node probes on its own: {alone:?}");
    assert!(shared[0] >= 5, "the first node probes: {shared:?}");
    assert!(
        shared[1] + shared[2] <= (alone[1] + alone[2]) / 4,
        "the others took the first node's results: {shared:?} against {alone:?}"
    );
}

#[test]
#[allow(clippy::too_many_lines, reason = "one fleet's life, step by step")]
fn a_fleet_on_etcd_shares_policies_survives_a_lost_quorum_and_a_node_catches_up() {
    let mut etcd = Etcd::start();
    let work = tempdir::Dir::new();
    let cfg = fleet_config(work.path(), &etcd.endpoints());
    let base = crate::support::outgoing_address().octets();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let state = work.path().join(format!("state{i}"));
            std::fs::create_dir_all(&state).unwrap();
            // 127.118.0.0/16 is no other test's (their sources are in 127.54-127.117).
            let source = format!("127.118.{}.{}", base[3], 10 + i);
            Node { d: None, source, state, cfg: cfg.clone() }
        })
        .collect();
    for n in &mut nodes {
        n.start();
    }
    for n in &nodes {
        within(Duration::from_secs(10), "watch up", || n.fleet()["connected"] == json!(true));
        assert!(!n.cleartext_to_dot_lab("before").is_empty(), "before the push each node asks dot.lab over Do53");
    }

    // A strict DoT policy pushed through node 0 is in force on all three within 1 s.
    let (st, p) = nodes[0].send(
        "POST",
        "/v1/policies",
        Some(&json!({"zone": "dot.lab", "mode": "strict", "transports": ["dot"], "auth": "pkix"})),
    );
    assert_eq!(st, 201, "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    for n in &nodes {
        within(Duration::from_secs(1).saturating_sub(t0.elapsed()), "the policy on every node", || {
            n.ids().contains(&id)
        });
    }
    eprintln!("fleet: one policy in force on 3 nodes after {:?}", t0.elapsed());
    for (i, n) in nodes.iter().enumerate() {
        let packets = n.cleartext_to_dot_lab(&format!("after-{i}"));
        assert!(packets.is_empty(), "node {i}: cleartext to dot.lab after the strict push: {packets:?}");
    }

    // ETags are etcd revisions: a writer on another node with an old one gets 412.
    let etag = nodes[1].d().admin().get(&format!("/v1/policies/{id}")).unwrap().header("etag").unwrap().to_string();
    assert_eq!(etag, format!("\"r{}\"", p["revision"]), "the same ETag on every node");
    let body = json!({"zone": "dot.lab", "mode": "strict", "transports": ["dot"], "auth": "pkix", "comment": "n2"});
    let r = nodes[2]
        .d()
        .admin()
        .request("PUT", &format!("/v1/policies/{id}"), &[("If-Match", &etag)], Some(body.to_string().as_bytes()))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = nodes[1]
        .d()
        .admin()
        .request("PUT", &format!("/v1/policies/{id}"), &[("If-Match", &etag)], Some(body.to_string().as_bytes()))
        .unwrap();
    assert_eq!(r.status, 412, "a lost update: {}", r.text());
    // A selector is unique across the fleet, whichever node is asked.
    let (st, _) = nodes[1].send("POST", "/v1/policies", Some(&json!({"zone": "dot.lab", "mode": "cleartext"})));
    assert_eq!(st, 409);

    // 10,000 policies imported through one node converge on all three.
    let bundle: Vec<Value> =
        (0..10_000).map(|k| json!({"zone": format!("z{k}.bulk.lab"), "mode": "opportunistic"})).collect();
    let t0 = Instant::now();
    let (st, res) = nodes[0].send("POST", "/v1/policies/import", Some(&json!({"policies": bundle})));
    assert_eq!(st, 200, "{res}");
    assert_eq!((res["created"].as_u64(), res["chunks"].as_u64()), (Some(10_000), Some(167)), "{res}");
    let written = t0.elapsed();
    for n in &nodes {
        within(Duration::from_secs(30), "10,000 policies on every node", || n.ids().len() == 10_001);
    }
    eprintln!("fleet: 10,000 policies written in {written:?}, on all 3 nodes after {:?}", t0.elapsed());

    // Two members down: no quorum. Every node keeps answering with its policies; writes
    // answer 503 within etcd_timeout_ms; readiness stays (it is about DNS service).
    etcd.stop_member(1);
    etcd.stop_member(2);
    let t0 = Instant::now();
    let (st, v) = nodes[0].send("POST", "/v1/policies", Some(&json!({"zone": "down.lab", "mode": "cleartext"})));
    assert_eq!(st, 503, "{v}");
    assert!(t0.elapsed() < Duration::from_secs(3), "503 after {:?}", t0.elapsed());
    assert_eq!(v["type"], json!("https://adox.invalid/problems/fleet-unavailable"), "{v}");
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n.ids().len(), 10_001, "node {i} keeps its policies");
        assert!(n.cleartext_to_dot_lab(&format!("noquorum-{i}")).is_empty(), "node {i}: the policy still holds");
        assert_eq!(n.d().api_client(None).get("/readyz").unwrap().status, 200);
    }
    within(Duration::from_secs(10), "nodes see the outage", || {
        nodes.iter().all(|n| n.fleet()["connected"] == json!(false))
    });
    let ready = nodes[2].d().api_client(None).get("/readyz").unwrap().text();
    assert!(ready.contains("fleet: etcd not reachable"), "{ready}");

    // Quorum back: writes work again and every node converges, nothing lost or doubled.
    etcd.start_member(1);
    etcd.start_member(2);
    etcd.wait_healthy();
    let t0 = Instant::now();
    let late = loop {
        let (st, v) = nodes[1].send("POST", "/v1/policies", Some(&json!({"zone": "back.lab", "mode": "cleartext"})));
        if st == 201 {
            break v["id"].as_str().unwrap().to_string();
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "writes did not come back: {st} {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for n in &nodes {
        within(Duration::from_secs(15), "convergence after the outage", || n.ids().contains(&late));
    }
    let ids0 = nodes[0].ids();
    assert_eq!(ids0.len(), 10_002, "nothing lost or duplicated");
    assert_eq!(ids0.iter().collect::<std::collections::BTreeSet<_>>().len(), ids0.len(), "no id twice");

    // Node 2 killed; 100 changes pushed through node 0; node 2 restarted catches up.
    nodes[2].d.take().unwrap().kill9();
    for k in 0..50 {
        let body = json!({"zone": format!("k{k}.late.lab"), "mode": "cleartext"});
        nodes[0].write("POST", "/v1/policies", Some(&body), 201, 409);
        nodes[0].write("DELETE", &format!("/v1/policies/{}", ids0[100 + k]), None, 204, 404);
    }
    nodes[2].start();
    within(Duration::from_secs(15), "the restarted node catches up", || {
        let (a, b) = (nodes[0].fleet(), nodes[2].fleet());
        a["applied_revision"] == b["applied_revision"] && nodes[0].ids() == nodes[2].ids()
    });
    assert_eq!(nodes[2].ids().len(), 10_002);
    // `adoxctl --fleet` puts the three side by side: same revision, no drift reported.
    let adoxctl = Path::new(env!("CARGO_BIN_EXE_adoxd")).with_file_name("adoxctl");
    let urls: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.d().api.unwrap())).collect();
    let revision = nodes[0].fleet()["applied_revision"].to_string();
    within(Duration::from_secs(5), "adoxctl --fleet shows one revision", || {
        let out = Command::new(&adoxctl)
            .args(["--fleet", &urls.join(",")])
            .env("ADOX_API_TOKEN", crate::support::ADMIN_TOKEN)
            .output()
            .expect("adoxctl is built with the workspace");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let rows: Vec<&str> = text.lines().skip(1).collect();
        out.status.success()
            && rows.len() == 3
            && rows.iter().all(|r| r.contains(" etcd ") && r.contains(" up ") && r.contains(&format!(" {revision} ")))
            && !text.contains("drift")
    });

    // A replace import writes the new set first and removes the rest after: the strict
    // policy, whose selector stays (same id, updated), is never missing on any node.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, api, path) = (stop.clone(), nodes[2].d().api.unwrap(), format!("/v1/policies/{id}"));
        std::thread::spawn(move || {
            let c = adoxctl::Client::new(&format!("http://{api}"), Some(crate::support::ADMIN_TOKEN.into())).unwrap();
            let (mut seen, mut missing) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen += 1;
                match c.get(&path).unwrap().status {
                    200 => {}
                    404 => missing += 1,
                    other => panic!("GET {path}: {other}"),
                }
                // Under the API's rate limit (200 requests a second by default).
                std::thread::sleep(Duration::from_millis(20));
            }
            (seen, missing)
        })
    };
    let bundle = json!({"policies": [
        {"zone": "dot.lab", "mode": "strict", "transports": ["dot"], "auth": "pkix", "comment": "kept"},
        {"zone": "new.lab", "mode": "cleartext"},
    ]});
    let (st, res) = nodes[0].send("POST", "/v1/policies/import?mode=replace", Some(&bundle));
    assert_eq!(st, 200, "{res}");
    assert_eq!(
        (res["created"].as_u64(), res["updated"].as_u64(), res["removed"].as_u64()),
        (Some(1), Some(1), Some(10_001)),
        "{res}"
    );
    for n in &nodes {
        within(Duration::from_secs(15), "the replace on every node", || n.ids().len() == 2);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seen, missing) = watcher.join().unwrap();
    assert!(seen > 10 && missing == 0, "the strict policy was missing {missing} times of {seen} during the replace");
    assert!(nodes[2].ids().contains(&id), "it kept its id");

    // etcd gone entirely: a node restarted now serves the state it last saw.
    for i in 0..3 {
        etcd.stop_member(i);
    }
    nodes[1].d.take().unwrap().terminate();
    nodes[1].start();
    assert_eq!(nodes[1].ids(), nodes[0].ids(), "started from its saved fleet state");
    assert!(nodes[1].cleartext_to_dot_lab("restart-no-etcd").is_empty(), "the strict policy holds");
    assert_eq!(nodes[1].fleet()["connected"], json!(false));
    for n in &mut nodes {
        if let Some(d) = n.d.take() {
            d.terminate();
        }
    }
}

/// A node whose etcd member was away while the fleet changed and etcd compacted its
/// history cannot resume its watch: it loads the whole state again.
#[test]
fn a_node_that_missed_a_compacted_history_loads_the_state_again() {
    let mut etcd = Etcd::start();
    let work = tempdir::Dir::new();
    let all = fleet_config(work.path(), &etcd.endpoints());
    // Node b talks to member 2 only.
    let only_m2 =
        fleet_config_with(work.path(), &etcd.endpoints()[2..], "probing = false", "key_prefix = \"/adox-test\"");
    let base = crate::support::outgoing_address().octets();
    let node = |cfg: &Path, i: u8| {
        let state = work.path().join(format!("compact{i}"));
        std::fs::create_dir_all(&state).unwrap();
        let mut n = Node { d: None, source: format!("127.118.{}.{}", base[3], 40 + i), state, cfg: cfg.to_path_buf() };
        n.start();
        n
    };
    let a = node(&all, 0);
    let b = node(&only_m2, 1);
    within(Duration::from_secs(10), "both watching", || {
        a.fleet()["connected"] == json!(true) && b.fleet()["connected"] == json!(true)
    });
    let loads = b.fleet()["full_loads"].as_u64().unwrap();
    etcd.stop_member(2);
    within(Duration::from_secs(10), "b sees its member gone", || b.fleet()["connected"] == json!(false));
    // A write while the two left elect a leader may answer 503 ("leader changed"): after.
    etcd.wait_healthy();
    for k in 0..5 {
        a.write(
            "POST",
            "/v1/policies",
            Some(&json!({"zone": format!("c{k}.compact.lab"), "mode": "cleartext"})),
            201,
            409,
        );
    }
    // Compact everything up to now, through the members that are up.
    let status = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.endpoints()[..2].join(","), "-w", "json", "endpoint", "status"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    let revision = v[0]["Status"]["header"]["revision"].as_i64().unwrap();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.endpoints()[..2].join(","), "compact", &revision.to_string(), "--physical"])
        .output()
        .unwrap();
    assert!(out.status.success(), "compact: {}", String::from_utf8_lossy(&out.stderr));
    etcd.start_member(2);
    within(Duration::from_secs(30), "b loads the state again and has the 5 policies", || {
        let f = b.fleet();
        f["connected"] == json!(true) && b.ids().len() == 5
    });
    assert!(b.fleet()["full_loads"].as_u64().unwrap() > loads, "a full load, not a resumed watch");
    assert!(b.d().log().contains("cannot replay from our revision"), "the compaction was seen");
    assert_eq!(a.ids(), b.ids());
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `etcdctl` against a TLS member with the client certificate (and `user`).
fn etcdctl(dir: &Path, endpoint: &str, user: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3").current_dir(dir).args(["--endpoints", endpoint]);
    cmd.args(["--cacert", "ca.pem", "--cert", "client.pem", "--key", "client.key", "--command-timeout=5s"]);
    if let Some(u) = user {
        cmd.args(["--user", u]);
    }
    cmd.args(args).output().unwrap()
}

/// `[fleet]` with every security option an operator has: https endpoints checked against
/// `etcd_ca_file`, a client certificate, and an etcd user whose role may only use the
/// fleet's prefix. A wrong password keeps the node serving and refusing writes.
#[test]
fn a_fleet_over_tls_with_a_client_certificate_and_an_etcd_user() {
    let dir = tempdir::Dir::new();
    let d = dir.path();
    // A CA, the member's certificate for 127.0.0.1, and adox's client certificate.
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=adox test etcd CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        std::fs::write(d.join(format!("{name}.ext")), ext.replace("\\n", "\n")).unwrap();
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("https://127.0.0.1:{client}");
    let log = std::fs::File::create(d.join("etcd.log")).unwrap();
    let mut member = Command::new("etcd")
        .current_dir(d)
        .args(["--name", "tls", "--data-dir", "data"])
        .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-cluster", &format!("tls=http://127.0.0.1:{peer}")])
        .args([
            "--cert-file",
            "server.pem",
            "--key-file",
            "server.key",
            "--client-cert-auth",
            "--trusted-ca-file",
            "ca.pem",
        ])
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    within(Duration::from_secs(20), "etcd over TLS up", || {
        etcdctl(d, &endpoint, None, &["endpoint", "health"]).status.success()
    });
    // Users: root (needed to turn auth on) and adox, whose role has the prefix only.
    for args in [
        &["user", "add", "root:root-password-123"][..],
        &["user", "add", "adox:adox-password-123"],
        &["role", "add", "adox"],
        &["role", "grant-permission", "adox", "--prefix=true", "readwrite", "/adox-tls/"],
        &["user", "grant-role", "adox", "adox"],
        &["auth", "enable"],
    ] {
        let out = etcdctl(d, &endpoint, None, args);
        assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let password = d.join("adox.password");
    crate::support::write_secret(&password, "adox-password-123\n");
    let wrong = d.join("wrong.password");
    crate::support::write_secret(&wrong, "not-the-password\n");
    let ca = lab_dir().join("tls/ca.pem");
    let cfg = |password: &Path| {
        let path = d.join(format!("adox-{}.toml", crate::support::rand_id()));
        let text = format!(
            "[transport]\nca_file = \"{}\"\nprobing = false\nsignals = false\n\n[fleet]\nbackend = \"etcd\"\n\
             etcd_endpoints = [\"{endpoint}\"]\nkey_prefix = \"/adox-tls\"\netcd_ca_file = \"{}\"\n\
             etcd_cert_file = \"{}\"\netcd_key_file = \"{}\"\netcd_user = \"adox\"\netcd_password_file = \"{}\"\n",
            ca.display(),
            d.join("ca.pem").display(),
            d.join("client.pem").display(),
            d.join("client.key").display(),
            password.display()
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let good = Adoxd::lab(&["--config", cfg(&password).to_str().unwrap()]);
    let c = good.admin();
    within(Duration::from_secs(10), "watch up over TLS", || {
        c.get("/v1/fleet").unwrap().json().unwrap()["connected"] == json!(true)
    });
    let r = c.send_json("POST", "/v1/policies", &json!({"zone": "tls.lab", "mode": "cleartext"})).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    // etcd holds it under the prefix, readable with adox's credentials.
    let out = etcdctl(
        d,
        &endpoint,
        Some("adox:adox-password-123"),
        &["get", "--prefix", "/adox-tls/policies/", "--keys-only"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("/adox-tls/policies/p-1"), "{out:?}");

    // The wrong password: the node serves (and says why in /v1/fleet), writes are 503.
    let bad = Adoxd::lab(&["--config", cfg(&wrong).to_str().unwrap()]);
    let b = bad.admin();
    within(Duration::from_secs(10), "the login error shown", || {
        let v = b.get("/v1/fleet").unwrap().json().unwrap();
        v["connected"] == json!(false) && v["last_error"].as_str().is_some_and(|e| e.contains("authentication failed"))
    });
    let r = b.send_json("POST", "/v1/policies", &json!({"zone": "other.lab", "mode": "cleartext"})).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(bad.query("www.alpha.lab.", RecordType::A).rcode(), ResponseCode::NoError, "DNS does not wait on etcd");
    bad.terminate();
    good.terminate();
    let _ = member.kill();
    let _ = member.wait();
}
