//! Encrypted upstream transport with operator policies (requirements R5, R9, R11; RFC 7858,
//! RFC 8310 profiles) against the lab's DoT servers: NSD with TLS 1.3 only, BIND with
//! TLS 1.3, BIND limited to TLS 1.2, and a server whose certificate names another host.
//! "No cleartext" is shown by a packet capture on the loopback interface, outside adox.

use std::process::Command;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{Adoxd, lab_dir, temp_config};

const CAPTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/lab/capture");

/// A tcpdump capture on lo run by the lab's capture helper.
pub struct Capture {
    name: String,
}

impl Capture {
    /// Captures what matches `filter` and involves this test's adoxd (its
    /// [`outgoing_address`]), so that other tests running at the same time never show up.
    pub fn start(name: &str, filter: &str) -> Self {
        Self::start_raw(name, &format!("({filter}) and host {}", crate::support::outgoing_address()))
    }

    /// Captures exactly what matches `filter` (the caller names the source addresses).
    pub fn start_raw(name: &str, filter: &str) -> Self {
        let out = Command::new(CAPTURE).args(["start", name, filter, lab_dir().to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "capture start: {}", String::from_utf8_lossy(&out.stderr));
        Self { name: name.into() }
    }

    /// Stops the capture and returns the packets it saw, one line each (`tcpdump -r -n`).
    pub fn stop(self) -> Vec<String> {
        let path = self.stop_file();
        let read = Command::new("tcpdump").args(["-r", &path, "-n"]).output().unwrap();
        String::from_utf8_lossy(&read.stdout).lines().map(str::to_string).collect()
    }

    /// Stops the capture and returns the TCP payloads it saw, in order (IPv4 over the
    /// loopback's Ethernet framing, as tcpdump writes it).
    pub fn stop_tcp_payloads(self) -> Vec<Vec<u8>> {
        let pcap = std::fs::read(self.stop_file()).unwrap();
        tcp_payloads(&pcap)
    }

    fn stop_file(&self) -> String {
        let dir = lab_dir();
        let out = Command::new(CAPTURE).args(["stop", &self.name, dir.to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "capture stop: {}", String::from_utf8_lossy(&out.stderr));
        let path = Command::new(CAPTURE).args(["path", &self.name, dir.to_str().unwrap()]).output().unwrap();
        String::from_utf8_lossy(&path.stdout).trim().to_string()
    }
}

/// The TCP payloads of a classic pcap file (link type Ethernet, IPv4).
fn tcp_payloads(pcap: &[u8]) -> Vec<Vec<u8>> {
    let u16be = |b: &[u8], at: usize| usize::from(u16::from_be_bytes([b[at], b[at + 1]]));
    assert_eq!(&pcap[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "a little-endian pcap file");
    assert_eq!(u32::from_le_bytes(pcap[20..24].try_into().unwrap()), 1, "Ethernet link type");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + 16..at + 16 + len];
        at += 16 + len;
        if frame.len() < 34 || u16be(frame, 12) != 0x0800 || frame[23] != 6 {
            continue;
        }
        let ip = &frame[14..];
        let ip_len = usize::from(ip[0] & 0x0f) * 4;
        let total = u16be(ip, 2).min(ip.len());
        let tcp = &ip[ip_len..total];
        let data = usize::from(tcp[12] >> 4) * 4;
        if tcp.len() > data {
            out.push(tcp[data..].to_vec());
        }
    }
    out
}

/// What the TLS handshakes in `payloads` show in clear: the ALPN protocols each
/// ClientHello offers, and the version each ServerHello selects (its supported_versions
/// extension, RFC 8446 section 4.2.1; 0x0304 is TLS 1.3).
pub fn tls_hellos(payloads: &[Vec<u8>]) -> (Vec<Vec<String>>, Vec<u16>) {
    let (mut offers, mut versions) = (Vec::new(), Vec::new());
    let u16be = |b: &[u8], at: usize| usize::from(u16::from_be_bytes([b[at], b[at + 1]]));
    for p in payloads {
        // A handshake record holding a ClientHello (1) or a ServerHello (2).
        if p.len() < 9 || p[0] != 0x16 || !matches!(p[5], 1 | 2) {
            continue;
        }
        let body = &p[9..];
        let mut at = 2 + 32; // version, random
        at += 1 + usize::from(body[at]); // session id
        if p[5] == 1 {
            at += 2 + u16be(body, at); // cipher suites
            at += 1 + usize::from(body[at]); // compression methods
        } else {
            at += 2 + 1; // cipher suite, compression method
        }
        let end = at + 2 + u16be(body, at);
        at += 2;
        while at + 4 <= end.min(body.len()) {
            let (kind, len) = (u16be(body, at), u16be(body, at + 2));
            let ext = &body[at + 4..at + 4 + len];
            match (p[5], kind) {
                (1, 0x0010) => {
                    let mut names = Vec::new();
                    let mut i = 2;
                    while i < ext.len() {
                        let n = usize::from(ext[i]);
                        names.push(String::from_utf8_lossy(&ext[i + 1..i + 1 + n]).to_string());
                        i += 1 + n;
                    }
                    offers.push(names);
                }
                (2, 0x002b) => versions.push(u16be(ext, 0) as u16),
                _ => {}
            }
            at += 4 + len;
        }
    }
    (offers, versions)
}

/// A capture filter for the SYNs that open TCP connections to `addr`:`port`.
fn syn_to(addr: &str, port: u16) -> String {
    format!("host {addr} and tcp dst port {port} and tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0")
}

/// A config trusting the lab CA, with the given `[[policy]]` tables appended.
pub fn config(policies: &str, extra_transport: &str) -> (crate::support::tempdir::Dir, std::path::PathBuf) {
    let ca = lab_dir().join("tls/ca.pem");
    temp_config(&format!("[transport]\nca_file = \"{}\"\n{extra_transport}\n{policies}", ca.display()))
}

fn strict(zone: &str) -> String {
    format!("[[policy]]\nzone = \"{zone}\"\nmode = \"strict\"\ntransports = [\"dot\"]\nauth = \"pkix\"\n")
}

#[test]
fn r5_strict_dot_with_pkix_resolves_and_sends_no_cleartext() {
    let (_d, cfg) = config(&strict("dot.lab"), "");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let cap = Capture::start("r5-strict-ok", "host 127.53.6.1 and port 53");
    assert_eq!(d.query("www.dot.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.60"]);
    assert_eq!(d.query("nonexistent.dot.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    let packets = cap.stop();
    assert!(packets.is_empty(), "cleartext to the strict server: {packets:?}");
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "upstream_dot") >= 2);
    assert_eq!(Adoxd::stat(&log, "tls_full"), 1, "one pooled connection for both queries");
    assert_eq!(Adoxd::stat(&log, "strict_failures"), 0);
}

#[test]
fn r5_bad_certificate_under_strict_is_servfail_with_ede_and_no_cleartext() {
    let (_d, cfg) = config(&strict("badcert.lab"), "");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let cap = Capture::start("r5-badcert", "host 127.53.10.1 and port 53");
    let r = d.query("www.badcert.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::ServFail);
    assert_eq!(
        r.ede(),
        Some((22, "strict ns1.badcert.lab.@127.53.10.1 dot: cert-name-mismatch".to_string())),
        "EDE 22 with the fixed grammar"
    );
    let packets = cap.stop();
    assert!(packets.is_empty(), "cleartext to the strict server: {packets:?}");
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "strict_failures") >= 1);
    assert_eq!(Adoxd::stat(&log, "downgrades"), 0);
}

