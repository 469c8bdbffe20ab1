//! The catalog: buckets, bucket names, access keys and the rights of keys on buckets.
//! Shared by the admin API and the S3 frontend so both apply the same rules.
//!
//! - A bucket name belongs to whoever wins its register (compare-and-swap); the alias
//!   table is a projection of the register, written after each change with the register's
//!   sequence number as timestamp, so an older projection never overwrites a newer one.
//!   A lookup that misses the alias asks the register and repairs the projection.
//! - Imported access key ids are claimed the same way (generated ones are random), and so
//!   are key names: no two keys share a name.
//! - A bucket may have several names (aliases): each is a register of its own.
//! - The root key holds every right on every bucket and cannot be deleted.
//! - A key's settings merge field by field; its rights are one entry per (bucket, key), each
//!   right a register of its own. Granting or revoking writes only what changes, without
//!   reading first, so concurrent grants never drop one another.

use hangar_common::ids::{new_access_key_id, new_secret_key, now_ms, random_id};
use hangar_common::{Error, Result};
use hangar_proto::metadata::{Entry, Table};
use hangar_proto::model::{
    AccessKey, Bucket, BucketAlias, CorsConfig, Grant, LifecycleConfig, NameClaim, Object, TagSet, WebsiteConfig,
};
use prost::Message;

use crate::Store;
use crate::cas::Change;
use crate::client::{Found, entry, stamp, tombstone};
use crate::keys::{KeyBuf, prefix_end};
use crate::schema::{
    AccessKeys, BucketAliases, BucketGrants, Buckets, ID_LEN, MultipartUploads, Objects, access_key_key, alias_key,
    bucket_key, grant_key, name_register, object_prefix, parse_alias_key, parse_grant_key,
};

/// Checks a bucket name against the S3 naming rules (the ones AWS enforces for new buckets).
pub fn validate_bucket_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Invalid(format!("invalid bucket name `{name}`: {why}")));
    if !(3..=63).contains(&name.len()) {
        return bad("must be 3 to 63 characters long");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
        return bad("only lowercase letters, digits, dots and hyphens are allowed");
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return bad("must begin and end with a letter or digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return bad("dots may not be doubled or next to hyphens");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("must not be formatted as an IP address");
    }
    Ok(())
}

/// Rights a key may hold on a bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rights {
    pub read: bool,
    pub write: bool,
    pub owner: bool,
}

impl Rights {
    pub const ALL: Rights = Rights { read: true, write: true, owner: true };

    pub fn of(g: &Grant) -> Rights {
        Rights { read: g.read, write: g.write, owner: g.owner }
    }

    pub fn any(self) -> bool {
        self.read || self.write || self.owner
    }
}

/// The outcome of CreateBucket.
pub enum Created {
    /// The name is ours: the new bucket.
    New(Bucket),
    /// The name belongs to this bucket already.
    Taken(Bucket),
}

fn key_register(id: &str) -> Vec<u8> {
    KeyBuf::new().str("access-key-id").str(id).finish()
}

fn key_name_register(name: &str) -> Vec<u8> {
    KeyBuf::new().str("access-key-name").str(name).finish()
}

/// Checks a key name: 1 to 128 printable characters (spaces allowed inside).
pub fn validate_key_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) || name.trim() != name {
        return Err(Error::Invalid(format!(
            "invalid key name `{}`: use 1 to 128 printable characters without leading or trailing spaces",
            name.escape_debug()
        )));
    }
    Ok(())
}

fn validate_secret(secret: &str) -> Result<()> {
    if secret.len() < 8 || secret.len() > 128 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::Invalid("secret key must be 8 to 128 printable characters".into()));
    }
    Ok(())
}

/// A name register's value as the id it names (bucket id bytes, or key id text).
fn claimed(c: &NameClaim) -> Option<&[u8]> {
    (!c.bucket_id.is_empty()).then_some(c.bucket_id.as_ref())
}

