//! Shared test support: the lab's location, an `adoxd` child process per test, and a
//! small DNS client (UDP and TCP) with helpers to read RCODE, answers and EDE.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

/// The lab brought up by the test command (`deploy/test`), found through `ADOX_LAB_DIR`
/// (default `/tmp/adox-lab`). A missing lab is a failure, never a skip.
pub fn lab_dir() -> PathBuf {
    let dir = PathBuf::from(std::env::var("ADOX_LAB_DIR").unwrap_or_else(|_| "/tmp/adox-lab".into()));
    assert!(
        dir.join("lab.env").exists() && dir.join("root.hints").exists(),
        "the lab is not up in {} (run the README's test command, or deploy/lab/lab up)",
        dir.display()
    );
    dir
}

/// The source address this test's adoxd sends its upstream queries from
/// (`--outgoing-address`): one in 127.54.0.0 to 127.117.255.255, from the process id and a
/// per-thread counter, so that tests running side by side are told apart on the wire and a
/// capture sees this test's traffic only (see `Capture`).
pub fn outgoing_address() -> std::net::Ipv4Addr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    thread_local! {
        static MINE: u32 = std::process::id().wrapping_mul(16).wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
    }
    // 4,000,000 addresses (127.54.1.1 to 127.117.250.250): two tests running side by side
    // share one only if their process ids differ by a multiple of 250,000.
    let n = MINE.with(|n| *n) % (64 * 250 * 250);
    std::net::Ipv4Addr::new(127, 54 + (n / 62_500) as u8, 1 + (n / 250 % 250) as u8, 1 + (n % 250) as u8)
}

/// The admin API token every test adoxd accepts (unless the test gives its own file).
pub const ADMIN_TOKEN: &str = "adox-test-admin-token-0123456789";
/// The read-only API token every test adoxd accepts.
pub const READ_TOKEN: &str = "adox-test-read-token-0123456789";

/// An `adoxd` child process listening on a free loopback port.
pub struct Adoxd {
    child: Child,
    pub addr: SocketAddr,
    /// The REST API's address (`None` when started with `--api off`).
    pub api: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
    _state: Option<tempdir::Dir>,
    _tokens: tempdir::Dir,
}

impl Adoxd {
    /// Starts adoxd on the lab's root with upstream 127.0.0.0/8 opened, plus `extra` args
    /// (`--root-hints` and `--trust-anchor` among them replace the lab's).
    pub fn lab(extra: &[&str]) -> Self {
        Self::lab_with(extra, true)
    }

    /// Like [`Self::lab`], but the root hints, the trust anchor and the listen addresses
    /// are the configuration file's (`--config` in `extra`), so that a reload can change
    /// them: none of them is given on the command line, which would override the file.
    pub fn lab_from_config(extra: &[&str]) -> Self {
        Self::lab_with(extra, false)
    }

    fn lab_with(extra: &[&str], lab_root_and_listen: bool) -> Self {
        let hints = lab_dir().join("root.hints");
        let anchor = lab_dir().join("trust-anchor.ds");
        let mut args = vec!["--allow-upstream", "127.0.0.0/8"];
        if lab_root_and_listen && !extra.contains(&"--root-hints") {
            args.extend_from_slice(&["--root-hints", hints.to_str().unwrap()]);
        }
        // The lab root's KSK is the trust anchor (validation is on by default).
        if lab_root_and_listen && !extra.contains(&"--trust-anchor") {
            args.extend_from_slice(&["--trust-anchor", anchor.to_str().unwrap()]);
        }
        if !extra.contains(&"--workers") {
            args.extend_from_slice(&["--workers", "2"]);
        }
        // Many lab tests make upstream traffic with fresh NXDOMAIN names under one signed
        // zone (each one an exchange to count, over the transport under test); RFC 8198
        // would answer all but the first from the cache. The tests of aggressive use
        // itself turn it on.
        if !extra.contains(&"--aggressive-nsec") {
            args.extend_from_slice(&["--aggressive-nsec", "off"]);
        }
        let source = outgoing_address().to_string();
        if !extra.contains(&"--outgoing-address") {
            args.extend_from_slice(&["--outgoing-address", &source]);
        }
        args.extend_from_slice(extra);
        Self::spawn(&args, lab_root_and_listen && !args.contains(&"--listen"))
    }

