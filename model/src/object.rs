//! Objects: the object table's entries (one current value per key, last writer wins).
//!
//! A write never releases the value it replaces itself: the data nodes do, when they merge
//! the new value over the old one (every replica releases the value that lost, whoever
//! wrote it and in whatever order the writes arrive). So two PUTs of one key racing through
//! two frontends free the loser's data, and a DELETE frees the last value's.

use hangar_common::cluster::NodeRef;
use hangar_common::{Error, Result};
use hangar_proto::metadata::{Entry, Table};
use hangar_proto::model::{Object, TagSet};
use prost::Message;

use crate::Store;
use crate::client::Found;
use crate::schema::{Objects, merge_entries, object_key};

/// The object table's entry of `obj` at `timestamp`. The tiebreak comes from the value
/// itself: writing one decided value twice gives the same entry, and two different values
/// with one timestamp still order the same everywhere.
fn object_entry(key: Vec<u8>, obj: &Object, timestamp: u64) -> Entry {
    let mut e = crate::client::entry(key, obj, None);
    e.timestamp = timestamp;
    e.tiebreak = obj.version_id.iter().take(8).fold(0u64, |acc, b| (acc << 8) | *b as u64);
    e
}

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

/// Leaves in an object entry what a listing needs: inline data becomes empty and the
/// parts lose their block lists (up to 16 KiB of data or a few block entries per object a
/// listing would otherwise carry from every replica for nothing). Tombstones stay as they
/// are.
pub fn summarize(e: &mut Entry) -> std::result::Result<(), prost::DecodeError> {
    if e.tombstone {
        return Ok(());
    }
    let mut o = Object::decode(e.value.as_ref())?;
    if o.inline_data.as_ref().is_none_or(|d| d.is_empty()) && o.parts.iter().all(|p| p.blocks.is_empty()) {
        return Ok(());
    }
    if let Some(d) = o.inline_data.as_mut() {
        *d = Default::default();
    }
    for p in &mut o.parts {
        p.blocks.clear();
    }
    e.value = o.encode_to_vec().into();
    Ok(())
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
        self.tables.insert(Table::Object, vec![object_entry(object_key(bucket_id, key), obj, timestamp)]).await?;
        for p in &obj.parts {
            self.committed(&p.data_version);
        }
        Ok(())
    }

    /// Makes `obj`, whose data lives in its entry, the object's current value without
    /// reading the value it replaces first: stamped with this process's clock, and written
    /// again after the newer timestamp when a replica of the write quorum holds a value that
    /// beats it (a writer whose clock runs ahead, or one of the same microsecond). A value
    /// acknowledged before this call is on a write quorum, which shares a replica with this
    /// write's quorum, so the second write is ordered after it, as it would be after a read.
    /// Only for values without data versions: a value that loses is released where it lost,
    /// which would free the blocks the second write points at.
    pub async fn put_inline_object(&self, bucket_id: &[u8], key: &str, obj: &Object) -> Result<()> {
        if !obj.parts.is_empty() {
            return Err(Error::Invalid("an object with parts is written after reading the value it replaces".into()));
        }
        let key = object_key(bucket_id, key);
        let first = object_entry(key.clone(), obj, crate::client::stamp(None));
        let newer = match self.tables.insert_reporting(Table::Object, vec![first.clone()]).await? {
            Some(0) => return Ok(()),
            Some(newer) => newer,
            // A replica did not say (an older release): read what won.
            None => match self.tables.get_entry(Table::Object, &key).await? {
                Some(e) if (e.timestamp, e.tiebreak) != (first.timestamp, first.tiebreak) => e.timestamp,
                _ => return Ok(()),
            },
        };
        tracing::debug!(newer, "a replica holds a newer value of the key: written again after it");
        self.tables.insert(Table::Object, vec![object_entry(key, obj, crate::client::stamp(Some(newer)))]).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_proto::model::{BlockEntry, Header, PartData};

    fn entry_of(obj: &Object) -> Entry {
        Entry {
            key: b"k".to_vec().into(),
            value: obj.encode_to_vec().into(),
            timestamp: 7,
            tiebreak: 9,
            tombstone: false,
        }
    }

    #[test]
    fn a_summary_keeps_what_a_listing_shows_and_drops_the_data() {
        let header = Header { name: "content-type".into(), value: "text/plain".into() };
        let inline = Object {
            version_id: vec![1; 16].into(),
            size: 5,
            etag: "abc".into(),
            last_modified_ms: 42,
            headers: vec![header.clone()],
            inline_data: Some(b"hello".to_vec().into()),
            ..Default::default()
        };
        let mut e = entry_of(&inline);
        summarize(&mut e).unwrap();
        let got = Object::decode(e.value.as_ref()).unwrap();
        assert_eq!(got.inline_data.as_deref(), Some(&b""[..]), "still marked inline, without its bytes");
        assert_eq!((got.size, got.etag.as_str(), got.last_modified_ms), (5, "abc", 42));
        assert_eq!(got.headers, vec![header]);
        assert_eq!((e.timestamp, e.tiebreak, e.key.as_ref()), (7, 9, &b"k"[..]));

        let block = BlockEntry { hash: vec![3; 32].into(), size: 10 };
        let part = PartData {
            part_number: 1,
            data_version: vec![2; 16].into(),
            size: 10,
            blocks: vec![block],
            ..Default::default()
        };
        let mut e = entry_of(&Object { size: 10, parts: vec![part.clone()], ..Default::default() });
        summarize(&mut e).unwrap();
        let got = Object::decode(e.value.as_ref()).unwrap();
        assert_eq!(got.parts, vec![PartData { blocks: Vec::new(), ..part }], "the part stays, its block list goes");

        let mut dead = Entry { tombstone: true, value: Default::default(), ..entry_of(&inline) };
        let before = dead.clone();
        summarize(&mut dead).unwrap();
        assert_eq!(dead, before);
    }
}