/// The alias projection of a name's register value.
fn alias_entry(name: &str, claim: &NameClaim) -> Entry {
    let mut e = if claim.bucket_id.is_empty() {
        tombstone(alias_key(name), None)
    } else {
        entry(alias_key(name), &BucketAlias { bucket_id: claim.bucket_id.clone() }, None)
    };
    e.timestamp = claim.seq;
    e.tiebreak = 0;
    e
}

impl Store {
    /// Writes an entry read at `timestamp` whose changed fields carry newer field
    /// timestamps, at that same entry timestamp: the field registers win by their own
    /// timestamps when merged, and a deletion made meanwhile (a newer tombstone) still
    /// wins, so a settings change never brings a deleted key or bucket back.
    async fn update_fields<T: Message>(&self, table: Table, key: Vec<u8>, timestamp: u64, value: &T) -> Result<()> {
        let mut e = entry(key, value, None);
        e.timestamp = timestamp;
        self.tables.insert(table, vec![e]).await
    }

    // ---- buckets -------------------------------------------------------------------------

    pub async fn bucket_by_id(&self, id: &[u8]) -> Result<Option<Bucket>> {
        if id.len() != ID_LEN {
            return Ok(None);
        }
        Ok(self.tables.get::<Buckets>(&bucket_key(id)).await?.map(|f| f.value))
    }

