//! The fault matrix: authoritative servers that are down, silent, slow, answer with the
//! wrong ID, truncate forever, reset or stall TLS, or serve giant RRsets of every type
//! (`deploy/lab/hostile.py`, delegated from lab.). For each: what the client gets, that a
//! strict server never sees cleartext, and that the same worker keeps resolving other zones
//! within 1 s meanwhile; DoQ servers that flood a client with streams or data past its
//! limits. TLS 1.2-only and wrong-certificate servers are the lab's own BIND and
//! NSD (`encrypted::r11_tls12_only_server_is_never_used`,
//! `encrypted::r5_bad_certificate_under_strict_is_servfail_with_ede_and_no_cleartext`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::encrypted::Capture;
use crate::support::{Adoxd, Ask, Response, lab_dir, rss, temp_config, udp_exchange};

/// A `deploy/lab/hostile.py` server, killed when dropped (and gone with its standard input
/// if the test process dies first).
pub(crate) struct Hostile(Child);

impl Hostile {
    pub(crate) fn start(mode: &str, zone: &str, address: &str) -> Self {
        Self::start_with(mode, zone, address, &[])
    }

    /// With the zone's NS RRset given as `NAME=ADDR` pairs (default `ns1=ADDRESS`).
    fn start_with(mode: &str, zone: &str, address: &str, nameservers: &[&str]) -> Self {
        let env = std::fs::read_to_string(lab_dir().join("lab.env")).unwrap();
        let python = env.lines().find_map(|l| l.strip_prefix("ADOX_LAB_PYTHON=")).expect("ADOX_LAB_PYTHON in lab.env");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/lab/hostile.py");
        let mut child = Command::new(python)
            .args([script, mode, zone, address])
            .args((!nameservers.is_empty()).then(|| nameservers.join(",")))
            .env("ADOX_LAB_DIR", lab_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "hostile.py {mode} {zone} {address} did not start");
        Self(child)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Asks `name` in the background (the fault being worked around) and, while that runs,
/// resolves a name of another zone on the same worker: it must be answered within 1 s.
/// Returns the faulty name's answer.
fn meanwhile_others_answer(d: &Adoxd, name: &str, rtype: RecordType) -> Response {
    use std::sync::atomic::{AtomicU32, Ordering};
    static ASKED: AtomicU32 = AtomicU32::new(0);
    let addr: SocketAddr = d.addr;
    let ask = Ask::new(name, rtype).wire();
    // Sent again if nothing came back at all, as a stub would.
    let faulty = std::thread::spawn(move || (0..3).find_map(|_| udp_exchange(addr, &ask, Duration::from_secs(15))));
    std::thread::sleep(Duration::from_millis(150));
    // A name nobody asked before: a real resolution through the lab, not a cache hit.
    let other = format!("n{}-{}.alpha.lab.", std::process::id(), ASKED.fetch_add(1, Ordering::Relaxed));
    let t = Instant::now();
    assert_eq!(d.query(&other, RecordType::A).rcode(), ResponseCode::NXDomain);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "another zone took {took:?} while {name} was being worked on");
    Response::parse(faulty.join().unwrap().unwrap_or_else(|| panic!("no answer for {name} within 15 s")))
}

fn one_worker(extra: &[&str]) -> Adoxd {
    let mut args = vec!["--workers", "1"];
    args.extend_from_slice(extra);
    Adoxd::lab(&args)
}

/// One worker with `config` as its configuration file (kept while the guard lives).
fn one_worker_with(config: &str) -> (crate::support::tempdir::Dir, Adoxd) {
    let (dir, cfg) = temp_config(config);
    let d = one_worker(&["--config", cfg.to_str().unwrap()]);
    (dir, d)
}

#[test]
fn a_zone_whose_only_server_is_down_is_servfail_with_ede_no_reachable_authority() {
    let d = one_worker(&[]);
    let r = meanwhile_others_answer(&d, "www.down.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::ServFail);
    assert_eq!(r.ede().map(|e| e.0), Some(22), "{:?}", r.ede());
}

#[test]
fn a_silent_server_is_servfail_with_ede_and_other_zones_answer_meanwhile() {
    let _h = Hostile::start("silent", "silent.lab.", "127.53.40.1");
    let d = one_worker(&[]);
    let r = meanwhile_others_answer(&d, "www.silent.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::ServFail);
    assert_eq!(r.ede().map(|e| e.0), Some(22), "{:?}", r.ede());
}

#[test]
fn a_slow_server_still_answers() {
    let _h = Hostile::start("slow", "slow.lab.", "127.53.40.2");
    let d = one_worker(&[]);
    let r = meanwhile_others_answer(&d, "www.slow.lab.", RecordType::A);
    assert_eq!(r.rdata(RecordType::A), ["192.0.2.99"], "{:?} {:?}", r.rcode(), r.ede());
}

#[test]
fn answers_with_the_wrong_id_are_ignored_and_the_other_server_answers() {
    let ns = ["ns1=127.53.40.3", "ns2=127.53.40.4"];
    let _bad = Hostile::start_with("wrongid", "wrongid.lab.", "127.53.40.3", &ns);
    let _good = Hostile::start_with("good", "wrongid.lab.", "127.53.40.4", &ns);
    let d = one_worker(&[]);
    for i in 0..4 {
        let r = meanwhile_others_answer(&d, &format!("w{i}.wrongid.lab."), RecordType::A);
        assert_eq!(r.rdata(RecordType::A), ["192.0.2.99"], "{:?} {:?}", r.rcode(), r.ede());
    }
}

#[test]
fn a_server_that_truncates_forever_is_servfail_with_ede() {
    let _h = Hostile::start("truncate", "truncate.lab.", "127.53.40.5");
    let d = one_worker(&[]);
    let r = meanwhile_others_answer(&d, "www.truncate.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::ServFail);
    assert!(r.ede().is_some(), "a SERVFAIL says why");
}

fn strict_dot(zone: &str) -> String {
    strict(zone, "dot")
}

/// A config with a strict policy for `ns1.<zone>` over `transport` (PKIX, the lab CA).
fn strict(zone: &str, transport: &str) -> String {
    let ca = lab_dir().join("tls/ca.pem");
    format!(
        "[transport]\nca_file = \"{}\"\nprobing = false\n[[policy]]\nzone = \"{zone}\"\nnameserver = \"ns1.{zone}\"\nmode = \"strict\"\ntransports = [\"{transport}\"]\nauth = \"pkix\"\n",
        ca.display()
    )
}

/// A server whose TLS port resets every connection: strict gives SERVFAIL with an EDE and
/// not one cleartext packet; opportunistic probing falls back to Do53 and answers.
#[test]
fn a_tls_reset_is_servfail_under_strict_without_cleartext_and_answered_opportunistically() {
    let _h = Hostile::start("tlsreset", "tlsreset.lab.", "127.53.40.6");
    let (_dir, d) = one_worker_with(&strict_dot("tlsreset.lab"));
    let cap = Capture::start("fault-tlsreset", "host 127.53.40.6 and port 53");
    let tls = Capture::start("fault-tlsreset-853", "host 127.53.40.6 and tcp port 853");
    let r = meanwhile_others_answer(&d, "www.tlsreset.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::ServFail);
    assert!(r.ede().is_some(), "a strict failure says why");
    assert_eq!(cap.stop(), Vec::<String>::new(), "cleartext to a strict server");
    assert!(
        !tls.stop().is_empty(),
        "the capture sees this adoxd's DoT attempts (so its silence on 53 means something)"
    );
    drop(d);
    let d = one_worker(&[]);
    let r = meanwhile_others_answer(&d, "www.tlsreset.lab.", RecordType::A);
    assert_eq!(r.rdata(RecordType::A), ["192.0.2.99"]);
}

/// A server that accepts TCP on 853 and never answers the ClientHello: strict gives
/// SERVFAIL once the handshake deadline passes, without cleartext, and the connection is
/// not kept for the next query (which fails the same way, not by hanging).
#[test]
fn a_stalled_tls_handshake_is_servfail_under_strict_and_never_wedges_the_worker() {
    let _h = Hostile::start("tlsstall", "tlsstall.lab.", "127.53.40.7");
    let (_dir, d) = one_worker_with(&strict_dot("tlsstall.lab"));
    let cap = Capture::start("fault-tlsstall", "host 127.53.40.7 and port 53");
    let tls = Capture::start("fault-tlsstall-853", "host 127.53.40.7 and tcp port 853");
    for name in ["www.tlsstall.lab.", "other.tlsstall.lab."] {
        let r = meanwhile_others_answer(&d, name, RecordType::A);
        assert_eq!(r.rcode(), ResponseCode::ServFail);
        assert!(r.ede().is_some(), "a strict failure says why");
    }
    assert_eq!(cap.stop(), Vec::<String>::new(), "cleartext to a strict server");
    assert!(
        !tls.stop().is_empty(),
        "the capture sees this adoxd's DoT attempts (so its silence on 53 means something)"
    );
}

/// A server whose every name holds the largest RRset of the asked type that fits a message
/// (TXT of one-octet strings, 64 KB NULL/OPENPGPKEY/unknown records, thousands of A, MX,
/// NAPTR ...): adoxd's memory grows by no more than its two caches' budgets plus a stated
/// overhead, while the data asked is several times those budgets, and other zones keep
/// being answered.
#[test]
fn giant_rrsets_of_every_type_stay_within_the_cache_budgets() {
    const CACHE: u64 = 2 << 20;
    /// Allocator slack, in-flight answers (64 KB each) and buffers beyond the two caches.
    const OVERHEAD: u64 = 24 << 20;
    let _h = Hostile::start("giant", "giant.lab.", "127.53.40.8");
    let (_dir, d) = one_worker_with(&format!("[cache]\nrecord_cache_bytes = {CACHE}\npacket_cache_bytes = {CACHE}\n"));
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rcode(), ResponseCode::NoError);
    let before = rss(d.pid());
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::TXT,
        RecordType::NULL,
        RecordType::OPENPGPKEY,
        RecordType::SSHFP,
        RecordType::NAPTR,
        RecordType::MX,
        RecordType::SRV,
        RecordType::CAA,
        RecordType::HINFO,
        RecordType::Unknown(65280),
    ];
    let mut answered = 0;
    for i in 0..12 {
        for t in types {
            let r = d.ask_tcp(&Ask::new(&format!("g{i}.giant.lab."), t));
            if r.rcode() == ResponseCode::NoError {
                answered += 1;
            }
        }
    }
    // About 144 answers of 20 to 64 KB each: several times the two budgets together. (The
    // 4,000 A and 2,300 AAAA records do not fit one answer of ours once re-encoded: those
    // are SERVFAIL, "could not be encoded".)
    assert!(answered >= 96, "only {answered} of 144 giant answers came back");
    let grown = rss(d.pid()).saturating_sub(before);
    eprintln!("giant: {answered} answers; RSS {} MiB before, grew by {} MiB", before >> 20, grown >> 20);
    assert!(grown < 2 * CACHE + OVERHEAD, "RSS grew by {} MiB", grown >> 20);
    let r = meanwhile_others_answer(&d, "g99.giant.lab.", RecordType::TXT);
    assert_eq!(r.rcode(), ResponseCode::NoError);
}

/// A DoQ or DoH server (authenticated: a certificate from the lab CA) that floods its client
/// past the limits the client set, or never answers, in `mode` (`doqstreams`: 2,000
/// streams the client allows none of; `doqbloat`: 1 MiB per query stream past flow control;
/// `dohbloat`, `dohheaders`, `dohsilent`: see hostile_doh.py). Under a strict policy for
/// `transport` every query is SERVFAIL with an EDE and no cleartext, the worker keeps
/// answering other zones, and memory does not grow with the flood; without the policy the
/// zone is answered over Do53. `reasons`: what the EDE may say (the handshake worked, the
/// flood cut the connection off).
fn a_flood_is_cut_off(mode: &str, address: &str, reasons: &[&str]) {
    /// Buffers of a few QUIC connections and answers in flight, far below the flood.
    const GROWTH: u64 = 16 << 20;
    let zone = format!("{mode}.lab");
    let _h = Hostile::start(mode, &format!("{zone}."), address);
    let (transport, port) = if mode.starts_with("doh") { ("doh", "tcp port 443") } else { ("doq", "udp port 853") };
    let (_dir, d) = one_worker_with(&strict(&zone, transport));
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rcode(), ResponseCode::NoError);
    let before = rss(d.pid());
    let cap = Capture::start(&format!("fault-{mode}"), &format!("host {address} and port 53"));
    let encrypted = Capture::start(&format!("fault-{mode}-enc"), &format!("host {address} and {port}"));
    // A silent server costs each query the full timeout: fewer of them.
    let queries = if mode == "dohsilent" { 2 } else { 4 };
    for i in 0..queries {
        let r = meanwhile_others_answer(&d, &format!("w{i}.{zone}."), RecordType::A);
        assert_eq!(r.rcode(), ResponseCode::ServFail, "w{i}: {:?}", r.ede());
        let (_, text) = r.ede().expect("a strict failure says why");
        assert!(reasons.iter().any(|r| text.ends_with(r)), "w{i}: {text}");
    }
    assert_eq!(cap.stop(), Vec::<String>::new(), "cleartext to a strict server");
    assert!(!encrypted.stop().is_empty(), "the capture sees this adoxd's {transport} attempts");
    let grown = rss(d.pid()).saturating_sub(before);
    assert!(grown < GROWTH, "RSS grew by {} MiB", grown >> 20);
    drop(d);
    let d = one_worker(&[]);
    let r = meanwhile_others_answer(&d, &format!("www.{zone}."), RecordType::A);
    assert_eq!(r.rdata(RecordType::A), ["192.0.2.99"], "{:?} {:?}", r.rcode(), r.ede());
}

#[test]
fn a_doq_server_opening_streams_the_client_forbids_is_cut_off() {
    // quinn closes the connection (STREAM_LIMIT_ERROR) at the first stream it forbade.
    a_flood_is_cut_off("doqstreams", "127.53.40.10", &["doq: quic-transport-error"]);
}

#[test]
fn a_doq_server_sending_past_flow_control_is_cut_off() {
    // The stream's receive window holds one DNS message; more is refused, nothing buffered:
    // by adox's length check when the message fits the window, or by quinn (a flow-control
    // violation closes the connection) when the flood outruns the check, as it does on a
    // loaded machine.
    a_flood_is_cut_off(
        "doqbloat",
        "127.53.40.11",
        &["doq: bad response: DoQ answer larger than a DNS message", "doq: quic-transport-error"],
    );
}

#[test]
fn a_doh_server_sending_past_flow_control_is_cut_off() {
    // A stream's window holds one DNS message: h2 resets the stream (or the connection) at
    // the first octet past it, or adox refuses the body past one message.
    a_flood_is_cut_off(
        "dohbloat",
        "127.53.40.12",
        &["doh: http2-stream-reset", "doh: http2-error", "doh: bad response: DoH answer larger than a DNS message"],
    );
}

#[test]
fn a_doh_server_sending_a_header_flood_is_cut_off() {
    // The header list limit is 16 KiB; h2 refuses the 1 MiB block as it arrives.
    a_flood_is_cut_off("dohheaders", "127.53.40.13", &["doh: http2-stream-reset", "doh: http2-error"]);
}

#[test]
fn a_doh_server_that_never_answers_is_a_strict_timeout() {
    a_flood_is_cut_off("dohsilent", "127.53.40.14", &["doh: timeout"]);
}

/// A DoH server that takes 3 requests per connection and then says GOAWAY (NO_ERROR), as
/// servers limiting requests per connection do: the streams it did not take are sent again
/// on a fresh connection, so under a strict DoH policy every one of 6 concurrent queries
/// is answered (it once failed them all with `http2-error`, and blamed the server).
#[test]
fn a_doh_server_saying_goaway_mid_burst_loses_no_query() {
    let zone = "dohgoaway.lab";
    let _h = Hostile::start("dohgoaway", &format!("{zone}."), "127.53.40.15");
    let (_dir, d) = one_worker_with(&strict(zone, "doh"));
    let addr = d.addr;
    let askers: Vec<_> = (0..6)
        .map(|i| {
            let ask = Ask::new(&format!("g{i}.{zone}."), RecordType::A).wire();
            std::thread::spawn(move || udp_exchange(addr, &ask, Duration::from_secs(10)).map(Response::parse))
        })
        .collect();
    for (i, a) in askers.into_iter().enumerate() {
        let r = a.join().unwrap().unwrap_or_else(|| panic!("g{i}: no answer"));
        assert_eq!(r.rcode(), ResponseCode::NoError, "g{i}: {:?}", r.ede());
        assert_eq!(r.rdata(RecordType::A), ["192.0.2.99"], "g{i}");
    }
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "tls_full") + Adoxd::stat(&log, "tls_resumed") >= 2, "a fresh connection after GOAWAY");
    assert_eq!(Adoxd::stat(&log, "strict_failures"), 0);
    // Every DoH query was padded (RFC 8467 block padding, 128 octets), as the server
    // saw it decrypted.
    let seen = std::fs::read_to_string(lab_dir().join("logs/hostile-doh-127.53.40.15.log")).unwrap();
    let sizes: Vec<usize> = seen.lines().filter_map(|l| l.split(' ').nth(1)?.parse().ok()).collect();
    assert!(sizes.len() >= 6, "{seen}");
    assert!(sizes.iter().all(|n| n % 128 == 0), "unpadded DoH queries: {sizes:?}");
}

