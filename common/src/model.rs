//! The catalog: buckets, bucket names and access keys, over the metadata tables.
//! Shared by the admin API and the S3 frontend so both apply the same rules.

use hangar_proto::metadata::Table;
use hangar_proto::model::{AccessKey, Bucket, BucketAlias, BucketPermission};

use crate::ids::{new_access_key_id, new_secret_key, now_ms, random_id};
use crate::meta_client::{Found, MetaClient, prefix_end};
use crate::{Error, Result};

#[derive(Clone)]
pub struct Catalog {
    pub meta: MetaClient,
}

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

impl Catalog {
    pub fn new(meta: MetaClient) -> Self {
        Self { meta }
    }

    pub async fn bucket_by_name(&self, name: &str) -> Result<Option<Bucket>> {
        let Some(alias) = self.meta.get::<BucketAlias>(Table::BucketAlias, name.as_bytes()).await? else {
            return Ok(None);
        };
        Ok(self.bucket_by_id(&alias.value.bucket_id).await?.filter(|b| b.name == name))
    }

    pub async fn bucket_by_id(&self, id: &[u8]) -> Result<Option<Bucket>> {
        Ok(self.meta.get::<Bucket>(Table::Bucket, id).await?.map(|f| f.value))
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
        let mut v: Vec<Bucket> =
            self.meta.scan_prefix::<Bucket>(Table::Bucket, b"").await?.into_iter().map(|f| f.value).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// Creates a bucket; `owner` (a key id) gets read, write and owner rights on it.
    /// Fails with Conflict when the name is taken.
    pub async fn create_bucket(&self, name: &str, owner: Option<&str>) -> Result<Bucket> {
        validate_bucket_name(name)?;
        let bucket = Bucket { id: random_id().into(), name: name.to_string(), created_ms: now_ms() };
        // The bucket entry goes first: a name never points at a bucket that does not exist.
        self.meta.put(Table::Bucket, bucket.id.to_vec(), &bucket, None).await?;
        let alias = BucketAlias { bucket_id: bucket.id.clone() };
        if !self.meta.put_if_absent(Table::BucketAlias, name.as_bytes().to_vec(), &alias).await? {
            self.meta.delete(Table::Bucket, bucket.id.to_vec(), None).await?;
            return Err(Error::Conflict(format!("bucket `{name}` already exists")));
        }
        if let Some(key_id) = owner {
            let all = BucketPermission { read: true, write: true, owner: true };
            self.set_bucket_permission(key_id, &bucket.id, all, true).await?;
        }
        Ok(bucket)
    }

    pub async fn bucket_is_empty(&self, id: &[u8]) -> Result<bool> {
        let (page, _) =
            self.meta.range::<hangar_proto::model::Object>(Table::Object, id.to_vec(), prefix_end(id), 1).await?;
        Ok(page.is_empty())
    }

    /// Deletes an empty bucket and every grant on it. Conflict when it holds objects.
    pub async fn delete_bucket(&self, bucket: &Bucket) -> Result<()> {
        if !self.bucket_is_empty(&bucket.id).await? {
            return Err(Error::Conflict(format!("bucket `{}` is not empty", bucket.name)));
        }
        self.meta.delete(Table::BucketAlias, bucket.name.as_bytes().to_vec(), None).await?;
        self.meta.delete(Table::Bucket, bucket.id.to_vec(), None).await?;
        let hex_id = hex::encode(&bucket.id);
        for k in self.list_keys().await? {
            if k.value.buckets.contains_key(&hex_id) {
                let mut key = k.value;
                key.buckets.remove(&hex_id);
                self.meta.put(Table::AccessKey, k.key, &key, Some(k.timestamp)).await?;
            }
        }
        Ok(())
    }

    pub async fn get_key(&self, id: &str) -> Result<Option<Found<AccessKey>>> {
        self.meta.get::<AccessKey>(Table::AccessKey, id.as_bytes()).await
    }

    pub async fn list_keys(&self) -> Result<Vec<Found<AccessKey>>> {
        self.meta.scan_prefix::<AccessKey>(Table::AccessKey, b"").await
    }

    /// A key by id, or by a name no other key has.
    pub async fn find_key(&self, id_or_name: &str) -> Result<Found<AccessKey>> {
        if let Some(k) = self.get_key(id_or_name).await? {
            return Ok(k);
        }
        let mut named: Vec<_> = self.list_keys().await?.into_iter().filter(|k| k.value.name == id_or_name).collect();
        match named.len() {
            1 => Ok(named.remove(0)),
            0 => Err(Error::NotFound(format!("access key `{id_or_name}`"))),
            n => Err(Error::Invalid(format!("{n} keys are named `{id_or_name}`; give the key id"))),
        }
    }

    /// Creates a key with the given or fresh credentials.
    pub async fn create_key(&self, name: &str, id: Option<&str>, secret: Option<&str>) -> Result<AccessKey> {
        let id = id.map(str::to_string).unwrap_or_else(new_access_key_id);
        let secret = secret.map(str::to_string).unwrap_or_else(new_secret_key);
        if id.len() < 3 || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::Invalid(format!("access key id `{id}` must be 3 to 128 letters or digits")));
        }
        if secret.len() < 8 || secret.len() > 128 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Invalid("secret key must be 8 to 128 printable characters".into()));
        }
        let key = AccessKey {
            id: id.clone(),
            secret,
            name: name.to_string(),
            allow_create_bucket: false,
            created_ms: now_ms(),
            buckets: Default::default(),
        };
        if !self.meta.put_if_absent(Table::AccessKey, id.clone().into_bytes(), &key).await? {
            return Err(Error::Conflict(format!("access key `{id}` already exists")));
        }
        Ok(key)
    }

    pub async fn delete_key(&self, id: &str) -> Result<()> {
        let k = self.find_key(id).await?;
        self.meta.delete(Table::AccessKey, k.key, Some(k.timestamp)).await
    }

    pub async fn set_allow_create_bucket(&self, id: &str, allow: bool) -> Result<AccessKey> {
        let k = self.find_key(id).await?;
        let mut key = k.value;
        key.allow_create_bucket = allow;
        self.meta.put(Table::AccessKey, k.key, &key, Some(k.timestamp)).await?;
        Ok(key)
    }

    /// Grants (allow) or revokes (!allow) the rights set in `perm` for a key on a bucket.
    pub async fn set_bucket_permission(
        &self,
        key_id: &str,
        bucket_id: &[u8],
        perm: BucketPermission,
        allow: bool,
    ) -> Result<AccessKey> {
        let k = self.find_key(key_id).await?;
        let mut key = k.value;
        let hex_id = hex::encode(bucket_id);
        let cur = key.buckets.entry(hex_id.clone()).or_default();
        if allow {
            cur.read |= perm.read;
            cur.write |= perm.write;
            cur.owner |= perm.owner;
        } else {
            cur.read &= !perm.read;
            cur.write &= !perm.write;
            cur.owner &= !perm.owner;
        }
        if !(cur.read || cur.write || cur.owner) {
            key.buckets.remove(&hex_id);
        }
        self.meta.put(Table::AccessKey, k.key, &key, Some(k.timestamp)).await?;
        Ok(key)
    }
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
