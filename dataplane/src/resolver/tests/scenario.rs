//! Replay scenarios: scripted authoritative servers, client queries and the answers they
//! must get, in small text files (`scenarios/*.scn`), run against the resolver on the fake
//! clock without sockets. Writing one is a matter of minutes; a failing one prints the
//! whole exchange. The format (`scenarios/referral_then_answer.scn` is a worked example):
//!
//! ```text
//! # The first comment line is the scenario's title; '#' starts a comment anywhere.
//! config resolver.qname_minimisation = false   # [resolver], [cache], [dnssec] and
//!                                              # [transport] keys, as TOML
//! signed . example.          # zones with a key made at run time (ECDSA P-256); a signed
//!                            # root is the trust anchor, otherwise nothing is validated
//! root 10.0.0.1              # the root hints: a.root. at this address
//!
//! server 10.0.0.1 .          # a server: its address and the zone it serves (what it signs);
//!                            # blocks with one address: the zone holding the name answers
//!   match example. * below   # qname (at or `below` it, or `*`), qtype (or `*`), conditions:
//!                            # `do` / `nodo` (the query's DO bit), `udp` / `tcp`, `times N`,
//!                            # `optional` (may go unused)
//!     authority example. 3600 NS ns.example.      # records: answer / authority / additional
//!     authority example. 3600 DS @key             # @key: the DS (or DNSKEY) of a signed zone
//!     additional ns.example. 3600 A 10.0.1.1
//!   match www.example. A
//!     flags aa               # aa, tc (default none); rcode NXDOMAIN etc. (default NOERROR)
//!     answer www.example. 3600 A 192.0.2.1 | expanded from *.example.
//!   match lost.example. A
//!     timeout                # no reply: the query times out
//!
//! query www.example. A do    # a client query; flags do, cd
//!   rcode NOERROR            # expectations: rcode, flags ad / -ad / tc, ede N / ede none,
//!   flags ad                 # ttl SECTION N (every record's TTL is N),
//!                            # and sections (answer / authority / additional): the records
//!   answer www.example. 3600 A 192.0.2.1   # listed are exactly the section's (TTLs not
//!   answer www.example. RRSIG A            # compared; `answer none`: empty); an RRSIG
//!   ede none                               # is written as OWNER RRSIG COVERED-TYPE
//! wait 3600                  # the fake clock moves on
//! ```
//!
//! Entries are tried in order, the first that matches answers; one used `times N` falls
//! through to the next. A signed server adds an RRSIG over every RRset it serves from its
//! zone to answers to DO queries (not over an NS RRset below its apex, not over additional
//! data); without DO it leaves out NSEC, NSEC3 and a referral's DS. `| expanded from
//! *.zone.` signs a record as synthesized from that wildcard. NSEC3 owners and next hashes
//! can be written `@hash(NAME)` (SHA-1, no salt, no extra iteration: only in NSEC3 records
//! with salt `-` and 0 iterations). DS, DNSKEY, NSEC, NSEC3 and DNAME RDATA are written in
//! presentation form; other types as hickory reads them (one value per record), or in RFC
//! 3597 form (`\# LEN HEX`). Server addresses are in 10.0.0.0/8 (the test resolver may
//! query those). Expectations not written (rcode, a section) are not checked; expected
//! flags are ad, tc, aa, ra, cd (`-ad`: clear).
//!
//! Strict by design: a query the resolver sends that no entry was written for (REFUSED to
//! it, or a timeout for an address without a server) fails the scenario, and so does an
//! entry no query reached, unless marked `optional`: a passing scenario took the path it
//! describes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hickory_proto::op::{Edns, Query as HQuery};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};

use super::signed::{ZoneKey, covered, default_window, raw};
use super::*;
use crate::dnssec::crypto::nsec3_hash;
use crate::dnssec::rdata::name_wire_lower;
use crate::respond::{self, Question};

/// Which section of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Answer,
    Authority,
    Additional,
}

impl Section {
    fn parse(word: &str) -> Option<Self> {
        match word {
            "answer" => Some(Self::Answer),
            "authority" => Some(Self::Authority),
            "additional" => Some(Self::Additional),
            _ => None,
        }
    }
}

/// A record of a scripted reply, and the wildcard it was expanded from, if any.
#[derive(Debug, Clone)]
struct Scripted {
    record: Record,
    wildcard: Option<Name>,
}

/// What a server sends back for an entry.
#[derive(Debug, Clone, Default)]
struct Reply {
    rcode: u16,
    aa: bool,
    tc: bool,
    timeout: bool,
    sections: Vec<(Section, Scripted)>,
}

#[derive(Debug)]
struct Entry {
    line: usize,
    /// `None`: any name.
    qname: Option<Name>,
    below: bool,
    qtype: Option<RecordType>,
    dnssec_ok: Option<bool>,
    tcp: Option<bool>,
    times: Option<u32>,
    /// May go unused (otherwise an entry no query reached fails the scenario).
    optional: bool,
    used: Cell<u32>,
    reply: Reply,
}