/// RFC 8767 serve-stale: a zone whose only server goes silent after its answer was cached
/// (TTLs capped at 1 s) is answered from the expired data, with EDE 3 and the stale TTL,
/// long before the 8 s the resolution may take and within the client-response timer
/// (1.8 s); after that failure the failure-recheck timer answers stale without a new
/// attempt; with the server back and the timer run out, fresh data returns without EDE.
/// (The timer's race with a slower resolution is `worker::stale`'s unit tests: a silent
/// server fails fast here, after three short retransmissions.)
#[test]
fn rfc8767_a_dead_zone_is_answered_stale_and_fresh_again_when_its_server_returns() {
    // Signals and probing off: nothing but the client's questions goes upstream.
    let (_dir, d) =
        one_worker_with("[cache]\nmax_ttl_s = 1\nstale_recheck_s = 3\n[transport]\nsignals = false\nprobing = false\n");
    let good = Hostile::start("good", "stale.lab.", "127.53.40.16");
    let r = d.query("www.stale.lab.", RecordType::A);
    assert_eq!((r.rdata(RecordType::A), r.ede()), (vec!["192.0.2.99".to_string()], None));
    drop(good);
    let silent = Hostile::start("silent", "stale.lab.", "127.53.40.16");
    std::thread::sleep(Duration::from_millis(1_500));
    let t = Instant::now();
    let r = d.query("www.stale.lab.", RecordType::A);
    let took = t.elapsed();
    assert_eq!(r.rdata(RecordType::A), ["192.0.2.99"]);
    assert_eq!(r.ede().map(|e| e.0), Some(3), "EDE 3, Stale Answer");
    assert_eq!(r.msg.answers[0].ttl, 30, "the stale TTL");
    // (1.8 s, and the time to send the answer)
    assert!(took < Duration::from_millis(2_500), "not within the client-response timer: {took:?}");
    // The failure-recheck timer (3 s): answered stale again, and nothing goes upstream.
    std::thread::sleep(Duration::from_millis(500));
    let upstream = || metric(&d, "adox_upstream_queries_total{transport=\"do53_udp\"}");
    let before = upstream();
    assert_eq!(d.query("www.stale.lab.", RecordType::A).ede().map(|e| e.0), Some(3));
    assert_eq!(upstream(), before, "the recheck timer answered without a new attempt");
    drop(silent);
    let _good = Hostile::start("good", "stale.lab.", "127.53.40.16");
    std::thread::sleep(Duration::from_millis(3_500));
    let r = d.query("www.stale.lab.", RecordType::A);
    assert_eq!((r.rdata(RecordType::A), r.ede()), (vec!["192.0.2.99".to_string()], None), "fresh again");
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "stale_answers") >= 2);
}

