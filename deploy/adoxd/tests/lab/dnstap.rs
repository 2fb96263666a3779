//! dnstap to real collectors: Debian's `fstrm_capture` takes adoxd's Frame Streams on a
//! unix socket and writes a file; `dnstap-ldns` (Debian's) reads the message types back,
//! and the Go `dnstap` tool (golang-github-dnstap-golang-dnstap-cli) the upstream
//! transport of each resolver message: Do53 over UDP and TCP, DoT, DoQ and DoH. A collector
//! that is not there costs answers nothing: messages past the buffer are dropped and
//! counted; one that comes later (over TCP) gets what the buffer kept.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{Adoxd, Ask, temp_config};

/// `fstrm_capture` on a unix socket, writing a file; stopped (SIGINT, so the file is
/// closed properly) by [`Collector::stop`].
struct Collector {
    child: Child,
    _dir: crate::support::tempdir::Dir,
    socket: std::path::PathBuf,
    file: std::path::PathBuf,
}

impl Collector {
    fn start() -> Self {
        let dir = crate::support::tempdir::Dir::new();
        let (socket, file) = (dir.path().join("dnstap.sock"), dir.path().join("dnstap.fstrm"));
        let child = capture(&["-u", socket.to_str().unwrap()], &file);
        for _ in 0..50 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(socket.exists(), "fstrm_capture did not open {}", socket.display());
        Self { child, _dir: dir, socket, file }
    }

    /// `fstrm_capture` on TCP 127.0.0.1:`port`.
    fn start_tcp(port: u16) -> Self {
        let dir = crate::support::tempdir::Dir::new();
        let file = dir.path().join("dnstap.fstrm");
        let child = capture(&["-a", "127.0.0.1", "-p", &port.to_string()], &file);
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, socket: dir.path().join("unused"), _dir: dir, file }
    }

    /// Stops the capture; `dnstap-ldns -q` lines and the Go tool's YAML of the file.
    fn stop(mut self) -> (String, String) {
        Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap();
        self.child.wait().unwrap();
        // (Drop's kill and wait then find it gone.)
        let run = |cmd: &str, args: &[&str]| {
            let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
            assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let f = self.file.to_str().unwrap();
        (run("dnstap-ldns", &["-r", f, "-q"]), run("dnstap", &["-r", f, "-y"]))
    }
}