impl Entry {
    fn matches(&self, qname: &Name, qtype: RecordType, dnssec_ok: bool, tcp: bool) -> bool {
        let name_ok = match &self.qname {
            None => true,
            Some(n) if self.below => is_at_or_below(qname, n),
            Some(n) => n == qname,
        };
        name_ok
            && self.qtype.is_none_or(|t| t == qtype)
            && self.dnssec_ok.is_none_or(|d| d == dnssec_ok)
            && self.tcp.is_none_or(|t| t == tcp)
            && self.times.is_none_or(|n| self.used.get() < n)
    }
}

#[derive(Debug)]
struct Server {
    addr: IpAddr,
    zone: Name,
    entries: Vec<Entry>,
}

/// What a client query must get.
#[derive(Debug, Default)]
struct Expect {
    rcode: Option<u16>,
    flags: Vec<(String, bool)>,
    ede: Option<Option<u16>>,
    sections: BTreeMap<Section, Vec<String>>,
    /// Every record of the section (RRSIGs too) has this TTL.
    ttls: Vec<(Section, u32)>,
}

#[derive(Debug)]
enum Step {
    Query { line: usize, name: Name, qtype: RecordType, dnssec_ok: bool, cd: bool, expect: Expect },
    Wait(u64),
}

/// A parsed scenario; the keys of its signed zones are made while parsing (the `@key`
/// records need them).
struct Scenario {
    title: String,
    config: BTreeMap<String, Vec<String>>,
    keys: Vec<ZoneKey>,
    root: Option<IpAddr>,
    servers: Vec<Server>,
    steps: Vec<Step>,
}

type ParseResult<T> = Result<T, String>;

fn name(s: &str) -> ParseResult<Name> {
    let s = expand_hashes(s)?;
    let mut nm = Name::from_ascii(&s).map_err(|e| format!("bad name `{s}`: {e}"))?;
    if !nm.is_fqdn() {
        return Err(format!("`{s}`: names end with a dot"));
    }
    nm.set_fqdn(true);
    Ok(nm)
}

fn rtype(s: &str) -> ParseResult<RecordType> {
    // RFC 3597's TYPEnnn for types without a mnemonic.
    if let Some(n) = s.strip_prefix("TYPE").and_then(|n| n.parse::<u16>().ok()) {
        return Ok(RecordType::from(n));
    }
    s.parse::<RecordType>().map_err(|_| format!("bad type `{s}`"))
}

fn rcode(s: &str) -> ParseResult<u16> {
    Ok(match s {
        "NOERROR" => 0,
        "FORMERR" => 1,
        "SERVFAIL" => 2,
        "NXDOMAIN" => 3,
        "NOTIMP" => 4,
        "REFUSED" => 5,
        _ => return Err(format!("bad rcode `{s}`")),
    })
}

/// `@hash(NAME)` replaced by the base32hex NSEC3 hash of NAME (no salt, no extra
/// iteration), as an NSEC3 owner label or next-hash field is written.
fn expand_hashes(s: &str) -> ParseResult<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find("@hash(") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 6..];
        let end = after.find(')').ok_or_else(|| format!("unclosed @hash( in `{s}`"))?;
        let target = Name::from_ascii(&after[..end]).map_err(|e| format!("bad name in @hash: {e}"))?;
        out.push_str(&base32hex(&nsec3_hash(&name_wire_lower(&target), &[], 0)));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn base32hex(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut out = String::new();
    for chunk in bytes.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let v = buf.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..chars {
            out.push(char::from(ALPHABET[((v >> (35 - 5 * i)) & 31) as usize]));
        }
    }
    out
}

fn hex(s: &str) -> ParseResult<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd hex `{s}`"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("bad hex `{s}`")))
        .collect()
}

/// An NSEC/NSEC3 type bitmap (RFC 4034 section 4.1.2) of the named types.
fn type_bitmap(words: &[&str]) -> ParseResult<Vec<u8>> {
    let mut codes: Vec<u16> = words.iter().map(|w| rtype(w).map(u16::from)).collect::<ParseResult<_>>()?;
    codes.sort_unstable();
    codes.dedup();
    let mut out = Vec::new();
    let mut window = 0;
    while window < 256 {
        let in_window: Vec<u16> = codes.iter().copied().filter(|c| c >> 8 == window).collect();
        if let Some(max) = in_window.iter().max() {
            let len = usize::from((max & 0xFF) / 8 + 1);
            let mut octets = vec![0u8; len];
            for c in &in_window {
                octets[usize::from((c & 0xFF) / 8)] |= 0x80 >> (c % 8);
            }
            out.extend([window as u8, len as u8]);
            out.extend(octets);
        }
        window += 1;
    }
    Ok(out)
}

/// Where a line's comment starts: the first `#` outside a quoted string and not written
/// `\#` (RFC 3597's generic RDATA).
fn comment_at(line: &str) -> Option<usize> {
    let mut quoted = false;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '"' if prev != '\\' => quoted = !quoted,
            '#' if !quoted && prev != '\\' => return Some(i),
            _ => {}
        }
        prev = c;
    }
    None
}

/// A server address: in 10.0.0.0/8, the only addresses the test resolver queries (any
/// other would be refused by its upstream ACL and silently skipped).
fn server_address(s: &str) -> ParseResult<IpAddr> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) if a.octets()[0] == 10 => Ok(IpAddr::V4(a)),
        _ => Err(format!("server address `{s}`: an IPv4 address in 10.0.0.0/8")),
    }
}

