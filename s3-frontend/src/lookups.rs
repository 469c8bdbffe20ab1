//! The access keys, buckets and rights a frontend read, trusted for a short while.
//!
//! Every S3 request needs its key (for the signature, then for its rights), its bucket
//! (by name: the alias, then the bucket) and the key's rights on it before it touches an
//! object: five quorum reads that would come before the one the request is about. A
//! frontend keeps what it found for `[s3_api] catalog_cache_ms` (1 s by default) and reads
//! again after that.
//!
//! A bounded age rather than invalidation: keys, buckets and grants change through any
//! frontend and through the CLI's control plane, and no single place sees every change;
//! a one-second bound needs no new message between services and holds across restarts and
//! network cuts. What that means for users:
//! - What is created or granted is seen at once: only what was found is kept, never an
//!   absence (an unknown key, a missing bucket), and a missing right, a key's missing
//!   permission to create buckets or a bucket without a website found in the cache is read
//!   again before the request is refused. A secret that does not match the key kept makes
//!   the frontend forget the key (`forget_key`, from `http_layer`): requests signed with a
//!   rotated key's new secret may be refused until the first of them has been.
//! - What is deleted, revoked or changed elsewhere is seen by this frontend within the
//!   bound: a deleted key, a revoked right, a rotated secret's old value, quotas (a raised
//!   quota too), CORS rules. Requests that change a bucket (those needing the owner right)
//!   read it and the rights now, never from the cache, and a frontend forgets every bucket
//!   it keeps when it answers a bucket change (CreateBucket, `PutBucket*`, `DeleteBucket*`;
//!   `http_layer`), so its own clients read their writes under any of the bucket's names.
//! - Read-modify-write changes of the catalog never start from what is kept here: they
//!   read through `Store`.

use std::time::Duration;

use hangar_common::telemetry::metrics::{CacheLabel, metrics};
use hangar_model::Store;
use hangar_model::catalog::Rights;
use hangar_proto::model::{AccessKey, Bucket};
use moka::future::Cache;

/// Entries each cache holds at most (a catalog larger than that is read more often).
const CAPACITY: u64 = 10_000;

pub struct Lookups {
    store: Store,
    /// Access keys by id.
    keys: Option<Cache<String, AccessKey>>,
    /// Buckets by name (global alias).
    buckets: Option<Cache<String, Bucket>>,
    /// Rights by key id and bucket id; only non-empty ones.
    rights: Option<Cache<(String, Vec<u8>), Rights>>,
}

fn cache<K, V>(ttl: Duration) -> Option<Cache<K, V>>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    (!ttl.is_zero()).then(|| Cache::builder().max_capacity(CAPACITY).time_to_live(ttl).build())
}

/// What `cache` holds for `key`, counted as a hit or a miss of the cache named `name`.
async fn kept<K, V, Q>(cache: &Option<Cache<K, V>>, name: &'static str, key: &Q) -> Option<V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static + std::borrow::Borrow<Q>,
    V: Clone + Send + Sync + 'static,
    Q: std::hash::Hash + Eq + ?Sized,
{
    let found = match cache {
        Some(c) => c.get(key).await,
        None => None,
    };
    count(name, found.is_some());
    found
}

/// Counts a lookup as a hit or a miss of the cache named `name`.
fn count(name: &'static str, hit: bool) {
    let m = metrics();
    let family = if hit { &m.frontend_cache_hit_counter } else { &m.frontend_cache_miss_counter };
    family.get_or_create(&CacheLabel { cache: name }).inc();
}

impl Lookups {
    /// `ttl` zero reads everything on every request.
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self { store, keys: cache(ttl), buckets: cache(ttl), rights: cache(ttl) }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// An access key by id.
    pub async fn key(&self, id: &str) -> hangar_model::Result<Option<AccessKey>> {
        if let Some(k) = kept(&self.keys, "key", id).await {
            return Ok(Some(k));
        }
        self.fresh_key(id).await
    }

    /// An access key by id, read now (and kept).
    pub async fn fresh_key(&self, id: &str) -> hangar_model::Result<Option<AccessKey>> {
        let found = self.store.get_key(id).await?.map(|f| f.value);
        if let (Some(c), Some(k)) = (&self.keys, &found) {
            c.insert(id.to_string(), k.clone()).await;
        }
        Ok(found)
    }

    /// A bucket by its global name, and whether it came from the cache.
    pub async fn bucket(&self, name: &str) -> hangar_model::Result<(Option<Bucket>, bool)> {
        if let Some(b) = kept(&self.buckets, "bucket", name).await {
            return Ok((Some(b), true));
        }
        Ok((self.fresh_bucket(name).await?, false))
    }

    /// A bucket by its global name, read now (and kept).
    pub async fn fresh_bucket(&self, name: &str) -> hangar_model::Result<Option<Bucket>> {
        let found = self.store.bucket_by_name(name).await?;
        if let (Some(c), Some(b)) = (&self.buckets, &found) {
            c.insert(name.to_string(), b.clone()).await;
        }
        Ok(found)
    }

    /// The rights of `key` on the bucket `bucket_id` (every right for the root key), and
    /// whether they came from the cache.
    pub async fn rights(&self, key: &AccessKey, bucket_id: &[u8]) -> hangar_model::Result<(Rights, bool)> {
        if key.root {
            return Ok((Rights::ALL, false));
        }
        let id = (key.id.clone(), bucket_id.to_vec());
        if let Some(r) = kept(&self.rights, "rights", &id).await {
            return Ok((r, true));
        }
        Ok((self.fresh_rights(key, bucket_id).await?, false))
    }

    /// The rights of `key` on the bucket `bucket_id`, read now (and kept when not empty).
    pub async fn fresh_rights(&self, key: &AccessKey, bucket_id: &[u8]) -> hangar_model::Result<Rights> {
        if key.root {
            return Ok(Rights::ALL);
        }
        let found = self.store.rights(&key.id, bucket_id).await?;
        if let Some(c) = &self.rights
            && found.any()
        {
            c.insert((key.id.clone(), bucket_id.to_vec()), found).await;
        }
        Ok(found)
    }

    /// Forgets what is kept of the access key `id` (a request's signature did not match it).
    pub async fn forget_key(&self, id: &str) {
        if let Some(c) = &self.keys {
            c.invalidate(id).await;
        }
    }

    /// Forgets every bucket kept (one changed through this frontend: it may be kept under
    /// several names, and such changes are rare).
    pub fn forget_buckets(&self) {
        if let Some(c) = &self.buckets {
            c.invalidate_all();
        }
    }
}