    /// Starts adoxd with exactly `args` plus `--listen 127.0.0.1:0` (unless given).
    pub fn start(args: &[&str]) -> Self {
        Self::spawn(args, !args.contains(&"--listen"))
    }

    fn spawn(args: &[&str], loopback_any_port: bool) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_adoxd"));
        cmd.args(args);
        if loopback_any_port {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if !args.contains(&"--log-level") {
            cmd.args(["--log-level", "info"]);
        }
        // Learned state (probes.json) stays in a directory of this process, never in the
        // machine's /var/lib/adox, unless the test names one.
        let state = if args.contains(&"--state-dir") { None } else { Some(tempdir::Dir::new()) };
        if let Some(dir) = &state {
            cmd.arg("--state-dir").arg(dir.path());
        }
        if !args.contains(&"--api") {
            cmd.args(["--api", "127.0.0.1:0"]);
        }
        let tokens = tempdir::Dir::new();
        if !args.contains(&"--api-token-file") {
            let f = tokens.path().join("admin.tokens");
            write_secret(&f, &format!("# test admin token\n{ADMIN_TOKEN}\n"));
            cmd.arg("--api-token-file").arg(f);
        }
        if !args.contains(&"--api-read-token-file") {
            let f = tokens.path().join("read.tokens");
            write_secret(&f, &format!("{READ_TOKEN}\n"));
            cmd.arg("--api-read-token-file").arg(f);
        }
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn adoxd");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Into the log first, so that whoever sees the ready line also sees it logged.
                log2.lock().unwrap().push_str(&line);
                log2.lock().unwrap().push('\n');
                if line.contains("adoxd ready")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line.clone());
                }
            }
        });
        let Ok(ready) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            panic!("adoxd did not become ready; log:\n{}", log.lock().unwrap());
        };
        // The ready line as text (`listen=... api=...`) or as JSON (`--log-format json`).
        let field = |key: &str| -> Option<String> {
            match serde_json::from_str::<serde_json::Value>(&ready) {
                Ok(v) => v[key].as_str().map(str::to_string),
                Err(_) => ready.split_whitespace().find_map(|t| t.strip_prefix(&format!("{key}="))).map(str::to_string),
            }
        };
        let listen = field("listen")
            .and_then(|l| l.split(',').next().map(str::to_string))
            .expect("listen= in ready line")
            .parse()
            .expect("listen address");
        let api = field("api").and_then(|a| a.parse().ok());
        Self { child, addr: listen, api, log, _state: state, _tokens: tokens }
    }

    /// An API client with `token` (`None`: no Authorization header).
    pub fn api_client(&self, token: Option<&str>) -> adoxctl::Client {
        let api = self.api.expect("adoxd runs its API");
        adoxctl::Client::new(&format!("http://{api}"), token.map(str::to_string)).unwrap()
    }

    /// An API client with the admin token.
    pub fn admin(&self) -> adoxctl::Client {
        self.api_client(Some(ADMIN_TOKEN))
    }

    /// Kills adoxd with SIGKILL (no shutdown at all) and waits for it.
    pub fn kill9(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        self.log()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything adoxd logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGHUP (reload the configuration).
    pub fn hup(&self) {
        Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
    }

    /// Stops adoxd with SIGTERM (a clean shutdown), waits for it and returns its log.
    pub fn terminate(mut self) -> String {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "adoxd exited with {status} after SIGTERM");
        // The reader thread sees EOF once the process is gone.
        std::thread::sleep(Duration::from_millis(100));
        self.log()
    }

    /// The value of `key=N` in the last `stats` log line.
    pub fn stat(log: &str, key: &str) -> u64 {
        let line = log.lines().rev().find(|l| l.contains(" stats")).expect("a stats line");
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line}"))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits up to `limit` for the process to exit by itself; its status, if it did.
    pub fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A query with RD and EDNS (1232, no DO) over UDP, retried up to 3 times on loss.
    pub fn query(&self, name: &str, rtype: RecordType) -> Response {
        self.ask(&Ask::new(name, rtype))
    }

    /// A query over UDP with the given options.
    pub fn ask(&self, ask: &Ask) -> Response {
        let bytes = ask.wire();
        for _ in 0..3 {
            if let Some(r) = udp_exchange(self.addr, &bytes, Duration::from_secs(10)) {
                return Response::parse(r);
            }
        }
        panic!("no UDP answer from adoxd for {} {:?}; log:\n{}", ask.name, ask.rtype, self.log());
    }

    /// A query over TCP.
    pub fn ask_tcp(&self, ask: &Ask) -> Response {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let bytes = ask.wire();
        write_frame(&mut s, &bytes);
        Response::parse(read_frame(&mut s).expect("TCP answer"))
    }
}