/// The key of signed zone `apex`.
fn key_of<'a>(keys: &'a [ZoneKey], apex: &Name) -> ParseResult<&'a ZoneKey> {
    keys.iter().find(|k| k.apex == *apex).ok_or_else(|| format!("@key: {apex} is not a signed zone"))
}

/// One record in presentation form: `OWNER TTL [IN] TYPE RDATA`, optionally followed by
/// `| expanded from WILDCARD`.
fn record(text: &str, keys: &[ZoneKey]) -> ParseResult<Scripted> {
    let (text, wildcard) = match text.split_once('|') {
        Some((r, w)) => {
            let w = w.trim().strip_prefix("expanded from ").ok_or("after `|`: `expanded from *.ZONE.`")?;
            (r.trim_end(), Some(name(w.trim())?))
        }
        None => (text, None),
    };
    if text.contains("@hash(") && !text.split_whitespace().any(|w| w == "NSEC3") {
        return Err("@hash(NAME) is for NSEC3 records".into());
    }
    let mut words = text.split_whitespace();
    let owner = name(words.next().ok_or("empty record")?)?;
    let ttl_word = words.next().ok_or("record without a TTL")?;
    let ttl: u32 = ttl_word.parse().map_err(|_| format!("bad TTL `{ttl_word}` (records are OWNER TTL TYPE RDATA)"))?;
    let mut t = words.next().ok_or("record without a type")?;
    if t == "IN" {
        t = words.next().ok_or("record without a type")?;
    }
    let rt = rtype(t)?;
    let rest: Vec<&str> = words.collect();
    let rest_text = rest.join(" ");
    if let Some(w) = &wildcard
        && !(w.is_wildcard() && crate::names::is_below(&owner, &w.base_name()))
    {
        return Err(format!("`expanded from {w}`: a wildcard above {owner}"));
    }
    // Types of one value each: more words would be dropped by the parser, silently.
    if matches!(rt, RecordType::A | RecordType::AAAA | RecordType::NS | RecordType::CNAME | RecordType::PTR)
        && rest.len() != 1
    {
        return Err(format!("{t}: one value per record (`{rest_text}`)"));
    }
    let raw_of = |rdata: Vec<u8>| Ok(Scripted { record: raw(&owner, ttl, rt, rdata), wildcard: wildcard.clone() });
    if rest.first() == Some(&"\\#") {
        let data = hex(&rest.get(2..).unwrap_or_default().concat())?;
        if rest.get(1).and_then(|l| l.parse::<usize>().ok()) != Some(data.len()) {
            return Err(format!("`\\# LEN HEX`: LEN is not the {} octets given", data.len()));
        }
        return raw_of(data);
    }
    match rt {
        RecordType::DS if rest_text == "@key" => raw_of(key_of(keys, &owner)?.ds_rdata()),
        RecordType::DNSKEY if rest_text == "@key" => raw_of(key_of(keys, &owner)?.rdata.clone()),
        RecordType::DNSKEY => Err("DNSKEY: write @key (a key made for a signed zone)".into()),
        RecordType::DS => {
            let [tag, alg, dt, digest] = rest[..] else { return Err("DS: TAG ALG DIGEST-TYPE HEX".into()) };
            let mut d = tag.parse::<u16>().map_err(|_| "DS: bad tag")?.to_be_bytes().to_vec();
            d.push(alg.parse().map_err(|_| "DS: bad algorithm")?);
            d.push(dt.parse().map_err(|_| "DS: bad digest type")?);
            d.extend(hex(digest)?);
            raw_of(d)
        }
        RecordType::NSEC => {
            let (next, types) = rest.split_first().ok_or("NSEC: NEXT TYPE...")?;
            let mut d = name_wire_lower(&name(next)?);
            d.extend(type_bitmap(types)?);
            raw_of(d)
        }
        RecordType::NSEC3 => {
            let [alg, flags, iterations, salt, next, types @ ..] = &rest[..] else {
                return Err("NSEC3: ALG FLAGS ITERATIONS SALT NEXT TYPE...".into());
            };
            let mut d = vec![alg.parse().map_err(|_| "NSEC3: bad algorithm")?];
            d.push(flags.parse().map_err(|_| "NSEC3: bad flags")?);
            d.extend(iterations.parse::<u16>().map_err(|_| "NSEC3: bad iterations")?.to_be_bytes());
            let hashed =
                rest_text.contains("@hash(") || text.split_whitespace().next().is_some_and(|o| o.contains("@hash("));
            if hashed && (*salt != "-" || *iterations != "0") {
                return Err("@hash(NAME) hashes without salt or extra iteration: salt - and 0 iterations".into());
            }
            let salt = if *salt == "-" { Vec::new() } else { hex(salt)? };
            d.push(salt.len() as u8);
            d.extend(salt);
            let next = crate::dnssec::rdata::base32hex_decode(expand_hashes(next)?.to_ascii_uppercase().as_bytes())
                .ok_or("NSEC3: bad next hash")?;
            d.push(next.len() as u8);
            d.extend(next);
            d.extend(type_bitmap(types)?);
            raw_of(d)
        }
        RecordType::DNAME => raw_of(name_wire_lower(&name(&rest_text)?)),
        RecordType::RRSIG => Err("RRSIGs are made by the server (write records of a signed zone)".into()),
        _ => {
            let data = RData::try_from_str(rt, &rest_text).map_err(|e| format!("{t} `{rest_text}`: {e}"))?;
            Ok(Scripted { record: Record::from_rdata(owner, ttl, data), wildcard })
        }
    }
}

