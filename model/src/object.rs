//! Objects: the object table's entries (one current value per key, last writer wins).
//!
//! A write never releases the value it replaces itself: the data nodes do, when they merge
//! the new value over the old one (every replica releases the value that lost, whoever
//! wrote it and in whatever order the writes arrive). So two PUTs of one key racing through
//! two frontends free the loser's data, and a DELETE frees the last value's.

use hangar_common::Result;
use hangar_common::cluster::NodeRef;
use hangar_proto::metadata::{Entry, Table};
use hangar_proto::model::{Object, TagSet};
use prost::Message;

use crate::Store;
use crate::client::Found;
use crate::schema::{Objects, merge_entries, object_key};

/// Whether a data version is still used by an object entry, as every replica has it.
#[derive(Debug)]
pub enum Use {
    /// No replica's value points at it: it may be released.
    Unused,
    /// The entry's newest value points at it.
    Current,
    /// Only older values some replicas still hold point at it; they are behind the newest
    /// value, given here with the replicas to bring it to.
    Stale(Entry, Vec<NodeRef>),
}

fn uses(e: &Entry, data_version: &[u8]) -> bool {
    !e.tombstone
        && Object::decode(e.value.as_ref()).is_ok_and(|o| o.parts.iter().any(|p| p.data_version == data_version))
}

impl Store {
    /// The current value of an object.
    pub async fn object(&self, bucket_id: &[u8], key: &str) -> Result<Option<Found<Object>>> {
        self.tables.get::<Objects>(&object_key(bucket_id, key)).await
    }

    /// Makes `obj` the object's current value, ordered after the value (timestamp `after`)
    /// the caller read. Durable on a write quorum when this returns. Its data versions are
    /// then committed (their pending entries go); what it replaced is released by the data
    /// nodes.
    pub async fn put_object(&self, bucket_id: &[u8], key: &str, obj: &Object, after: Option<u64>) -> Result<()> {
        self.put_object_at(bucket_id, key, obj, crate::client::stamp(after)).await
    }

    /// `put_object` with a fixed timestamp (writing one decided value again is idempotent).
    pub async fn put_object_at(&self, bucket_id: &[u8], key: &str, obj: &Object, timestamp: u64) -> Result<()> {
        let mut e = crate::client::entry(object_key(bucket_id, key), obj, None);
        e.timestamp = timestamp;
        // The tiebreak comes from the value itself: writing one decided value twice gives the
        // same entry, and two different values with one timestamp still order the same
        // everywhere.
        e.tiebreak = obj.version_id.iter().take(8).fold(0u64, |acc, b| (acc << 8) | *b as u64);
        self.tables.insert(hangar_proto::metadata::Table::Object, vec![e]).await?;
        for p in &obj.parts {
            self.committed(&p.data_version);
        }
        Ok(())
    }

    /// Replaces the tags of the object value `found` (None removes them). Written as the
    /// same version with the same timestamp, so the tags merge into that value and never
    /// undo a newer PUT or DELETE of the key; false when such a write had replaced the
    /// value already (the tags went with it).
    pub async fn set_object_tags(
        &self,
        bucket_id: &[u8],
        key: &str,
        found: &Found<Object>,
        tags: Option<TagSet>,
    ) -> Result<bool> {
        let mut obj = found.value.clone();
        obj.tags = tags;
        obj.tags_ts = crate::client::stamp(Some(obj.tags_ts));
        self.put_object_at(bucket_id, key, &obj, found.timestamp).await?;
        Ok(self.object(bucket_id, key).await?.is_some_and(|now| now.value.version_id == obj.version_id))
    }

    /// Whether `data_version` is still used by the object entry `key`, asking every holder
    /// of its partition (fails unless all answer). A value only some replica holds, even
    /// one never acknowledged, may still spread and win: its data must stay until no
    /// replica points at it.
    pub async fn data_version_use(&self, key: &[u8], data_version: &[u8]) -> Result<Use> {
        let answers = self.tables.get_everywhere(Table::Object, key).await?;
        let winner = answers.iter().filter_map(|(_, e)| e.clone()).reduce(|a, b| merge_entries(Table::Object, &a, &b));
        let Some(winner) = winner else { return Ok(Use::Unused) };
        if uses(&winner, data_version) {
            return Ok(Use::Current);
        }
        let behind: Vec<NodeRef> = answers
            .into_iter()
            .filter(|(_, e)| e.as_ref().is_some_and(|e| uses(e, data_version)))
            .map(|(n, _)| n)
            .collect();
        Ok(if behind.is_empty() { Use::Unused } else { Use::Stale(winner, behind) })
    }

    /// Deletes an object if it exists; true when it did.
    pub async fn delete_object(&self, bucket_id: &[u8], key: &str) -> Result<bool> {
        match self.object(bucket_id, key).await? {
            Some(prev) => {
                self.tables.delete::<Objects>(object_key(bucket_id, key), Some(prev.timestamp)).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