/// RFC 9520 section 3: a failed resolution (the zone's only server silent) is kept in the
/// packet cache for `cache.failure_ttl_s`: a repeat is answered SERVFAIL from the cache with
/// EDE 13 (Cached Error) after the failure's own 22, and starts no resolution and sends
/// nothing upstream; once the time has run out (the server answering again) the name is
/// resolved afresh. With `failure_ttl_s = 0` every repeat is a new resolution.
#[test]
fn rfc9520_a_failure_is_kept_for_failure_ttl_then_the_name_is_resolved_again() {
    let silent = Hostile::start("silent", "flaky.lab.", "127.53.40.28");
    let quiet = "[transport]\nsignals = false\nprobing = false\n";
    let (_dir0, off) = temp_config(&format!("[cache]\nfailure_ttl_s = 0\n{quiet}"));
    let (_dir, on) = temp_config(&format!("[cache]\nfailure_ttl_s = 2\n{quiet}"));
    let not_kept = one_worker(&["--config", off.to_str().unwrap()]);
    let d = one_worker(&["--config", on.to_str().unwrap()]);
    let misses = |d: &Adoxd| metric(d, "adox_cache_misses_total");
    let upstream = |d: &Adoxd| metric(d, "adox_upstream_queries_total{transport=\"do53_udp\"}");

    // (Each failure takes the silent server's retransmissions: the checks of one adoxd
    // follow its first failure at once, well within the 2 s.)
    let first = |d: &Adoxd| {
        let r = d.query("www.flaky.lab.", RecordType::A);
        assert_eq!((r.rcode(), r.ede_codes()), (ResponseCode::ServFail, vec![22]), "the first failure");
    };
    first(&not_kept);
    let (m0, u0) = (misses(&not_kept), upstream(&not_kept));
    let r = not_kept.query("www.flaky.lab.", RecordType::A);
    assert_eq!((r.rcode(), r.ede_codes()), (ResponseCode::ServFail, vec![22]), "not kept: a new failure");
    assert_eq!(misses(&not_kept), m0 + 1, "not kept: resolved again");
    assert!(upstream(&not_kept) > u0, "not kept: the silent server was asked again");
    assert_eq!(metric(&not_kept, "adox_failures_cached_total"), 0);

    first(&d);
    let (m0, u0) = (misses(&d), upstream(&d));
    for _ in 0..3 {
        let r = d.query("www.flaky.lab.", RecordType::A);
        assert_eq!((r.rcode(), r.ede_codes()), (ResponseCode::ServFail, vec![22, 13]), "kept: from the cache");
    }
    assert_eq!((misses(&d), upstream(&d)), (m0, u0), "a kept failure starts nothing");
    assert_eq!(metric(&d, "adox_failures_cached_total"), 1);

    drop(silent);
    let _good = Hostile::start("good", "flaky.lab.", "127.53.40.28");
    // The kept failure runs out after 2 s; the server's own back-off may fail one more try
    // (kept again for 2 s): bounded at 12 s.
    let deadline = Instant::now() + Duration::from_secs(12);
    let answer = loop {
        std::thread::sleep(Duration::from_millis(2_100));
        let r = d.query("www.flaky.lab.", RecordType::A);
        if r.rcode() == ResponseCode::NoError || Instant::now() > deadline {
            break r;
        }
    };
    assert_eq!((answer.rdata(RecordType::A), answer.ede_codes()), (vec!["192.0.2.99".to_string()], vec![]));
    assert!(misses(&d) > m0, "resolved afresh once the failure ran out");
}

