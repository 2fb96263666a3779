//! The REST API's writes in fleet mode: etcd transactions, each bounded by
//! `etcd_timeout_ms`, answered once this node's watch applied them.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use adox_api::policy::{Policy, PolicySpec};
use adox_api::rest::{ImportMode, ImportResult};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

use super::{Fleet, selector_key};
use crate::store::{Selector, StoreError, api_id, check_etag, selector};

/// Negative trust anchors settable through the API at most (local and fleet mode).
pub(crate) const MAX_NEGATIVE_ANCHORS: usize = 10_000;
/// Policies per import transaction: each takes at most two operations (the policy and
/// its selector) and two compares (selector and id free), plus the id counter; etcd
/// allows 128 of each by default.
pub(crate) const IMPORT_CHUNK: usize = 60;
/// What the gRPC transport says when it could not connect: the request was not sent.
const NOT_CONNECTED: &str = "tcp connect error";
/// Pause before sending such a request again.
const RESEND_AFTER: std::time::Duration = std::time::Duration::from_millis(50);
/// Largest reply taken for a read of every policy (tonic's default is 4 MiB).
const RANGE_MAX: usize = 256 << 20;
/// Attempts at a transaction another node's write raced with.
const RETRIES: usize = 16;

fn etcd(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(format!("etcd: {e}"))
}

/// A policy as etcd stores it (its revision is the key's mod revision, not stored).
fn record(p: &Policy) -> Result<Vec<u8>, StoreError> {
    let mut p = p.clone();
    p.revision = 0;
    serde_json::to_vec(&p).map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// The ETag of a policy whose key has mod revision `rev` (as [`crate::store::etag`]).
fn etag_of(rev: i64) -> String {
    format!("\"r{rev}\"")
}

fn revision_of(r: &etcd_client::TxnResponse) -> u64 {
    r.header().map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0))
}

/// The keys one write needs.
#[derive(Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn policy(&self, id: &str) -> String {
        format!("{}/policies/{id}", self.prefix)
    }
    fn selector(&self, p: &Policy) -> String {
        format!("{}/selectors/{}", self.prefix, selector_key(p))
    }
    fn counter(&self) -> String {
        format!("{}/next-policy-id", self.prefix)
    }
    fn anchors(&self) -> String {
        format!("{}/negative-anchors", self.prefix)
    }
}

/// Deletes selector key `sel` if it still names `id` (a nested transaction): a selector
/// another policy took meanwhile stays.
fn release_selector(sel: String, id: &str) -> TxnOp {
    TxnOp::txn(
        Txn::new()
            .when([Compare::value(sel.clone(), CompareOp::Equal, id.as_bytes().to_vec())])
            .and_then([TxnOp::delete(sel, None)]),
    )
}

/// The id counter: its value and the compare that it is still that.
async fn counter(c: &mut Client, keys: &Keys) -> Result<(u64, Compare), StoreError> {
    let got = c.get(keys.counter(), None).await.map_err(etcd)?;
    Ok(match got.kvs().first() {
        Some(kv) => {
            let n = std::str::from_utf8(kv.value())
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| StoreError::Unavailable(format!("{} in etcd is not a number", keys.counter())))?;
            (n.max(1), Compare::mod_revision(keys.counter(), CompareOp::Equal, kv.mod_revision()))
        }
        None => (1, Compare::create_revision(keys.counter(), CompareOp::Equal, 0)),
    })
}

/// The id held by the first `get` in a failed transaction's answers, if any.
fn held_by(r: &etcd_client::TxnResponse) -> Option<String> {
    r.op_responses().into_iter().find_map(|o| match o {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        _ => None,
    })
}

