//! The policy store: the configuration's policies (read-only) and the API's, kept durable in
//! the state directory and published to the data plane.
//!
//! Two concerns, one file each, over one state behind the store's lock:
//! - `journal`: durability (the journal and its group commit, folding it into the
//!   snapshot, torn lines at load, atomic writes);
//! - `registry`: the rules (ids, selectors, revisions and ETags, `If-Match`, validation)
//!   and applying each change to the working policy table and publishing it.
//!
//! A change is validated by the registry's rules, made durable by the journal, then applied
//! and published.

mod journal;
mod registry;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use adox_api::policy::{Policy, PolicyError};
use adox_dataplane::upstream::policy::PolicyTable;

pub(crate) use journal::write_atomic;
pub use journal::{COMPACT_AFTER, JOURNAL_FILE, LoadReport, SNAPSHOT_FILE};
pub use registry::etag;
pub(crate) use registry::{FleetChange, Selector, api_id, check_etag, selector};

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
    /// The fleet's store (etcd) did not decide the change in time: it may or may not
    /// have been made, and the caller should read before retrying.
    #[error("{0}")]
    Unavailable(String),
    /// The state directory could not be written: nothing changed.
    #[error("could not persist the change: {0}")]
    Io(#[from] std::io::Error),
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
    live: std::sync::OnceLock<Arc<adox_dataplane::upstream::policy::PolicyStore>>,
}

impl PolicyRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the tests of `journal` and `registry` share.
#[cfg(test)]
mod test_support {
    use std::path::PathBuf;
    use std::sync::Arc;

    use adox_api::policy::{Mode, PolicySpec};

    /// A policy store like the data plane's, for the registry to publish into.
    pub(super) fn shared() -> Arc<adox_dataplane::upstream::policy::PolicyStore> {
        Arc::new(adox_dataplane::upstream::policy::PolicyStore::default())
    }

    pub(super) fn spec(zone: &str, mode: Mode) -> PolicySpec {
        PolicySpec { zone: Some(zone.into()), mode: Some(mode), ..PolicySpec::default() }
    }

    pub(super) fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("adox-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}
