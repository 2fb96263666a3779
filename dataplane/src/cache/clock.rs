//! A bounded map with CLOCK (second-chance) eviction, charged in bytes.
//!
//! Why CLOCK: a hit only sets a bit (no list surgery as in LRU), so the hot path stays a
//! hash lookup plus one store, and the hit ratio under skewed (Zipf) DNS load stays close
//! to LRU's; `benches/cache_eviction.rs` measures both on the same trace.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, RandomState};

use hashbrown::HashTable;

#[derive(Debug)]
struct Slot<K, V> {
    key: K,
    value: V,
    /// Bytes charged, overhead included (an entry never nears 4 GiB: the largest is a
    /// 64 KiB message and its parsed records).
    cost: u32,
    referenced: bool,
}

/// The cache. Each key is stored once, in its slot: the hash table holds only slot
/// indices (4 bytes and a control byte an entry), and finds keys through the slots.
#[derive(Debug)]
pub struct ClockCache<K, V> {
    table: HashTable<u32>,
    hasher: RandomState,
    slots: Vec<Option<Slot<K, V>>>,
    free: Vec<u32>,
    hand: usize,
    used: usize,
    budget: usize,
    evictions: u64,
}

impl<K: Hash + Eq, V> ClockCache<K, V> {
    /// Bytes charged per entry on top of the caller's cost: the slot, and the hash
    /// table's index, control byte and spare capacity (load factor 7/8).
    pub fn overhead() -> usize {
        size_of::<Option<Slot<K, V>>>() + (size_of::<u32>() + 1) * 8 / 7
    }

    /// A cache holding at most `budget` bytes (as estimated by the callers' costs).
    pub fn new(budget: usize) -> Self {
        Self::with_hasher(budget, RandomState::new())
    }

    /// A cache whose keys hash with `hasher`: a caller that shards over several caches
    /// hashes a key once, picks the shard from the hash, and hands the hash on
    /// ([`Self::peek_hashed`] and the other `_hashed` calls).
    pub fn with_hasher(budget: usize, hasher: RandomState) -> Self {
        Self {
            table: HashTable::new(),
            hasher,
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            used: 0,
            budget,
            evictions: 0,
        }
    }