async fn create(mut c: Client, keys: Keys, mut p: Policy) -> Result<Policy, StoreError> {
    let sel = keys.selector(&p);
    // Ids the counter says are free but a record holds (written by hand): skipped.
    let mut floor = 1;
    for _ in 0..RETRIES {
        let (n, still) = counter(&mut c, &keys).await?;
        let n = n.max(floor);
        p.id = api_id(n);
        let key = keys.policy(&p.id);
        let txn = Txn::new()
            .when([
                still,
                Compare::create_revision(sel.clone(), CompareOp::Equal, 0),
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(keys.counter(), n.saturating_add(1).to_string(), None),
                TxnOp::put(key.clone(), record(&p)?, None),
                TxnOp::put(sel.clone(), p.id.clone(), None),
            ])
            .or_else([TxnOp::get(sel.clone(), None), TxnOp::get(key, None)]);
        let r = c.txn(txn).await.map_err(etcd)?;
        if r.succeeded() {
            p.revision = revision_of(&r);
            return Ok(p);
        }
        let answers = r.op_responses();
        let got = |i: usize| match answers.get(i) {
            Some(TxnOpResponse::Get(g)) => g.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            _ => None,
        };
        if let Some(existing) = got(0) {
            return Err(StoreError::Conflict { existing, index: None });
        }
        if got(1).is_some() {
            floor = n.saturating_add(1);
        }
    }
    Err(StoreError::Unavailable("etcd: too many concurrent writers; try again".into()))
}

async fn replace(mut c: Client, keys: Keys, mut p: Policy, if_match: Option<String>) -> Result<Policy, StoreError> {
    let key = keys.policy(&p.id);
    let new_sel = keys.selector(&p);
    for _ in 0..RETRIES {
        let got = c.get(key.clone(), None).await.map_err(etcd)?;
        let kv = got.kvs().first().ok_or_else(|| StoreError::NotFound(p.id.clone()))?;
        let seen = kv.mod_revision();
        let old: Option<Policy> = serde_json::from_slice(kv.value()).ok();
        check_etag(&p.id, &etag_of(seen), if_match.as_deref())?;
        let old_sel = old.as_ref().map(|o| keys.selector(o));
        let moved = old.as_ref().is_none_or(|o| selector(o) != selector(&p));
        let mut when = vec![Compare::mod_revision(key.clone(), CompareOp::Equal, seen)];
        let mut ops = vec![TxnOp::put(key.clone(), record(&p)?, None)];
        if moved {
            when.push(Compare::create_revision(new_sel.clone(), CompareOp::Equal, 0));
            if let Some(s) = old_sel {
                ops.push(release_selector(s, &p.id));
            }
            ops.push(TxnOp::put(new_sel.clone(), p.id.clone(), None));
        }
        let r = c
            .txn(Txn::new().when(when).and_then(ops).or_else([TxnOp::get(new_sel.clone(), None)]))
            .await
            .map_err(etcd)?;
        if r.succeeded() {
            p.revision = revision_of(&r);
            return Ok(p);
        }
        if let Some(existing) = held_by(&r).filter(|e| *e != p.id) {
            return Err(StoreError::Conflict { existing, index: None });
        }
    }
    Err(StoreError::Unavailable("etcd: too many concurrent writers; try again".into()))
}

async fn delete(mut c: Client, keys: Keys, id: String, if_match: Option<String>) -> Result<u64, StoreError> {
    let key = keys.policy(&id);
    for _ in 0..RETRIES {
        let got = c.get(key.clone(), None).await.map_err(etcd)?;
        let kv = got.kvs().first().ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let seen = kv.mod_revision();
        let old: Option<Policy> = serde_json::from_slice(kv.value()).ok();
        check_etag(&id, &etag_of(seen), if_match.as_deref())?;
        let mut ops = vec![TxnOp::delete(key.clone(), None)];
        if let Some(o) = &old {
            ops.push(release_selector(keys.selector(o), &id));
        }
        let r = c
            .txn(Txn::new().when([Compare::mod_revision(key.clone(), CompareOp::Equal, seen)]).and_then(ops))
            .await
            .map_err(etcd)?;
        if r.succeeded() {
            return Ok(revision_of(&r));
        }
    }
    Err(StoreError::Unavailable("etcd: too many concurrent writers; try again".into()))
}