/// An expected record: `OWNER RRSIG TYPE`, or a record as `record` reads it.
fn expected_record(text: &str, keys: &[ZoneKey]) -> ParseResult<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if let [owner, "RRSIG", t] = words[..] {
        return Ok(format!("{} RRSIG {}", name(owner)?.to_ascii().to_ascii_lowercase(), rtype(t)?));
    }
    Ok(render(&record(text, keys)?.record))
}

/// A record as the expectations compare it: owner, type and RDATA (no TTL); an RRSIG by
/// the type it covers.
fn render(r: &Record) -> String {
    let owner = r.name.to_ascii().to_ascii_lowercase();
    let t = r.record_type();
    if let Some(c) = covered(r) {
        return format!("{owner} RRSIG {c}");
    }
    match &r.data {
        RData::Unknown { rdata, .. } => {
            let h: String = rdata.anything.iter().map(|b| format!("{b:02x}")).collect();
            format!("{owner} {t} \\# {h}")
        }
        d => format!("{owner} {t} {d}"),
    }
}

impl Scenario {
    fn parse(text: &str) -> ParseResult<Self> {
        let mut s = Self {
            title: String::new(),
            config: BTreeMap::new(),
            keys: Vec::new(),
            root: None,
            servers: Vec::new(),
            steps: Vec::new(),
        };
        for (i, full) in text.lines().enumerate() {
            let line = i + 1;
            let at = |e: String| format!("line {line}: {e}");
            let (content, comment) = match comment_at(full) {
                Some(at) => (&full[..at], Some(&full[at + 1..])),
                None => (full, None),
            };
            if s.title.is_empty()
                && content.trim().is_empty()
                && let Some(c) = comment
            {
                s.title = c.trim().to_string();
            }
            let content = content.trim_end();
            if content.trim().is_empty() {
                continue;
            }
            let indented = content.starts_with(' ');
            let words: Vec<&str> = content.split_whitespace().collect();
            let rest = content.trim_start()[words[0].len()..].trim();
            s.line(line, indented, &words, rest).map_err(at)?;
        }
        if s.root.is_none() {
            return Err("no `root ADDRESS` line".into());
        }
        Ok(s)
    }

    fn line(&mut self, line: usize, indented: bool, words: &[&str], rest: &str) -> ParseResult<()> {
        if !indented {
            match words {
                ["config", ..] => {
                    let (key, value) = rest.split_once('=').ok_or("config KEY = VALUE")?;
                    let (table, field) = key.trim().rsplit_once('.').ok_or("config keys are TABLE.FIELD")?;
                    self.config.entry(table.to_string()).or_default().push(format!("{} = {}", field, value.trim()));
                }
                ["signed", zones @ ..] => {
                    for z in zones {
                        self.keys.push(ZoneKey::new(name(z)?));
                    }
                }
                ["root", addr] => self.root = Some(server_address(addr)?),
                ["server", addr, zone] => {
                    self.servers.push(Server { addr: server_address(addr)?, zone: name(zone)?, entries: Vec::new() })
                }
                ["query", qname, qtype, flags @ ..] => {
                    let mut dnssec_ok = false;
                    let mut cd = false;
                    for f in flags {
                        match *f {
                            "do" => dnssec_ok = true,
                            "cd" => cd = true,
                            _ => return Err(format!("query flags are do, cd (not `{f}`)")),
                        }
                    }
                    self.steps.push(Step::Query {
                        line,
                        name: name(qname)?,
                        qtype: rtype(qtype)?,
                        dnssec_ok,
                        cd,
                        expect: Expect::default(),
                    });
                }
                ["wait", secs] => self.steps.push(Step::Wait(secs.parse().map_err(|_| "wait SECONDS")?)),
                _ => return Err(format!("unknown line `{}`", words.join(" "))),
            }
            return Ok(());
        }
        // Indented: part of the last server (an entry or its reply) or the last query.
        match (self.steps.last_mut(), self.servers.last_mut()) {
            (Some(Step::Query { expect, .. }), _) => expect_line(expect, words, rest, &self.keys),
            (None, Some(server)) => server_line(server, line, words, rest, &self.keys),
            _ => Err("an indented line belongs under a server (servers come before queries) or a query".into()),
        }
    }
}