    /// The slot index of `key`, if present.
    fn find<Q>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.find_hashed(self.hasher.hash_one(key), key)
    }

    /// The hash this cache files `key` under.
    pub fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// [`Self::find`] with the key's hash already made.
    fn find_hashed<Q>(&self, hash: u64, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slots = &self.slots;
        self.table
            .find(hash, |&i| slots[i as usize].as_ref().is_some_and(|s| s.key.borrow() == key))
            .map(|&i| i as usize)
    }

    /// Looks up a key and marks it recently used.
    pub fn get<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_key_value(key).map(|(_, v)| v)
    }

    /// Looks up a key and marks it recently used, with the key as stored (a key that
    /// carries data besides what it is compared by).
    pub fn get_key_value<Q>(&mut self, key: &Q) -> Option<(&K, &mut V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let idx = self.find(key)?;
        let slot = self.slots[idx].as_mut()?;
        slot.referenced = true;
        Some((&slot.key, &mut slot.value))
    }

    /// Looks up a key without marking it used (an entry read only to find it expired must
    /// not be shielded from eviction); [`Self::mark`] marks it once it serves.
    pub fn peek<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let idx = self.find(key)?;
        Some(&mut self.slots[idx].as_mut()?.value)
    }

    /// [`Self::peek`] with the key's hash already made ([`Self::hash`]); the entry found
    /// can be marked used without a second lookup.
    pub fn peek_hashed<Q>(&mut self, hash: u64, key: &Q) -> Option<Peeked<'_, V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        debug_assert_eq!(hash, self.hasher.hash_one(key));
        let idx = self.find_hashed(hash, key)?;
        let slot = self.slots[idx].as_mut()?;
        Some(Peeked {
            value: &mut slot.value,
            referenced: &mut slot.referenced,
            cost: &mut slot.cost,
            used: &mut self.used,
            overhead: Self::overhead(),
        })
    }

    /// Evicts until the bytes charged are within the budget again (after a
    /// [`Peeked::recharge`] raised them).
    pub fn settle(&mut self) {
        while self.used > self.budget && !self.table.is_empty() {
            self.evict_one();
        }
    }

    /// Marks a key recently used.
    pub fn mark<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(idx) = self.find(key)
            && let Some(slot) = self.slots[idx].as_mut()
        {
            slot.referenced = true;
        }
    }

    /// Inserts or replaces; evicts until the new entry fits. `cost` is the heap memory the
    /// key and value own (the fixed part is added here). An entry larger than the whole
    /// budget is not stored.
    pub fn insert(&mut self, key: K, value: V, cost: usize) {
        self.insert_hashed(self.hasher.hash_one(&key), key, value, cost);
    }

    /// [`Self::insert`] with the key's hash already made ([`Self::hash`]).
    pub fn insert_hashed(&mut self, hash: u64, key: K, value: V, cost: usize) {
        debug_assert_eq!(hash, self.hasher.hash_one(&key));
        let cost = cost + Self::overhead();
        if let Some(idx) = self.find_hashed(hash, &key) {
            self.remove_slot(idx, hash);
        }
        if cost > self.budget || cost > u32::MAX as usize {
            return;
        }
        while self.used + cost > self.budget && !self.table.is_empty() {
            self.evict_one();
        }
        let slot = Slot { key, value, cost: cost as u32, referenced: false };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(slot);
                i
            }
            None => {
                if self.slots.len() >= u32::MAX as usize {
                    return; // 4 billion entries: never with any budget a machine has
                }
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.table.insert_unique(hash, idx, |&i| slots[i as usize].as_ref().map_or(0, |s| hasher.hash_one(&s.key)));
        self.used += cost;
    }

    /// Applies `f` to the value of `key`, inserting `make()` (charged `cost`) first when
    /// the key is absent.
    pub fn upsert(&mut self, key: K, cost: usize, make: impl FnOnce() -> V, f: impl FnOnce(&mut V)) {
        if let Some(v) = self.get(&key) {
            f(v);
            return;
        }
        let mut v = make();
        f(&mut v);
        self.insert(key, v, cost);
    }

    /// Removes a key, returning its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.remove_hashed(self.hasher.hash_one(key), key)
    }

    /// [`Self::remove`] with the key's hash already made ([`Self::hash`]).
    pub fn remove_hashed<Q>(&mut self, hash: u64, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        debug_assert_eq!(hash, self.hasher.hash_one(key));
        let idx = self.find_hashed(hash, key)?;
        self.remove_slot(idx, hash)
    }

    /// Removes the entry in slot `idx`, whose key hashes to `hash`.
    fn remove_slot(&mut self, idx: usize, hash: u64) -> Option<V> {
        let found = self.table.find_entry(hash, |&i| i as usize == idx).map(|e| e.remove()).is_ok();
        debug_assert!(found, "slot {idx} was not in the table under its key's hash");
        let slot = self.slots.get_mut(idx)?.take()?;
        self.used -= slot.cost as usize;
        self.free.push(idx as u32);
        Some(slot.value)
    }

    fn evict_one(&mut self) {
        // Two sweeps at most: the first clears reference bits, the second must find a victim.
        for _ in 0..2 * self.slots.len() {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let idx = self.hand;
            self.hand += 1;
            if let Some(slot) = self.slots[idx].as_mut() {
                if slot.referenced {
                    slot.referenced = false;
                } else {
                    let hash = self.hasher.hash_one(&slot.key);
                    self.remove_slot(idx, hash);
                    self.evictions += 1;
                    return;
                }
            }
        }
    }

    /// A new budget (a reload); entries beyond a smaller one are evicted now. Past twice
    /// the new budget, evicting one by one would hold the caller for long (a 64 GiB
    /// cache cut to a few MiB): the cache starts empty instead, and the old contents are
    /// returned for the caller to free away from its lock and its event loop.
    #[must_use]
    pub fn set_budget(&mut self, budget: usize) -> Option<Self> {
        if self.used > budget.saturating_mul(2) {
            return Some(std::mem::replace(self, Self::with_hasher(budget, self.hasher.clone())));
        }
        self.budget = budget;
        while self.used > self.budget && !self.table.is_empty() {
            self.evict_one();
        }
        None
    }

    /// Keeps only the entries for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        let doomed: Vec<(usize, u64)> = (self.slots.iter().enumerate())
            .filter_map(|(i, s)| {
                s.as_ref().filter(|s| !keep(&s.key, &s.value)).map(|s| (i, self.hasher.hash_one(&s.key)))
            })
            .collect();
        for (idx, hash) in doomed {
            self.remove_slot(idx, hash);
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes charged (estimates plus overhead).
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// Entries evicted to make room since creation.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

/// An entry found by [`ClockCache::peek_hashed`], not marked used yet.
#[derive(Debug)]
pub struct Peeked<'a, V> {
    value: &'a mut V,
    referenced: &'a mut bool,
    cost: &'a mut u32,
    used: &'a mut usize,
    overhead: usize,
}