    /// The bucket a name points at, if any.
    pub async fn bucket_by_name(&self, name: &str) -> Result<Option<Bucket>> {
        if let Some(alias) = self.tables.get::<BucketAliases>(&alias_key(name)).await?
            && let Some(b) = self.bucket_by_id(&alias.value.bucket_id).await?
        {
            return Ok(Some(b));
        }
        // The projection may lag its register (a frontend died in between): ask the
        // register, without taking part in it, and repair the projection.
        if validate_bucket_name(name).is_err() {
            return Ok(None);
        }
        match self.registers.peek::<NameClaim>(&name_register(name)).await {
            Ok(Some(claim)) if !claim.bucket_id.is_empty() => {
                let found = self.bucket_by_id(&claim.bucket_id).await?;
                if found.is_some() {
                    self.tables.insert(Table::BucketAlias, vec![alias_entry(name, &claim)]).await?;
                }
                Ok(found)
            }
            Ok(_) | Err(Error::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A bucket by name, or by its hex id.
    pub async fn resolve_bucket(&self, name_or_id: &str) -> Result<Bucket> {
        if let Some(b) = self.bucket_by_name(name_or_id).await? {
            return Ok(b);
        }
        if let Ok(id) = hex::decode(name_or_id)
            && let Some(b) = self.bucket_by_id(&id).await?
        {
            return Ok(b);
        }
        Err(Error::NotFound(format!("bucket `{name_or_id}`")))
    }

    pub async fn list_buckets(&self) -> Result<Vec<Bucket>> {
        let mut v: Vec<Bucket> = self.tables.scan_prefix::<Buckets>(b"").await?.into_iter().map(|f| f.value).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// Creates a bucket named `name` unless the name is taken; `owner` (a key id) gets every
    /// right on a new bucket. Two creations of one name racing anywhere: exactly one wins.
    pub async fn create_bucket(&self, name: &str, owner: Option<&str>) -> Result<Created> {
        validate_bucket_name(name)?;
        let bucket =
            Bucket { id: random_id().into(), name: name.to_string(), created_ms: now_ms(), ..Default::default() };
        // The bucket entry and its owner's rights go first: a name never points at a bucket
        // that does not exist, and a creator never wins a name without its rights on it.
        self.tables.put::<Buckets>(bucket_key(&bucket.id), &bucket, None).await?;
        if let Some(key_id) = owner {
            self.set_rights(key_id, &bucket.id, Rights::ALL, true).await?;
        }
        let ours = bucket.id.to_vec();
        let mut claim = self.claim_name(name, &ours, None).await;
        if let Ok(c) = &claim
            && c.bucket_id != ours
            && self.bucket_by_id(&c.bucket_id).await?.is_none()
        {
            // The name points at a bucket that is gone (its creator lost its entry after the
            // claim was decided): take the name over from it.
            claim = self.claim_name(name, &ours, Some(c.bucket_id.to_vec())).await;
        }
        let claim = match claim {
            Ok(c) => c,
            Err(e) => {
                // The claim may still commit later (an Accept reached a minority): keep the
                // bucket and its rights unless the register settles on another bucket.
                if let Ok(c) = self
                    .registers
                    .update::<NameClaim, _>(&name_register(name), |cur| (Change::Keep, cur.cloned()))
                    .await
                    && c.is_none_or(|c| c.bucket_id != ours)
                {
                    self.forget_bucket(&ours, owner).await;
                }
                return Err(e);
            }
        };
        self.tables.insert(Table::BucketAlias, vec![alias_entry(name, &claim)]).await?;
        if claim.bucket_id != ours {
            self.forget_bucket(&ours, owner).await;
            let winner = self
                .bucket_by_id(&claim.bucket_id)
                .await?
                .ok_or_else(|| Error::Unavailable(format!("bucket `{name}` is being created or deleted; retry")))?;
            return Ok(Created::Taken(winner));
        }
        Ok(Created::New(bucket))
    }

    /// Claims `name` for bucket `ours` when it is free (or held by `dead`, a bucket that no
    /// longer exists); the register's value after the update either way.
    async fn claim_name(&self, name: &str, ours: &[u8], dead: Option<Vec<u8>>) -> Result<NameClaim> {
        self.registers
            .update::<NameClaim, _>(&name_register(name), |cur| match cur {
                Some(c) if !c.bucket_id.is_empty() && dead.as_deref() != Some(c.bucket_id.as_ref()) => {
                    (Change::Keep, c.clone())
                }
                cur => {
                    let next = NameClaim { bucket_id: ours.to_vec().into(), seq: cur.map(|c| c.seq).unwrap_or(0) + 1 };
                    (Change::Set(next.clone()), next)
                }
            })
            .await
    }

    /// Removes a bucket entry that lost its name, and its owner's rights (best effort: an
    /// entry left behind is a bucket no name points at).
    async fn forget_bucket(&self, id: &[u8], owner: Option<&str>) {
        if let Err(e) = self.tables.delete::<Buckets>(bucket_key(id), None).await {
            tracing::warn!(error = %e, "could not remove a bucket that lost its name");
        }
        if let Some(key_id) = owner
            && let Err(e) = self.tables.delete::<BucketGrants>(grant_key(id, key_id), None).await
        {
            tracing::warn!(error = %e, "could not remove rights on a bucket that lost its name");
        }
    }

    pub async fn bucket_is_empty(&self, id: &[u8]) -> Result<bool> {
        let prefix = object_prefix(id, "");
        let (page, _) = self.tables.range::<Objects>(prefix.clone(), prefix_end(&prefix), 1).await?;
        Ok(page.is_empty())
    }

    /// Deletes an empty bucket, frees its names, and drops every grant on it. Conflict when
    /// it holds objects.
    pub async fn delete_bucket(&self, bucket: &Bucket) -> Result<()> {
        if !self.bucket_is_empty(&bucket.id).await? {
            return Err(Error::Conflict(format!("bucket `{}` is not empty", bucket.name)));
        }
        let mut names = self.aliases_of(&bucket.id).await?;
        if !names.contains(&bucket.name) {
            names.push(bucket.name.clone());
        }
        for name in names {
            self.release_name(&name, &bucket.id).await?;
        }
        self.tables.delete::<Buckets>(bucket_key(&bucket.id), None).await?;
        let grants = self.tables.scan_prefix::<BucketGrants>(&bucket.id).await?;
        let tombs = grants.into_iter().map(|g| tombstone(g.key, Some(g.timestamp))).collect::<Vec<_>>();
        if !tombs.is_empty() {
            self.tables.insert(Table::BucketGrant, tombs).await?;
        }
        Ok(())
    }

    /// Frees `name` if it points at bucket `id`, and projects the register's value (also
    /// when it was free already: a retry repairs a projection a crash left behind).
    async fn release_name(&self, name: &str, id: &[u8]) -> Result<()> {
        let claim = self
            .registers
            .update::<NameClaim, _>(&name_register(name), |cur| match cur {
                Some(c) if c.bucket_id == id => {
                    let next = NameClaim { bucket_id: Default::default(), seq: c.seq + 1 };
                    (Change::Set(next.clone()), Some(next))
                }
                cur => (Change::Keep, cur.cloned()),
            })
            .await?;
        if let Some(c) = claim {
            self.tables.insert(Table::BucketAlias, vec![alias_entry(name, &c)]).await?;
        }
        Ok(())
    }

    /// Every name of a bucket (an admin call: scans the name table).
    pub async fn aliases_of(&self, id: &[u8]) -> Result<Vec<String>> {
        Ok(self.all_aliases().await?.into_iter().filter(|(_, b)| b == id).map(|(n, _)| n).collect())
    }

    /// Every bucket name and the bucket it points at, in name order.
    pub async fn all_aliases(&self) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self
            .tables
            .scan_prefix::<BucketAliases>(b"")
            .await?
            .into_iter()
            .filter_map(|f| Some((parse_alias_key(&f.key)?, f.value.bucket_id.to_vec())))
            .collect())
    }

    /// Gives a bucket one more name. Conflict when another bucket holds it.
    pub async fn add_alias(&self, bucket: &Bucket, name: &str) -> Result<()> {
        validate_bucket_name(name)?;
        let mut claim = self.claim_name(name, &bucket.id, None).await?;
        if claim.bucket_id != bucket.id && self.bucket_by_id(&claim.bucket_id).await?.is_none() {
            claim = self.claim_name(name, &bucket.id, Some(claim.bucket_id.to_vec())).await?;
        }
        self.tables.insert(Table::BucketAlias, vec![alias_entry(name, &claim)]).await?;
        if claim.bucket_id != bucket.id {
            return Err(Error::Conflict(format!("the name `{name}` belongs to another bucket")));
        }
        Ok(())
    }

    /// Takes a name from a bucket; the last name of a bucket stays (delete the bucket
    /// instead).
    pub async fn remove_alias(&self, bucket: &Bucket, name: &str) -> Result<()> {
        let names = self.aliases_of(&bucket.id).await?;
        if !names.iter().any(|n| n == name) {
            return Err(Error::NotFound(format!("bucket `{}` has no name `{name}`", bucket.name)));
        }
        if names.len() < 2 {
            return Err(Error::Invalid(format!(
                "`{name}` is the last name of its bucket; a bucket keeps at least one (delete the bucket instead)"
            )));
        }
        self.release_name(name, &bucket.id).await
    }

    /// Changes settings of a bucket's current value; each setting `change` touches must
    /// renew its own timestamp, so concurrent changes of different settings both survive.
    async fn change_bucket(&self, bucket: &Bucket, change: impl FnOnce(&mut Bucket)) -> Result<Bucket> {
        let cur = self.tables.get::<Buckets>(&bucket_key(&bucket.id)).await?;
        let Some(cur) = cur else { return Err(Error::NotFound(format!("bucket `{}`", bucket.name))) };
        let mut b = cur.value;
        change(&mut b);
        self.update_fields(Table::Bucket, cur.key, cur.timestamp, &b).await?;
        Ok(b)
    }

    /// Sets a bucket's quotas (0: no limit); each one a register of its own.
    pub async fn set_quotas(&self, bucket: &Bucket, max_size: Option<u64>, max_objects: Option<u64>) -> Result<Bucket> {
        self.change_bucket(bucket, |b| {
            if let Some(v) = max_size {
                b.max_size = v;
                b.max_size_ts = stamp(Some(b.max_size_ts));
            }
            if let Some(v) = max_objects {
                b.max_objects = v;
                b.max_objects_ts = stamp(Some(b.max_objects_ts));
            }
        })
        .await
    }

    /// Sets or removes (None) a bucket's tags.
    pub async fn set_bucket_tags(&self, bucket: &Bucket, tags: Option<TagSet>) -> Result<()> {
        self.change_bucket(bucket, |b| {
            b.tags = tags;
            b.tags_ts = stamp(Some(b.tags_ts));
        })
        .await
        .map(drop)
    }

    /// Sets or removes (None) a bucket's CORS rules.
    pub async fn set_bucket_cors(&self, bucket: &Bucket, cors: Option<CorsConfig>) -> Result<()> {
        self.change_bucket(bucket, |b| {
            b.cors = cors;
            b.cors_ts = stamp(Some(b.cors_ts));
        })
        .await
        .map(drop)
    }

    /// Sets or removes (None) a bucket's website configuration.
    pub async fn set_bucket_website(&self, bucket: &Bucket, website: Option<WebsiteConfig>) -> Result<()> {
        self.change_bucket(bucket, |b| {
            b.website = website;
            b.website_ts = stamp(Some(b.website_ts));
        })
        .await
        .map(drop)
    }

    /// Sets or removes (None) a bucket's lifecycle rules.
    pub async fn set_bucket_lifecycle(&self, bucket: &Bucket, lifecycle: Option<LifecycleConfig>) -> Result<()> {
        self.change_bucket(bucket, |b| {
            b.lifecycle = lifecycle;
            b.lifecycle_ts = stamp(Some(b.lifecycle_ts));
        })
        .await
        .map(drop)
    }

    /// Aborts the multipart uploads of a bucket started before `before_ms`; how many.
    pub async fn abort_uploads_before(&self, bucket_id: &[u8], before_ms: u64) -> Result<u64> {
        let uploads = self.tables.scan_prefix::<MultipartUploads>(bucket_id).await?;
        let mut aborted = 0;
        for u in uploads.into_iter().filter(|u| u.value.initiated_ms < before_ms) {
            let Some(id) = crate::multipart::parse_upload_id(&u.value.upload_id) else { continue };
            if matches!(self.abort_upload(bucket_id, &u.value.key, &id).await?, crate::multipart::Outcome::Aborted) {
                aborted += 1;
            }
        }
        Ok(aborted)
    }

    /// Multipart uploads in progress in a bucket.
    pub async fn upload_count(&self, bucket_id: &[u8]) -> Result<u64> {
        Ok(self.tables.scan_prefix::<MultipartUploads>(bucket_id).await?.len() as u64)
    }

    /// Objects and bytes in a bucket (a full scan: an admin call, not a hot path).
    pub async fn bucket_usage(&self, id: &[u8]) -> Result<(u64, u64)> {
        let objects: Vec<Found<Object>> = self.tables.scan_prefix::<Objects>(&object_prefix(id, "")).await?;
        Ok((objects.len() as u64, objects.iter().map(|o| o.value.size).sum()))
    }

    // ---- keys ----------------------------------------------------------------------------

    pub async fn get_key(&self, id: &str) -> Result<Option<Found<AccessKey>>> {
        self.tables.get::<AccessKeys>(&access_key_key(id)).await
    }

    pub async fn list_keys(&self) -> Result<Vec<Found<AccessKey>>> {
        self.tables.scan_prefix::<AccessKeys>(b"").await
    }

    /// A key by id, or by its name.
    pub async fn find_key(&self, id_or_name: &str) -> Result<Found<AccessKey>> {
        if let Some(k) = self.get_key(id_or_name).await? {
            return Ok(k);
        }
        let claim = match self.registers.peek::<NameClaim>(&key_name_register(id_or_name)).await {
            Ok(c) => c,
            Err(Error::Conflict(_)) => None,
            Err(e) => return Err(e),
        };
        if let Some(c) = &claim
            && let Some(id) = claimed(c)
            && let Some(k) = self.get_key(&String::from_utf8_lossy(id)).await?
            && k.value.name == id_or_name
        {
            return Ok(k);
        }
        // A key whose name was never claimed (made before names were registered): by its
        // name when no other key has it.
        if claim.as_ref().and_then(claimed).is_none() {
            let mut named: Vec<_> =
                self.list_keys().await?.into_iter().filter(|k| k.value.name == id_or_name).collect();
            if named.len() == 1 {
                return Ok(named.remove(0));
            }
        }
        Err(Error::NotFound(format!("access key `{id_or_name}` (no key has this id or name)")))
    }

    /// Creates a key with the given or fresh credentials, named `name` (unique among keys).
    /// A root key holds every right on every bucket and cannot be deleted.
    pub async fn create_key(
        &self,
        name: &str,
        id: Option<&str>,
        secret: Option<&str>,
        root: bool,
    ) -> Result<AccessKey> {
        validate_key_name(name)?;
        let imported = id.is_some();
        let id = id.map(str::to_string).unwrap_or_else(new_access_key_id);
        let secret = secret.map(str::to_string).unwrap_or_else(new_secret_key);
        if id.len() < 3 || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::Invalid(format!("access key id `{id}` must be 3 to 128 letters or digits")));
        }
        validate_secret(&secret)?;
        if imported {
            // An imported id may be given twice at once: one claim wins.
            let won = self
                .registers
                .update::<NameClaim, _>(&key_register(&id), |cur| match cur {
                    Some(c) if !c.bucket_id.is_empty() => (Change::Keep, false),
                    cur => {
                        let seq = cur.map(|c| c.seq).unwrap_or(0) + 1;
                        (Change::Set(NameClaim { bucket_id: id.clone().into_bytes().into(), seq }), true)
                    }
                })
                .await?;
            if !won || self.get_key(&id).await?.is_some() {
                return Err(Error::Conflict(format!("access key `{id}` already exists")));
            }
        }
        let ts = stamp(None);
        let key = AccessKey {
            id: id.clone(),
            secret,
            created_ms: now_ms(),
            name: name.to_string(),
            name_ts: ts,
            allow_create_bucket: root,
            allow_create_bucket_ts: ts,
            secret_ts: ts,
            root,
        };
        // The entry goes first, then the name: a name never points at a key that does not
        // exist, so a claim whose key is gone (or renamed) may be taken over.
        self.tables.put::<AccessKeys>(access_key_key(&id), &key, None).await?;
        if let Err(e) = self.claim_key_name(name, &id).await {
            if let Err(e) = self.tables.delete::<AccessKeys>(access_key_key(&id), None).await {
                tracing::warn!(error = %e, "could not remove a key that lost its name");
            }
            if imported {
                self.release_key_claim(&key_register(&id), &id).await?;
            }
            return Err(e);
        }
        Ok(key)
    }

