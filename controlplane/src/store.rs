//! The policy store: the configuration's policies (read-only) and the API's, kept durable in
//! the state directory and published to the data plane.
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
//!
//! Publishing. The store keeps a working [`PolicyTable`]; each change edits it (copying
//! only the touched bucket) and stores a clone in the data plane's [`PolicyStore`] before
//! the change is acknowledged, so the next cache-missing query obeys it. Old tables are
//! kept here and freed on this thread once no worker holds them.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use adox_api::policy::{Policy, PolicyError, PolicySpec};
use adox_api::rest::{ImportMode, ImportResult};
use adox_dataplane::upstream::policy::{PolicyStore, PolicyTable};
use serde::{Deserialize, Serialize};

/// Snapshot file name.
pub const SNAPSHOT_FILE: &str = "policies.json";
/// Journal file name.
pub const JOURNAL_FILE: &str = "policies.journal";
/// Smallest journal size at which it is folded into a new snapshot.
pub const COMPACT_AFTER: u64 = 16 << 20;
/// Prefix of the ids the API assigns (`p-1`, `p-2`, ...).
const API_ID_PREFIX: &str = "p-";

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No policy with that id.
    #[error("no policy with id `{0}`")]
    NotFound(String),
    /// A policy from the configuration file.
    #[error("policy `{0}` comes from the configuration file and is read-only")]
    ReadOnly(String),
    /// Another policy has the same selector.
    #[error("policy `{existing}` already has this zone, nameserver and address")]
    Conflict {
        /// The id of the existing policy.
        existing: String,
        /// Index in an import, when the conflict is inside one.
        index: Option<usize>,
    },
    /// `If-Match` named another revision.
    #[error("policy `{id}` has changed (current ETag {current})")]
    Stale {
        /// The id.
        id: String,
        /// Its current ETag.
        current: String,
    },
    /// The policy is invalid; `index` is its place in an import.
    #[error("{0}")]
    Invalid(PolicyError, Option<usize>),
    /// The state directory could not be written: nothing changed.
    #[error("could not persist the change: {0}")]
    Io(#[from] std::io::Error),
}

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
enum Change {
    /// Creates or replaces a policy (by id).
    Put(Policy),
    /// Removes a policy.
    Delete(String),
    /// Several changes applied together (an import); `clear` first removes every API
    /// policy.
    Batch { clear: bool, changes: Vec<Change> },
}

/// A failed append: `Clean` when the journal was cut back to its last whole line,
/// `Dirty` when not even that worked.
enum AppendError {
    Clean(std::io::Error),
    Dirty(std::io::Error),
}

/// The in-memory state, behind the store's lock.
#[derive(Debug)]
struct Inner {
    config: Vec<Policy>,
    /// API policies by their number (so listing is in creation order).
    api: BTreeMap<u64, Policy>,
    /// Selector -> id, over configuration and API policies.
    selectors: HashMap<Selector, String>,
    next_id: u64,
    revision: u64,
    table: PolicyTable,
    /// `None`: no writable state directory; changes are refused.
    journal: Option<File>,
    journal_len: u64,
    /// Size of the last snapshot written.
    snapshot_len: u64,
    /// Lines written to the journal (for group commit).
    written: u64,
    dir: PathBuf,
    /// Tables replaced in the data plane, freed here once no worker holds them.
    retired: Vec<Arc<PolicyTable>>,
    /// Set after an I/O failure that may leave memory and disk apart: changes are refused.
    poisoned: Option<String>,
}

/// The store.
#[derive(Debug)]
pub struct PolicyRegistry {
    inner: Mutex<Inner>,
    /// Lines known durable; held while syncing, so concurrent writers wait for one fsync.
    synced: Mutex<u64>,
    journal: Option<File>,
    /// The data plane's policy store, once it runs.
    live: std::sync::OnceLock<Arc<adox_dataplane::resolver::Shared>>,
}

