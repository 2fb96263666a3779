//! The front door's rates and cookies (`[limits]` rates, `[cookies]`): a client over its
//! query rate gets what the configuration says (TC, nothing, REFUSED) while another client
//! is answered as usual; TCP and a valid server cookie are exempt; a flood from random
//! source addresses does not grow memory; `kdig +cookie` gets a server cookie back and a
//! second query with it is accepted.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{Adoxd, Ask, Response, rss, temp_config};

/// What a flooding client got back.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    sent: u64,
    answered: u64,
    truncated: u64,
    refused: u64,
}

/// Sends `www.alpha.lab.` (a cache hit) from four sockets of 127.0.0.1 (four source ports,
/// so the kernel spreads them over the workers) at about 2,000 queries a second until
/// `stop`, and sorts what comes back.
fn flood(target: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Tally> {
    std::thread::spawn(move || {
        let socks: Vec<UdpSocket> = (0..4)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        let q = Ask::new("www.alpha.lab.", RecordType::A).wire();
        let mut t = Tally::default();
        let mut buf = [0u8; 4096];
        let mut drain = |t: &mut Tally| {
            for s in &socks {
                while let Ok(n) = s.recv(&mut buf) {
                    let r = Response::parse(buf[..n].to_vec());
                    match (r.rcode(), r.tc()) {
                        (_, true) => t.truncated += 1,
                        (ResponseCode::Refused, _) => t.refused += 1,
                        (ResponseCode::NoError, false) if !r.msg.answers.is_empty() => t.answered += 1,
                        other => panic!("unexpected answer to the flood: {other:?}"),
                    }
                }
            }
        };
        while !stop.load(Ordering::Relaxed) {
            for s in &socks {
                for _ in 0..5 {
                    let _ = s.send_to(&q, target);
                    t.sent += 1;
                }
            }
            drain(&mut t);
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        drain(&mut t);
        t
    })
}

/// Floods for `secs` from 127.0.0.1 while a client in another network asks once every
/// 20 ms; returns the flood's tally, its duration, and what the other client got (answered
/// with data, asked).
fn flood_beside_a_quiet_client(d: &Adoxd, secs: u64) -> (Tally, f64, (u32, u32)) {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let attacker = flood(d.addr, stop.clone());
    // Mid-flood, the flooding address over TCP: answered (TCP proves the address).
    std::thread::sleep(Duration::from_millis(1500));
    let r = d.ask_tcp(&Ask::new("www.alpha.lab.", RecordType::A));
    assert_eq!((r.rcode(), r.tc(), r.msg.answers.len()), (ResponseCode::NoError, false, 1), "TCP during the flood");
    let quiet = UdpSocket::bind("127.0.1.2:0").unwrap();
    quiet.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let (mut answered, mut asked) = (0u32, 0u32);
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(secs) {
        quiet.send_to(&Ask::new("www.alpha.lab.", RecordType::A).wire(), d.addr).unwrap();
        asked += 1;
        if let Ok((n, _)) = quiet.recv_from(&mut buf) {
            let r = Response::parse(buf[..n].to_vec());
            if r.rcode() == ResponseCode::NoError && !r.tc() && !r.msg.answers.is_empty() {
                answered += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    (attacker.join().unwrap(), elapsed, (answered, asked))
}

fn reload(d: &Adoxd, cfg: &std::path::Path, text: &str) {
    std::fs::write(cfg, text).unwrap();
    let r = d.admin().send_json("POST", "/v1/reload", &serde_json::json!({})).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().unwrap()["refused"].as_array().unwrap().is_empty(), "{}", r.text());
}

/// The value of one sample in the metrics.
fn metric(d: &Adoxd, series: &str) -> u64 {
    crate::support::sample(&d.admin().get("/metrics").unwrap().text(), series)
}

/// One client at ten times its rate (100 a second, over two workers and four source
/// ports) gets its rate answered and the rest as configured: TC (slip 1), then REFUSED
/// with EDE 18, then nothing, each after a reload; a client in another network asking at
/// half the rate is answered every time; over TCP, mid-flood, the flooding client is
/// answered (TCP proves its address).
#[test]
fn a_client_over_its_rate_gets_what_the_configuration_says_while_another_is_answered() {
    const RATE: u64 = 100;
    let base = format!("[limits]\nqueries_per_second_per_client = {RATE}\n");
    let (_dir, cfg) = temp_config(&base);
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rcode(), ResponseCode::NoError);
    // Answered at most: the bucket's depth (one second's worth) plus the rate over the
    // flood, with room for the flood's start and end.
    let at_most = |secs: f64| RATE + (RATE as f64 * (secs + 0.5)) as u64;

    let (t, secs, (quiet_ok, quiet_asked)) = flood_beside_a_quiet_client(&d, 3);
    assert!(t.sent > 4 * at_most(secs), "a flood: {t:?}");
    assert!(t.answered <= at_most(secs), "{t:?} in {secs:.1} s");
    assert!(t.answered >= RATE * 2, "its rate is still answered: {t:?}");
    // slip = 1: every query over the rate gets an empty truncated answer.
    assert!(t.truncated + t.answered >= t.sent * 9 / 10, "{t:?}");
    // Every time (one UDP datagram lost on a busy machine is not the limiter's doing).
    assert!(quiet_ok + 1 >= quiet_asked, "the other client: {quiet_ok} of {quiet_asked} answered");
    assert!(metric(&d, "adox_rate_limited_total{limit=\"client\"}") >= t.truncated);
    assert_eq!(metric(&d, "adox_rate_limit_actions_total{action=\"slip\"}"), t.truncated);

    reload(&d, &cfg, &format!("{base}rate_limit_action = \"refused\"\n"));
    let (t, secs, (quiet_ok, quiet_asked)) = flood_beside_a_quiet_client(&d, 2);
    assert!(t.answered <= at_most(secs) && t.truncated == 0, "{t:?}");
    assert!(t.refused + t.answered >= t.sent * 9 / 10, "{t:?}");
    assert!(quiet_ok + 1 >= quiet_asked, "the other client: {quiet_ok} of {quiet_asked} answered");
    // A burst of twice the rate: what is over it is REFUSED with EDE 18 (Prohibited).
    let refused = burst(&d, 2 * RATE as usize).into_iter().find(|r| r.rcode() == ResponseCode::Refused);
    assert_eq!(refused.and_then(|r| r.ede()).map(|e| e.0), Some(18));

    reload(&d, &cfg, &format!("{base}rate_limit_action = \"drop\"\n"));
    let (t, secs, (quiet_ok, quiet_asked)) = flood_beside_a_quiet_client(&d, 2);
    assert!(t.answered <= at_most(secs) && t.truncated == 0 && t.refused == 0, "{t:?}");
    assert!(t.answered >= RATE, "{t:?}");
    assert!(quiet_ok + 1 >= quiet_asked, "the other client: {quiet_ok} of {quiet_asked} answered");
    assert!(metric(&d, "adox_rate_limit_actions_total{action=\"drop\"}") >= t.sent - t.answered - t.sent / 10);
}

/// `n` queries at once from one socket of 127.0.0.1, and the answers that came back.
fn burst(d: &Adoxd, n: usize) -> Vec<Response> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    for _ in 0..n {
        s.send_to(&Ask::new("www.alpha.lab.", RecordType::A).wire(), d.addr).unwrap();
    }
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while let Ok(len) = s.recv(&mut buf) {
        got.push(Response::parse(buf[..len].to_vec()));
    }
    got
}

/// `kdig +cookie` gets a server cookie back (RFC 9018's layout: version 1, a timestamp,
/// and the hash), and a second query with it is accepted: adoxd counts it valid and
/// answers with the same cookie; a server cookie BIND made under the same secret is valid
/// too. A client with a valid cookie is exempt from the rate
/// limit, and one whose server cookie is forged is not.
#[test]
fn kdig_gets_a_server_cookie_and_a_valid_cookie_exempts_its_client_from_the_rate() {
    // The lab's BIND servers' cookie secret: adoxd accepts the cookies they make.
    let secret = crate::support::lab_dir().join("cookie-secret");
    let (_dir, cfg) = temp_config(&format!(
        "[limits]\nqueries_per_second_per_client = 5\n[cookies]\nsecret_file = {:?}\n",
        secret.to_str().unwrap()
    ));
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let port = d.addr.port().to_string();
    let kdig_at = |server: &str, port: &str, cookie: &str| {
        let out = Command::new("kdig")
            .args(["-b", "127.0.0.1", server, "-p", port, cookie, "+notcp", "+retry=0", "+time=2", "www.alpha.lab."])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let cookie = text.lines().find_map(|l| l.strip_prefix(";; COOKIE: ")).map(|c| c.trim().to_lowercase());
        (text, cookie)
    };
    let kdig = |cookie: &str| kdig_at("@127.0.0.1", &port, cookie);
    let (text, first) = kdig("+cookie");
    let first = first.unwrap_or_else(|| panic!("no cookie in the answer:\n{text}"));
    assert!(text.contains("status: NOERROR"), "{text}");
    // 8 octets of client cookie, then 16 of server cookie: version 1, 3 reserved octets.
    assert_eq!(first.len(), 48, "{first}");
    assert_eq!(&first[16..24], "01000000", "{first}");
    let (text, second) = kdig(&format!("+cookie={first}"));
    assert!(text.contains("status: NOERROR"), "{text}");
    assert_eq!(second.as_deref(), Some(first.as_str()), "a fresh valid cookie is answered with itself");
    assert_eq!(metric(&d, "adox_client_cookies_total{result=\"valid\"}"), 1);
    assert_eq!(metric(&d, "adox_client_cookies_total{result=\"client_only\"}"), 1);

    // RFC 9018 between implementations: a server cookie BIND 9 (beta.lab's server) made
    // for this client is valid at adoxd, which answers with it unchanged.
    let (text, bind) = kdig_at("@127.53.2.1", "53", "+cookie=0102030405060708");
    let bind = bind.unwrap_or_else(|| panic!("BIND sent no cookie:\n{text}"));
    assert_eq!(&bind[..16], "0102030405060708", "{text}");
    let (text, back) = kdig(&format!("+cookie={bind}"));
    assert!(text.contains("status: NOERROR"), "{text}");
    assert_eq!(metric(&d, "adox_client_cookies_total{result=\"valid\"}"), 2, "BIND's cookie is valid here");
    assert_eq!(back.as_deref(), Some(bind.as_str()));

    // Over the rate of 5 a second: 40 queries at once with the valid cookie, all answered.
    let cookie: Vec<u8> =
        (0..first.len()).step_by(2).map(|i| u8::from_str_radix(&first[i..i + 2], 16).unwrap()).collect();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4096];
    let mut burst = |cookie: &[u8]| {
        let asks: Vec<Vec<u8>> =
            (0..40).map(|_| Ask::new("www.alpha.lab.", RecordType::A).cookie(cookie).wire()).collect();
        for q in &asks {
            s.send_to(q, d.addr).unwrap();
        }
        let (mut answered, mut truncated) = (0, 0);
        while let Ok(n) = s.recv(&mut buf) {
            let r = Response::parse(buf[..n].to_vec());
            assert_eq!(r.cookie().map(|c| c[..8].to_vec()), Some(cookie[..8].to_vec()), "the client cookie echoed");
            if r.tc() {
                truncated += 1;
            } else if !r.msg.answers.is_empty() {
                answered += 1;
            }
            if answered + truncated == 40 {
                break;
            }
        }
        (answered, truncated)
    };
    assert_eq!(burst(&cookie), (40, 0), "a valid cookie is exempt");
    // Those answers came from the packet cache; another client's answer carries its own
    // cookie only (a stored answer holds none), and is exactly one option longer.
    let plain = d.ask(&Ask::new("www.alpha.lab.", RecordType::A));
    let other = d.ask(&Ask::new("www.alpha.lab.", RecordType::A).cookie(&[9; 8]));
    assert_eq!(other.cookie().map(|c| (c[..8].to_vec(), c.len())), Some((vec![9; 8], 24)));
    assert_eq!(other.raw.len(), plain.raw.len() + 28, "one COOKIE option, no other client's");
    let mut forged = cookie.clone();
    forged[23] ^= 0xff;
    let (answered, truncated) = burst(&forged);
    assert!(answered <= 5 && truncated >= 35, "a forged cookie is not: {answered} answered, {truncated} TC");
    assert!(metric(&d, "adox_client_cookies_total{result=\"invalid\"}") >= 40);
}

/// A flood of hits from 120,000 source addresses (random over 127.0.0.0/8), two queries
/// each, under a per-client rate of one a second (so every address goes over it) and
/// per-network and response rates: the rate tables are fixed in size, so the resident
/// memory after the last 90,000 addresses is what it was after the first 30,000.
#[test]
fn a_flood_from_random_source_addresses_does_not_grow_memory() {
    let (_dir, cfg) = temp_config(
        "[limits]\nqueries_per_second_per_client = 1\nqueries_per_second_per_prefix = 1000\nresponses_per_second = 1000\nrate_limit_action = \"drop\"\n",
    );
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rcode(), ResponseCode::NoError);
    let q = Ask::new("www.alpha.lab.", RecordType::A).wire();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut round = |n: u32| {
        for _ in 0..n {
            // xorshift: a new source address each time, anywhere in 127.0.0.0/8 but
            // 127.0.0.0/16 (where the lab's own tests send from).
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let b = seed.to_be_bytes();
            let src = std::net::Ipv4Addr::new(127, b[0].max(1), b[1], b[2].max(1));
            let s = UdpSocket::bind((src, 0)).unwrap();
            let _ = s.send_to(&q, d.addr);
            let _ = s.send_to(&q, d.addr);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    round(30_000);
    let after_first = rss(d.pid());
    round(30_000);
    round(30_000);
    round(30_000);
    let after_all = rss(d.pid());
    let grown = after_all.saturating_sub(after_first);
    assert!(grown < 512 * 1024, "RSS grew {grown} octets over 90,000 more source addresses");
    // The limiter was at work: most second queries of an address went over its rate (a
    // few share both slots with earlier addresses, and a few datagrams a busy kernel drops).
    let limited = metric(&d, "adox_rate_limited_total{limit=\"client\"}");
    assert!(limited >= 100_000, "{limited} queries over the per-client rate of 120,000");
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rcode(), ResponseCode::NoError);
}

/// A stub zone served by `deploy/lab/hostile.py` in `mode` at `addr`.
fn hostile_stub(zone: &str, addr: &str) -> String {
    format!("[[zones]]\nname = \"{zone}\"\nkind = \"stub\"\nservers = [\"{addr}\"]\ninsecure = true\n")
}

/// adoxd's own cookies to authoritative servers (RFC 7873 section 5.1): BIND 9 (beta.lab.)
/// sees a client cookie on adoxd's first query and its own valid server cookie on every
/// later one (its query log's K and V flags).
#[test]
fn queries_to_bind_carry_a_client_cookie_then_bind_s_valid_server_cookie() {
    let d = Adoxd::lab(&["--workers", "1"]);
    // A first contact with BIND (it gives adoxd its server cookie).
    assert_eq!(d.query("www.beta.lab.", RecordType::A).rcode(), ResponseCode::NoError);
    let tag = crate::support::rand_id();
    let names: Vec<String> = (0..3).map(|i| format!("ck{tag}-{i}.beta.lab.")).collect();
    for n in &names {
        assert_eq!(d.query(n, RecordType::A).rcode(), ResponseCode::NXDomain, "{n}");
    }
    assert_eq!(metric(&d, "adox_upstream_cookie_events_total{event=\"mismatch\"}"), 0);
    // BIND's query log: "query: NAME IN A -E(0)DK (...)" (K: a client cookie without a
    // valid server cookie; V: a valid server cookie). The first query adoxd sent BIND was
    // for beta.lab. itself (its keys or a minimised name): these come after it.
    let log = std::fs::read_to_string(crate::support::lab_dir().join("logs/beta.queries.log")).unwrap();
    for n in &names {
        let n = n.trim_end_matches('.');
        let line = log
            .lines()
            .find(|l| l.contains(&format!("query: {n} IN A")))
            .unwrap_or_else(|| panic!("BIND logged no query for {n}"));
        let flags = line.split(&format!("query: {n} IN A ")).nth(1).unwrap().split_whitespace().next().unwrap();
        assert!(flags.contains('V'), "{n}: BIND saw no valid server cookie: {line}");
    }
}

/// A server that insists on cookies answers the first query BADCOOKIE with its server
/// cookie: adoxd asks once more with it and gets the answer; later queries carry it from
/// the start. A server whose replies do not echo adoxd's client cookie (forged, or broken)
/// has them discarded, and the answer comes over TCP.
#[test]
fn badcookie_is_answered_with_the_new_cookie_and_a_reply_with_the_wrong_cookie_goes_to_tcp() {
    let _bad = crate::faults::Hostile::start("badcookie", "badcookie.internal.", "127.53.40.30");
    let _wrong = crate::faults::Hostile::start("wrongcookie", "wrongcookie.internal.", "127.53.40.31");
    let (_dir, cfg) = temp_config(&format!(
        "{}{}",
        hostile_stub("badcookie.internal.", "127.53.40.30"),
        hostile_stub("wrongcookie.internal.", "127.53.40.31")
    ));
    let d = Adoxd::lab(&["--workers", "1", "--config", cfg.to_str().unwrap()]);
    let tcp = || metric(&d, "adox_upstream_queries_total{transport=\"do53_tcp\"}");
    let tcp_at_start = tcp();
    let r = d.query("www.badcookie.internal.", RecordType::A);
    assert_eq!((r.rcode(), r.rdata(RecordType::A)), (ResponseCode::NoError, vec!["192.0.2.99".to_string()]));
    let first = metric(&d, "adox_upstream_cookie_events_total{event=\"badcookie\"}");
    assert!(first >= 1, "the first contact met BADCOOKIE");
    let r = d.query("ftp.badcookie.internal.", RecordType::A);
    assert_eq!(r.rdata(RecordType::A), ["192.0.2.99"]);
    assert_eq!(metric(&d, "adox_upstream_cookie_events_total{event=\"badcookie\"}"), first, "the cookie was kept");
    assert_eq!(tcp(), tcp_at_start, "answered over UDP with the new cookie, not over TCP");

    let tcp_before = tcp();
    let r = d.query("www.wrongcookie.internal.", RecordType::A);
    assert_eq!((r.rcode(), r.rdata(RecordType::A)), (ResponseCode::NoError, vec!["192.0.2.99".to_string()]));
    assert!(metric(&d, "adox_upstream_cookie_events_total{event=\"mismatch\"}") >= 1);
    assert!(tcp() > tcp_before, "answered over TCP");
}

/// A server that gave adoxd a cookie and then answers without one: over UDP that is the
/// shape of an off-path forgery (RFC 7873 section 5.3), so the reply is discarded and the
/// query asked over TCP; when the TCP answer has no cookie either, the server has stopped
/// giving them and adoxd stops expecting one (the next UDP answer without a server cookie
/// sent is taken).
#[test]
fn a_cookieless_reply_from_a_server_that_gave_a_cookie_is_discarded_for_tcp() {
    let _h = crate::faults::Hostile::start("dropcookie", "dropcookie.internal.", "127.53.40.32");
    let (_dir, cfg) = temp_config(&hostile_stub("dropcookie.internal.", "127.53.40.32"));
    let d = Adoxd::lab(&["--workers", "1", "--config", cfg.to_str().unwrap()]);
    let tcp = || metric(&d, "adox_upstream_queries_total{transport=\"do53_tcp\"}");
    let mismatches = || metric(&d, "adox_upstream_cookie_events_total{event=\"mismatch\"}");
    let ask = |n: &str| d.query(&format!("{n}.dropcookie.internal."), RecordType::A).rdata(RecordType::A);
    assert_eq!(ask("one"), ["192.0.2.99"], "a first contact: its cookie learnt");
    let (tcp0, mm0) = (tcp(), mismatches());
    assert_eq!(ask("two"), ["192.0.2.99"]);
    assert_eq!((tcp() - tcp0, mismatches() - mm0), (1, 1), "the cookieless UDP reply discarded, TCP asked");
    assert_eq!(ask("three"), ["192.0.2.99"]);
    assert_eq!(tcp() - tcp0, 1, "no server cookie expected any more: UDP");
}
