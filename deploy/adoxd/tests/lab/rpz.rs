//! Response Policy Zones from a real primary: a BIND 9 instance of the test's own serves a
//! policy zone (dynamic updates on, so it keeps a journal, serves IXFR and sends NOTIFY to
//! adoxd); adoxd transfers it by AXFR, applies each action with the zone's EDE, and after
//! an update on the primary blocks and unblocks names within seconds of the NOTIFY, by
//! IXFR, also for answers already in its packet cache.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{Adoxd, Ask, free_port, temp_config, tempdir};

/// A BIND primary for one policy zone on 127.0.0.1 at a free port (named listens only on
/// addresses of an interface, and the lab's own are taken), sending NOTIFY to
/// `notify_port` from 127.0.0.1, the address adoxd knows it by.
struct Primary {
    child: Child,
    port: u16,
    dir: tempdir::Dir,
}

impl Primary {
    fn start(zone: &str, records: &str, notify_port: u16) -> Self {
        let port = free_port();
        let addr = "127.0.0.1";
        let dir = tempdir::Dir::new();
        let d = dir.path().display().to_string();
        // SOA refresh one hour: a change seen within seconds came by NOTIFY.
        std::fs::write(
            dir.path().join("zone.db"),
            // NS localhost., as policy zones do: a name in the zone is a trigger.
            format!("$TTL 60\n@ SOA localhost. admin.{zone} 1 3600 600 86400 60\n@ NS localhost.\n{records}"),
        )
        .unwrap();
        let conf = format!(
            "options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; lock-file \"{d}/named.lock\";
               session-keyfile \"{d}/session.key\"; managed-keys-directory \"{d}\";
               listen-on port {port} {{ {addr}; }}; listen-on-v6 {{ none; }}; automatic-interface-scan no;
               recursion no; dnssec-validation no; notify-source {addr}; allow-transfer {{ any; }};
               notify-delay 0; startup-notify-rate 1000; notify-rate 1000; }};
             controls {{ }};
             logging {{ channel f {{ file \"{d}/named.log\"; severity info; }}; category default {{ f; }}; }};
             zone \"{zone}\" {{ type primary; file \"{d}/zone.db\"; allow-update {{ 127.0.0.0/8; }};
               notify explicit; also-notify {{ 127.0.0.1 port {notify_port}; }}; }};\n"
        );
        let conf_path = dir.path().join("named.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("named")
            .args(["-4", "-f", "-n", "1", "-c"])
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("named (bind9) is installed");
        let p = Self { child, port, dir };
        p.wait_serving(zone);
        p
    }

    fn wait_serving(&self, zone: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let out = Command::new("dig")
                .args(["@127.0.0.1", "-p", &self.port.to_string(), "+short", "+time=1", "+tries=1", zone, "SOA"])
                .output()
                .unwrap();
            if out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("localhost.") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("named did not serve {zone}; log:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// Applies `update` lines (nsupdate syntax) to the zone.
    fn update(&self, zone: &str, update: &str) {
        let mut child = Command::new("nsupdate")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsupdate (bind9-dnsutils) is installed");
        use std::io::Write;
        write!(child.stdin.take().unwrap(), "server 127.0.0.1 {}\nzone {zone}\n{update}\nsend\n", self.port).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "nsupdate failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Primary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The policy zone's entry in `/v1/stats`.
fn zone_stats(d: &Adoxd) -> serde_json::Value {
    d.admin().get("/v1/stats").unwrap().json().unwrap()["policy_zones"][0].clone()
}

/// Waits (up to 10 s) until the policy zone is at `serial`.
fn wait_serial(d: &Adoxd, serial: u64) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if zone_stats(d)["serial"].as_u64() == Some(serial) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the policy zone did not reach serial {serial}: {}\nlog:\n{}", zone_stats(d), d.log());
}

fn start_adoxd(primary: &str, notify_port: u16) -> (Adoxd, tempdir::Dir) {
    let (cfg_dir, cfg) = temp_config(&format!(
        "[rpz]\nnotify_listen = \"127.0.0.1:{notify_port}\"\n[[rpz.zone]]\nname = \"rpz.test.\"\nprimaries = [\"{primary}\"]\nede = \"censored\"\n"
    ));
    (Adoxd::lab(&["--config", cfg.to_str().unwrap()]), cfg_dir)
}

#[test]
fn a_policy_zone_from_a_bind_primary_applies_its_actions_and_follows_ixfr_within_seconds_of_notify() {
    let notify_port = free_port();
    let records = "www.alpha.lab CNAME .\n\
                   txt.alpha.lab CNAME rpz-drop.\n\
                   *.wild.alpha.lab CNAME *.\n\
                   nodata.alpha.lab CNAME rpz-tcp-only.\n\
                   garden.alpha.lab CNAME www.beta.lab.\n\
                   end.c.b.a.deep.lab CNAME .\n";
    let primary = Primary::start("rpz.test.", records, notify_port);
    let (d, _cfg) = start_adoxd(&format!("127.0.0.1:{}", primary.port), notify_port);
    wait_serial(&d, 1);
    assert_eq!(zone_stats(&d)["rules"], 6, "{}", zone_stats(&d));

    // QNAME NXDOMAIN on a DNSSEC-signed name: the zone's EDE (16, censored), never AD.
    let r = d.ask(&Ask::new("www.alpha.lab.", RecordType::A).dnssec());
    assert_eq!(r.rcode(), ResponseCode::NXDomain);
    assert!(!r.ad(), "a policy rewrite of a secure answer is not authentic");
    assert_eq!(r.ede().map(|e| e.0), Some(16), "{:?}", r.ede());
    assert!(r.ede().unwrap().1.contains("rpz.test."), "the EDE text names the policy zone: {:?}", r.ede());
    // DROP: no answer at all.
    let q = Ask::new("txt.alpha.lab.", RecordType::TXT).wire();
    assert!(crate::support::udp_exchange(d.addr, &q, Duration::from_millis(800)).is_none(), "DROP answers nothing");
    // Wildcard NODATA: below the name, not the name itself.
    let r = d.query("x.wild.alpha.lab.", RecordType::A);
    assert_eq!((r.rcode(), r.msg.answers.len()), (ResponseCode::NoError, 0));
    assert_eq!(r.ede().map(|e| e.0), Some(16));
    assert_eq!(d.query("wild.alpha.lab.", RecordType::TXT).rdata(RecordType::TXT), ["wildcard parent"]);
    // TCP-only: truncated over UDP, the real answer over TCP.
    assert!(d.query("nodata.alpha.lab.", RecordType::A).tc());
    assert_eq!(d.ask_tcp(&Ask::new("nodata.alpha.lab.", RecordType::A)).rdata(RecordType::A), ["192.0.2.11"]);
    // Local data: a CNAME to a walled garden, whose address is resolved and follows it.
    let r = d.query("garden.alpha.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NoError);
    assert_eq!(r.rdata(RecordType::CNAME), ["www.beta.lab."]);
    assert_eq!(r.rdata(RecordType::A), ["192.0.2.20"]);
    // A name of the answer's CNAME chain: start.alpha.lab -> mid.beta.lab -> end...: the
    // chain up to the blocked name stays, then NXDOMAIN.
    let r = d.query("start.alpha.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{:?}", r.msg);
    assert_eq!(r.rdata(RecordType::CNAME).len(), 2);
    assert!(r.rdata(RecordType::A).is_empty());

    // Explain names the policy zone, the trigger and the action.
    let explain = |name: &str| d.admin().get(&format!("/v1/explain?name={name}&type=A")).unwrap().json().unwrap();
    let e = explain("www.alpha.lab.");
    let policy = e["policy"].as_str().unwrap_or_default();
    assert!(policy.contains("rpz.test.") && policy.contains("qname") && policy.contains("NXDOMAIN"), "{e}");
    let e = explain("start.alpha.lab.");
    assert!(e["policy"].as_str().unwrap_or_default().contains("end.c.b.a.deep.lab."), "{e}");
    assert!(explain("www.beta.lab.").get("policy").is_none());

    // mail.alpha.lab is answered, and now in the packet cache.
    assert_eq!(d.query("mail.alpha.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.25"]);
    let hits_before = zone_stats(&d)["hits_qname"].as_u64().unwrap();
    assert!(hits_before >= 6, "{}", zone_stats(&d));

    // The primary changes: www is unblocked, mail's address is blocked (RPZ-IP, NODATA).
    primary.update(
        "rpz.test.",
        "update delete www.alpha.lab.rpz.test. CNAME\nupdate add 32.25.2.0.192.rpz-ip.rpz.test. 60 CNAME *.",
    );
    let took = wait_serial(&d, 2);
    assert!(took < Duration::from_secs(5), "the change arrived {took:?} after the update");
    let s = zone_stats(&d);
    assert_eq!((s["rules"].as_u64(), s["transfers_ok"].as_u64()), (Some(6), Some(2)), "{s}");
    assert!(d.log().contains("incremental"), "the change came by IXFR:\n{}", d.log());
    let stats = d.admin().get("/v1/stats").unwrap().json().unwrap();
    assert!(stats["rpz_notifies_accepted"].as_u64().unwrap() >= 1, "{stats}");

    let r = d.ask(&Ask::new("www.alpha.lab.", RecordType::A).dnssec());
    assert_eq!(r.rdata(RecordType::A), ["192.0.2.10"], "unblocked");
    assert!(r.ad(), "and validated again");
    let r = d.query("mail.alpha.lab.", RecordType::A);
    assert_eq!(
        (r.rcode(), r.msg.answers.len()),
        (ResponseCode::NoError, 0),
        "an answer cached before the rule is rewritten"
    );
    assert_eq!(r.ede().map(|e| e.0), Some(16));
    assert!(zone_stats(&d)["hits_ip"].as_u64().unwrap() >= 1);
    let metrics = d.admin().get("/metrics").unwrap().text();
    assert!(metrics.contains("adox_rpz_hits_total{zone=\"rpz.test.\",trigger=\"ip\"}"), "{metrics}");
    assert!(metrics.contains("adox_rpz_serial{zone=\"rpz.test.\"} 2"), "{metrics}");
    drop(primary);
}

#[test]
fn a_policy_zone_file_is_read_again_on_reload_and_a_dropped_answer_frees_its_tcp_connection() {
    let dir = tempdir::Dir::new();
    let zone = dir.path().join("policy.rpz");
    let write = |records: &str| {
        std::fs::write(
            &zone,
            format!("$TTL 60\n@ SOA localhost. admin.policy. 1 3600 600 86400 60\n@ NS localhost.\n{records}"),
        )
        .unwrap();
    };
    // The end of start.alpha.lab's CNAME chain is dropped: the rule fires on the answer.
    write("end.c.b.a.deep.lab CNAME rpz-drop.\nwww.alpha.lab CNAME .\n");
    let (_cfg_dir, cfg) = temp_config(&format!(
        "[server]\ntcp_max_pipelined = 1\n[[rpz.zone]]\nname = \"policy.\"\nfile = \"{}\"\n",
        zone.display()
    ));
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).ede().map(|e| e.0), Some(15), "blocked is the default EDE");
    let q = Ask::new("start.alpha.lab.", RecordType::A).wire();
    assert!(crate::support::udp_exchange(d.addr, &q, Duration::from_millis(800)).is_none(), "dropped over UDP");
    // Over TCP, one query in flight per connection: the dropped one must not hold it.
    let mut tcp = std::net::TcpStream::connect(d.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    crate::support::write_frame(&mut tcp, &Ask::new("start.alpha.lab.", RecordType::A).wire());
    assert!(crate::support::read_frame(&mut tcp).is_none(), "dropped over TCP");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    crate::support::write_frame(&mut tcp, &Ask::new("www.beta.lab.", RecordType::A).wire());
    let r =
        crate::support::Response::parse(crate::support::read_frame(&mut tcp).expect("the connection is read again"));
    assert_eq!(r.rdata(RecordType::A), ["192.0.2.20"]);

    // The file changes; a reload reads it: the drop is gone, www is NODATA now.
    write("www.alpha.lab CNAME *.\n");
    d.hup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.query("www.alpha.lab.", RecordType::A).rcode() != ResponseCode::NoError {
        assert!(Instant::now() < deadline, "the reload did not apply the file:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = d.query("www.alpha.lab.", RecordType::A);
    assert!(r.msg.answers.is_empty());
    assert_eq!(d.query("start.alpha.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.30"]);
    // A file that no longer parses keeps the zone's rules, and says so.
    write("www.alpha.lab CNAME\n");
    d.hup();
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.query("www.alpha.lab.", RecordType::A).msg.answers.is_empty());
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).ede().map(|e| e.0), Some(15));
    assert!(zone_stats(&d)["transfers_failed"].as_u64() >= Some(1), "{}", zone_stats(&d));
}

/// A primary that misbehaves on every transfer: `flood` answers with an SOA and then
/// messages of 200 records without end; `trickle` sends its answer one octet every 300 ms.
fn hostile_primary(flood: bool) -> std::net::SocketAddr {
    use hickory_proto::op::{Message, MessageType, OpCode};
    use hickory_proto::rr::rdata::{CNAME, SOA};
    use hickory_proto::rr::{Name, RData, Record};
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut len = [0u8; 2];
                if conn.read_exact(&mut len).is_err() {
                    return;
                }
                let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if conn.read_exact(&mut q).is_err() {
                    return;
                }
                let Ok(q) = Message::from_vec(&q) else { return };
                let origin = q.queries[0].name().clone();
                let soa = SOA::new(Name::from_ascii("localhost.").unwrap(), origin.clone(), 9, 3600, 600, 86400, 60);
                let frame = |records: Vec<Record>| {
                    let mut m = Message::new(q.id, MessageType::Response, OpCode::Query);
                    m.add_query(q.queries[0].clone());
                    m.answers = records;
                    let wire = m.to_vec().unwrap();
                    let mut f = (wire.len() as u16).to_be_bytes().to_vec();
                    f.extend_from_slice(&wire);
                    f
                };
                let mut first = vec![Record::from_rdata(origin.clone(), 60, RData::SOA(soa))];
                let mut n = 0u64;
                // Bounded like every lab peer: ten minutes at most.
                let deadline = Instant::now() + Duration::from_secs(600);
                while Instant::now() < deadline {
                    let mut records = std::mem::take(&mut first);
                    for _ in 0..200 {
                        n += 1;
                        let owner = Name::from_ascii(format!("n{n}.example.")).unwrap().append_domain(&origin).unwrap();
                        records.push(Record::from_rdata(owner, 60, RData::CNAME(CNAME(Name::root()))));
                    }
                    let f = frame(records);
                    let sent = if flood {
                        conn.write_all(&f)
                    } else {
                        f.iter().try_for_each(|b| {
                            std::thread::sleep(Duration::from_millis(300));
                            conn.write_all(std::slice::from_ref(b))
                        })
                    };
                    if sent.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_primary_that_floods_or_trickles_a_transfer_is_cut_off_and_adoxd_stays_up() {
    let (flood, trickle) = (hostile_primary(true), hostile_primary(false));
    let (_cfg_dir, cfg) = temp_config(&format!(
        "[rpz]\nmax_records = 5000\ntransfer_timeout_s = 2\n\
         [[rpz.zone]]\nname = \"flood.\"\nprimaries = [\"{flood}\"]\n\
         [[rpz.zone]]\nname = \"trickle.\"\nprimaries = [\"{trickle}\"]\n"
    ));
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let stats = |i: usize| d.admin().get("/v1/stats").unwrap().json().unwrap()["policy_zones"][i].clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    while stats(0)["transfers_failed"].as_u64() < Some(1) || stats(1)["transfers_failed"].as_u64() < Some(1) {
        assert!(Instant::now() < deadline, "the transfers were not cut off: {} {}\n{}", stats(0), stats(1), d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..2 {
        assert_eq!((stats(i)["rules"].as_u64(), stats(i)["serial"].as_u64()), (Some(0), None), "{}", stats(i));
    }
    let log = d.log();
    assert!(log.contains("more than rpz.max_records (5000)"), "{log}");
    // Answers go on meanwhile, and a stop does not wait for a transfer.
    assert_eq!(d.query("www.beta.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.20"]);
    let stop = Instant::now();
    d.terminate();
    assert!(stop.elapsed() < Duration::from_secs(5), "adoxd took {:?} to stop", stop.elapsed());
}

#[test]
fn nsdname_and_nsip_triggers_match_the_servers_of_the_zone_that_answered() {
    let dir = tempdir::Dir::new();
    let zone = dir.path().join("ns.rpz");
    // beta.lab's server by name (NXDOMAIN), alpha.lab's by address (127.53.1.1, NODATA).
    std::fs::write(
        &zone,
        "$TTL 60\n@ SOA localhost. admin.ns. 1 3600 600 86400 60\n@ NS localhost.\n\
         ns1.beta.lab.rpz-nsdname CNAME .\n32.1.1.53.127.rpz-nsip CNAME *.\n",
    )
    .unwrap();
    let (_cfg_dir, cfg) = temp_config(&format!("[[rpz.zone]]\nname = \"ns.\"\nfile = \"{}\"\n", zone.display()));
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let r = d.query("www.beta.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{:?}", r.msg);
    assert_eq!(r.ede().map(|e| e.0), Some(15));
    assert!(r.ede().unwrap().1.contains("rpz-nsdname"), "{:?}", r.ede());
    let r = d.query("mail.alpha.lab.", RecordType::A);
    assert_eq!((r.rcode(), r.msg.answers.len()), (ResponseCode::NoError, 0), "{:?}", r.msg);
    assert!(r.ede().unwrap().1.contains("rpz-nsip"), "{:?}", r.ede());
    // Other zones' servers match neither.
    assert_eq!(d.query("www.c.b.a.deep.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.31"]);
    let s = zone_stats(&d);
    assert!(s["hits_nsdname"].as_u64() >= Some(1) && s["hits_nsip"].as_u64() >= Some(1), "{s}");
}