/// A failure that comes of adoxd's own load is never kept: with one outstanding query
/// allowed per server and the zone's only server answering 2 s late, a name asked while
/// another's query holds that slot fails at once (SERVFAIL), and is resolved when asked
/// again once the server is free, not answered from a kept failure.
#[test]
fn rfc9520_a_failure_of_our_own_load_is_not_kept() {
    let _slow = Hostile::start("slow", "busy.lab.", "127.53.40.29");
    let (_dir, d) = one_worker_with(
        "[cache]\nfailure_ttl_s = 60\n[resolver]\nmax_outstanding_per_server = 1\n\
         [transport]\nsignals = false\nprobing = false\n",
    );
    // The delegation and the server's address, cached.
    assert_eq!(d.query("www.busy.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.99"]);
    let (addr, ask) = (d.addr, Ask::new("a.busy.lab.", RecordType::A).wire());
    let holder = std::thread::spawn(move || udp_exchange(addr, &ask, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300));
    let r = d.query("b.busy.lab.", RecordType::A);
    assert_eq!((r.rcode(), r.ede_codes()), (ResponseCode::ServFail, vec![22]), "no slot for a second query");
    assert!(r.ede().unwrap().1.contains("outstanding limit"), "{:?}", r.ede());
    let held = Response::parse(holder.join().unwrap().expect("an answer for the name holding the slot"));
    assert_eq!(held.rdata(RecordType::A), ["192.0.2.99"]);
    assert_eq!(metric(&d, "adox_failures_cached_total"), 0, "nothing kept");
    let r = d.query("b.busy.lab.", RecordType::A);
    assert_eq!((r.rdata(RecordType::A), r.ede_codes()), (vec!["192.0.2.99".to_string()], vec![]));
}

