//! The account and asset dictionaries (`accounts`, `assets`): the history tables hold
//! their integer ids instead of 56-character strkeys.
//!
//! Ids are resolved before a batch's transaction starts, each lookup or insertion in its
//! own short autocommit statement: parallel backfill workers and the live writer never
//! wait on one another's long batch transactions for a dictionary row. New entries are
//! inserted idempotently (`ON CONFLICT DO NOTHING`) in sorted order, so two writers adding
//! overlapping sets cannot deadlock; entries left behind by a batch that later rolls back
//! are harmless (an address with an id and no history). Entries are never removed, so an
//! id is stable once seen and can be cached in process.
//!
//! The cache is bounded: two generations of at most [`CACHE_GENERATION`] entries per
//! dictionary. When the current generation is full it becomes the previous one (the
//! older previous one is dropped); a hit in the previous generation moves the entry
//! forward, so popular addresses stay cached.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use shared::asset::Asset;
use shared::payment::ParticipantAddress;
use shared::LedgerPayments;
use tokio_postgres::Client;

/// Entries per cache generation and dictionary: at most twice this many ids are cached
/// (about 100 MB for accounts at this size).
pub const CACHE_GENERATION: usize = 500_000;

/// A bounded map from keys to ids, in two generations.
#[derive(Debug)]
struct IdCache<K, V> {
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
    generation: usize,
}

impl<K: Hash + Eq + Copy, V: Copy> IdCache<K, V> {
    fn new(generation: usize) -> Self {
        Self {
            current: HashMap::new(),
            previous: HashMap::new(),
            generation: generation.max(1),
        }
    }

    fn get(&mut self, key: &K) -> Option<V> {
        if let Some(id) = self.current.get(key) {
            return Some(*id);
        }
        let id = self.previous.remove(key)?;
        self.insert(*key, id);
        Some(id)
    }

    fn insert(&mut self, key: K, id: V) {
        if self.current.len() >= self.generation {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, id);
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[derive(Debug)]
struct Caches {
    accounts: IdCache<ParticipantAddress, i64>,
    assets: IdCache<Asset, i32>,
}

/// The dictionaries' ids cached in process; cheap to clone (clones share the cache).
/// One value belongs to one database.
#[derive(Clone, Debug)]
pub struct Dictionaries {
    caches: Arc<Mutex<Caches>>,
}

impl Default for Dictionaries {
    fn default() -> Self {
        Self::with_generation(CACHE_GENERATION)
    }
}

/// The ids of every address and asset of one batch.
#[derive(Debug, Default)]
pub struct BatchIds {
    accounts: HashMap<ParticipantAddress, i64>,
    assets: HashMap<Asset, i32>,
}

impl BatchIds {
    /// The id of an address of the batch.
    pub fn account(&self, address: &ParticipantAddress) -> Option<i64> {
        self.accounts.get(address).copied()
    }

    /// The id of an asset of the batch.
    pub fn asset(&self, asset: &Asset) -> Option<i32> {
        self.assets.get(asset).copied()
    }
}

/// Why ids could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum DictionaryError {
    /// Postgres failed.
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// An entry was inserted (or found to exist) but cannot be read back: someone
    /// deleted dictionary rows.
    #[error("{table} entry {key:?} has no id after insertion")]
    Missing {
        /// The dictionary.
        table: &'static str,
        /// The key.
        key: String,
    },
}

impl Dictionaries {
    /// A cache keeping up to `generation` entries per generation and dictionary.
    pub fn with_generation(generation: usize) -> Self {
        Self {
            caches: Arc::new(Mutex::new(Caches {
                accounts: IdCache::new(generation),
                assets: IdCache::new(generation),
            })),
        }
    }

