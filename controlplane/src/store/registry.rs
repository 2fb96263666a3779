//! The registry's rules: ids, selectors, revisions and ETags, `If-Match`, validation, and
//! applying each change to the working policy table and publishing it.
//!
//! Publishing. The store keeps a working [`PolicyTable`]; each change edits it (copying
//! only the touched bucket) and stores a clone in the data plane's [`PolicyStore`] before
//! the change is acknowledged, so the next cache-missing query obeys it. Old tables are
//! kept here and freed on this thread once no worker holds them.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use adox_api::policy::{Policy, PolicyError, PolicySpec};
use adox_api::rest::{ImportMode, ImportResult};
use adox_dataplane::upstream::policy::{PolicyStore, PolicyTable};

use super::journal::Change;
use super::{Inner, PolicyRegistry, StoreError};

/// Prefix of the ids the API assigns (`p-1`, `p-2`, ...).
const API_ID_PREFIX: &str = "p-";
/// What a policy matches: (zone, nameserver, address).
pub(crate) type Selector = (Option<String>, Option<String>, Option<String>);

pub(crate) fn selector(p: &Policy) -> Selector {
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

impl Inner {
    pub(super) fn apply(&mut self, change: Change) -> Result<(), PolicyError> {
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
                self.next_id = self.next_id.max(n.saturating_add(1));
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
    pub(super) fn publish(&mut self, store: &PolicyStore) {
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
    check_etag(&p.id, &etag(p), if_match)
}

/// `If-Match` against policy `id`'s current ETag.
pub(crate) fn check_etag(id: &str, current: &str, if_match: Option<&str>) -> Result<(), StoreError> {
    match if_match {
        None => Ok(()),
        Some(m) if m.trim() == "*" => Ok(()),
        Some(m) if m.split(',').any(|t| t.trim() == current) => Ok(()),
        Some(_) => Err(StoreError::Stale { id: id.to_string(), current: current.to_string() }),
    }
}

impl PolicyRegistry {
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
    pub fn attach(&self, live: Arc<PolicyStore>) {
        let _ = self.live.set(live);
    }
    /// Replaces the configuration's policies (a reload), keeping the API's, and publishes
    /// the result; `Ok(false)` when they did not change. Checked whole first: a policy
    /// the table refuses changes nothing.
    pub fn replace_config(&self, config: Vec<Policy>) -> Result<bool, PolicyError> {
        let mut inner = self.lock();
        if inner.config == config {
            return Ok(false);
        }
        let mut table = PolicyTable::compile(&config)?;
        for p in inner.api.values() {
            table.insert(p)?;
        }
        // As at start: a configuration policy keeps its selector.
        let mut selectors: HashMap<Selector, String> = config.iter().map(|p| (selector(p), p.id.clone())).collect();
        for p in inner.api.values() {
            selectors.entry(selector(p)).or_insert_with(|| p.id.clone());
        }
        inner.table = table;
        inner.selectors = selectors;
        inner.config = config;
        if let Some(live) = self.live.get() {
            inner.publish(live);
        }
        Ok(true)
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
            Ok((
                Change::Batch { clear, changes },
                ImportResult { mode, created, updated, removed, total, chunks: None },
            ))
        })
    }
}

/// Fleet mode (`[fleet] backend = "etcd"`): etcd holds the API's policies and decides
/// every change; this store is the node's view of it, changed only by what the fleet's
/// watch delivers (see `crate::fleet`), and publishes it to the data plane as in local mode.
impl PolicyRegistry {
    /// A store for fleet mode: the configuration's policies and the API's as last seen
    /// (the fleet snapshot in the state directory), with no journal.
    pub fn for_fleet(config: Vec<Policy>, api: Vec<Policy>) -> Result<Self, PolicyError> {
        let r = Self::without_state(config)?;
        r.apply_fleet(false, api.into_iter().map(FleetChange::Put).collect());
        Ok(r)
    }

    /// How many API policies there are.
    pub fn api_policy_count(&self) -> usize {
        self.lock().api.len()
    }

    /// The API's policies (what the fleet snapshot keeps).
    pub fn api_policies(&self) -> Vec<Policy> {
        self.lock().api.values().cloned().collect()
    }

    /// Applies what etcd says changed (`clear`: the whole set is replaced), then publishes.
    /// A policy the table refuses is skipped with a warning: a bad record written into
    /// etcd by hand must not stop the fleet.
    pub(crate) fn apply_fleet(&self, clear: bool, changes: Vec<FleetChange>) {
        let mut inner = self.lock();
        if clear {
            let _ = inner.apply(Change::Batch { clear: true, changes: vec![] });
        }
        for c in changes {
            match c {
                FleetChange::Put(p) => {
                    let id = p.id.clone();
                    if let Err(e) = inner.apply(Change::Put(p)) {
                        tracing::warn!(%id, error = %e, "fleet: policy from etcd refused; skipped");
                    }
                }
                FleetChange::Delete(id) => {
                    let _ = inner.apply(Change::Delete(id));
                }
            }
        }
        if let Some(live) = self.live.get() {
            inner.publish(live);
        }
    }

    /// What a fleet write must check on this node before it goes to etcd: a configuration
    /// policy's id is read-only, and its selector is taken (configuration policies are each
    /// node's own, so etcd cannot check them).
    pub(crate) fn check_fleet_write(&self, id: Option<&str>, p: Option<&Policy>) -> Result<(), StoreError> {
        let inner = self.lock();
        if let Some(id) = id {
            if inner.config.iter().any(|c| c.id == id) {
                return Err(StoreError::ReadOnly(id.into()));
            }
            if number_of(id).is_none() {
                return Err(StoreError::NotFound(id.into()));
            }
        }
        if let Some(p) = p
            && let Some(c) = inner.config.iter().find(|c| selector(c) == selector(p))
        {
            return Err(StoreError::Conflict { existing: c.id.clone(), index: None });
        }
        Ok(())
    }
}

/// One change the fleet's watch delivers, in etcd's order.
#[derive(Debug)]
pub(crate) enum FleetChange {
    /// A policy created or replaced.
    Put(Policy),
    /// A policy removed (by id).
    Delete(String),
}

/// The number of an API id, for the fleet's id allocation (`p-N`).
pub(crate) fn api_id(n: u64) -> String {
    format!("{API_ID_PREFIX}{n}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{shared, spec, tempdir};
    use adox_api::policy::Mode;

    #[test]
    fn replaced_tables_are_freed_here_once_no_reader_holds_them() {
        let dir = tempdir("retire");
        let live = shared();
        let (r, _) = PolicyRegistry::open(&dir, vec![]).unwrap();
        r.attach(live.clone());
        r.create(&spec("a.lab", Mode::Strict)).unwrap();
        // A worker holds the current table while the store replaces it.
        let held = live.load();
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

    /// A reload replaces the configuration's policies in the live table and keeps the
    /// API's; a selector that only the old configuration held is free for the API again.
    #[test]
    fn a_reload_replaces_the_config_policies_and_keeps_the_api_ones() {
        let dir = tempdir("reload");
        let live = shared();
        let old = spec("old.lab", Mode::Strict).normalize("cfg-1".into(), true).unwrap();
        let (r, _) = PolicyRegistry::open(&dir, vec![old.clone()]).unwrap();
        r.attach(live.clone());
        r.create(&spec("api.lab", Mode::Cleartext)).unwrap();
        assert!(!r.replace_config(vec![old]).unwrap(), "unchanged");
        let new = spec("new.lab", Mode::Opportunistic).normalize("cfg-1".into(), true).unwrap();
        assert!(r.replace_config(vec![new]).unwrap());
        let zones: Vec<_> = r.all().iter().map(|p| p.zone.clone().unwrap()).collect();
        assert_eq!(zones, ["new.lab.", "api.lab."]);
        assert_eq!(live.load().len(), 2, "published");
        r.create(&spec("old.lab", Mode::Cleartext)).unwrap();
        assert!(matches!(r.create(&spec("new.lab", Mode::Cleartext)), Err(StoreError::Conflict { .. })));
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