/// A failure met while half the worker's resolutions are in use is never kept: it may be
/// of our own making (RFC 9520 section 3 caches the name's failures, not ours). With
/// `resolver.max_resolutions = 4` and three names of a silent zone asked at once, the
/// first to fail finds two others still in flight (half of four) and is not kept; the
/// two after it are.
#[test]
fn rfc9520_a_failure_while_half_the_resolutions_are_in_use_is_not_kept() {
    let _silent = Hostile::start("silent", "backlog.lab.", "127.53.40.34");
    let (_dir, d) = one_worker_with(
        "[cache]\nfailure_ttl_s = 60\n[resolver]\nmax_resolutions = 4\n\
         [transport]\nsignals = false\nprobing = false\n",
    );
    // (Asked together from the start: a failure first would mark the server down, and
    // the next names would fail at once, one after the other.)
    let addr = d.addr;
    let askers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|l| {
            let ask = Ask::new(&format!("{l}.backlog.lab."), RecordType::A).wire();
            std::thread::spawn(move || udp_exchange(addr, &ask, Duration::from_secs(10)))
        })
        .collect();
    for a in askers {
        let r = Response::parse(a.join().unwrap().expect("an answer"));
        assert_eq!((r.rcode(), r.ede_codes()), (ResponseCode::ServFail, vec![22]), "each fails on its own");
    }
    assert_eq!(metric(&d, "adox_failures_cached_total"), 2, "the first of the three was not kept");
    // Alone, a failure is kept.
    let r = d.query("d.backlog.lab.", RecordType::A);
    assert_eq!((r.rcode(), r.ede_codes()), (ResponseCode::ServFail, vec![22]));
    assert_eq!(metric(&d, "adox_failures_cached_total"), 3, "alone: kept");
}