    /// Claims key name `name` for key `id`. Conflict when another live key holds it.
    async fn claim_key_name(&self, name: &str, id: &str) -> Result<()> {
        let ours = id.as_bytes().to_vec();
        let mut dead: Option<Vec<u8>> = None;
        loop {
            let c = self
                .registers
                .update::<NameClaim, _>(&key_name_register(name), |cur| match cur {
                    Some(c) if claimed(c).is_some_and(|h| h != ours && Some(h) != dead.as_deref()) => {
                        (Change::Keep, c.clone())
                    }
                    cur => {
                        let next =
                            NameClaim { bucket_id: ours.clone().into(), seq: cur.map(|c| c.seq).unwrap_or(0) + 1 };
                        (Change::Set(next.clone()), next)
                    }
                })
                .await?;
            let Some(holder) = claimed(&c).filter(|h| *h != ours) else { return Ok(()) };
            let holder = String::from_utf8_lossy(holder).to_string();
            let alive = self.get_key(&holder).await?.is_some_and(|k| k.value.name == name);
            if alive || dead.is_some() {
                return Err(Error::Conflict(format!("a key named `{name}` exists already ({holder})")));
            }
            dead = Some(holder.into_bytes());
        }
    }

    /// Frees a key's claim (its imported id, or a name) if the register names key `id`.
    async fn release_key_claim(&self, register: &[u8], id: &str) -> Result<()> {
        self.registers
            .update::<NameClaim, _>(register, |cur| match cur {
                Some(c) if claimed(c) == Some(id.as_bytes()) => {
                    (Change::Set(NameClaim { bucket_id: Default::default(), seq: c.seq + 1 }), ())
                }
                _ => (Change::Keep, ()),
            })
            .await
    }