/// One import chunk: its policies get ids (new selectors) or keep the id that holds their
/// selector (merge), in one transaction. Returns (created, updated, revision).
async fn import_chunk(c: &mut Client, keys: &Keys, chunk: &[Policy]) -> Result<(usize, usize, u64), StoreError> {
    for _ in 0..RETRIES {
        let (mut n, still) = counter(c, keys).await?;
        let reads: Vec<TxnOp> = chunk.iter().map(|p| TxnOp::get(keys.selector(p), None)).collect();
        let read = c.txn(Txn::new().and_then(reads)).await.map_err(etcd)?;
        let held: Vec<Option<(String, i64)>> = read
            .op_responses()
            .into_iter()
            .map(|o| match o {
                TxnOpResponse::Get(g) => {
                    g.kvs().first().map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.mod_revision()))
                }
                _ => None,
            })
            .collect();
        let (mut when, mut ops) = (vec![still], Vec::new());
        let (mut created, mut updated) = (0, 0);
        for (p, held) in chunk.iter().zip(&held) {
            let mut p = p.clone();
            let sel = keys.selector(&p);
            match held {
                Some((id, rev)) => {
                    p.id.clone_from(id);
                    when.push(Compare::mod_revision(sel, CompareOp::Equal, *rev));
                    updated += 1;
                }
                None => {
                    p.id = api_id(n);
                    n = n.saturating_add(1);
                    when.push(Compare::create_revision(sel.clone(), CompareOp::Equal, 0));
                    // The id is free (a counter set back by hand must not overwrite a policy).
                    when.push(Compare::create_revision(keys.policy(&p.id), CompareOp::Equal, 0));
                    ops.push(TxnOp::put(sel, p.id.clone(), None));
                    created += 1;
                }
            }
            ops.push(TxnOp::put(keys.policy(&p.id), record(&p)?, None));
        }
        ops.push(TxnOp::put(keys.counter(), n.to_string(), None));
        let r = c.txn(Txn::new().when(when).and_then(ops)).await.map_err(etcd)?;
        if r.succeeded() {
            return Ok((created, updated, revision_of(&r)));
        }
    }
    Err(StoreError::Unavailable("etcd: too many concurrent writers; try again".into()))
}

/// An import bundle checked as the local store checks it: each policy valid, no selector
/// twice, none a configuration policy's.
fn check_bundle(registry: &crate::PolicyRegistry, specs: &[PolicySpec]) -> Result<Vec<Policy>, StoreError> {
    let mut policies = Vec::with_capacity(specs.len());
    let mut seen = HashSet::new();
    for (i, spec) in specs.iter().enumerate() {
        let p = spec.normalize(api_id(1), false).map_err(|e| StoreError::Invalid(e, Some(i)))?;
        if !seen.insert(selector(&p)) {
            return Err(StoreError::Conflict {
                existing: format!("policies[{i}] repeats an earlier selector"),
                index: Some(i),
            });
        }
        registry.check_fleet_write(None, Some(&p)).map_err(|e| match e {
            StoreError::Conflict { existing, .. } => StoreError::Conflict { existing, index: Some(i) },
            e => e,
        })?;
        policies.push(p);
    }
    Ok(policies)
}

/// What an import's replace removes: every API policy whose selector is not in `keep`,
/// as (id, mod revision read, the policy if it parses).
async fn others_than(c: &mut Client, keys: &Keys, keep: &HashSet<Selector>) -> Result<Vec<Other>, StoreError> {
    let prefix = format!("{}/policies/", keys.prefix);
    let got = c
        .kv_client()
        .max_decoding_message_size(RANGE_MAX)
        .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(etcd)?;
    let mut others = Vec::new();
    for kv in got.kvs() {
        let id = String::from_utf8_lossy(kv.key().strip_prefix(prefix.as_bytes()).unwrap_or_default()).into_owned();
        let old: Option<Policy> = serde_json::from_slice(kv.value()).ok();
        if old.as_ref().is_none_or(|o| !keep.contains(&selector(o))) {
            others.push(Other { id, seen: kv.mod_revision(), policy: old });
        }
    }
    Ok(others)
}

/// A policy an import's replace removes.
#[derive(Clone)]
struct Other {
    id: String,
    seen: i64,
    policy: Option<Policy>,
}