/// A test that fails before [`Collector::stop`] leaves no `fstrm_capture` behind.
impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn capture(listen: &[&str], file: &std::path::Path) -> Child {
    Command::new("fstrm_capture")
        .args(["-t", "protobuf:dnstap.Dnstap"])
        .args(listen)
        .args(["-w", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("fstrm_capture (Debian package fstrm-bin)")
}

/// The resolver messages of the Go tool's YAML, as (type, socket_protocol, response
/// address:port) triples.
fn resolver_messages(yaml: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for doc in yaml.split("\n---") {
        let field = |k: &str| {
            doc.lines().find_map(|l| l.trim().strip_prefix(&format!("{k}: ")).map(str::to_string)).unwrap_or_default()
        };
        let t = doc.lines().filter_map(|l| l.strip_prefix("  type: ")).next().unwrap_or_default().to_string();
        if t.starts_with("RESOLVER_") {
            out.push((
                t,
                field("socket_protocol"),
                format!("{}:{}", field("response_address"), field("response_port")),
            ));
        }
    }
    out
}

/// Client queries over UDP and TCP and resolutions over Do53, DoT (an operator policy for
/// dot.lab.), DoQ (doq.lab.'s signal) and DoH (bdoh.lab.'s signal): the collector holds a
/// CLIENT_QUERY and a CLIENT_RESPONSE for each client query, and RESOLVER_QUERY and
/// RESOLVER_RESPONSE messages whose transport is the one each server was asked over.
#[test]
fn a_real_collector_sees_client_and_resolver_messages_with_each_transport() {
    let collector = Collector::start();
    let (_dir, cfg) = temp_config(&format!(
        "[dnstap]\nsocket_path = {:?}\nidentity = \"adox-lab\"\n\n[transport]\nprobing = false\nca_file = {:?}\n\n\
         [[policy]]\nzone = \"dot.lab\"\nmode = \"strict\"\ntransports = [\"dot\"]\nauth = \"pkix\"\n",
        collector.socket.to_str().unwrap(),
        crate::support::lab_dir().join("tls/ca.pem").to_str().unwrap()
    ));
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.10"]);
    assert_eq!(d.query("www.dot.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.60"]);
    // doq.lab. and bdoh.lab.: the first query learns the signal, the second uses it.
    for (first, second) in [("www.doq.lab.", "n1.doq.lab."), ("www.bdoh.lab.", "n1.bdoh.lab.")] {
        assert_eq!(d.query(first, RecordType::A).rcode(), ResponseCode::NoError);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(d.query(second, RecordType::A).rcode(), ResponseCode::NXDomain);
    }
    assert_eq!(d.ask_tcp(&Ask::new("www.alpha.lab.", RecordType::A)).rcode(), ResponseCode::NoError);
    let log = d.terminate();
    assert_eq!(Adoxd::stat(&log, "dnstap_dropped"), 0);
    let (ldns, yaml) = collector.stop();

    // dnstap-ldns: "DATE TIME CQ 127.0.0.1 UDP 54b "www.alpha.lab." IN A".
    let count = |kind: &str, proto: &str, name: &str| {
        ldns.lines().filter(|l| l.contains(&format!(" {kind} ")) && l.contains(proto) && l.contains(name)).count()
    };
    assert_eq!(count("CQ", "127.0.0.1 UDP", "\"www.alpha.lab.\""), 1, "{ldns}");
    assert_eq!(count("CR", "127.0.0.1 UDP", "\"www.alpha.lab.\""), 1, "{ldns}");
    assert_eq!(count("CQ", "127.0.0.1 TCP", "\"www.alpha.lab.\""), 1, "{ldns}");
    assert_eq!(count("CR", "127.0.0.1 TCP", "\"www.alpha.lab.\""), 1, "{ldns}");
    // alpha.lab. has two servers, 127.53.1.1 and 127.53.1.2: either may be asked.
    assert!(count("RQ", "UDP", "\"www.alpha.lab.\"") >= 1, "{ldns}");
    assert!(count("RR", "UDP", "\"www.alpha.lab.\"") >= 1, "{ldns}");
    assert!(yaml.contains("identity: \"adox-lab\""), "{yaml}");

    // The Go tool: each resolver message's transport, by the server's address and port.
    let msgs = resolver_messages(&yaml);
    let has =
        |t: &str, proto: &str, server: &str| msgs.iter().any(|m| m.0 == t && m.1 == proto && m.2.starts_with(server));
    for t in ["RESOLVER_QUERY", "RESOLVER_RESPONSE"] {
        assert!(has(t, "UDP", "127.53.1."), "{t} over UDP to one of alpha.lab.'s servers: {msgs:?}");
        assert!(has(t, "DOT", "127.53.6.1:853"), "{t} over DoT to dot.lab.'s server: {msgs:?}");
        assert!(has(t, "DOQ", "127.53.7.1:853") || has(t, "7", "127.53.7.1:853"), "{t} over DoQ: {msgs:?}");
        assert!(has(t, "DOH", "127.53.25.1:443"), "{t} over DoH to bdoh.lab.'s server: {msgs:?}");
    }
    // And never a transport other than the one the server was asked over.
    for (t, proto, server) in &msgs {
        let port = server.rsplit(':').next().unwrap();
        let expected: &[&str] = match port {
            "53" => &["UDP", "TCP"],
            "853" => &["DOT", "DOQ", "7"],
            "443" => &["DOH"],
            other => panic!("{t} to port {other}"),
        };
        assert!(expected.contains(&proto.as_str()), "{t} {proto} to {server}");
    }
}

/// No collector listening: answers are not slowed; what does not fit the buffer is
/// dropped and counted, and adoxd stops cleanly.
#[test]
fn an_absent_collector_costs_answers_nothing_and_drops_are_counted() {
    let dir = crate::support::tempdir::Dir::new();
    let socket = dir.path().join("nobody.sock");
    let (_cfg_dir, cfg) =
        temp_config(&format!("[dnstap]\nsocket_path = {:?}\nbuffer_bytes = 65536\n", socket.to_str().unwrap()));
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    for i in 0..400 {
        let r = d.query("www.alpha.lab.", RecordType::A);
        assert_eq!(r.rdata(RecordType::A), ["192.0.2.10"], "query {i}");
    }
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "dnstap_dropped") > 0, "64 KiB cannot hold 800 client messages");
    assert!(Adoxd::stat(&log, "dnstap_queued") > 0);
}

/// A TCP collector that starts after adoxd: what adoxd saw meanwhile waits in the buffer,
/// the writer connects within a second or two, and the collector gets both the earlier
/// and the later messages.
#[test]
fn a_tcp_collector_that_starts_late_gets_what_was_buffered_and_what_follows() {
    let port = crate::support::free_port();
    let (_dir, cfg) = temp_config(&format!(
        "[dnstap]\ntcp = \"127.0.0.1:{port}\"\nresolver_queries = false\nresolver_responses = false\n"
    ));
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.10"]);
    let collector = Collector::start_tcp(port);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(d.query("www.beta.lab.", RecordType::A).rcode(), ResponseCode::NoError);
    let log = d.terminate();
    assert_eq!(Adoxd::stat(&log, "dnstap_dropped"), 0);
    let (ldns, _) = collector.stop();
    for name in ["\"www.alpha.lab.\"", "\"www.beta.lab.\""] {
        for kind in [" CQ ", " CR "] {
            assert_eq!(
                ldns.lines().filter(|l| l.contains(kind) && l.contains(name)).count(),
                1,
                "{kind}{name}: {ldns}"
            );
        }
    }
    assert!(!ldns.contains(" RQ "), "resolver messages were switched off: {ldns}");
}