impl<V> Peeked<'_, V> {
    /// Marks the entry recently used (it served).
    pub fn mark(self) {
        *self.referenced = true;
    }

    /// The value, to change in place.
    pub fn value_mut(&mut self) -> &mut V {
        self.value
    }

    /// Charges the entry `cost` bytes (as [`ClockCache::insert`] would) instead of its
    /// charge so far; [`ClockCache::settle`] evicts if that took the cache past its
    /// budget.
    pub fn recharge(&mut self, cost: usize) {
        let cost = u32::try_from(cost + self.overhead).unwrap_or(u32::MAX);
        *self.used = *self.used - *self.cost as usize + cost as usize;
        *self.cost = cost;
    }
}

impl<V> std::ops::Deref for Peeked<'_, V> {
    type Target = V;
    fn deref(&self) -> &V {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_budget_and_prefers_referenced_entries() {
        let per = ClockCache::<u32, u32>::overhead() + 4;
        let mut c: ClockCache<u32, u32> = ClockCache::new(10 * per);
        for i in 0..10 {
            c.insert(i, i, 4);
        }
        assert_eq!(c.len(), 10);
        // Touch the even keys; inserting five more must evict only odd ones.
        for i in (0..10).step_by(2) {
            assert!(c.get(&i).is_some());
        }
        for i in 10..15 {
            c.insert(i, i, 4);
        }
        assert!(c.used_bytes() <= 10 * per);
        for i in (0..10).step_by(2) {
            assert!(c.get(&i).is_some(), "referenced key {i} was evicted");
        }
        assert_eq!(c.evictions(), 5);
        // A smaller budget (a reload) evicts at once; a larger one keeps what is there.
        assert!(c.set_budget(6 * per).is_none());
        assert_eq!((c.len(), c.used_bytes()), (6, 6 * per));
        assert!(c.set_budget(20 * per).is_none());
        assert_eq!(c.len(), 6);
        // Past twice the new budget: emptied at once, the old contents handed back.
        let old = c.set_budget(2 * per).expect("the old contents");
        assert_eq!((old.len(), c.len(), c.used_bytes()), (6, 0, 0));
    }

    #[test]
    fn replace_and_remove_keep_accounting_right() {
        let mut c: ClockCache<String, Vec<u8>> = ClockCache::new(1 << 20);
        c.insert("a".into(), vec![1], 100);
        c.insert("a".into(), vec![2], 50);
        assert_eq!(c.used_bytes(), 50 + ClockCache::<String, Vec<u8>>::overhead());
        assert_eq!(c.get("a").map(|v| v[0]), Some(2));
        assert_eq!(c.remove("a"), Some(vec![2]));
        assert_eq!(c.used_bytes(), 0);
        assert!(c.is_empty());
        c.insert("huge".into(), vec![], 2 << 20);
        assert!(c.is_empty(), "an entry larger than the budget is not stored");
    }

    /// An entry charged more in place (`recharge`) counts at once, and `settle` evicts
    /// others (unmarked first) until the cache is within its budget again.
    #[test]
    fn a_recharged_entry_counts_and_settle_evicts_back_under_the_budget() {
        let per = ClockCache::<u32, u32>::overhead() + 4;
        let mut c: ClockCache<u32, u32> = ClockCache::new(10 * per);
        for i in 0..10 {
            c.insert(i, i, 4);
        }
        let hash = c.hash(&3);
        let mut e = c.peek_hashed(hash, &3).unwrap();
        *e.value_mut() = 33;
        e.recharge(4 + 2 * per);
        e.mark();
        assert_eq!(c.used_bytes(), 12 * per);
        c.settle();
        assert_eq!((c.used_bytes(), c.len()), (10 * per, 8));
        assert_eq!(c.get(&3), Some(&mut 33), "the marked entry stays");
        assert!(c.peek_hashed(c.hash(&99), &99).is_none());
        // A cache emptied at once by a smaller budget keeps its hasher: a caller's hash
        // still finds what goes in after (debug builds check each given hash).
        let hash = c.hash(&5);
        assert!(c.set_budget(per).is_some());
        c.insert_hashed(hash, 5, 55, 4);
        assert_eq!(c.peek_hashed(hash, &5).map(|e| *e), Some(55));
    }

    #[test]
    fn retain_drops_matching() {
        let mut c: ClockCache<u32, u32> = ClockCache::new(1 << 20);
        for i in 0..100 {
            c.insert(i, i, 1);
        }
        c.retain(|k, _| k % 3 == 0);
        assert_eq!(c.len(), 34);
    }
}