#[test]
fn r11_tls12_only_server_is_never_used() {
    // Strict: a hard failure, with the reason.
    let (_d, cfg) = config(&strict("tls12.lab"), "");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let r = d.query("www.tls12.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::ServFail);
    let (code, text) = r.ede().expect("EDE");
    assert_eq!(code, 22);
    assert!(text.starts_with("strict ns1.tls12.lab.@127.53.11.1 dot: "), "{text}");
    let log = d.terminate();
    assert_eq!(Adoxd::stat(&log, "tls_full") + Adoxd::stat(&log, "tls_resumed"), 0, "no TLS session came up");
    // Opportunistic: falls back to Do53, and the fallback is counted.
    let (_d2, cfg2) = config("[[policy]]\nzone = \"tls12.lab\"\nmode = \"opportunistic\"\n", "");
    let d2 = Adoxd::lab(&["--config", cfg2.to_str().unwrap()]);
    assert_eq!(d2.query("www.tls12.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.110"]);
    let log = d2.terminate();
    assert!(Adoxd::stat(&log, "downgrades") >= 1);
    assert_eq!(Adoxd::stat(&log, "tls_full") + Adoxd::stat(&log, "tls_resumed"), 0);
}

#[test]
fn r9_one_server_two_zones_two_policies() {
    let policies = format!("{}[[policy]]\nzone = \"shared2.lab\"\nmode = \"cleartext\"\n", strict("shared1.lab"));
    let (_d, cfg) = config(&policies, "");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let cap = Capture::start("r9-shared", "host 127.53.9.1 and port 53");
    assert_eq!(d.query("www.shared1.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.91"]);
    assert_eq!(d.query("www.shared2.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.92"]);
    let packets = cap.stop();
    assert!(!packets.iter().any(|p| p.contains("shared1")), "cleartext query for the strict zone: {packets:?}");
    assert!(packets.iter().any(|p| p.contains("shared2")), "the cleartext zone went over Do53: {packets:?}");
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "upstream_dot") >= 1);
}

#[test]
fn dot_sessions_resume_after_idle_close() {
    let (_d, cfg) = config(&strict("dot.lab"), "dot_idle_timeout_ms = 200");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    for i in 0..4 {
        assert_eq!(d.query(&format!("n{i}.dot.lab."), RecordType::A).rcode(), ResponseCode::NXDomain);
        // Longer than the idle timeout plus the sweep interval: the connection is closed.
        std::thread::sleep(std::time::Duration::from_millis(900));
    }
    let log = d.terminate();
    assert_eq!(Adoxd::stat(&log, "tls_full"), 1);
    assert_eq!(Adoxd::stat(&log, "tls_resumed"), 3, "every reconnect resumed the session");
}