/// What a policy matches: (zone, nameserver, address).
type Selector = (Option<String>, Option<String>, Option<String>);

fn selector(p: &Policy) -> Selector {
    (p.zone.clone(), p.nameserver.clone(), p.address.clone())
}

/// The number of an API id (`p-7` -> 7); only the canonical spelling counts (not `p-07`).
fn number_of(id: &str) -> Option<u64> {
    let n: u64 = id.strip_prefix(API_ID_PREFIX)?.parse().ok().filter(|n| *n > 0)?;
    (format!("{API_ID_PREFIX}{n}") == id).then_some(n)
}

/// The ETag of a policy.
pub fn etag(p: &Policy) -> String {
    format!("\"r{}\"", p.revision)
}

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{}: {what}: {e}", path.display()))
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, directory fsync.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

fn no_state_dir() -> std::io::Error {
    std::io::Error::other("no writable state directory: policy changes cannot be made durable, so they are refused")
}

/// What `load` found, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    /// API policies loaded.
    pub policies: usize,
    /// Journal lines replayed.
    pub replayed: usize,
    /// A torn (unacknowledged) last line was dropped.
    pub dropped_torn_line: bool,
}

impl Inner {
    fn apply(&mut self, change: Change) -> Result<(), PolicyError> {
        match change {
            Change::Put(p) => {
                let n =
                    number_of(&p.id).ok_or_else(|| PolicyError { field: "id", reason: format!("bad id {}", p.id) })?;
                if let Some(old) = self.api.remove(&n) {
                    self.table.remove(&old);
                    self.forget_selector(&old);
                }
                self.table.insert(&p)?;
                // A configuration policy keeps its selector (see `open`).
                self.selectors.entry(selector(&p)).or_insert_with(|| p.id.clone());
                self.next_id = self.next_id.max(n + 1);
                self.revision = self.revision.max(p.revision);
                self.api.insert(n, p);
            }
            Change::Delete(id) => {
                if let Some(old) = number_of(&id).and_then(|n| self.api.remove(&n)) {
                    self.table.remove(&old);
                    self.forget_selector(&old);
                }
            }
            Change::Batch { clear, changes } => {
                if clear {
                    for (_, old) in std::mem::take(&mut self.api) {
                        self.table.remove(&old);
                        self.forget_selector(&old);
                    }
                }
                for c in changes {
                    self.apply(c)?;
                }
            }
        }
        Ok(())
    }

    /// Removes `p`'s selector from the index if it is `p`'s (not a configuration policy's).
    fn forget_selector(&mut self, p: &Policy) {
        let sel = selector(p);
        if self.selectors.get(&sel) == Some(&p.id) {
            self.selectors.remove(&sel);
        }
    }

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

    fn publish(&mut self, store: &PolicyStore) {
        let old = store.swap(self.table.clone());
        self.retired.push(old);
        // Free what no worker holds any more (arc-swap counts readers' guards on swap).
        self.retired.retain(|t| Arc::strong_count(t) > 1);
    }

    fn check_selector(&self, p: &Policy, except: Option<&str>) -> Result<(), StoreError> {
        match self.selectors.get(&selector(p)) {
            Some(existing) if Some(existing.as_str()) != except => {
                Err(StoreError::Conflict { existing: existing.clone(), index: None })
            }
            _ => Ok(()),
        }
    }

    fn existing_api(&self, id: &str) -> Result<&Policy, StoreError> {
        if self.config.iter().any(|p| p.id == id) {
            return Err(StoreError::ReadOnly(id.into()));
        }
        number_of(id).and_then(|n| self.api.get(&n)).ok_or_else(|| StoreError::NotFound(id.into()))
    }
}