fn server_line(server: &mut Server, line: usize, words: &[&str], rest: &str, keys: &[ZoneKey]) -> ParseResult<()> {
    if let ["match", qname, qtype, conds @ ..] = words {
        let mut e = Entry {
            line,
            qname: if *qname == "*" { None } else { Some(name(qname)?) },
            below: false,
            qtype: if *qtype == "*" { None } else { Some(rtype(qtype)?) },
            dnssec_ok: None,
            tcp: None,
            times: None,
            optional: false,
            used: Cell::new(0),
            reply: Reply::default(),
        };
        let mut conds = conds.iter();
        while let Some(c) = conds.next() {
            match *c {
                "below" => e.below = true,
                "do" => e.dnssec_ok = Some(true),
                "nodo" => e.dnssec_ok = Some(false),
                "tcp" => e.tcp = Some(true),
                "udp" => e.tcp = Some(false),
                "times" => {
                    e.times =
                        Some(conds.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0).ok_or("times N (N > 0)")?)
                }
                "optional" => e.optional = true,
                _ => return Err(format!("unknown condition `{c}`")),
            }
        }
        server.entries.push(e);
        return Ok(());
    }
    let entry = server.entries.last_mut().ok_or("a reply line before any `match`")?;
    let reply = &mut entry.reply;
    match words {
        ["flags", flags @ ..] => {
            for f in flags {
                match *f {
                    "aa" => reply.aa = true,
                    "tc" => reply.tc = true,
                    _ => return Err(format!("reply flags are aa, tc (not `{f}`)")),
                }
            }
        }
        ["rcode", code] => reply.rcode = rcode(code)?,
        ["timeout"] => reply.timeout = true,
        [section, ..] => {
            let section = Section::parse(section).ok_or_else(|| format!("unknown line `{}`", words.join(" ")))?;
            reply.sections.push((section, record(rest, keys)?));
        }
        [] => {}
    }
    Ok(())
}

fn expect_line(expect: &mut Expect, words: &[&str], rest: &str, keys: &[ZoneKey]) -> ParseResult<()> {
    match words {
        ["rcode", code] => expect.rcode = Some(rcode(code)?),
        ["flags", flags @ ..] => {
            for f in flags {
                let (flag, set) = f.strip_prefix('-').map_or((*f, true), |f| (f, false));
                if !["ad", "tc", "aa", "ra", "cd"].contains(&flag) {
                    return Err(format!("unknown flag `{flag}`"));
                }
                expect.flags.push((flag.to_string(), set));
            }
        }
        ["ttl", section, ttl] => {
            let section = Section::parse(section).ok_or("ttl SECTION SECONDS")?;
            expect.ttls.push((section, ttl.parse().map_err(|_| "ttl SECTION SECONDS")?));
        }
        ["ede", "none"] => expect.ede = Some(None),
        ["ede", code] => expect.ede = Some(Some(code.parse().map_err(|_| "ede N or ede none")?)),
        [section, ..] => {
            let section =
                Section::parse(section).ok_or_else(|| format!("unknown expectation `{}`", words.join(" ")))?;
            let list = expect.sections.entry(section).or_default();
            if rest != "none" {
                list.push(expected_record(rest, keys)?);
            }
        }
        [] => {}
    }
    Ok(())
}

/// The scripted network: the servers, the clock, and the log of the exchange.
struct ScriptNet {
    servers: Vec<Server>,
    keys: Vec<ZoneKey>,
    now: Cell<Instant>,
    epoch: Instant,
    rng: Cell<u64>,
    log: RefCell<Vec<String>>,
    /// Queries no entry was scripted for (a scenario fails on any).
    unscripted: RefCell<Vec<String>>,
}

#[derive(Clone)]
struct Script(std::rc::Rc<ScriptNet>);

impl ScriptNet {
    /// The reply of `server` to `query`, logged.
    fn answer(&self, server: IpAddr, query: &Message, tcp: bool) -> Option<Message> {
        let q = &query.queries[0];
        let (qname, qtype) = (q.name().clone(), q.query_type());
        let dnssec_ok = query.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let mut line = format!(
            "  {server} <- {} {qtype}{}{}: ",
            qname.to_ascii(),
            if dnssec_ok { " +do" } else { "" },
            if tcp { " (tcp)" } else { "" }
        );
        // An address may serve several zones (several `server` blocks): the one whose zone
        // holds the name answers (the parent's for a DS at a cut), else the first.
        let blocks: Vec<&Server> = self.servers.iter().filter(|s| s.addr == server).collect();
        let holds = |s: &Server| {
            is_at_or_below(&qname, &s.zone) && !(qtype == RecordType::DS && qname == s.zone && !s.zone.is_root())
        };
        let srv =
            blocks.iter().copied().filter(|s| holds(s)).max_by_key(|s| s.zone.num_labels()).or(blocks.first().copied());
        let Some(srv) = srv else {
            line.push_str("no such server: timeout");
            self.unscripted.borrow_mut().push(line.clone());
            self.log.borrow_mut().push(line);
            return None;
        };
        let mut m = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
        m.add_query(q.clone());
        let Some(entry) = srv.entries.iter().find(|e| e.matches(&qname, qtype, dnssec_ok, tcp)) else {
            m.metadata.response_code = ResponseCode::Refused;
            line.push_str("no entry matches: REFUSED");
            self.unscripted.borrow_mut().push(line.clone());
            self.log.borrow_mut().push(line);
            return Some(m);
        };
        entry.used.set(entry.used.get() + 1);
        let reply = &entry.reply;
        if reply.timeout {
            let _ = write!(line, "entry at line {}: timeout", entry.line);
            self.log.borrow_mut().push(line);
            return None;
        }
        m.metadata.authoritative = reply.aa;
        m.metadata.truncation = reply.tc;
        m.metadata.response_code = ResponseCode::from(0, reply.rcode as u8);
        let key = self.keys.iter().find(|k| k.apex == srv.zone).filter(|_| dnssec_ok);
        for section in [Section::Answer, Section::Authority, Section::Additional] {
            // Without DO a server leaves out the DNSSEC records it was not asked for (RFC 4035
            // section 3.1), DS in a referral included.
            let dnssec_record = |r: &Record| {
                let t = r.record_type();
                t != qtype
                    && (matches!(t, RecordType::NSEC | RecordType::NSEC3)
                        || (t == RecordType::DS && section == Section::Authority))
            };
            let scripted: Vec<&Scripted> = reply
                .sections
                .iter()
                .filter(|(s, r)| *s == section && (dnssec_ok || !dnssec_record(&r.record)))
                .map(|(_, r)| r)
                .collect();
            let mut records: Vec<Record> = scripted.iter().map(|s| s.record.clone()).collect();
            if let Some(key) = key
                && section != Section::Additional
            {
                records.extend(signatures(key, &scripted));
            }
            match section {
                Section::Answer => m.answers = records,
                Section::Authority => m.authorities = records,
                Section::Additional => m.additionals = records,
            }
        }
        if let Some(e) = &query.edns {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            edns.set_dnssec_ok(e.flags().dnssec_ok);
            m.edns = Some(edns);
        }
        let _ = write!(
            line,
            "entry at line {}: {}{}{} {}/{}/{}",
            entry.line,
            m.metadata.response_code,
            if m.metadata.authoritative { " aa" } else { "" },
            if m.metadata.truncation { " tc" } else { "" },
            m.answers.len(),
            m.authorities.len(),
            m.additionals.len()
        );
        self.log.borrow_mut().push(line);
        Some(m)
    }
}