/// RFC 9520 section 3.2, backoff: a name that keeps failing is kept longer each time, up
/// to `cache.failure_max_ttl_s`, and a success starts it again at `failure_ttl_s`. With
/// 1 s and a cap of 4 s, against a zone whose server is not there (each resolution fails
/// at once: port unreachable), failures asked again as soon as they run out are kept about
/// 1, 2, 4 and 4 s (the worker's clock counts whole seconds: each lasts up to a second
/// less); after a flush of the name, and once the server has answered and gone again,
/// the next is kept 1 s.
#[test]
fn rfc9520_a_repeating_failure_is_kept_longer_each_time_and_a_success_starts_again() {
    let (_dir, d) = one_worker_with(
        "[cache]\nfailure_ttl_s = 1\nfailure_max_ttl_s = 4\nmax_ttl_s = 1\nserve_stale = false\n\
         [transport]\nsignals = false\nprobing = false\n",
    );
    let name = "www.backoff.lab.";
    let misses = || metric(&d, "adox_cache_misses_total");
    // How long each of `n` failures in a row is kept: from its answer to the first query
    // (polled every 50 ms) that is resolved again, which is the next failure.
    let lives = |n: usize| -> Vec<f64> {
        let r = d.query(name, RecordType::A);
        assert_eq!((r.rcode(), r.ede_codes()), (ResponseCode::ServFail, vec![22]), "a fresh failure");
        let (mut m, mut t, mut out) = (misses(), Instant::now(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(20);
        while out.len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let r = d.query(name, RecordType::A);
            let now_m = misses();
            if now_m > m {
                assert_eq!(r.ede_codes(), vec![22], "resolved again, and failed");
                out.push(t.elapsed().as_secs_f64());
                (m, t) = (now_m, Instant::now());
            } else {
                assert_eq!(r.ede_codes(), vec![22, 13], "kept");
            }
        }
        out
    };
    let kept = lives(4);
    assert_eq!(kept.len(), 4, "{kept:?}");
    assert!(kept[0] < 1.5, "1 s: {kept:?}");
    assert!(kept[1] > 0.9 && kept[1] < 2.5, "2 s: {kept:?}");
    assert!(kept[2] > 2.9 && kept[2] < 4.5, "4 s: {kept:?}");
    assert!(kept[3] > 2.9 && kept[3] < 4.5, "the cap, 4 s: {kept:?}");
    // An operator's flush of the name drops its kept failure and starts its backoff again.
    let flushed = d.admin().send_json("POST", "/v1/cache/flush", &serde_json::json!({"name": name})).unwrap();
    assert_eq!(flushed.status, 200);
    let kept = lives(1);
    assert!(kept.len() == 1 && kept[0] < 1.5, "after a flush, 1 s again: {kept:?}");
    // The server comes: once the kept failure runs out, the name resolves.
    let good = Hostile::start("good", "backoff.lab.", "127.53.40.35");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let r = d.query(name, RecordType::A);
        if r.rcode() == ResponseCode::NoError {
            assert_eq!(r.rdata(RecordType::A), ["192.0.2.99"]);
            break;
        }
        assert!(Instant::now() < deadline, "never resolved: {:?}", r.ede_codes());
    }
    // It goes again; its answer (1 s) runs out; the next failure starts from 1 s.
    drop(good);
    std::thread::sleep(Duration::from_millis(1_100));
    let kept = lives(1);
    assert!(kept.len() == 1 && kept[0] < 1.5, "after a success, 1 s again: {kept:?}");
}