    /// Deletes a key and its grants, and frees its id and name. The root key stays.
    pub async fn delete_key(&self, id_or_name: &str) -> Result<()> {
        let k = self.find_key(id_or_name).await?;
        if k.value.root {
            return Err(Error::Invalid(format!(
                "{} is the root key and cannot be deleted (give it a new secret with `hangar key rotate {}`)",
                k.value.id, k.value.id
            )));
        }
        let id = k.value.id.clone();
        self.tables.delete::<AccessKeys>(k.key, Some(k.timestamp)).await?;
        let tombs: Vec<Entry> = self
            .all_grants()
            .await?
            .into_iter()
            .filter(|(_, key_id, _)| *key_id == id)
            .map(|(b, key_id, g)| tombstone(grant_key(&b, &key_id), Some(g.timestamp)))
            .collect();
        if !tombs.is_empty() {
            self.tables.insert(Table::BucketGrant, tombs).await?;
        }
        self.release_key_claim(&key_name_register(&k.value.name), &id).await?;
        self.release_key_claim(&key_register(&id), &id).await
    }

    /// Gives a key a new name; the old one is freed.
    pub async fn rename_key(&self, id_or_name: &str, new_name: &str) -> Result<AccessKey> {
        validate_key_name(new_name)?;
        let k = self.find_key(id_or_name).await?;
        let old = k.value.name.clone();
        if old == new_name {
            return Ok(k.value);
        }
        // As at creation, the entry shows the name before the name is claimed: a claim is
        // only ever taken over from a key whose entry no longer shows the name.
        let mut key = k.value;
        key.name = new_name.to_string();
        key.name_ts = stamp(Some(key.name_ts));
        self.update_fields(Table::AccessKey, k.key.clone(), k.timestamp, &key).await?;
        if let Err(e) = self.claim_key_name(new_name, &key.id).await {
            // Back to the old name, claimed again: while the entry showed the new one, a
            // racing creation may have taken the old name over; then the key keeps its
            // id as its name.
            key.name = if self.claim_key_name(&old, &key.id).await.is_ok() { old } else { key.id.clone() };
            key.name_ts = stamp(Some(key.name_ts));
            self.update_fields(Table::AccessKey, k.key, k.timestamp, &key).await?;
            return Err(e);
        }
        self.release_key_claim(&key_name_register(&old), &key.id).await?;
        Ok(key)
    }

