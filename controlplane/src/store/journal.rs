//! The durable journal: how the store's changes reach the state directory, and how they
//! are read back at start.
//!
//! Durability. Two files in the state directory:
//! - `policies.json`, a snapshot, only ever replaced whole (written to a temporary file,
//!   fsynced, renamed over, directory fsynced): it is never half-written;
//! - `policies.journal`, the changes since that snapshot, one JSON line per acknowledged
//!   change, appended and fsynced (`fdatasync`) before the change is acknowledged. A change
//!   is one line, so an import is all or nothing. A crash can only tear the last line,
//!   which then has no newline: it was never acknowledged, and loading drops it.
//!
//! The journal is folded into a new snapshot at start and whenever it grows past
//! [`COMPACT_AFTER`] or the size of the last snapshot, whichever is larger (so the cost of
//! rewriting the snapshot stays in proportion to the changes that pay for it). Concurrent writers share fsyncs (group commit): a writer appends
//! under the store's lock, then syncs outside it, and a sync covers every line written
//! before it began.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use adox_api::policy::Policy;
use adox_dataplane::upstream::policy::PolicyTable;
use serde::{Deserialize, Serialize};

use super::registry::selector;
use super::{Inner, PolicyRegistry, StoreError};

/// Snapshot file name.
pub const SNAPSHOT_FILE: &str = "policies.json";
/// Journal file name.
pub const JOURNAL_FILE: &str = "policies.journal";
/// Smallest journal size at which it is folded into a new snapshot.
pub const COMPACT_AFTER: u64 = 16 << 20;

/// The saved state.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    next_id: u64,
    revision: u64,
    policies: Vec<Policy>,
}

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Change {
    /// Creates or replaces a policy (by id).
    Put(Policy),
    /// Removes a policy.
    Delete(String),
    /// Several changes applied together (an import); `clear` first removes every API
    /// policy.
    Batch { clear: bool, changes: Vec<Self> },
}

/// A failed append: `Clean` when the journal was cut back to its last whole line,
/// `Dirty` when not even that worked.
enum AppendError {
    Clean(std::io::Error),
    Dirty(std::io::Error),
}

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{}: {what}: {e}", path.display()))
}

pub(crate) use adox_dataplane::state_file::write_atomic;

fn no_state_dir() -> std::io::Error {
    std::io::Error::other("no writable state directory: policy changes cannot be made durable, so they are refused")
}

/// What `load` found, for the start-up log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// API policies loaded.
    pub policies: usize,
    /// Journal lines replayed.
    pub replayed: usize,
    /// A torn (unacknowledged) last line was dropped.
    pub dropped_torn_line: bool,
}

impl Inner {
    fn snapshot_bytes(&self) -> Vec<u8> {
        let snap = Snapshot {
            format: 1,
            next_id: self.next_id,
            revision: self.revision,
            policies: self.api.values().cloned().collect(),
        };
        // One policy per line: readable, and compact enough for 100,000s of them.
        let mut out = format!(
            "{{\"format\":{},\"next_id\":{},\"revision\":{},\"policies\":[\n",
            snap.format, snap.next_id, snap.revision
        )
        .into_bytes();
        for (i, p) in snap.policies.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b",\n");
            }
            out.extend_from_slice(&serde_json::to_vec(p).unwrap_or_default());
        }
        out.extend_from_slice(b"\n]}\n");
        out
    }

    /// Folds the journal into a new snapshot, then empties the journal.
    fn compact(&mut self) -> std::io::Result<()> {
        let journal = self.journal.as_ref().ok_or_else(no_state_dir)?;
        let bytes = self.snapshot_bytes();
        write_atomic(&self.dir.join(SNAPSHOT_FILE), &bytes)?;
        self.snapshot_len = bytes.len() as u64;
        journal.set_len(0)?;
        journal.sync_all()?;
        self.journal_len = 0;
        Ok(())
    }

    /// Appends one change as one line; on a failed write the journal is cut back, so no
    /// partial line stays in front of later ones (when even that fails: `Dirty`).
    fn append(&mut self, change: &Change) -> Result<u64, AppendError> {
        let mut line = serde_json::to_vec(change).map_err(|e| AppendError::Clean(std::io::Error::other(e)))?;
        line.push(b'\n');
        let journal = self.journal.as_ref().ok_or_else(|| AppendError::Clean(no_state_dir()))?;
        if let Err(e) = (&*journal).write_all(&line) {
            return Err(match journal.set_len(self.journal_len) {
                Ok(()) => AppendError::Clean(e),
                Err(_) => AppendError::Dirty(e),
            });
        }
        self.journal_len += line.len() as u64;
        self.written += 1;
        Ok(self.written)
    }

    /// Refuses every later change, and says why (logged once).
    fn poison(&mut self, e: std::io::Error) -> std::io::Error {
        let why = format!(
            "the policy store could not make a change durable ({e}); policy changes are refused until adoxd restarts and reloads its state directory"
        );
        if self.poisoned.is_none() {
            tracing::error!("{why}");
            self.poisoned = Some(why.clone());
        }
        std::io::Error::other(why)
    }
}