/// The RRSIGs a signed server adds over the RRsets of one section: every RRset of its zone
/// except a delegation's NS RRset in a referral.
fn signatures(key: &ZoneKey, scripted: &[&Scripted]) -> Vec<Record> {
    let mut sets: Vec<(Name, RecordType, Option<Name>)> = Vec::new();
    for s in scripted {
        let r = &s.record;
        let id = (r.name.clone(), r.record_type(), s.wildcard.clone());
        let delegation = r.record_type() == RecordType::NS && r.name != key.apex;
        if is_at_or_below(&r.name, &key.apex) && !delegation && !sets.contains(&id) {
            sets.push(id);
        }
    }
    sets.iter()
        .map(|(owner, t, wildcard)| {
            let set: Vec<&Record> =
                scripted.iter().map(|s| &s.record).filter(|r| r.name == *owner && r.record_type() == *t).collect();
            let labels = crate::dnssec::verify::rrsig_labels(wildcard.as_ref().unwrap_or(owner));
            key.sign_with_labels(&set, default_window(), labels as u8)
        })
        .collect()
}

impl Environment for Script {
    fn now(&self) -> Instant {
        self.0.now.get()
    }

    fn unix_now(&self) -> u64 {
        FAKE_UNIX_START + self.0.now.get().duration_since(self.0.epoch).as_secs()
    }

    fn random(&self) -> u64 {
        xorshift(&self.0.rng)
    }
}

impl Upstream for Script {
    async fn exchange(
        &self,
        server: SocketAddr,
        query: &[u8],
        wire: Wire,
        timeout: Duration,
    ) -> Result<Vec<u8>, UpstreamError> {
        let net = &self.0;
        let msg = Message::from_vec(query).map_err(|_| UpstreamError::BadResponse("scenario: bad query"))?;
        if matches!(wire, Wire::Dot { .. } | Wire::Doq { .. }) {
            net.log.borrow_mut().push(format!("  {} <- encrypted query: refused", server.ip()));
            return Err(UpstreamError::Transport(crate::upstream::error::TransportFailure::Refused));
        }
        match net.answer(server.ip(), &msg, matches!(wire, Wire::Tcp)) {
            Some(reply) => {
                net.now.set(net.now.get() + Duration::from_millis(1));
                Ok(reply.to_vec().unwrap())
            }
            None => {
                net.now.set(net.now.get() + timeout);
                Err(UpstreamError::Timeout)
            }
        }
    }

    fn spawn(&self, task: std::pin::Pin<Box<dyn Future<Output = ()>>>) {
        block_on(task);
    }

    async fn sleep(&self, d: Duration) {
        self.0.now.set(self.0.now.get() + d);
    }
}