/// Removes one chunk of [`Other`]s, each only if unchanged since it was read; the
/// transaction's revision, or `None` when another writer changed one meanwhile.
async fn remove(c: &mut Client, keys: &Keys, chunk: &[Other]) -> Result<Option<u64>, StoreError> {
    let mut when = Vec::new();
    let mut ops = Vec::new();
    for o in chunk {
        when.push(Compare::mod_revision(keys.policy(&o.id), CompareOp::Equal, o.seen));
        ops.push(TxnOp::delete(keys.policy(&o.id), None));
        if let Some(p) = &o.policy {
            ops.push(release_selector(keys.selector(p), &o.id));
        }
    }
    let r = c.txn(Txn::new().when(when).and_then(ops)).await.map_err(etcd)?;
    Ok(r.succeeded().then(|| revision_of(&r)))
}

impl Fleet {
    /// Runs `op` on the sync thread's runtime within `etcd_timeout_ms`, then waits (within
    /// what is left of it) until this node applied the revision it returns.
    async fn write<T, F>(self: &Arc<Self>, op: impl Fn(Client, Keys) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<(T, u64), StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let (client, runtime) = self.client().map_err(StoreError::Unavailable)?;
        let keys = Keys { prefix: self.settings.key_prefix.clone() };
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let result = loop {
            let task = runtime.spawn(op(client.clone(), keys.clone()));
            let abort = task.abort_handle();
            let r = match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(StoreError::Unavailable("the etcd request was interrupted".into())),
                Err(_) => {
                    abort.abort();
                    Err(StoreError::Unavailable(format!(
                        "etcd did not answer within {} ms (fleet.etcd_timeout_ms): the change may or may not have \
                         been made; read it back before trying again",
                        self.settings.timeout.as_millis()
                    )))
                }
            };
            // The balancer picked a member whose connection is down (it restarts, say): the
            // request never left, so it is safe to send again, to whichever member is up.
            let not_sent = matches!(&r, Err(StoreError::Unavailable(m)) if m.contains(NOT_CONNECTED));
            if not_sent && tokio::time::Instant::now() + RESEND_AFTER < deadline {
                tokio::time::sleep(RESEND_AFTER).await;
                continue;
            }
            break r;
        };
        match result {
            Ok((v, revision)) => {
                self.state().writes_ok += 1;
                let mut applied = self.applied.subscribe();
                let target = i64::try_from(revision).unwrap_or(i64::MAX);
                let seen = tokio::time::timeout_at(deadline, applied.wait_for(|r| *r >= target)).await;
                if !matches!(seen, Ok(Ok(_))) {
                    tracing::warn!(revision, "fleet: a write etcd accepted is not applied here yet");
                }
                Ok(v)
            }
            Err(e) => {
                if let StoreError::Unavailable(m) = &e {
                    self.state().writes_failed += 1;
                    self.note_error(m);
                }
                Err(e)
            }
        }
    }

    /// `POST /v1/policies`.
    pub async fn create(self: &Arc<Self>, spec: &PolicySpec) -> Result<Policy, StoreError> {
        let p = spec.normalize(api_id(1), false).map_err(|e| StoreError::Invalid(e, None))?;
        self.registry.check_fleet_write(None, Some(&p))?;
        self.write(|c, keys| {
            let p = p.clone();
            async move {
                let p = create(c, keys, p).await?;
                let rev = p.revision;
                Ok((p, rev))
            }
        })
        .await
    }

    /// `PUT /v1/policies/{id}`.
    pub async fn replace(
        self: &Arc<Self>,
        id: &str,
        spec: &PolicySpec,
        if_match: Option<&str>,
    ) -> Result<Policy, StoreError> {
        self.registry.check_fleet_write(Some(id), None)?;
        let p = spec.normalize(id.to_string(), false).map_err(|e| StoreError::Invalid(e, None))?;
        self.registry.check_fleet_write(None, Some(&p))?;
        let if_match = if_match.map(str::to_string);
        self.write(|c, keys| {
            let (p, if_match) = (p.clone(), if_match.clone());
            async move {
                let p = replace(c, keys, p, if_match).await?;
                let rev = p.revision;
                Ok((p, rev))
            }
        })
        .await
    }

    /// `DELETE /v1/policies/{id}`.
    pub async fn delete(self: &Arc<Self>, id: &str, if_match: Option<&str>) -> Result<(), StoreError> {
        self.registry.check_fleet_write(Some(id), None)?;
        let (id, if_match) = (id.to_string(), if_match.map(str::to_string));
        self.write(|c, keys| {
            let (id, if_match) = (id.clone(), if_match.clone());
            async move { Ok(((), delete(c, keys, id, if_match).await?)) }
        })
        .await
    }

    /// `POST /v1/policies/import`: checked whole first (a bad bundle changes nothing), then
    /// written in transactions of [`IMPORT_CHUNK`] policies; with `replace`, the policies
    /// the bundle does not hold are removed after. Each transaction is atomic; the import
    /// is not: an error after the first says how far it got. Each transaction has
    /// `etcd_timeout_ms`.
    pub async fn import(
        self: &Arc<Self>,
        mode: ImportMode,
        specs: Vec<PolicySpec>,
    ) -> Result<ImportResult, StoreError> {
        // Up to a million policies: checked off the API's thread.
        let registry = self.registry.clone();
        let policies = tokio::task::spawn_blocking(move || check_bundle(&registry, &specs))
            .await
            .map_err(|_| StoreError::Unavailable("the import check was interrupted".into()))??;
        let chunks = policies.len().div_ceil(IMPORT_CHUNK);
        let mut result = ImportResult { mode, created: 0, updated: 0, removed: 0, total: 0, chunks: Some(chunks) };
        for (k, chunk) in policies.chunks(IMPORT_CHUNK).enumerate() {
            let chunk = chunk.to_vec();
            let done = self
                .write(|mut c, keys| {
                    let chunk = chunk.clone();
                    async move {
                        let (created, updated, rev) = import_chunk(&mut c, &keys, &chunk).await?;
                        Ok(((created, updated), rev))
                    }
                })
                .await
                .map_err(|e| match e {
                    StoreError::Unavailable(m) if k > 0 => StoreError::Unavailable(format!(
                        "{m} (the import stopped after {k} of {chunks} transactions: {} policies created, {} updated)",
                        result.created, result.updated
                    )),
                    e => e,
                })?;
            result.created += done.0;
            result.updated += done.1;
        }
        if mode == ImportMode::Replace {
            // Only now, with the new set in force: the policies it does not hold go, a
            // transaction per chunk. (The other way round, the fleet would run without
            // its policies in between.)
            let keep: HashSet<Selector> = policies.iter().map(selector).collect();
            let others = self
                .write(|mut c, keys| {
                    let keep = keep.clone();
                    async move { Ok((others_than(&mut c, &keys, &keep).await?, 0)) }
                })
                .await?;
            for chunk in others.chunks(IMPORT_CHUNK) {
                let removed = self
                    .write(|mut c, keys| {
                        let chunk = chunk.to_vec();
                        async move {
                            let rev = remove(&mut c, &keys, &chunk).await?;
                            Ok((rev.is_some(), rev.unwrap_or(0)))
                        }
                    })
                    .await
                    .map_err(|e| match e {
                        StoreError::Unavailable(m) => StoreError::Unavailable(format!(
                            "{m} (the new policies are in force; {} of {} others were removed)",
                            result.removed,
                            others.len()
                        )),
                        e => e,
                    })?;
                if !removed {
                    return Err(StoreError::Unavailable(format!(
                        "the new policies are in force, but {} of {} others were removed: another writer changed \
                         one meanwhile; import again to finish",
                        result.removed,
                        others.len()
                    )));
                }
                result.removed += chunk.len();
            }
        }
        result.total = self.registry.api_policy_count();
        Ok(result)
    }

    /// `PUT /v1/dnssec/negative-anchors` (names already checked and normalized).
    pub async fn set_negative_anchors(self: &Arc<Self>, texts: Vec<String>) -> Result<(), StoreError> {
        let body = serde_json::to_vec(&adox_api::rest::NegativeAnchorsUpdate { anchors: texts })
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        self.write(|mut c, keys| {
            let body = body.clone();
            async move {
                let r = c.put(keys.anchors(), body, None).await.map_err(etcd)?;
                Ok(((), r.header().map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0))))
            }
        })
        .await
    }
}