impl PolicyRegistry {
    /// Loads the saved API policies from `dir` beside the configuration's; fails (and the
    /// daemon does not start) on a damaged file, rather than run without policies an
    /// operator set. Compacts the journal.
    pub fn open(dir: &Path, config: Vec<Policy>) -> Result<(Self, LoadReport), std::io::Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: cannot create: {e}", dir.display())))?;
        let snap_path = dir.join(SNAPSHOT_FILE);
        let (snap, snapshot_len): (Snapshot, u64) = match std::fs::read(&snap_path) {
            Ok(b) => (serde_json::from_slice(&b).map_err(|e| io_err(&snap_path, "damaged", e))?, b.len() as u64),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Snapshot::default(), 0),
            Err(e) => return Err(io_err(&snap_path, "cannot read", e)),
        };
        let journal_path = dir.join(JOURNAL_FILE);
        let journal = match OpenOptions::new().create(true).read(true).append(true).open(&journal_path) {
            Ok(f) => {
                // The journal's directory entry must be durable before a line in it is
                // acknowledged.
                File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, "cannot sync", e))?;
                Some(f)
            }
            // A read-only state directory: serve what it holds, refuse changes.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                tracing::warn!(
                    path = %journal_path.display(),
                    error = %e,
                    "state directory not writable: saved policies are served, API policy changes are refused"
                );
                None
            }
            Err(e) => {
                return Err(std::io::Error::new(e.kind(), format!("{}: cannot open: {e}", journal_path.display())));
            }
        };
        let mut inner = Inner {
            config: config.clone(),
            api: BTreeMap::new(),
            selectors: config.iter().map(|p| (selector(p), p.id.clone())).collect(),
            next_id: snap.next_id.max(1),
            revision: snap.revision,
            table: PolicyTable::compile(&config).map_err(|e| io_err(dir, "configuration policy", e))?,
            journal: journal.as_ref().map(File::try_clone).transpose()?,
            journal_len: 0,
            snapshot_len,
            written: 0,
            dir: dir.to_path_buf(),
            retired: Vec::new(),
            poisoned: None,
        };
        for p in snap.policies {
            inner.apply(Change::Put(p)).map_err(|e| io_err(&snap_path, "damaged", e))?;
        }
        let bytes = match std::fs::read(&journal_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&journal_path, "cannot read", e)),
        };
        // Lines are fsynced in order and each acknowledged only once durable, so after a
        // crash only a tail of unacknowledged lines can be damaged (torn, or zero-filled by
        // the filesystem). A damaged line followed by a good one is other damage: stop.
        let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
        let parse = |l: &[u8]| -> Option<Change> {
            if l.last() != Some(&b'\n') {
                return None;
            }
            serde_json::from_slice(l).ok()
        };
        let mut replayed = 0;
        let mut dropped_torn_line = false;
        for (i, line) in lines.iter().enumerate() {
            match parse(line) {
                Some(change) => {
                    inner.apply(change).map_err(|e| io_err(&journal_path, &format!("line {}", i + 1), e))?;
                    replayed += 1;
                }
                None if lines[i + 1..].iter().all(|l| parse(l).is_none()) => {
                    dropped_torn_line = true;
                    let keep =
                        journal_path.with_extension(format!("journal.tail-{}", adox_dataplane::clock::unix_now()));
                    let _ = std::fs::write(&keep, &bytes[lines[..i].iter().map(|l| l.len()).sum::<usize>()..]);
                    tracing::warn!(
                        line = i + 1,
                        lines = lines.len() - i,
                        kept = %keep.display(),
                        "policy journal ends in lines that were never acknowledged (a crash during a write); dropped"
                    );
                    break;
                }
                None => {
                    return Err(io_err(
                        &journal_path,
                        &format!("line {} damaged", i + 1),
                        "a damaged line followed by good ones (not a crash during a write)",
                    ));
                }
            }
        }
        if (replayed > 0 || dropped_torn_line) && inner.journal.is_some() {
            inner.compact().map_err(|e| io_err(dir, "cannot compact the policy journal", e))?;
        }
        // A configuration edit may have added the selector of a saved API policy: both stay
        // (the API one, compiled later, wins the tie), and the operator is told.
        for p in inner.api.values() {
            if let Some(c) = inner.config.iter().find(|c| selector(c) == selector(p)) {
                tracing::warn!(
                    config = %c.id,
                    api = %p.id,
                    "a configuration policy and an API policy have the same zone, nameserver and address; the API one takes effect until it is deleted"
                );
            }
        }
        let report = LoadReport { policies: inner.api.len(), replayed, dropped_torn_line };
        Ok((
            Self { inner: Mutex::new(inner), synced: Mutex::new(0), journal, live: std::sync::OnceLock::new() },
            report,
        ))
    }
    /// Journals `change` (validated by `f`) and applies it to the working table; waits
    /// until the line is durable (one fsync may cover several writers); then publishes it
    /// to the data plane and returns. Any I/O failure after the append poisons the store:
    /// what is in memory may then differ from what is on disk, so every later change is
    /// refused until a restart reloads the files (DNS service goes on).
    pub(super) fn commit<T>(
        &self,
        f: impl FnOnce(&mut Inner) -> Result<(Change, T), StoreError>,
    ) -> Result<T, StoreError> {
        let (seq, out) = {
            let mut inner = self.lock();
            if let Some(why) = &inner.poisoned {
                return Err(StoreError::Io(std::io::Error::other(why.clone())));
            }
            let (change, out) = f(&mut inner)?;
            let seq = match inner.append(&change) {
                Ok(seq) => seq,
                Err(AppendError::Clean(e)) => return Err(StoreError::Io(e)),
                Err(AppendError::Dirty(e)) => return Err(StoreError::Io(inner.poison(e))),
            };
            if let Err(e) = inner.apply(change) {
                // Validated before, so this cannot happen; the line is in the journal.
                let _ = inner.poison(std::io::Error::other(e.to_string()));
                return Err(StoreError::Invalid(e, None));
            }
            (seq, out)
        };
        if let Err(e) = self.sync(seq) {
            return Err(StoreError::Io(self.lock().poison(e)));
        }
        let mut inner = self.lock();
        if let Some(live) = self.live.get() {
            inner.publish(live);
        }
        // Best effort: the change is durable in the journal whatever happens here.
        if inner.journal_len > COMPACT_AFTER.max(inner.snapshot_len)
            && let Err(e) = inner.compact()
        {
            tracing::warn!(error = %e, "policy journal not compacted (it keeps growing until this works)");
        }
        Ok(out)
    }

    /// Group commit: one fsync covers every line written before it started.
    fn sync(&self, seq: u64) -> std::io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= seq {
            return Ok(());
        }
        let upto = self.lock().written;
        self.journal.as_ref().ok_or_else(no_state_dir)?.sync_data()?;
        *synced = upto;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::etag;

    /// The control plane's state files are among those handed to `server.user`.
    #[test]
    fn the_control_planes_state_files_are_listed() {
        for f in [SNAPSHOT_FILE, JOURNAL_FILE, crate::fleet::SNAPSHOT_FILE] {
            assert!(adox_dataplane::state_file::FILES.contains(&f), "{f}");
        }
    }
    use crate::store::test_support::{shared, spec, tempdir};
    use adox_api::policy::Mode;

    /// Concurrent atomic writes of one file (two API calls at once) never tear it nor fail
    /// on each other's temporary file: the last one wins whole.
    #[test]
    fn concurrent_atomic_writes_leave_one_whole_file() {
        let dir = tempdir("atomic");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("negative-anchors.json");
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..50u32 {
                        let body = serde_json::to_vec(&vec![format!("t{t}-{i}"); 2000]).unwrap();
                        write_atomic(&path, &body).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let v: Vec<String> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v.len(), 2000);
        assert!(v.iter().all(|x| *x == v[0]), "one writer's whole content");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn changes_survive_a_reopen_and_reach_the_live_table() {
        let dir = tempdir("reopen");
        let live = shared();
        let (r, _) = PolicyRegistry::open(&dir, vec![]).unwrap();
        r.attach(live.clone());
        let a = r.create(&spec("a.lab", Mode::Strict)).unwrap();
        let b = r.create(&spec("b.lab", Mode::Cleartext)).unwrap();
        assert_eq!((a.id.as_str(), b.id.as_str()), ("p-1", "p-2"));
        let n = |s: &str| hickory_proto::rr::Name::from_ascii(s).unwrap();
        let ip = "192.0.2.1".parse().unwrap();
        assert_eq!(live.load().lookup(&n("x.a.lab."), &n("ns."), ip).map(|p| p.id.clone()), Some("p-1".into()));
        r.replace("p-2", &spec("b.lab", Mode::Opportunistic), Some(&etag(&b))).unwrap();
        assert!(matches!(
            r.replace("p-2", &spec("b.lab", Mode::Cleartext), Some(&etag(&b))),
            Err(StoreError::Stale { .. })
        ));
        r.delete("p-1", None).unwrap();
        assert!(live.load().lookup(&n("x.a.lab."), &n("ns."), ip).is_none());
        drop(r);
        let live2 = shared();
        let (r2, report) = PolicyRegistry::open(&dir, vec![]).unwrap();
        r2.attach(live2.clone());
        assert_eq!((report.policies, report.replayed), (1, 4), "two creates, a replace, a delete");
        let all = r2.all();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].id.as_str(), all[0].mode), ("p-2", Mode::Opportunistic));
        assert_eq!(r2.create(&spec("c.lab", Mode::Strict)).unwrap().id, "p-3", "ids are never reused");
        assert!(live2.load().lookup(&n("b.lab."), &n("ns."), ip).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
    #[test]
    fn a_torn_last_line_is_dropped_and_a_damaged_one_refuses_to_start() {
        let dir = tempdir("torn");
        let (r, _) = PolicyRegistry::open(&dir, vec![]).unwrap();
        r.create(&spec("a.lab", Mode::Strict)).unwrap();
        drop(r);
        let mut j = OpenOptions::new().append(true).open(dir.join(JOURNAL_FILE)).unwrap();
        j.write_all(br#"{"put":{"id":"p-9","zo"#).unwrap();
        drop(j);
        let (r, report) = PolicyRegistry::open(&dir, vec![]).unwrap();
        assert!(report.dropped_torn_line);
        assert_eq!(r.all().len(), 1);
        drop(r);
        // Damage followed by a good line is not a crash during a write: refuse to start.
        let good = format!("{}\n", serde_json::to_string(&Change::Delete("p-5".into())).unwrap());
        std::fs::write(dir.join(JOURNAL_FILE), format!("not json\n{good}")).unwrap();
        let e = PolicyRegistry::open(&dir, vec![]).unwrap_err().to_string();
        assert!(e.contains("line 1 damaged"), "{e}");
        // A zero-filled tail (unacknowledged lines after a power cut) is dropped.
        let mut tail = good.into_bytes();
        tail.extend_from_slice(&[0u8; 64]);
        tail.push(b'\n');
        std::fs::write(dir.join(JOURNAL_FILE), tail).unwrap();
        let (r, report) = PolicyRegistry::open(&dir, vec![]).unwrap();
        assert!(report.dropped_torn_line);
        assert_eq!((report.replayed, r.all().len()), (1, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