/// A client query as bytes: RD, EDNS (1232) with DO as asked, CD as asked.
fn client_query(name: &Name, qtype: RecordType, dnssec_ok: bool, cd: bool) -> Vec<u8> {
    let mut m = Message::new(0x2A2A, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.checking_disabled = cd;
    m.add_query(HQuery::query(name.clone(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(dnssec_ok);
    m.edns = Some(edns);
    m.to_vec().unwrap()
}

/// The EDE INFO-CODE of a response, if any.
fn ede_of(m: &Message) -> Option<u16> {
    let opt = m.edns.as_ref()?.options();
    opt.options.iter().find_map(|(code, o)| match (code, o) {
        (c, EdnsOption::Unknown(15, data)) if *c == EdnsCode::from(15) && data.len() >= 2 => {
            Some(u16::from_be_bytes([data[0], data[1]]))
        }
        _ => None,
    })
}

/// What failed in one response, if anything.
fn check(expect: &Expect, m: &Message) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(rc) = expect.rcode
        && u16::from(m.metadata.response_code) != rc
    {
        failures.push(format!("rcode {} (expected {})", m.metadata.response_code, ResponseCode::from(0, rc as u8)));
    }
    for (flag, set) in &expect.flags {
        let md = &m.metadata;
        let actual = match flag.as_str() {
            "ad" => md.authentic_data,
            "tc" => md.truncation,
            "aa" => md.authoritative,
            "ra" => md.recursion_available,
            _ => md.checking_disabled,
        };
        if actual != *set {
            failures.push(format!("flag {flag} is {}", if actual { "set" } else { "clear" }));
        }
    }
    if let Some(ede) = expect.ede
        && ede_of(m) != ede
    {
        failures.push(format!("EDE {:?} (expected {ede:?})", ede_of(m)));
    }
    let section_of = |section: &Section| match section {
        Section::Answer => &m.answers,
        Section::Authority => &m.authorities,
        Section::Additional => &m.additionals,
    };
    for (section, ttl) in &expect.ttls {
        let ttls: Vec<u32> = section_of(section).iter().map(|r| r.ttl).collect();
        if ttls.is_empty() || ttls.iter().any(|t| t != ttl) {
            failures.push(format!("{section:?} TTLs {ttls:?} (expected all {ttl})"));
        }
    }
    for (section, want) in &expect.sections {
        let records = section_of(section);
        let mut got: Vec<String> = records.iter().map(render).collect();
        let mut want = want.clone();
        got.sort();
        want.sort();
        if got != want {
            let missing: Vec<&String> = want.iter().filter(|w| !got.contains(w)).collect();
            let extra: Vec<&String> = got.iter().filter(|g| !want.contains(g)).collect();
            failures.push(format!("{section:?} section: missing {missing:#?}, unexpected {extra:#?}"));
        }
    }
    failures
}

/// Runs the scenario in `text` (from file `file`); panics with the exchange on a failure.
fn run(file: &str, text: &str) {
    let s = Scenario::parse(text).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut toml = String::new();
    let mut config = s.config;
    config.entry("transport".into()).or_default();
    for (table, lines) in &config {
        let _ = writeln!(toml, "[{table}]");
        if table == "transport" && !lines.iter().any(|l| l.starts_with("probing ")) {
            toml.push_str("probing = false\n");
        }
        for l in lines {
            let _ = writeln!(toml, "{l}");
        }
    }
    let mut cfg = Config::from_toml(&toml).unwrap_or_else(|e| panic!("{file}: config: {e}"));
    cfg.validate().unwrap_or_else(|e| panic!("{file}: config: {e}"));
    let anchor_file = s.keys.iter().find(|k| k.apex.is_root()).map(|root| {
        static FILES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("adox-scenario-anchor-{}-{seq}", std::process::id()));
        std::fs::write(&path, root.ds_text()).unwrap();
        path
    });
    cfg.dnssec.trust_anchor_file = anchor_file.clone();
    let start = Instant::now();
    let net = Script(std::rc::Rc::new(ScriptNet {
        servers: s.servers,
        keys: s.keys,
        now: Cell::new(start),
        epoch: start,
        rng: Cell::new(0x9E37_79B9_7F4A_7C15),
        log: RefCell::new(Vec::new()),
        unscripted: RefCell::new(Vec::new()),
    }));
    let hints = RootHints::parse(&format!(". NS a.root.\na.root. A {}\n", s.root.unwrap())).unwrap();
    let resolver = Resolver::new(shared_state(&cfg, hints), net.clone(), Arc::new(WorkerStats::default()));
    if let Some(path) = anchor_file {
        let _ = std::fs::remove_file(path);
    }
    for step in s.steps {
        match step {
            Step::Wait(secs) => net.0.now.set(net.0.now.get() + Duration::from_secs(secs)),
            Step::Query { line, name, qtype, dnssec_ok, cd, expect } => {
                let bytes = client_query(&name, qtype, dnssec_ok, cd);
                let q = crate::wire::parse_query(&bytes).unwrap();
                let question = Question::parse(&bytes, &q).unwrap();
                net.0.log.borrow_mut().push(format!("client: {} {qtype}", name.to_ascii()));
                let result = block_on(resolver.resolve(&question.name, question.qtype));
                let mut out = Vec::new();
                respond::build(&mut out, &bytes, &q, &question, &result, 1232);
                let m = Message::from_vec(&out).unwrap();
                let failures = check(&expect, &m);
                if !failures.is_empty() {
                    panic!(
                        "{file} ({}): query {} {qtype} at line {line}:\n- {}\n\nresponse:\n{m}\n(resolver: {:?})\n\nexchange:\n{}",
                        s.title,
                        name.to_ascii(),
                        failures.join("\n- "),
                        result.as_ref().map(|a| &a.security),
                        net.0.log.borrow().join("\n")
                    );
                }
            }
        }
    }
    // Every query the resolver sent was scripted, and every entry was reached (unless marked
    // `optional`): a scenario shows the path it claims.
    let unused: Vec<String> = net
        .0
        .servers
        .iter()
        .flat_map(|srv| srv.entries.iter().map(move |e| (srv, e)))
        .filter(|(_, e)| !e.optional && e.used.get() == 0)
        .map(|(srv, e)| format!("  {} ({}): the entry at line {}", srv.addr, srv.zone, e.line))
        .collect();
    let unscripted = net.0.unscripted.borrow();
    if !unused.is_empty() || !unscripted.is_empty() {
        panic!(
            "{file} ({}):
queries no entry was scripted for:
{}
entries no query reached:
{}

exchange:
{}",
            s.title,
            unscripted.join("\n"),
            unused.join("\n"),
            net.0.log.borrow().join("\n")
        );
    }
}

/// One test per scenario file; `every_scenario_file_is_run` keeps this list complete.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(concat!(stringify!($name), ".scn"), include_str!(concat!("scenarios/", stringify!($name), ".scn")));
            }
        )*
        const LISTED: &[&str] = &[$(stringify!($name)),*];
    };
}