    /// Marks a key as the root key (for a root key made before keys were marked).
    pub async fn mark_root(&self, id_or_name: &str) -> Result<AccessKey> {
        let k = self.find_key(id_or_name).await?;
        let mut key = k.value;
        key.root = true;
        key.allow_create_bucket = true;
        key.allow_create_bucket_ts = stamp(Some(key.allow_create_bucket_ts));
        self.update_fields(Table::AccessKey, k.key, k.timestamp, &key).await?;
        Ok(key)
    }

    /// Gives a key a new secret (generated, or the one given).
    pub async fn rotate_secret(&self, id_or_name: &str, secret: Option<&str>) -> Result<AccessKey> {
        let k = self.find_key(id_or_name).await?;
        let secret = secret.map(str::to_string).unwrap_or_else(new_secret_key);
        validate_secret(&secret)?;
        let mut key = k.value;
        key.secret = secret;
        key.secret_ts = stamp(Some(key.secret_ts));
        self.update_fields(Table::AccessKey, k.key, k.timestamp, &key).await?;
        Ok(key)
    }

    /// Sets the create-bucket setting (only that field: concurrent changes of other settings
    /// survive).
    pub async fn set_allow_create_bucket(&self, id_or_name: &str, allow: bool) -> Result<AccessKey> {
        let k = self.find_key(id_or_name).await?;
        let mut key = k.value;
        key.allow_create_bucket = allow;
        key.allow_create_bucket_ts = stamp(Some(key.allow_create_bucket_ts));
        self.update_fields(Table::AccessKey, k.key, k.timestamp, &key).await?;
        Ok(key)
    }