impl Drop for Adoxd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes over UDP and waits for one datagram.
pub fn udp_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind(if addr.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" }).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.send_to(bytes, addr).unwrap();
    let mut buf = vec![0u8; 65535];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match s.recv_from(&mut buf) {
            Ok((n, from)) if from == addr => return Some(buf[..n].to_vec()),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// Writes a file only its owner may read (token files must be).
pub fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

pub fn write_frame(s: &mut TcpStream, bytes: &[u8]) {
    let mut f = (bytes.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(bytes);
    s.write_all(&f).unwrap();
}

pub fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

/// A query to build.
#[derive(Clone, Debug)]
pub struct Ask {
    pub name: String,
    pub rtype: RecordType,
    pub id: u16,
    pub edns: Option<u16>,
    pub dnssec_ok: bool,
    pub rd: bool,
    /// AD in the query (RFC 6840 section 5.7: the client understands AD).
    pub ad: bool,
    /// CD in the query: the client validates itself.
    pub cd: bool,
    /// A COOKIE option's data (RFC 7873: client cookie, then any server cookie).
    pub cookie: Option<Vec<u8>>,
}

impl Ask {
    pub fn new(name: &str, rtype: RecordType) -> Self {
        Self {
            name: name.into(),
            rtype,
            id: rand_id(),
            edns: Some(1232),
            dnssec_ok: false,
            rd: true,
            ad: false,
            cd: false,
            cookie: None,
        }
    }
    /// With a COOKIE option (`data`: the client cookie, then any server cookie).
    pub fn cookie(mut self, data: &[u8]) -> Self {
        self.cookie = Some(data.to_vec());
        self
    }
    /// With DO set (DNSSEC records wanted).
    pub fn dnssec(mut self) -> Self {
        self.dnssec_ok = true;
        self
    }
    pub fn no_edns(mut self) -> Self {
        self.edns = None;
        self
    }
    pub fn wire(&self) -> Vec<u8> {
        let mut m = Message::new(self.id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = self.rd;
        m.metadata.authentic_data = self.ad;
        m.metadata.checking_disabled = self.cd;
        m.add_query(Query::query(Name::from_ascii(&self.name).unwrap(), self.rtype));
        if let Some(size) = self.edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            e.set_dnssec_ok(self.dnssec_ok);
            if let Some(c) = &self.cookie {
                e.options_mut().insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(10, c.clone()));
            }
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }
}

/// A port on 127.0.0.1 free for both UDP and TCP, for a process started later to bind.
/// It comes from below the kernel's ephemeral range (`ip_local_port_range`): a port from
/// inside it (what binding port 0 gives) can be taken by any outgoing TCP connection of a
/// test running beside this one between the pick and the bind (seen in CI: "Address
/// already in use" for adoxd's TCP listener). Random, so parallel tests rarely pick alike.
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    let (from, span) = (10_000u16, low.saturating_sub(10_000).max(1000));
    for _ in 0..1000 {
        let port = from + rand_id() % span;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {from}..{}", from + span)
}

pub fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u16
}

/// A parsed response plus its raw bytes.
#[derive(Debug)]
pub struct Response {
    pub raw: Vec<u8>,
    pub msg: Message,
}

impl Response {
    pub fn parse(raw: Vec<u8>) -> Self {
        let msg = Message::from_vec(&raw).unwrap_or_else(|e| panic!("unparsable response {raw:?}: {e}"));
        Self { raw, msg }
    }
    pub fn rcode(&self) -> ResponseCode {
        self.msg.metadata.response_code
    }
    /// Answer records as normalised "owner type rdata" strings, sorted (a set).
    pub fn answer_set(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .msg
            .answers
            .iter()
            .filter(|r| r.record_type() != RecordType::RRSIG)
            .map(|r| format!("{} {} {}", r.name.to_ascii(), r.record_type(), rdata_text(r)).to_ascii_lowercase())
            .collect();
        v.sort();
        v.dedup();
        v
    }
    /// Answer rdata for one type, as strings.
    pub fn rdata(&self, rtype: RecordType) -> Vec<String> {
        let mut v: Vec<String> =
            self.msg.answers.iter().filter(|r| r.record_type() == rtype).map(|r| r.data.to_string()).collect();
        v.sort();
        v
    }
    /// The Extended DNS Error (INFO-CODE, EXTRA-TEXT), read from the raw OPT record.
    pub fn ede(&self) -> Option<(u16, String)> {
        let body = find_option(&self.raw, 15)?;
        Some((u16::from_be_bytes([body[0], body[1]]), String::from_utf8_lossy(&body[2..]).into_owned()))
    }
    /// The INFO-CODE of every EDE option, in order.
    pub fn ede_codes(&self) -> Vec<u16> {
        find_options(&self.raw, 15).iter().map(|b| u16::from_be_bytes([b[0], b[1]])).collect()
    }
    /// The COOKIE option's data, read from the raw OPT record.
    pub fn cookie(&self) -> Option<Vec<u8>> {
        find_option(&self.raw, 10)
    }
    pub fn tc(&self) -> bool {
        self.msg.metadata.truncation
    }
    /// The AD bit: the resolver validated the answer.
    pub fn ad(&self) -> bool {
        self.msg.metadata.authentic_data
    }
}

/// RDATA as text; hickory keeps DNAME raw, so its target is decoded here.
fn rdata_text(r: &hickory_proto::rr::Record) -> String {
    use hickory_proto::serialize::binary::BinDecodable;
    match &r.data {
        hickory_proto::rr::RData::Unknown { code: RecordType::DNAME, rdata } => {
            Name::from_bytes(&rdata.anything).map(|n| n.to_ascii()).unwrap_or_else(|e| format!("bad DNAME: {e}"))
        }
        d => d.to_string(),
    }
}

/// The data of the first EDNS option `wanted` in a message's OPT record.
fn find_option(msg: &[u8], wanted: u16) -> Option<Vec<u8>> {
    find_options(msg, wanted).into_iter().next()
}

/// The data of every EDNS option `wanted`, in order.
fn find_options(msg: &[u8], wanted: u16) -> Vec<Vec<u8>> {
    use adox_dataplane::wire::skip_name;
    let count = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]) as usize;
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let mut found = Vec::new();
    let mut at = 12;
    for _ in 0..qd {
        let Some(end) = skip_name(msg, at) else { return found };
        at = end + 4;
    }
    for i in 0..an + ns + ar {
        let Some(end) = skip_name(msg, at) else { return found };
        at = end;
        let rtype = u16::from_be_bytes([msg[at], msg[at + 1]]);
        let rdlen = u16::from_be_bytes([msg[at + 8], msg[at + 9]]) as usize;
        let rdata = &msg[at + 10..at + 10 + rdlen];
        at += 10 + rdlen;
        if i >= an + ns && rtype == 41 {
            let mut o = 0;
            while o + 4 <= rdata.len() {
                let code = u16::from_be_bytes([rdata[o], rdata[o + 1]]);
                let len = u16::from_be_bytes([rdata[o + 2], rdata[o + 3]]) as usize;
                let body = &rdata[o + 4..o + 4 + len];
                if code == wanted {
                    found.push(body.to_vec());
                }
                o += 4 + len;
            }
        }
    }
    found
}

/// Writes a config file into a fresh temporary directory and returns its path.
pub fn temp_config(text: &str) -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new();
    let path = dir.path().join("adox.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

pub mod tempdir {
    use super::*;
    /// A directory removed when dropped.
    pub struct Dir(PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!("adox-test-{}-{}", std::process::id(), rand_id()));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// VmRSS of a process, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// The value of one sample in a Prometheus exposition.
pub fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in metrics"))
        .trim()
        .parse()
        .unwrap()
}