    /// Addresses and assets cached (both generations).
    pub fn cached(&self) -> (usize, usize) {
        let caches = self.lock();
        (caches.accounts.len(), caches.assets.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Caches> {
        self.caches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ids of every participant and asset of `ledgers`, adding the new ones to the
    /// dictionaries. Call it outside any transaction: each statement commits on its own.
    pub async fn resolve<'a>(
        &self,
        client: &Client,
        ledgers: impl IntoIterator<Item = &'a LedgerPayments>,
    ) -> Result<BatchIds, DictionaryError> {
        let mut addresses: HashSet<ParticipantAddress> = HashSet::new();
        let mut assets: HashSet<Asset> = HashSet::new();
        for payment in ledgers.into_iter().flat_map(|l| l.payments.iter()) {
            addresses.extend(payment.participants().iter().map(|p| p.address));
            assets.extend(payment.assets());
        }
        let mut ids = BatchIds::default();
        let mut missing_addresses = Vec::new();
        let mut missing_assets = Vec::new();
        {
            let mut caches = self.lock();
            for address in addresses {
                match caches.accounts.get(&address) {
                    Some(id) => {
                        ids.accounts.insert(address, id);
                    }
                    None => missing_addresses.push((address.to_strkey(), address)),
                }
            }
            for asset in assets {
                match caches.assets.get(&asset) {
                    Some(id) => {
                        ids.assets.insert(asset, id);
                    }
                    None => missing_assets.push((asset.canonical(), asset)),
                }
            }
        }
        let found_accounts = lookup_or_insert(client, &ACCOUNTS, &mut missing_addresses).await?;
        let found_assets = lookup_or_insert(client, &ASSETS, &mut missing_assets).await?;
        let mut caches = self.lock();
        for ((_, address), id) in missing_addresses.into_iter().zip(found_accounts) {
            caches.accounts.insert(address, id);
            ids.accounts.insert(address, id);
        }
        for ((_, asset), id) in missing_assets.into_iter().zip(found_assets) {
            let id = id as i32;
            caches.assets.insert(asset, id);
            ids.assets.insert(asset, id);
        }
        Ok(ids)
    }
}

/// The statements of one dictionary.
struct Table {
    name: &'static str,
    /// `$1` text[] of keys -> (1-based position, id or null) of each key. A correlated
    /// subquery, so every key is one probe of the unique index: a join lets the planner
    /// hash the whole dictionary for a few thousand keys, which grows with the table.
    select: &'static str,
    /// Adds the keys of `$1` (sorted) that are not present; returns (key, id) of those
    /// it added.
    insert: &'static str,
}

const ACCOUNTS: Table = Table {
    name: "accounts",
    select: "SELECT m.i, (SELECT d.id FROM accounts d WHERE d.address = m.k) \
             FROM unnest($1::text[]) WITH ORDINALITY AS m(k, i)",
    insert: "INSERT INTO accounts (address) \
             SELECT k FROM unnest($1::text[]) WITH ORDINALITY AS m(k, i) ORDER BY i \
             ON CONFLICT (address) DO NOTHING RETURNING address, id",
};

const ASSETS: Table = Table {
    name: "assets",
    select: "SELECT m.i, (SELECT d.id::bigint FROM assets d WHERE d.asset = m.k) \
             FROM unnest($1::text[]) WITH ORDINALITY AS m(k, i)",
    insert: "INSERT INTO assets (asset) \
             SELECT k FROM unnest($1::text[]) WITH ORDINALITY AS m(k, i) ORDER BY i \
             ON CONFLICT (asset) DO NOTHING RETURNING asset, id::bigint",
};

/// Ids of `keys` (text form, key), in the order `keys` ends up in (sorted by text).
/// Looks the keys up first (after a restart or a cache eviction most are there already),
/// inserts the rest in sorted order, and reads back those another writer added
/// meanwhile (the insertion returns only its own).
async fn lookup_or_insert<K>(
    client: &Client,
    table: &Table,
    keys: &mut [(String, K)],
) -> Result<Vec<i64>, DictionaryError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    // One order for every writer: concurrent insertions of overlapping sets wait on one
    // another at most, never in a cycle.
    keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut ids: Vec<Option<i64>> = vec![None; keys.len()];
    let texts: Vec<&str> = keys.iter().map(|(text, _)| text.as_str()).collect();
    select_into(client, table, &texts, |position| position, &mut ids).await?;
    let absent: Vec<usize> = (0..keys.len()).filter(|&i| ids[i].is_none()).collect();
    if !absent.is_empty() {
        let texts: Vec<&str> = absent.iter().map(|&i| keys[i].0.as_str()).collect();
        let position: HashMap<&str, usize> =
            absent.iter().map(|&i| (keys[i].0.as_str(), i)).collect();
        for row in client.query(table.insert, &[&texts]).await? {
            let text: &str = row.get(0);
            if let Some(&i) = position.get(text) {
                ids[i] = Some(row.get(1));
            }
        }
        let raced: Vec<usize> = absent.into_iter().filter(|&i| ids[i].is_none()).collect();
        if !raced.is_empty() {
            let texts: Vec<&str> = raced.iter().map(|&i| keys[i].0.as_str()).collect();
            select_into(client, table, &texts, |position| raced[position], &mut ids).await?;
        }
    }
    ids.into_iter()
        .zip(keys.iter())
        .map(|(id, (text, _))| {
            id.ok_or_else(|| DictionaryError::Missing {
                table: table.name,
                key: text.clone(),
            })
        })
        .collect()
}

/// Runs `table.select` for `texts`, storing each id found at `slot(position)`.
async fn select_into(
    client: &Client,
    table: &Table,
    texts: &[&str],
    slot: impl Fn(usize) -> usize,
    ids: &mut [Option<i64>],
) -> Result<(), tokio_postgres::Error> {
    for row in client.query(table.select, &[&texts]).await? {
        let position: i64 = row.get(0);
        let Some(id) = row.get::<_, Option<i64>>(1) else {
            continue;
        };
        if let Some(entry) = usize::try_from(position - 1)
            .ok()
            .map(&slot)
            .and_then(|i| ids.get_mut(i))
        {
            *entry = Some(id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keeps_at_most_two_generations_and_promotes_hits() {
        let mut cache: IdCache<u32, i64> = IdCache::new(2);
        cache.insert(1, 10);
        cache.insert(2, 20);
        cache.insert(3, 30); // {3} current, {1, 2} previous
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&1), Some(10)); // promoted: {3, 1}, previous {2}
        cache.insert(4, 40); // {4} current, {3, 1} previous; 2 dropped
        assert_eq!(cache.get(&2), None);
        assert_eq!(cache.get(&3), Some(30));
        assert_eq!(cache.get(&1), Some(10));
        assert_eq!(cache.get(&4), Some(40));
        assert!(cache.len() <= 4);
    }
}
