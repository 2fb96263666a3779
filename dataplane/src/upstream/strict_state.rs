//! The strict state learned from secure signals, kept across restarts (R5, R7): each
//! strict nameserver's signal (records, DANE transports, expiry) and the TLSA sets its
//! DANE handshakes need, in `state_dir/strict-signals.json`, written atomically whenever
//! a strict signal is learned or dropped and loaded at start. Without it a restart would
//! reopen a cleartext window (the first query to a server that demanded encryption goes
//! out before its signal is looked up again). Nothing outlives the signatures it was
//! learned from: entries past their `strict_until` are neither saved nor loaded.

use std::path::Path;

use adox_api::policy::Transport;
use hickory_proto::rr::Name;
use serde::{Deserialize, Serialize};

use super::dane::TlsaTable;
use super::signal::{Signal, SignalCache, SvcbRecord, TlsaRecord};

/// The file, in `state_dir`.
pub const STRICT_STATE_FILE: &str = "strict-signals.json";

/// Strict nameservers loaded at most (the table in memory is bounded by bytes; a file
/// edited by hand cannot make more of it).
const MAX_ENTRIES: usize = 100_000;
/// A larger file is not read (what the bounded tables can produce is far smaller).
const MAX_FILE_BYTES: u64 = 256 << 20;