/// A prefetch's failure is never kept: only a client's own resolution fails for the name
/// (the clients that joined a refresh may have had a live answer it did not read). With
/// answers cached for 20 s (`cache.max_ttl_s`), the first hit in their last tenth starts a
/// refresh; the zone's server, silent by then, lets it fail; a client asking once the
/// answer has expired joins it and gets its SERVFAIL, and the next client's question is a
/// new resolution, not a kept failure. Serve-stale is off, so failures reach the clients.
#[test]
fn rfc9520_a_failed_prefetch_is_not_kept() {
    let good = Hostile::start("good", "refresh.lab.", "127.53.40.33");
    let (_dir, d) = one_worker_with(
        "[cache]\nmax_ttl_s = 20\nfailure_ttl_s = 60\nserve_stale = false\n\
         [transport]\nsignals = false\nprobing = false\n",
    );
    let name = "www.refresh.lab.";
    let hit = |d: &Adoxd| {
        let r = d.query(name, RecordType::A);
        assert_eq!(r.rdata(RecordType::A), ["192.0.2.99"], "a hit");
        r.msg.answers[0].ttl
    };
    let t0 = Instant::now();
    assert_eq!(hit(&d), 20);
    drop(good);
    let _silent = Hostile::start("silent", "refresh.lab.", "127.53.40.33");
    // The answer's TTL counts down with the worker's clock in whole seconds: find the
    // moment 9 s are left (hits before the last tenth, 2 s, start nothing). Then 1 s is
    // left from 8 s later and the answer is gone from 9 s later.
    std::thread::sleep(Duration::from_millis(9_500).saturating_sub(t0.elapsed()));
    let deadline = Instant::now() + Duration::from_secs(4);
    let nine_left = loop {
        let left = hit(&d);
        assert!(left > 2 && Instant::now() < deadline, "{left} s left");
        if left <= 9 {
            break Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(metric(&d, "adox_prefetches_total"), 0);
    // Late in the answer's last second: the refresh starts (and takes about 1.2 s to fail:
    // the silent server's retransmissions).
    std::thread::sleep((nine_left + Duration::from_millis(8_600)).saturating_duration_since(Instant::now()));
    assert_eq!(hit(&d), 1);
    assert_eq!(metric(&d, "adox_prefetches_total"), 1, "a refresh started");
    // Expired now, the refresh still waiting on the silent server: this client joins it.
    std::thread::sleep((nine_left + Duration::from_millis(9_300)).saturating_duration_since(Instant::now()));
    let coalesced = metric(&d, "adox_coalesced_total");
    let joined = d.query(name, RecordType::A);
    assert_eq!(metric(&d, "adox_coalesced_total"), coalesced + 1, "joined the refresh under way");
    assert_eq!((joined.rcode(), joined.ede_codes()), (ResponseCode::ServFail, vec![22]), "the refresh's failure");
    assert_eq!(metric(&d, "adox_failures_cached_total"), 0, "a refresh's failure is not kept");
    let misses = metric(&d, "adox_cache_misses_total");
    let again = d.query(name, RecordType::A);
    assert_eq!((again.rcode(), again.ede_codes()), (ResponseCode::ServFail, vec![22]), "asked afresh, not kept");
    assert_eq!(metric(&d, "adox_cache_misses_total"), misses + 1, "a resolution of its own");
    assert_eq!(metric(&d, "adox_failures_cached_total"), 1, "a client's own failure is kept");
}

/// The value of one counter in the API's metrics.
fn metric(d: &Adoxd, series: &str) -> u64 {
    let text = d.admin().get("/metrics").unwrap().text();
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' '))).unwrap().trim().parse().unwrap()
}