fn check_if_match(p: &Policy, if_match: Option<&str>) -> Result<(), StoreError> {
    match if_match {
        None => Ok(()),
        Some(m) if m.trim() == "*" => Ok(()),
        Some(m) if m.split(',').any(|t| t.trim() == etag(p)) => Ok(()),
        Some(_) => Err(StoreError::Stale { id: p.id.clone(), current: etag(p) }),
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

    /// A store without a state directory (it could not be created): the configuration's
    /// policies are served, and every change is refused with a 503 that says why.
    pub fn without_state(config: Vec<Policy>) -> Result<Self, PolicyError> {
        let inner = Inner {
            selectors: config.iter().map(|p| (selector(p), p.id.clone())).collect(),
            table: PolicyTable::compile(&config)?,
            config,
            api: BTreeMap::new(),
            next_id: 1,
            revision: 0,
            journal: None,
            journal_len: 0,
            snapshot_len: 0,
            written: 0,
            dir: PathBuf::new(),
            retired: Vec::new(),
            poisoned: None,
        };
        Ok(Self { inner: Mutex::new(inner), synced: Mutex::new(0), journal: None, live: std::sync::OnceLock::new() })
    }

    /// Connects the store to the running data plane: from now on every change is
    /// published to it. (The data plane starts with [`PolicyRegistry::all`] in force.)
    pub fn attach(&self, live: Arc<adox_dataplane::resolver::Shared>) {
        let _ = self.live.set(live);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every policy in force: the configuration's, then the API's in creation order.
    pub fn all(&self) -> Vec<Policy> {
        let inner = self.lock();
        inner.config.iter().chain(inner.api.values()).cloned().collect()
    }

    /// The API's policies as a bundle (what export gives and import takes).
    pub fn export(&self) -> Vec<PolicySpec> {
        self.lock().api.values().map(Policy::spec).collect()
    }

    /// One policy.
    pub fn get(&self, id: &str) -> Option<Policy> {
        let inner = self.lock();
        if let Some(p) = inner.config.iter().find(|p| p.id == id) {
            return Some(p.clone());
        }
        number_of(id).and_then(|n| inner.api.get(&n)).cloned()
    }

    /// Policies in force.
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.config.len() + inner.api.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Journals `change` (validated by `f`) and applies it to the working table; waits
    /// until the line is durable (one fsync may cover several writers); then publishes it
    /// to the data plane and returns. Any I/O failure after the append poisons the store:
    /// what is in memory may then differ from what is on disk, so every later change is
    /// refused until a restart reloads the files (DNS service goes on).
    fn commit<T>(&self, f: impl FnOnce(&mut Inner) -> Result<(Change, T), StoreError>) -> Result<T, StoreError> {
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
            inner.publish(&live.policies);
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

    /// Creates a policy; the store assigns its id.
    pub fn create(&self, spec: &PolicySpec) -> Result<Policy, StoreError> {
        self.commit(|inner| {
            let mut p = spec
                .normalize(format!("{API_ID_PREFIX}{}", inner.next_id), false)
                .map_err(|e| StoreError::Invalid(e, None))?;
            inner.check_selector(&p, None)?;
            inner.revision += 1;
            p.revision = inner.revision;
            Ok((Change::Put(p.clone()), p))
        })
    }

    /// Replaces policy `id` (its id stays).
    pub fn replace(&self, id: &str, spec: &PolicySpec, if_match: Option<&str>) -> Result<Policy, StoreError> {
        self.commit(|inner| {
            let old = inner.existing_api(id)?;
            // A body that would be refused anyway is refused as such, whatever the ETag.
            let mut p = spec.normalize(id.to_string(), false).map_err(|e| StoreError::Invalid(e, None))?;
            check_if_match(old, if_match)?;
            inner.check_selector(&p, Some(id))?;
            inner.revision += 1;
            p.revision = inner.revision;
            Ok((Change::Put(p.clone()), p))
        })
    }

    /// Deletes policy `id`.
    pub fn delete(&self, id: &str, if_match: Option<&str>) -> Result<(), StoreError> {
        self.commit(|inner| {
            let old = inner.existing_api(id)?;
            check_if_match(old, if_match)?;
            Ok((Change::Delete(id.to_string()), ()))
        })
    }

    /// Imports a bundle, all or nothing.
    pub fn import(&self, mode: ImportMode, specs: &[PolicySpec]) -> Result<ImportResult, StoreError> {
        self.commit(|inner| {
            let clear = mode == ImportMode::Replace;
            // Selectors as they will be: the configuration's, plus the API's unless replaced.
            let mut seen: HashMap<_, String> = inner.config.iter().map(|p| (selector(p), p.id.clone())).collect();
            if !clear {
                seen.extend(inner.api.values().map(|p| (selector(p), p.id.clone())));
            }
            let mut next = inner.next_id;
            let mut rev = inner.revision;
            let (mut created, mut updated) = (0, 0);
            let mut changes = Vec::with_capacity(specs.len());
            let mut in_bundle = std::collections::HashSet::new();
            for (i, spec) in specs.iter().enumerate() {
                let mut p = spec.normalize(String::new(), false).map_err(|e| StoreError::Invalid(e, Some(i)))?;
                let sel = selector(&p);
                if !in_bundle.insert(sel.clone()) {
                    return Err(StoreError::Conflict {
                        existing: format!("policies[{i}] repeats an earlier selector"),
                        index: Some(i),
                    });
                }
                match seen.get(&sel) {
                    Some(id) if number_of(id).is_none() => {
                        return Err(StoreError::Conflict { existing: id.clone(), index: Some(i) });
                    }
                    Some(id) => {
                        p.id = id.clone();
                        updated += 1;
                    }
                    None => {
                        p.id = format!("{API_ID_PREFIX}{next}");
                        next += 1;
                        created += 1;
                    }
                }
                rev += 1;
                p.revision = rev;
                seen.insert(sel, p.id.clone());
                changes.push(Change::Put(p));
            }
            let before = inner.api.len();
            let removed = if clear { before } else { 0 };
            let total = if clear { specs.len() } else { before + created };
            inner.revision = rev;
            Ok((Change::Batch { clear, changes }, ImportResult { mode, created, updated, removed, total }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adox_api::policy::Mode;

    fn shared() -> Arc<adox_dataplane::resolver::Shared> {
        Arc::new(adox_dataplane::daemon::shared_state(&adox_dataplane::Config::default()).unwrap())
    }

    fn spec(zone: &str, mode: Mode) -> PolicySpec {
        PolicySpec { zone: Some(zone.into()), mode: Some(mode), ..PolicySpec::default() }
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("adox-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
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
        assert_eq!(
            live.policies.load().lookup(&n("x.a.lab."), &n("ns."), ip).map(|p| p.id.clone()),
            Some("p-1".into())
        );
        r.replace("p-2", &spec("b.lab", Mode::Opportunistic), Some(&etag(&b))).unwrap();
        assert!(matches!(
            r.replace("p-2", &spec("b.lab", Mode::Cleartext), Some(&etag(&b))),
            Err(StoreError::Stale { .. })
        ));
        r.delete("p-1", None).unwrap();
        assert!(live.policies.load().lookup(&n("x.a.lab."), &n("ns."), ip).is_none());
        drop(r);
        let live2 = shared();
        let (r2, report) = PolicyRegistry::open(&dir, vec![]).unwrap();
        r2.attach(live2.clone());
        assert_eq!((report.policies, report.replayed), (1, 4), "two creates, a replace, a delete");
        let all = r2.all();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].id.as_str(), all[0].mode), ("p-2", Mode::Opportunistic));
        assert_eq!(r2.create(&spec("c.lab", Mode::Strict)).unwrap().id, "p-3", "ids are never reused");
        assert!(live2.policies.load().lookup(&n("b.lab."), &n("ns."), ip).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn replaced_tables_are_freed_here_once_no_reader_holds_them() {
        let dir = tempdir("retire");
        let live = shared();
        let (r, _) = PolicyRegistry::open(&dir, vec![]).unwrap();
        r.attach(live.clone());
        r.create(&spec("a.lab", Mode::Strict)).unwrap();
        // A worker holds the current table while the store replaces it.
        let held = live.policies.load();
        let weak = Arc::downgrade(&*held);
        r.create(&spec("b.lab", Mode::Strict)).unwrap();
        assert!(weak.upgrade().is_some(), "still held by the reader");
        drop(held);
        assert!(weak.upgrade().is_some(), "the reader's drop did not free it: the store keeps it");
        r.create(&spec("c.lab", Mode::Strict)).unwrap();
        assert!(weak.upgrade().is_none(), "freed by the store's next publish, on its own thread");
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
        let mut tail = good.clone().into_bytes();
        tail.extend_from_slice(&[0u8; 64]);
        tail.push(b'\n');
        std::fs::write(dir.join(JOURNAL_FILE), tail).unwrap();
        let (r, report) = PolicyRegistry::open(&dir, vec![]).unwrap();
        assert!(report.dropped_torn_line);
        assert_eq!((report.replayed, r.all().len()), (1, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_config_policy_added_over_a_saved_selector_keeps_its_place() {
        let dir = tempdir("clash");
        let (r, _) = PolicyRegistry::open(&dir, vec![]).unwrap();
        r.create(&spec("a.lab", Mode::Cleartext)).unwrap();
        drop(r);
        // The operator then writes the same selector into the configuration.
        let cfg = spec("a.lab", Mode::Strict).normalize("cfg-1".into(), true).unwrap();
        let (r, _) = PolicyRegistry::open(&dir, vec![cfg]).unwrap();
        assert_eq!(r.all().len(), 2, "both load");
        r.delete("p-1", None).unwrap();
        assert!(
            matches!(r.create(&spec("a.lab", Mode::Opportunistic)), Err(StoreError::Conflict { existing, .. }) if existing == "cfg-1"),
            "deleting the API policy left the configuration's selector in the index"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_a_state_directory_changes_are_refused_and_config_policies_served() {
        let cfg = spec("cfg.lab", Mode::Strict).normalize("cfg-1".into(), true).unwrap();
        let r = PolicyRegistry::without_state(vec![cfg]).unwrap();
        assert!(matches!(r.create(&spec("a.lab", Mode::Strict)), Err(StoreError::Io(_))));
        assert_eq!(r.all().len(), 1);
    }

    #[test]
    fn selectors_are_unique_and_config_policies_read_only() {
        let dir = tempdir("sel");
        let cfg = spec("cfg.lab", Mode::Strict).normalize("cfg-1".into(), true).unwrap();
        let (r, _) = PolicyRegistry::open(&dir, vec![cfg]).unwrap();
        assert!(matches!(r.create(&spec("CFG.lab.", Mode::Cleartext)), Err(StoreError::Conflict { .. })));
        assert!(matches!(r.delete("cfg-1", None), Err(StoreError::ReadOnly(_))));
        assert!(matches!(r.delete("p-77", None), Err(StoreError::NotFound(_))));
        r.create(&spec("a.lab", Mode::Strict)).unwrap();
        let res = r.import(ImportMode::Merge, &[spec("a.lab", Mode::Cleartext), spec("b.lab", Mode::Strict)]).unwrap();
        assert_eq!((res.created, res.updated, res.total), (1, 1, 2));
        assert_eq!(r.get("p-1").unwrap().mode, Mode::Cleartext, "merge replaces in place");
        let bad = r.import(ImportMode::Replace, &[spec("c.lab", Mode::Strict), PolicySpec::default()]);
        assert!(matches!(bad, Err(StoreError::Invalid(e, Some(1))) if e.field == "mode"));
        assert_eq!(r.len(), 3, "a refused import changes nothing");
        let res = r.import(ImportMode::Replace, &[spec("c.lab", Mode::Strict)]).unwrap();
        assert_eq!((res.removed, res.total, r.len()), (2, 1, 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