/// DoQ resumption is counted too, and the DoQ front's own log (outside adox) agrees on
/// every handshake: one full, then a resumed one per reconnect.
#[test]
fn doq_sessions_resume_after_idle_close_as_the_server_sees_it() {
    let policy = "[[policy]]\nzone = \"doq.lab\"\nmode = \"strict\"\ntransports = [\"doq\"]\nauth = \"pkix\"\n";
    let (_d, cfg) = config(policy, "probing = false\nsignals = false\ndot_idle_timeout_ms = 200");
    let front_log = lab_dir().join("logs/doq-front.log");
    // Only this test's adoxd's handshakes: other tests may talk to the front meanwhile.
    let client = format!("client={}#", crate::support::outgoing_address());
    let seen = |what: &str| {
        let log = std::fs::read_to_string(&front_log).unwrap();
        log.lines().filter(|l| l.contains(&client) && l.contains(what)).count()
    };
    let (yes0, no0) = (seen("resumed=yes"), seen("resumed=no"));
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    for i in 0..4 {
        assert_eq!(d.query(&format!("n{i}.doq.lab."), RecordType::A).rcode(), ResponseCode::NXDomain);
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
    // The server's state counts them the same way.
    let srv = d.admin().get("/v1/servers/127.53.7.1").unwrap().json().unwrap();
    let doq = srv["transports"].as_array().unwrap().iter().find(|t| t["transport"] == "doq").cloned();
    let doq = doq.unwrap_or_else(|| panic!("{srv}"));
    assert_eq!((doq["handshakes_full"].as_u64(), doq["handshakes_resumed"].as_u64()), (Some(1), Some(3)), "{srv}");
    let log = d.terminate();
    let (full, resumed) = (Adoxd::stat(&log, "tls_full"), Adoxd::stat(&log, "tls_resumed"));
    assert_eq!((full, resumed), (1, 3), "every reconnect resumed the session");
    assert_eq!(Adoxd::stat(&log, "doq_handshakes"), 4);
    assert_eq!((seen("resumed=yes") - yes0, seen("resumed=no") - no0), (3, 1), "the server saw the same");
}

#[test]
fn strict_policy_from_config_with_a_missing_ca_file_is_a_clear_error() {
    let (d, cfg) = temp_config("[transport]\nca_file = \"/nonexistent/ca.pem\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_adoxd"))
        .args(["--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0", "--api", "off"])
        .arg("--state-dir")
        .arg(d.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ca.pem"));
}

/// Reads the probe state adoxd saved at shutdown.
fn probe_state(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("probes.json")).expect("probes.json saved at shutdown");
    serde_json::from_str(&text).unwrap()
}

fn probe_status(state: &[serde_json::Value], addr: &str) -> Option<String> {
    state
        .iter()
        .find(|r| r["addr"] == addr && r["transport"] == "dot")
        .map(|r| r["status"].as_str().unwrap().to_string())
}