/// DNS Flag Day 2019: a server that answers EDNS queries with FORMERR and no OPT record
/// (an unsigned zone) is asked again without EDNS, and from then on without it: later
/// queries need no fallback.
#[test]
fn flag_day_a_server_without_edns_is_asked_without_it_and_remembered() {
    let _h = Hostile::start("noedns", "noedns.lab.", "127.53.40.17");
    let d = one_worker(&[]);
    assert_eq!(d.query("www.noedns.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.99"]);
    // Side lookups started by the first resolution (the nameserver's own addresses, its
    // `_dns` signal) may still be in flight and fall back too before the server's state is
    // learned: take the baseline once the count has settled (bounded wait).
    let mut fallbacks = metric(&d, "adox_edns_fallbacks_total");
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let now = metric(&d, "adox_edns_fallbacks_total");
        if now == fallbacks {
            break;
        }
        fallbacks = now;
    }
    assert!(fallbacks >= 1, "the first exchange fell back");
    for i in 0..3 {
        assert_eq!(d.query(&format!("n{i}.noedns.lab."), RecordType::A).rdata(RecordType::A), ["192.0.2.99"]);
    }
    assert_eq!(metric(&d, "adox_edns_fallbacks_total"), fallbacks, "remembered: no further fallback");
}

/// A server whose large UDP answers are lost on the way (fragments dropped) but which
/// answered before gets the query over TCP after the UDP timeout, not a smaller buffer.
#[test]
fn a_server_that_loses_large_udp_answers_is_asked_over_tcp() {
    let _h = Hostile::start("dropbig", "dropbig.lab.", "127.53.40.18");
    let d = one_worker(&[]);
    assert_eq!(d.query("www.dropbig.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.99"]);
    let tcp = metric(&d, "adox_upstream_queries_total{transport=\"do53_tcp\"}");
    let r = d.query("big.dropbig.lab.", RecordType::TXT);
    assert_eq!(r.rcode(), ResponseCode::NoError);
    assert_eq!(r.rdata(RecordType::TXT).len(), 3, "the whole RRset");
    assert!(metric(&d, "adox_upstream_queries_total{transport=\"do53_tcp\"}") > tcp, "asked over TCP");
}