/// The file: the strict signals, and each TLSA set they need once.
#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    signals: Vec<Saved>,
    tlsa: Vec<SavedTlsa>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    nameserver: String,
    records: Vec<SavedSvcb>,
    dane: Vec<(Transport, String)>,
    until: u64,
    strict_until: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedSvcb {
    priority: u16,
    target: String,
    alpn: Vec<String>,
    port: Option<u16>,
    dohpath: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedTlsa {
    key: String,
    valid_until: u64,
    /// Each record as `usage selector matching hex`.
    records: Vec<String>,
}

/// The TLSA table key of a DANE transport's base name.
fn tlsa_key(t: Transport, name: &Name) -> Option<String> {
    Some(TlsaTable::key(super::dane::table_proto(t)?, &name.to_ascii()))
}

/// Writes the strict signals in force at `now`, and their TLSA sets, atomically to `path`.
pub fn save(signals: &SignalCache, tlsa: &TlsaTable, path: &Path, now: u64) -> std::io::Result<usize> {
    let mut out = File::default();
    let mut keys = std::collections::HashSet::new();
    for (ns, sig) in signals.strict_entries() {
        let Signal::Known { records, dane, until, strict_until, .. } = &sig else { continue };
        if !sig.strict_at(now) {
            continue;
        }
        for (t, name) in dane {
            let Some(key) = tlsa_key(*t, name) else { continue };
            if !keys.insert(key.clone()) {
                continue; // shared by several nameservers: saved once
            }
            let Some((records, valid_until)) = tlsa.entry(&key) else { continue };
            let records = records
                .iter()
                .map(|r| {
                    let hex: String = r.data.iter().map(|b| format!("{b:02x}")).collect();
                    format!("{} {} {} {hex}", r.usage, r.selector, r.matching)
                })
                .collect();
            out.tlsa.push(SavedTlsa { key, valid_until, records });
        }
        out.signals.push(Saved {
            nameserver: ns.to_ascii(),
            records: records
                .iter()
                .map(|r| SavedSvcb {
                    priority: r.priority,
                    target: r.target.to_ascii(),
                    alpn: r.alpn.clone(),
                    port: r.port,
                    dohpath: r.dohpath.clone(),
                })
                .collect(),
            dane: dane.iter().map(|(t, n)| (*t, n.to_ascii())).collect(),
            until: *until,
            strict_until: *strict_until,
        });
    }
    let text = serde_json::to_vec(&out).map_err(std::io::Error::other)?;
    crate::state_file::write_atomic(path, &text)?;
    Ok(out.signals.len())
}

/// Loads a saved file: every strict signal still within its signatures, with its TLSA
/// sets. A missing file is nothing to load; a damaged one is an error (and loads nothing).
pub fn load(signals: &SignalCache, tlsa: &TlsaTable, path: &Path, now: u64) -> std::io::Result<usize> {
    let bad =
        |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {what}", path.display()));
    match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_FILE_BYTES => return Err(bad(format!("{} octets, more than any real state", m.len()))),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    }
    let text = std::fs::read_to_string(path)?;
    let file: File = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let tlsa_sets: std::collections::HashMap<&str, &SavedTlsa> =
        file.tlsa.iter().map(|t| (t.key.as_str(), t)).collect();
    // Everything is checked before anything is applied.
    let mut parsed = Vec::new();
    for s in file.signals.iter().filter(|s| s.strict_until > now).take(MAX_ENTRIES) {
        let name = |n: &str| Name::from_ascii(n).map_err(|e| bad(format!("{n}: {e}")));
        let ns = name(&s.nameserver)?;
        let records = s
            .records
            .iter()
            .map(|r| {
                Ok(SvcbRecord {
                    priority: r.priority,
                    target: name(&r.target)?,
                    alpn: r.alpn.clone(),
                    port: r.port,
                    dohpath: r.dohpath.clone(),
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let dane = s.dane.iter().map(|(t, n)| Ok((*t, name(n)?))).collect::<std::io::Result<Vec<_>>>()?;
        if dane.is_empty() {
            return Err(bad(format!("{}: a strict signal without DANE transports", s.nameserver)));
        }
        // Only the TLSA sets this signal's DANE transports name, under the keys made here
        // (a key written in the file is never trusted as such).
        let mut sets = Vec::new();
        for (t, name) in &dane {
            let Some(key) = tlsa_key(*t, name) else { continue };
            let Some(set) = tlsa_sets.get(key.as_str()) else { continue };
            let records = set
                .records
                .iter()
                .map(|r| parse_tlsa_text(r).ok_or_else(|| bad(format!("{key}: bad TLSA record {r:?}"))))
                .collect::<std::io::Result<Vec<_>>>()?;
            sets.push((key, records, set.valid_until));
        }
        let until = s.until.min(s.strict_until);
        let signal = Signal::Known {
            records,
            secure: true,
            dane,
            cycle: false,
            refused: Vec::new(),
            until,
            strict_until: s.strict_until,
        };
        parsed.push((ns, signal, sets));
    }
    let n = parsed.len();
    for (ns, signal, sets) in parsed {
        for (key, records, valid_until) in sets {
            tlsa.put(&key, records, valid_until, now);
        }
        signals.put(&ns, signal);
    }
    let _ = signals.take_strict_changed();
    Ok(n)
}

/// `usage selector matching hex` as saved.
fn parse_tlsa_text(s: &str) -> Option<TlsaRecord> {
    let mut it = s.split(' ');
    let (usage, selector, matching) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    let hex = it.next()?;
    if it.next().is_some() || hex.len() % 2 != 0 {
        return None;
    }
    let data = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let mut rdata = vec![usage, selector, matching];
    rdata.extend_from_slice(&data);
    super::signal::parse_tlsa(&rdata).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict_signal(until: u64, strict_until: u64) -> Signal {
        let record = super::super::signal::parse_svcb(b"\x00\x01\x00\x00\x01\x00\x04\x03dot").unwrap();
        Signal::Known {
            records: vec![record],
            secure: true,
            dane: vec![(Transport::Dot, "ns1.dot.lab.".parse().unwrap())],
            cycle: false,
            refused: Vec::new(),
            until,
            strict_until,
        }
    }

    /// Saved and loaded, a strict signal and its TLSA set are in force again; one past its
    /// signatures is dropped; a damaged file is refused whole.
    #[test]
    fn strict_state_survives_a_restart_within_its_signatures_only() {
        let dir = std::env::temp_dir().join(format!("adox-strict-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(STRICT_STATE_FILE);
        let (signals, tlsa) = (SignalCache::new(100), TlsaTable::default());
        let ns: Name = "ns1.dot.lab.".parse().unwrap();
        signals.put(&ns, strict_signal(1_100, 5_000));
        signals.put(&"ns.old.lab.".parse().unwrap(), strict_signal(1_100, 1_500));
        let mut rec = vec![3, 1, 1];
        rec.extend_from_slice(&[0xCD; 32]);
        let key = TlsaTable::key("tcp", "ns1.dot.lab.");
        tlsa.put(&key, vec![super::super::signal::parse_tlsa(&rec).unwrap()], 5_000, 1_000);
        assert!(signals.take_strict_changed(), "a new strict signal is a change to save");
        assert_eq!(save(&signals, &tlsa, &path, 1_000).unwrap(), 2);
        let (signals2, tlsa2) = (SignalCache::new(100), TlsaTable::default());
        assert_eq!(load(&signals2, &tlsa2, &path, 2_000).unwrap(), 1, "the one past its signatures is dropped");
        assert!(signals2.last(&ns).is_some_and(|s| s.strict_at(2_000)));
        assert!(signals2.last(&"ns.old.lab.".parse().unwrap()).is_none());
        assert_eq!(tlsa2.get(&key, 4_999).map(|r| r[0].data.clone()), Some(vec![0xCD; 32]));
        std::fs::write(&path, "[{\"nameserver\": 7}]").unwrap();
        let (signals3, tlsa3) = (SignalCache::new(100), TlsaTable::default());
        assert!(load(&signals3, &tlsa3, &path, 2_000).is_err());
        assert!(signals3.strict_entries().is_empty(), "nothing half-loaded");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