#[test]
fn r1_r2_probing_finds_dot_and_uses_it_next_with_state_kept_across_restarts() {
    let state = crate::support::tempdir::Dir::new();
    let sd = state.path().to_str().unwrap().to_string();
    let d = Adoxd::lab(&["--state-dir", &sd, "--workers", "1"]);
    // R1: with probing only, a zone on a DoT server and one on a Do53-only server resolve.
    assert_eq!(d.query("www.dot.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.60"]);
    assert_eq!(d.query("www.plain.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.140"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // R2: the next query to the capable server goes encrypted, and nothing in cleartext.
    let cap = Capture::start("r2-next-encrypted", "host 127.53.6.1 and port 53");
    assert_eq!(d.query("nonexistent.dot.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    let packets = cap.stop();
    assert!(packets.is_empty(), "Do53 to a server known to speak DoT: {packets:?}");
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "probe_successes") >= 1);
    assert!(Adoxd::stat(&log, "probe_failures") >= 1);
    let saved = probe_state(state.path());
    assert_eq!(probe_status(&saved, "127.53.6.1").as_deref(), Some("success"));
    assert_eq!(probe_status(&saved, "127.53.14.1").as_deref(), Some("failed"));
    // Restart with the same state: the first query to dot.lab's server is already
    // encrypted, without a new probe.
    let d2 = Adoxd::lab(&["--state-dir", &sd, "--workers", "1"]);
    assert!(d2.log().contains("probe state loaded"));
    let cap = Capture::start("r2-after-restart", "host 127.53.6.1 and port 53");
    assert_eq!(d2.query("www.dot.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.60"]);
    let packets = cap.stop();
    assert!(packets.is_empty(), "cleartext after restart: {packets:?}");
    let log = d2.terminate();
    assert_eq!(
        Adoxd::stat(&log, "probes_started"),
        Adoxd::stat(&log, "probe_failures") + Adoxd::stat(&log, "probe_successes")
    );
}

#[test]
fn r4_a_do53_only_server_sees_one_failed_probe_per_damping_window() {
    let state = crate::support::tempdir::Dir::new();
    let d = Adoxd::lab(&["--state-dir", state.path().to_str().unwrap(), "--workers", "1"]);
    // Connection attempts to port 853 of the Do53-only server, seen from outside.
    let cap = Capture::start(
        "r4-damping",
        "host 127.53.14.1 and tcp port 853 and tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0",
    );
    for i in 0..20 {
        let r = d.query(&format!("n{i}.plain.lab."), RecordType::A);
        assert_eq!(r.rcode(), ResponseCode::NXDomain, "query {i} failed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(d.query("www.plain.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.140"]);
    let syns = cap.stop();
    assert_eq!(syns.len(), 1, "one probe in the damping window: {syns:?}");
    let log = d.terminate();
    assert_eq!(Adoxd::stat(&log, "servfail"), 0);
}

#[test]
fn r3_svcb_signal_alpn_dot_is_used_from_the_next_query_without_probing() {
    let (_d, cfg) = config("", "probing = false");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    // The first query goes over Do53 and does not wait for `_dns.ns1.dot.lab. SVCB`.
    assert_eq!(d.query("www.dot.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.60"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let cap = Capture::start("r3-signal", "host 127.53.6.1 and port 53");
    assert_eq!(d.query("nonexistent.dot.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    let packets = cap.stop();
    assert!(packets.is_empty(), "Do53 after the signal was learned: {packets:?}");
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "signals_learned") >= 1);
    assert!(Adoxd::stat(&log, "upstream_dot") >= 1);
    assert_eq!(Adoxd::stat(&log, "probes_started"), 0, "no probing involved");
}

/// R5 from the zone owner alone: a DNSSEC-secure `_dns` SVCB (alpn=dot) and a secure TLSA
/// `3 1 1` at `_853._tcp.ns1.dot.lab.` make that nameserver strict, authenticated with
/// DANE, with no operator policy and no CA file (the lab CA is unknown to adoxd here, so a
/// successful authenticated handshake can only come from the TLSA record).
#[test]
fn r5_secure_svcb_and_tlsa_make_the_server_strict_with_dane_and_no_cleartext() {
    let (_d, cfg) = temp_config("[transport]\nprobing = false\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(d.query("www.dot.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.60"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let cap = Capture::start("r5-dane", "host 127.53.6.1 and port 53");
    for i in 0..5 {
        assert_eq!(d.query(&format!("n{i}.dot.lab."), RecordType::A).rcode(), ResponseCode::NXDomain);
    }
    assert!(cap.stop().is_empty(), "cleartext to the strict server");
    let c = d.admin();
    let e = c.get("/v1/explain?name=n9.dot.lab&type=A").unwrap().json().unwrap();
    let dot = e["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "exchange" && s["zone"] == "dot.lab.")
        .unwrap_or_else(|| panic!("no exchange with dot.lab. in {e}"))
        .clone();
    assert_eq!(dot["plan"]["source"], "signal:secure", "{dot}");
    assert_eq!(dot["plan"]["mode"], "strict", "{dot}");
    assert_eq!(dot["plan"]["auth"], "dane", "{dot}");
    assert_eq!(dot["plan"]["transports"], serde_json::json!(["dot"]), "never do53");
    assert_eq!(dot["attempts"], serde_json::json!([{"transport": "dot", "outcome": "ok"}]));
    let servers = c.get("/v1/servers").unwrap().json().unwrap();
    let signal = servers["signals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["nameserver"] == "ns1.dot.lab.")
        .unwrap_or_else(|| panic!("no signal for ns1.dot.lab. in {servers}"))
        .clone();
    assert_eq!((signal["dnssec"].as_str(), &signal["dane"]), (Some("secure"), &serde_json::json!(["dot"])));
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "upstream_strict") >= 6);
    assert_eq!(Adoxd::stat(&log, "strict_failures"), 0);
    assert_eq!(Adoxd::stat(&log, "downgrades"), 0);
}

/// R10: owner preferences travel in DNS only. With no operator input at all (no policy, no
/// CA file, probing off), the strict DANE decision for dot.lab.'s nameserver comes from its
/// SVCB and TLSA records, and adoxd exchanges nothing with the lab's servers except DNS on
/// port 53 and DNS over TLS on 853 (a capture of everything else stays empty).
#[test]
fn r10_owner_preferences_come_from_dns_alone() {
    let (_d, cfg) = temp_config("[transport]\nprobing = false\n");
    let other = Capture::start("r10-non-dns", "net 127.53.0.0/16 and not port 53 and not port 853");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(d.query("www.dot.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.60"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(d.query("n1.dot.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    let e = d.admin().get("/v1/explain?name=n2.dot.lab&type=A").unwrap().json().unwrap();
    let x = e["steps"].as_array().unwrap().iter().find(|s| s["step"] == "exchange" && s["zone"] == "dot.lab.").cloned();
    let x = x.unwrap_or_else(|| panic!("{e}"));
    assert_eq!((x["plan"]["source"].as_str(), x["plan"]["auth"].as_str()), (Some("signal:secure"), Some("dane")));
    drop(d);
    assert!(other.stop().is_empty(), "traffic other than DNS to the lab's servers");
}

/// The same over DoQ: doq.lab.'s secure SVCB offers doq and dot, with secure TLSA records
/// at `_853._quic` and `_853._tcp`: strict DoQ first, authenticated with DANE.
#[test]
fn r5_secure_signal_with_quic_tlsa_is_strict_doq_with_dane() {
    let (_d, cfg) = temp_config("[transport]\nprobing = false\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(d.query("www.doq.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.70"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let cap = Capture::start("r5-dane-doq", "dst host 127.53.7.1 and dst port 53 and not src host 127.53.7.2");
    assert_eq!(d.query("nonexistent.doq.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    assert!(cap.stop().is_empty(), "cleartext to the strict server");
    let e = d.admin().get("/v1/explain?name=n1.doq.lab&type=A").unwrap().json().unwrap();
    let doq =
        e["steps"].as_array().unwrap().iter().find(|s| s["step"] == "exchange" && s["zone"] == "doq.lab.").cloned();
    let doq = doq.unwrap_or_else(|| panic!("{e}"));
    assert_eq!((doq["plan"]["mode"].as_str(), doq["plan"]["auth"].as_str()), (Some("strict"), Some("dane")), "{doq}");
    assert_eq!(doq["plan"]["transports"], serde_json::json!(["doq", "dot"]));
    assert_eq!(doq["attempts"][0], serde_json::json!({"transport": "doq", "outcome": "ok"}));
}

/// A secure TLSA RRset whose only record has usage 1 (PKIX-EE, not allowed by SVCB-DANE)
/// makes authentication impossible: the server is strict (secure SVCB and TLSA) and every
/// exchange fails with a named reason, SERVFAIL with EDE 22, never cleartext.
#[test]
fn r5_a_secure_tlsa_without_a_usable_record_is_a_strict_failure_never_cleartext() {
    let (_d, cfg) = temp_config("[transport]\nprobing = false\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    // The first query waits for the signal (`signal_wait`): strict already.
    assert_eq!(d.query("www.tlsapkix.lab.", RecordType::A).rcode(), ResponseCode::ServFail);
    let cap = Capture::start("r5-tlsa-unusable", "host 127.53.23.1 and port 53");
    let r = d.query("n1.tlsapkix.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::ServFail);
    let (code, text) = r.ede().expect("EDE");
    assert_eq!(code, 22, "{text}");
    assert!(text.contains("strict ns1.tlsapkix.lab.@127.53.23.1 dot: dane-no-usable-tlsa"), "{text}");
    assert!(cap.stop().is_empty(), "cleartext to the strict server");
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "strict_failures") >= 1);
}

/// An insecure signal is a hint, never strict: bdot.lab. is unsigned, so its SVCB and
/// TLSA cannot be trusted, and the plan stays opportunistic.
#[test]
fn r5_an_insecure_signal_never_makes_a_server_strict() {
    let (_d, cfg) = temp_config("[transport]\nprobing = false\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(d.query("www.bdot.lab.", RecordType::A).rcode(), ResponseCode::NoError);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let e = d.admin().get("/v1/explain?name=n1.bdot.lab&type=A").unwrap().json().unwrap();
    let x =
        e["steps"].as_array().unwrap().iter().find(|s| s["step"] == "exchange" && s["zone"] == "bdot.lab.").cloned();
    let x = x.unwrap_or_else(|| panic!("{e}"));
    assert_eq!(x["plan"]["source"], "signal:insecure", "{x}");
    assert_eq!((x["plan"]["mode"].as_str(), x["plan"]["auth"].as_str()), (Some("opportunistic"), Some("none")));
}

#[test]
fn r5_a_signal_whose_lookup_needs_itself_resolves_and_is_reported() {
    let (_d, cfg) = config("", "probing = false");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(d.query("www.cycle.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.130"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The signal (fetched over Do53, the server's transport at that moment) now applies.
    assert_eq!(d.query("nonexistent.cycle.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "signal_cycles") >= 1, "the cycle is reported");
    // A zone served by its own nameserver is the ordinary case: counted, not logged at
    // INFO (issue 13: normal events are not news).
    assert!(!log.contains("signal lookup depends on the nameserver it decides for"), "{log}");
    assert!(Adoxd::stat(&log, "upstream_dot") >= 1);
}

#[test]
fn r7_signal_alpn_doq_dot_uses_doq_first() {
    let (_d, cfg) = config("", "probing = false");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(d.query("www.doq.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.70"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    // adox's own Do53 to the server (the DoQ front's leg to NSD comes from 127.53.7.2).
    let cap = Capture::start("r7-doq", "dst host 127.53.7.1 and dst port 53 and not src host 127.53.7.2");
    assert_eq!(d.query("nonexistent.doq.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    assert!(cap.stop().is_empty());
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "upstream_doq") >= 1, "DoQ is preferred within the record");
    assert_eq!(Adoxd::stat(&log, "upstream_dot"), 0);
}

#[test]
fn r7_strict_doq_then_dot_when_doq_fails_and_never_cleartext() {
    // dot.lab's server speaks DoT but not DoQ (NSD answers UDP 853 with plain DNS).
    let policy = "[[policy]]\nzone = \"dot.lab\"\nmode = \"strict\"\ntransports = [\"doq\", \"dot\"]\n";
    let (_d, cfg) = config(policy, "probing = false\nsignals = false\ndot_timeout_ms = 1000");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    let cap = Capture::start("r7-fallback", "host 127.53.6.1 and port 53");
    let quic = Capture::start("r7-quic-first", "udp and dst host 127.53.6.1 and dst port 853");
    assert_eq!(d.query("www.dot.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.60"]);
    assert!(!quic.stop().is_empty(), "DoQ was tried first");
    // The DoQ failure is remembered: the next query goes straight to DoT.
    let quic = Capture::start("r7-quic-next", "udp and dst host 127.53.6.1 and dst port 853");
    assert_eq!(d.query("nonexistent.dot.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    let again = quic.stop();
    assert!(again.is_empty(), "DoQ retried within the damping window: {again:?}");
    assert!(cap.stop().is_empty(), "strict never sends cleartext");
    let log = d.terminate();
    // Two names and the zone's DNSKEY (validation).
    assert_eq!(Adoxd::stat(&log, "upstream_dot"), 3);
    assert_eq!(Adoxd::stat(&log, "strict_failures"), 0);
}

#[test]
fn strict_doq_with_pkix_resolves_over_one_quic_connection() {
    let policy = "[[policy]]\nzone = \"doq.lab\"\nmode = \"strict\"\ntransports = [\"doq\"]\n";
    let (_d, cfg) = config(policy, "probing = false\nsignals = false");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    let cap = Capture::start("doq-strict", "dst host 127.53.7.1 and dst port 53 and not src host 127.53.7.2");
    assert_eq!(d.query("www.doq.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.70"]);
    assert_eq!(d.query("a.doq.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    assert_eq!(d.query("b.doq.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    assert!(cap.stop().is_empty());
    let log = d.terminate();
    // Three names and the zone's DNSKEY (validation).
    assert_eq!(Adoxd::stat(&log, "upstream_doq"), 4);
    assert_eq!(Adoxd::stat(&log, "doq_handshakes"), 1);
}

/// DoQ queries are padded to a multiple of 128 octets (RFC 9250 section 5.4, RFC 8467), as
/// the DoQ front sees them after decryption (its log gives each query's size): QUIC packet
/// sizes on the wire vary with ACK frames and say nothing.
#[test]
fn doq_queries_are_padded_as_the_server_sees_them() {
    let policy = "[[policy]]\nzone = \"doq.lab\"\nmode = \"strict\"\ntransports = [\"doq\"]\n";
    let (_d, cfg) = config(policy, "probing = false\nsignals = false");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    let names: Vec<String> =
        [4, 30, 55].iter().map(|n| format!("{}-{}.doq.lab.", "p".repeat(*n), std::process::id())).collect();
    for n in &names {
        assert_eq!(d.query(n, RecordType::A).rcode(), ResponseCode::NXDomain);
    }
    drop(d);
    let front = std::fs::read_to_string(lab_dir().join("logs/doq-front.log")).unwrap();
    for n in &names {
        let line = front
            .lines()
            .find(|l| l.contains(&format!("query {n} A (")))
            .unwrap_or_else(|| panic!("{n} not in the front's log"));
        let octets: usize =
            line.split(" A (").nth(1).and_then(|r| r.split(' ').next()).and_then(|v| v.parse().ok()).unwrap();
        assert_eq!(octets % 128, 0, "{line}");
    }
}

#[test]
fn r6_counters_move_by_exactly_what_was_sent() {
    let (_d, cfg) = config(&strict("dot.lab"), "probing = false\nsignals = false");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(d.query("www.dot.lab.", RecordType::A).rcode(), ResponseCode::NoError);
    assert_eq!(d.query("a.dot.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    assert_eq!(d.query("b.dot.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    assert_eq!(d.query("www.dot.lab.", RecordType::A).rcode(), ResponseCode::NoError);
    let log = d.terminate();
    let expect = [
        ("queries_udp", 4),
        ("cache_hits", 1),
        ("cache_misses", 3),
        ("noerror", 2),
        ("nxdomain", 2),
        // Priming (. NS), then lab. and dot.lab. found by minimised queries over Do53, and
        // the chain of trust above the strict zone (DNSKEY of . and lab.) over Do53; the DS
        // of lab. and dot.lab. came signed in the referrals (RFC 4035 section 3.1.4)...
        ("upstream_udp", 5),
        // ... and one DoT query per distinct name to the strict zone's server, plus its
        // DNSKEY,
        ("upstream_dot", 4),
        // on one connection.
        ("tls_full", 1),
        ("tls_resumed", 0),
        ("downgrades", 0),
        ("strict_failures", 0),
        ("probes_started", 0),
    ];
    for (name, want) in expect {
        assert_eq!(Adoxd::stat(&log, name), want, "{name}");
    }
}

#[test]
fn r8_each_nameserver_of_a_zone_gets_its_own_transport() {
    // mixed.lab: ns1 (127.53.8.1) speaks DoT, ns2 (127.53.8.2) Do53 only. The policy key
    // includes the nameserver: strict DoT for ns1, cleartext for ns2, in the same zone.
    let policies = "[[policy]]\nzone = \"mixed.lab\"\nnameserver = \"ns1.mixed.lab\"\nmode = \"strict\"\ntransports = [\"dot\"]\n\
                    [[policy]]\nzone = \"mixed.lab\"\nnameserver = \"ns2.mixed.lab\"\nmode = \"cleartext\"\n";
    let (_d, cfg) = config(policies, "probing = false\nsignals = false");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    let cap1 = Capture::start("r8-ns1-do53", "host 127.53.8.1 and port 53");
    let cap2 = Capture::start("r8-ns2-853", "host 127.53.8.2 and port 853");
    for i in 0..30 {
        let r = d.query(&format!("n{i}.mixed.lab."), RecordType::A);
        assert_eq!(r.rcode(), ResponseCode::NXDomain, "query {i}");
    }
    let (ns1_cleartext, ns2_encrypted) = (cap1.stop(), cap2.stop());
    assert!(ns1_cleartext.is_empty(), "ns1 is strict DoT, yet got Do53: {ns1_cleartext:?}");
    assert!(ns2_encrypted.is_empty(), "ns2 is cleartext, yet got port 853: {ns2_encrypted:?}");
    let log = d.terminate();
    // Both servers answered some of the 30 queries: unknown servers are explored first,
    // and each answers with its own transport.
    assert!(Adoxd::stat(&log, "upstream_dot") >= 1, "ns1 was used over DoT");
    assert!(Adoxd::stat(&log, "upstream_udp") >= 4, "ns2 was used over Do53 (beyond the 3 delegation queries)");
    assert_eq!(Adoxd::stat(&log, "strict_failures"), 0);
}

#[test]
fn r2_probing_detects_doq_and_dot_per_transport() {
    let state = crate::support::tempdir::Dir::new();
    let (_d, cfg) = config("", "signals = false");
    let d = Adoxd::lab(&[
        "--config",
        cfg.to_str().unwrap(),
        "--state-dir",
        state.path().to_str().unwrap(),
        "--workers",
        "1",
    ]);
    assert_eq!(d.query("www.doq.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.70"]);
    std::thread::sleep(std::time::Duration::from_millis(800));
    // Both transports were probed and work: the next query prefers DoQ.
    assert_eq!(d.query("nonexistent.doq.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "upstream_doq") >= 2, "one DoQ probe and one DoQ query at least");
    let saved = probe_state(state.path());
    let doq = saved.iter().find(|r| r["addr"] == "127.53.7.1" && r["transport"] == "doq").map(|r| r["status"].clone());
    assert_eq!(doq, Some(serde_json::json!("success")), "{saved:?}");
    assert_eq!(probe_status(&saved, "127.53.7.1").as_deref(), Some("success"), "DoT too");
}

/// R5, no self-lock (issue 12 item 3): lock.lab. is served only by its own strict DANE
/// nameserver; its signal and TLSA live 2 s and the server issues no session tickets, so
/// after an idle close every connection is a full handshake that needs the TLSA, whose
/// refresh needs that handshake. Idle past the TTLs, the zone still resolves strictly (the
/// handshake is authenticated with the last validated TLSA set, within its signatures'
/// validity), nothing goes in cleartext, and the signal and TLSA set are learned again
/// over that connection. (`resolver::tests::dnssec::a_secure_tlsa_set_authenticates_until
/// _its_signatures_expire_not_its_ttl` shows the bound itself on the fake clock.)
#[test]
fn r5_a_strict_dane_zone_idle_past_its_tlsa_ttl_is_not_locked_out() {
    let (_d, cfg) = temp_config("[transport]\nprobing = false\ndot_idle_timeout_ms = 200\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(d.query("www.lock.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.250"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let cap = Capture::start("r5-selflock", "host 127.53.27.1 and port 53");
    assert_eq!(d.query("n1.lock.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    // Past the 2 s TTLs and the 120 s grace a TLSA set once had beyond its TTL (with it,
    // this zone was locked out: the refresh needed a handshake that needed the TLSA); the
    // connection closed at 200 ms idle, and no ticket to resume.
    std::thread::sleep(std::time::Duration::from_secs(125));
    let r = d.query("n2.lock.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{:?}", r.ede());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(d.query("n3.lock.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    assert!(cap.stop().is_empty(), "cleartext to the strict server");
    let x = d.admin().get("/v1/explain?name=n4.lock.lab&type=A").unwrap().json().unwrap();
    let step = x["steps"].as_array().unwrap().iter().find(|s| s["step"] == "exchange" && s["zone"] == "lock.lab.");
    let step = step.cloned().unwrap_or_else(|| panic!("{x}"));
    assert_eq!((step["plan"]["mode"].as_str(), step["plan"]["auth"].as_str()), (Some("strict"), Some("dane")));
    let log = d.terminate();
    assert_eq!(Adoxd::stat(&log, "tls_resumed"), 0, "no session was resumed: every handshake checked the TLSA");
    assert!(Adoxd::stat(&log, "tls_full") >= 2, "a full handshake after the idle close");
    assert!(Adoxd::stat(&log, "signals_learned") >= 2, "the signal and its TLSA were learned again");
    assert_eq!(Adoxd::stat(&log, "strict_failures"), 0);
}

/// R5/R7 across a restart (issue 12 item 2): dot.lab.'s nameserver is strict from its
/// secure signal and TLSA; the strict state is written to the state directory within a
/// second of being learned and loaded at start, so after a restart not even the first query to that
/// server goes in cleartext (it once did: the signal was learned again beside a Do53 query).
/// A cold start (no state file) and a strict DANE server whose signal lives in its own
/// zone: the first query waits for the signal (`transport.signal_wait = "signed"`, the
/// default), and the signal's lookup, which needs that very server before anything is
/// known of it, asks it over DoT first, unauthenticated: the server never sees a
/// cleartext query, not even the first. With `"none"` the same first query goes out in
/// cleartext beside the lookup (the window the knob closes).
#[test]
fn r5_a_secure_strict_server_sees_no_cleartext_from_a_cold_start() {
    for (wait, cleartext) in [("signed", false), ("none", true)] {
        let (_d, cfg) = temp_config(&format!("[transport]\nsignal_wait = \"{wait}\"\n"));
        let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
        let cap = Capture::start(&format!("r5-cold-{wait}"), "host 127.53.6.1 and port 53");
        assert_eq!(d.query("www.dot.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.60"]);
        assert_eq!(d.query("n1.dot.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
        let seen = cap.stop();
        assert_eq!(!seen.is_empty(), cleartext, "signal_wait = {wait}: {seen:?}");
        let log = d.terminate();
        if !cleartext {
            assert!(Adoxd::stat(&log, "signal_waits") >= 1, "{log}");
            assert_eq!(Adoxd::stat(&log, "signal_wait_timeouts"), 0);
            assert!(Adoxd::stat(&log, "upstream_strict") >= 2, "strict from the first query");
        }
    }
}

/// Signal lookups that depend on each other through two zones (cyca.lab. is served by
/// ns1.cycb.lab., whose signal lives in cycb.lab., served by ns1.cyca.lab.) and through
/// three (cycx -> cycy -> cycz -> cycx, cycz's TLSA a CNAME into cycx): every name
/// resolves, no wait runs out (a deadlock undone by time would), the cycles are
/// reported (counter, `/v1/servers`), and the strict server never sees cleartext.
#[test]
fn r5_signal_cycles_through_two_and_three_zones_resolve_and_are_reported() {
    let (_d, cfg) = temp_config("");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    let cap = Capture::start("r5-cycles", "host 127.53.28.1 and port 53");
    assert_eq!(d.query("www.cyca.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.141"]);
    assert_eq!(d.query("www.cycx.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.143"]);
    // Every zone of both rings, through the strict signals learnt meanwhile.
    for z in ["cyca", "cycb", "cycx", "cycy", "cycz"] {
        assert_eq!(d.query(&format!("nonexistent.{z}.lab."), RecordType::A).rcode(), ResponseCode::NXDomain, "{z}");
    }
    assert!(cap.stop().is_empty(), "cleartext to the strict servers of the rings");
    let servers = d.admin().get("/v1/servers").unwrap().json().unwrap();
    let signals = servers["signals"].as_array().unwrap();
    let ring = |names: &[&str]| {
        names
            .iter()
            .map(|z| {
                let ns = format!("ns1.{z}.lab.");
                let s = signals.iter().find(|s| s["nameserver"] == ns.as_str()).unwrap_or_else(|| panic!("{ns}"));
                assert_eq!((s["dnssec"].as_str(), s["dane"][0].as_str()), (Some("secure"), Some("dot")), "{s}");
                s["cycle"] == true
            })
            .filter(|c| *c)
            .count()
    };
    assert!(ring(&["cyca", "cycb"]) >= 1, "the two-zone cycle is reported: {servers}");
    assert!(ring(&["cycx", "cycy", "cycz"]) >= 1, "the three-zone cycle is reported: {servers}");
    // Explain names it where a signal learnt through the cycle decides a plan.
    let warned = ["cyca", "cycb"].iter().any(|z| {
        let e = d.admin().get(&format!("/v1/explain?name=explain.{z}.lab&type=A")).unwrap().json().unwrap();
        e["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "exchange" && s["plan"]["warning"].as_str().is_some_and(|w| w.contains("cycle")))
    });
    assert!(warned, "explain shows no plan decided by a signal learnt through the cycle");
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "signal_cycles") >= 2, "{log}");
    assert_eq!(Adoxd::stat(&log, "signal_wait_timeouts"), 0, "a wait ran out");
    assert_eq!(Adoxd::stat(&log, "strict_failures"), 0);
}

#[test]
fn r5_a_secure_strict_server_sees_no_cleartext_across_a_restart() {
    let state = crate::support::tempdir::Dir::new();
    let sd = state.path().to_str().unwrap().to_string();
    // Without the wait for a first signal (the default closes the cold-start window by
    // itself, see the next test): only the saved state can keep the first query after
    // the restart off cleartext.
    let (_d, cfg) = temp_config("[transport]\nprobing = false\nsignal_wait = \"none\"\n");
    let args = ["--config", cfg.to_str().unwrap(), "--state-dir", &sd, "--workers", "1"];
    let d = Adoxd::lab(&args);
    assert_eq!(d.query("www.dot.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.60"]);
    // Saved within a second of being learned.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let saved = std::fs::read_to_string(state.path().join("strict-signals.json")).unwrap();
    assert!(saved.contains("ns1.dot.lab."), "{saved}");
    let cap = Capture::start("r5-restart", "host 127.53.6.1 and port 53");
    assert_eq!(d.query("n1.dot.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    drop(d.terminate());
    let d2 = Adoxd::lab(&args);
    assert!(d2.log().contains("strict signal state loaded"), "{}", d2.log());
    assert_eq!(d2.query("www.dot.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.60"]);
    assert_eq!(d2.query("n2.dot.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    assert!(cap.stop().is_empty(), "cleartext to the strict server across the restart");
    let log = d2.terminate();
    assert!(Adoxd::stat(&log, "upstream_strict") >= 2, "strict from the first query after the restart");
    assert_eq!(Adoxd::stat(&log, "strict_failures"), 0);
}

/// One encrypted connection per authoritative server across workers
/// (`transport.connections_per_server`, default 1): with two workers, queries arriving on
/// both reach dot.lab.'s server over one DoT connection, the other worker handing its
/// queries to the owner; with k = 2 each worker keeps its own connection (the per-worker
/// pools); with three workers and k = 2, two connections and the third worker hands
/// over. Answers are the same either way.
#[test]
fn one_encrypted_connection_per_server_across_workers_unless_k_says_more() {
    for (k, workers, connections) in [(1, "2", 1), (2, "2", 2), (2, "3", 2)] {
        let (_d, cfg) = config(&strict("dot.lab"), &format!("connections_per_server = {k}"));
        let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", workers]);
        // The server's side: every connection adoxd opens to it starts with a SYN.
        let syns = Capture::start(&format!("k{k}-{workers}-syn"), &syn_to("127.53.6.1", 853));
        // Each query from a fresh source port: the kernel spreads them over the workers
        // (all 60 on the owners only: odds of (2/3)^60 with three workers).
        for i in 0..60 {
            assert_eq!(d.query(&format!("n{i}.dot.lab."), RecordType::A).rcode(), ResponseCode::NXDomain, "k={k}");
        }
        let opened = syns.stop();
        assert_eq!(
            opened.len() as u64,
            connections,
            "k={k}, {workers} workers: connections the server saw: {opened:?}"
        );
        let srv = d.admin().get("/v1/servers/127.53.6.1").unwrap().json().unwrap();
        let dot = srv["transports"].as_array().unwrap().iter().find(|t| t["transport"] == "dot").cloned();
        let dot = dot.unwrap_or_else(|| panic!("{srv}"));
        assert_eq!(dot["open_connections"].as_u64(), Some(connections), "k={k}, {workers} workers: {srv}");
        let log = d.terminate();
        let handoffs = Adoxd::stat(&log, "upstream_handoffs");
        if workers == "2" && k == 2 {
            assert_eq!(handoffs, 0, "k = workers: every worker uses its own connections");
        } else {
            assert!(handoffs >= 1, "k={k}, {workers} workers: queries were handed over: {log}");
        }
        assert_eq!(Adoxd::stat(&log, "strict_failures"), 0);
    }
}

/// The same for DoQ (doq.lab.'s aioquic front) and DoH (bdoh.lab.'s BIND): with two
/// workers and the default k = 1, one connection to the server per transport, and the
/// other worker's queries handed over.
#[test]
fn doq_and_doh_keep_one_connection_per_server_across_workers() {
    for (zone, addr, transport) in [("doq.lab", "127.53.7.1", "doq"), ("bdoh.lab", "127.53.25.1", "doh")] {
        let policy = format!(
            "[[policy]]\nzone = \"{zone}\"\nnameserver = \"ns1.{zone}\"\nmode = \"strict\"\ntransports = [\"{transport}\"]\nauth = \"pkix\"\n"
        );
        let (_d, cfg) = config(&policy, "probing = false\nsignals = false");
        let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "2"]);
        // DoH runs over TCP: the server's side sees each connection's SYN.
        let syns = (transport == "doh").then(|| Capture::start("doh-k1-syn", &syn_to(addr, 443)));
        for i in 0..40 {
            assert_eq!(d.query(&format!("n{i}.{zone}."), RecordType::A).rcode(), ResponseCode::NXDomain, "{zone}");
        }
        if let Some(syns) = syns {
            let opened = syns.stop();
            assert_eq!(opened.len(), 1, "DoH connections the server saw: {opened:?}");
        }
        let srv = d.admin().get(&format!("/v1/servers/{addr}")).unwrap().json().unwrap();
        let state = srv["transports"].as_array().unwrap().iter().find(|t| t["transport"] == transport).cloned();
        let state = state.unwrap_or_else(|| panic!("{srv}"));
        assert_eq!(state["open_connections"].as_u64(), Some(1), "{transport}: {srv}");
        let log = d.terminate();
        assert!(Adoxd::stat(&log, "upstream_handoffs") >= 1, "{transport}: {log}");
        assert_eq!(Adoxd::stat(&log, "strict_failures"), 0, "{transport}");
        assert!(Adoxd::stat(&log, &format!("upstream_{transport}")) >= 40, "{transport}");
    }
}