scenarios! {
    cname_chain_across_zones,
    dname_redirects_a_subtree,
    ds_from_a_signed_referral,
    ds_query_tries_the_other_parent_server,
    min_ttl_raises_short_ttls,
    negative_ttl_is_the_soa_minimum,
    nsec3_insecure_child_on_the_parents_server,
    nsec3_insecure_delegation_without_opt_out,
    nsec3_opt_out_delegation,
    nxdomain_cut_answers_names_below_it,
    parent_delegation_when_the_child_ns_set_fails,
    qname_minimisation_falls_back_to_the_full_name,
    qname_minimisation_strict_has_no_fallback,
    record_of_another_type_is_ignored,
    referral_then_answer,
    refusing_server_is_skipped,
    truncated_reply_is_asked_again_over_tcp,
    upward_referral_is_a_lame_server,
    wildcard_answer_carries_its_nsec_proof,
    wildcard_cname_chain_carries_its_proof,
}

#[test]
fn every_scenario_file_is_run() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/resolver/tests/scenarios");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok()?.strip_suffix(".scn").map(str::to_string))
        .collect();
    files.sort();
    let mut listed: Vec<String> = LISTED.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed, "scenario files and the scenarios! list differ");
}

#[test]
fn a_broken_scenario_is_refused_with_its_line() {
    let e =
        Scenario::parse("root 10.0.0.1\nserver 10.0.0.1 .\n  match . NS\n    answer . x NS a.root.\n").err().unwrap();
    assert!(e.starts_with("line 4: bad TTL `x`"), "{e}");
    let e = Scenario::parse("server 10.0.0.1 .\n").err().unwrap();
    assert_eq!(e, "no `root ADDRESS` line");
    // Mistakes that would otherwise make a scenario assert less than it says.
    for (bad, why) in [
        ("    answer a. 1 A 192.0.2.1 192.0.2.2\n", "line 4: A: one value per record"),
        ("    answer a. 1 A 192.0.2.1 |expanded  *.a.\n", "line 4: after `|`"),
        ("    answer a.b. 1 A 192.0.2.1 | expanded from *.c.\n", "line 4: `expanded from *.c.`"),
        ("    answer a. 1 TYPE65280 \\# 3 0102\n", "line 4: `\\# LEN HEX`"),
        ("    answer @hash(a.).a. 1 NSEC3 1 0 5 - @hash(a.) A\n", "line 4: @hash(NAME) hashes without salt"),
        ("    answer a. 1 TXT @hash(a.)\n", "line 4: @hash(NAME) is for NSEC3"),
        ("    times 0\n", "line 4: unknown line"),
    ] {
        let text = format!("root 10.0.0.1\nserver 10.0.0.1 .\n  match . NS\n{bad}");
        let e = Scenario::parse(&text).err().unwrap_or_else(|| panic!("accepted: {bad}"));
        assert!(e.starts_with(why), "{bad}: {e}");
    }
    assert!(Scenario::parse("root 192.0.2.1\n").err().unwrap().contains("10.0.0.0/8"));
    // A '#' inside a quoted string is data, not a comment.
    let s = Scenario::parse("root 10.0.0.1\nserver 10.0.0.1 .\n  match . TXT\n    answer . 1 TXT \"a#b\" # note\n")
        .unwrap();
    assert_eq!(render(&s.servers[0].entries[0].reply.sections[0].1.record), ". TXT a#b");
}

/// A scenario that expects the wrong thing fails, and says what differed.
#[test]
fn a_wrong_expectation_fails_with_the_difference() {
    let text = include_str!("scenarios/referral_then_answer.scn").replace("192.0.2.1", "192.0.2.7");
    let text = text.replacen("answer www.example. 3600 A 192.0.2.7", "answer www.example. 3600 A 192.0.2.1", 1);
    let panic = std::panic::catch_unwind(|| run("changed.scn", &text)).unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(msg.contains("missing [\n    \"www.example. A 192.0.2.7\""), "{msg}");
    assert!(msg.contains("10.0.1.1 <- www.example. A"), "the exchange is printed: {msg}");
}