    // ---- grants --------------------------------------------------------------------------

    /// The rights of a key on a bucket: every right for the root key.
    pub async fn key_rights(&self, key: &AccessKey, bucket_id: &[u8]) -> Result<Rights> {
        if key.root {
            return Ok(Rights::ALL);
        }
        self.rights(&key.id, bucket_id).await
    }

    /// The rights granted to a key on a bucket.
    pub async fn rights(&self, key_id: &str, bucket_id: &[u8]) -> Result<Rights> {
        Ok(self
            .tables
            .get::<BucketGrants>(&grant_key(bucket_id, key_id))
            .await?
            .map(|g| Rights::of(&g.value))
            .unwrap_or_default())
    }

    /// Grants (allow) or revokes (!allow) the rights named in `which`; the others stay as
    /// they are. A blind write of the changed rights only: nothing is read first.
    pub async fn set_rights(&self, key_id: &str, bucket_id: &[u8], which: Rights, allow: bool) -> Result<()> {
        let ts = stamp(None);
        let pick = |named: bool| if named { (allow, ts) } else { (false, 0) };
        let ((read, read_ts), (write, write_ts), (owner, owner_ts)) =
            (pick(which.read), pick(which.write), pick(which.owner));
        let g = Grant { read, read_ts, write, write_ts, owner, owner_ts };
        let mut e = entry(grant_key(bucket_id, key_id), &g, None);
        e.timestamp = ts;
        self.tables.insert(Table::BucketGrant, vec![e]).await
    }

    /// Every grant: (bucket id, key id, grant).
    pub async fn all_grants(&self) -> Result<Vec<(Vec<u8>, String, Found<Grant>)>> {
        Ok(self
            .tables
            .scan_prefix::<BucketGrants>(b"")
            .await?
            .into_iter()
            .filter_map(|g| parse_grant_key(&g.key).map(|(b, k)| (b, k, g)))
            .collect())
    }

    /// The grants on one bucket: (key id, rights), keys with no right left omitted.
    pub async fn grants_on(&self, bucket_id: &[u8]) -> Result<Vec<(String, Rights)>> {
        Ok(self
            .tables
            .scan_prefix::<BucketGrants>(bucket_id)
            .await?
            .into_iter()
            .filter_map(|g| parse_grant_key(&g.key).map(|(_, k)| (k, Rights::of(&g.value))))
            .filter(|(_, r)| r.any())
            .collect())
    }

    /// The buckets a key holds some right on: (bucket id, rights).
    pub async fn grants_of(&self, key_id: &str) -> Result<Vec<(Vec<u8>, Rights)>> {
        Ok(self
            .all_grants()
            .await?
            .into_iter()
            .filter(|(_, k, g)| k == key_id && Rights::of(&g.value).any())
            .map(|(b, _, g)| (b, Rights::of(&g.value)))
            .collect())
    }
}

/// Decodes a value, for callers holding raw entries.
pub fn decode<T: Message + Default>(e: &Entry) -> Option<T> {
    (!e.tombstone).then(|| T::decode(e.value.as_ref()).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::validate_bucket_name as v;

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket.1", "a1b", "0aa"] {
            assert!(v(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "Abc", "a_b", "-ab", "ab-", "a..b", "192.168.1.1", &"a".repeat(64), "a.-b"] {
            assert!(v(bad).is_err(), "{bad}");
        }
    }
}
