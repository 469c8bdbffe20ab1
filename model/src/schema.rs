//! Every metadata table, declared once: its name, how its keys are built, which part of a
//! key picks the partition, its value type, and how two values of one key merge. Data
//! nodes merge with these rules on every insert and report what a merge implies (a data
//! version that lost and must be released, a block whose references changed); clients
//! merge replicas' answers with the same rules.

use hangar_common::cluster::{block_partition, key_partition};
use hangar_common::hash::BlockHash;
use hangar_proto::metadata::{AcceptorState, Ballot, Entry, Table};
use hangar_proto::model;
use prost::Message;

use crate::keys::{KeyBuf, KeyReader};

/// Lengths of the ids we issue.
pub const ID_LEN: usize = 16;
pub const HASH_LEN: usize = 32;

/// A table: its entries are `Entry { key, value: Self::Value, .. }`. The key builders for
/// each table are the functions below; everything else about it is declared here.
pub trait Schema {
    const TABLE: Table;
    type Value: Message + Default;
    /// Whether every range scan stays within one partition (the start key's).
    const RANGE_IN_ONE_PARTITION: bool = false;

    /// The partition of an encoded key (by default, from the hash of the whole key).
    fn partition(key: &[u8]) -> usize {
        key_partition(key)
    }

    /// How two entries of one key merge: commutative, associative, idempotent, so replicas
    /// converge whatever the order. By default, last writer wins.
    fn merge(a: &Entry, b: &Entry) -> Entry {
        lww(a, b).clone()
    }
}

/// A table's rules, for code that knows the table only by its id (data nodes, sync).
#[derive(Clone, Copy)]
pub struct Rules {
    pub partition: fn(&[u8]) -> usize,
    pub merge: fn(&Entry, &Entry) -> Entry,
    pub range_in_one_partition: bool,
}

fn rules_of<S: Schema>() -> Rules {
    Rules { partition: S::partition, merge: S::merge, range_in_one_partition: S::RANGE_IN_ONE_PARTITION }
}

/// The rules of `table`: the one place a table id leads to its declaration.
pub fn rules(table: Table) -> Rules {
    match table {
        Table::Bucket | Table::Unspecified => rules_of::<Buckets>(),
        Table::BucketAlias => rules_of::<BucketAliases>(),
        Table::AccessKey => rules_of::<AccessKeys>(),
        Table::Object => rules_of::<Objects>(),
        Table::VersionBlock => rules_of::<VersionBlocks>(),
        Table::MultipartUpload => rules_of::<MultipartUploads>(),
        Table::UploadPart => rules_of::<UploadParts>(),
        Table::BlockRef => rules_of::<BlockRefs>(),
        Table::BucketGrant => rules_of::<BucketGrants>(),
        Table::PendingVersion => rules_of::<PendingVersions>(),
        Table::Register => rules_of::<Registers>(),
    }
}

macro_rules! table {
    ($(#[$doc:meta])* $name:ident, $table:expr, $value:ty) => {
        $(#[$doc])*
        pub struct $name;
        impl Schema for $name {
            const TABLE: Table = $table;
            type Value = $value;
        }
    };
    ($(#[$doc:meta])* $name:ident, $table:expr, $value:ty, merge = $merge:expr) => {
        $(#[$doc])*
        pub struct $name;
        impl Schema for $name {
            const TABLE: Table = $table;
            type Value = $value;
            fn merge(a: &Entry, b: &Entry) -> Entry {
                merge_fields::<$value>(a, b, $merge)
            }
        }
    };
}

table!(
    /// Buckets by id: written at creation, deleted by a tombstone; each quota merges on
    /// its own.
    Buckets, Table::Bucket, model::Bucket, merge = merge_bucket
);
table!(
    /// Bucket names: the projection of each name's register.
    BucketAliases, Table::BucketAlias, model::BucketAlias
);
table!(
    /// Access keys: each setting merges on its own.
    AccessKeys, Table::AccessKey, model::AccessKey, merge = merge_access_key
);
table!(
    /// Rights of a key on a bucket: each right merges on its own.
    BucketGrants, Table::BucketGrant, model::Grant, merge = merge_grant
);
table!(
    /// Objects: one current value per key; the value that loses is released. Two values
    /// of one version (same version id) differ only by their tags, which merge as a
    /// register.
    Objects, Table::Object, model::Object, merge = merge_object
);
table!(
    /// Open multipart uploads.
    MultipartUploads, Table::MultipartUpload, model::MultipartUpload
);
table!(
    /// Data versions being written or to be released: the latest sign of life and a
    /// release request merge on their own.
    PendingVersions, Table::PendingVersion, model::PendingVersion, merge = merge_pending
);

/// A data version's block list: all of it in the version's partition, scanned in order.
pub struct VersionBlocks;
impl Schema for VersionBlocks {
    const TABLE: Table = Table::VersionBlock;
    type Value = model::BlockEntry;
    const RANGE_IN_ONE_PARTITION: bool = true;
    fn partition(key: &[u8]) -> usize {
        key_partition(&key[..key.len().min(ID_LEN)])
    }
}

/// An upload's part records: all of them in the upload's partition.
pub struct UploadParts;
impl Schema for UploadParts {
    const TABLE: Table = Table::UploadPart;
    type Value = model::Part;
    const RANGE_IN_ONE_PARTITION: bool = true;
    fn partition(key: &[u8]) -> usize {
        key_partition(&key[..key.len().min(ID_LEN)])
    }
}

/// Block references live with the block: the partition is the block's.
pub struct BlockRefs;
impl Schema for BlockRefs {
    const TABLE: Table = Table::BlockRef;
    type Value = model::BlockRef;
    const RANGE_IN_ONE_PARTITION: bool = true;
    fn partition(key: &[u8]) -> usize {
        block_partition(key)
    }
}

/// CASPaxos acceptor states; written only through Prepare and Accept, merged (by sync) to
/// the highest ballots.
pub struct Registers;
impl Schema for Registers {
    const TABLE: Table = Table::Register;
    type Value = AcceptorState;
    fn merge(a: &Entry, b: &Entry) -> Entry {
        merge_fields::<AcceptorState>(a, b, merge_acceptor)
    }
}

/// Every table a data node keeps.
pub const TABLES: &[Table] = &[
    Table::Bucket,
    Table::BucketAlias,
    Table::AccessKey,
    Table::Object,
    Table::VersionBlock,
    Table::MultipartUpload,
    Table::UploadPart,
    Table::BlockRef,
    Table::BucketGrant,
    Table::PendingVersion,
    Table::Register,
];

/// The partition of an entry of `table`.
pub fn partition_of(table: Table, key: &[u8]) -> usize {
    (rules(table).partition)(key)
}

/// Whether range scans of `table` stay within one partition.
pub fn range_in_one_partition(table: Table) -> bool {
    rules(table).range_in_one_partition
}

// ---- keys ------------------------------------------------------------------------------

pub fn bucket_key(id: &[u8]) -> Vec<u8> {
    KeyBuf::new().fixed(id).finish()
}

pub fn alias_key(name: &str) -> Vec<u8> {
    KeyBuf::new().str(name).finish()
}

/// The name of an alias entry.
pub fn parse_alias_key(k: &[u8]) -> Option<String> {
    let mut r = KeyReader::new(k);
    let name = r.str()?;
    r.done().then_some(name)
}

pub fn access_key_key(id: &str) -> Vec<u8> {
    KeyBuf::new().str(id).finish()
}

pub fn grant_key(bucket_id: &[u8], key_id: &str) -> Vec<u8> {
    KeyBuf::new().fixed(bucket_id).str(key_id).finish()
}

/// (bucket id, key id) of a grant entry.
pub fn parse_grant_key(k: &[u8]) -> Option<(Vec<u8>, String)> {
    let mut r = KeyReader::new(k);
    let b = r.fixed(ID_LEN)?.to_vec();
    let id = r.str()?;
    r.done().then_some((b, id))
}

pub fn object_key(bucket_id: &[u8], key: &str) -> Vec<u8> {
    KeyBuf::new().fixed(bucket_id).str(key).finish()
}

/// The prefix of every object key of a bucket starting with `prefix`.
pub fn object_prefix(bucket_id: &[u8], prefix: &str) -> Vec<u8> {
    KeyBuf::new().fixed(bucket_id).str_prefix(prefix)
}

/// The object key of an object table key.
pub fn parse_object_key(k: &[u8]) -> Option<String> {
    let mut r = KeyReader::new(k);
    r.fixed(ID_LEN)?;
    let key = r.str()?;
    r.done().then_some(key)
}

pub fn version_block_key(data_version: &[u8], offset: u64) -> Vec<u8> {
    KeyBuf::new().fixed(data_version).u64(offset).finish()
}

pub fn parse_version_block_key(k: &[u8]) -> Option<u64> {
    let mut r = KeyReader::new(k);
    r.fixed(ID_LEN)?;
    let off = r.u64()?;
    r.done().then_some(off)
}

pub fn upload_key(bucket_id: &[u8], key: &str, upload_id: &[u8]) -> Vec<u8> {
    KeyBuf::new().fixed(bucket_id).str(key).fixed(upload_id).finish()
}

/// The prefix of every upload of an object.
pub fn upload_prefix(bucket_id: &[u8], key: &str) -> Vec<u8> {
    KeyBuf::new().fixed(bucket_id).str(key).finish()
}

/// (bucket id, object key, upload id) of an upload entry.
pub fn parse_upload_key(k: &[u8]) -> Option<(Vec<u8>, String, Vec<u8>)> {
    let mut r = KeyReader::new(k);
    let b = r.fixed(ID_LEN)?.to_vec();
    let key = r.str()?;
    let u = r.fixed(ID_LEN)?.to_vec();
    r.done().then_some((b, key, u))
}

pub fn part_key(upload_id: &[u8], part_number: u32, data_version: &[u8]) -> Vec<u8> {
    KeyBuf::new().fixed(upload_id).u32(part_number).fixed(data_version).finish()
}

pub fn part_number_prefix(upload_id: &[u8], part_number: u32) -> Vec<u8> {
    KeyBuf::new().fixed(upload_id).u32(part_number).finish()
}

pub fn block_ref_key(hash: &[u8], data_version: &[u8]) -> Vec<u8> {
    KeyBuf::new().fixed(hash).fixed(data_version).finish()
}

/// (block hash, data version) of a block reference entry.
pub fn parse_block_ref_key(k: &[u8]) -> Option<(BlockHash, Vec<u8>)> {
    let mut r = KeyReader::new(k);
    let h = BlockHash::from_slice(r.fixed(HASH_LEN)?)?;
    let dv = r.fixed(ID_LEN)?.to_vec();
    r.done().then_some((h, dv))
}

pub fn pending_key(data_version: &[u8]) -> Vec<u8> {
    KeyBuf::new().fixed(data_version).finish()
}

/// A bucket name's register.
pub fn name_register(name: &str) -> Vec<u8> {
    KeyBuf::new().str("bucket-name").str(name).finish()
}

/// An object key's conditional-write register.
pub fn object_register(bucket_id: &[u8], key: &str) -> Vec<u8> {
    KeyBuf::new().str("object").fixed(bucket_id).str(key).finish()
}

/// A multipart upload's register.
pub fn upload_register(upload_id: &[u8]) -> Vec<u8> {
    KeyBuf::new().str("upload").fixed(upload_id).finish()
}

// ---- merging ---------------------------------------------------------------------------

/// True when `a` wins over `b` under last-writer-wins.
pub fn newer(a: &Entry, b: &Entry) -> bool {
    (a.timestamp, a.tiebreak) > (b.timestamp, b.tiebreak)
}

/// What a merge on a data node implies beyond the stored entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    /// An object value lost: these data versions are no longer used by that object entry
    /// (its key) on this node.
    Release { object_key: Vec<u8>, data_versions: Vec<Vec<u8>> },
    /// A block's references changed on this node.
    BlockRefs(BlockHash),
}

/// The result of merging an incoming entry into what a node holds.
pub struct Merged {
    pub entry: Entry,
    /// Whether the stored entry changes.
    pub changed: bool,
    pub effects: Vec<Effect>,
}

/// Merges `incoming` into `local` by the table's rule.
pub fn merge(table: Table, local: Option<&Entry>, incoming: &Entry) -> Merged {
    let Some(local) = local else {
        let effects = match table {
            Table::BlockRef => block_effect(incoming),
            _ => Vec::new(),
        };
        return Merged { entry: incoming.clone(), changed: true, effects };
    };
    let entry = merge_entries(table, local, incoming);
    let changed = entry != *local;
    let mut effects = Vec::new();
    match table {
        // The value that did not win is released: it was overwritten or deleted. Every
        // replica sees the same pair and releases the same versions (idempotent).
        // Only versions the merged value no longer uses: two values of one version (a tag
        // change) release nothing.
        Table::Object => {
            let loser = if entry == *local { incoming } else { local };
            if loser != &entry && !loser.tombstone {
                effects.extend(release_effect(loser, &entry));
            }
        }
        Table::BlockRef if changed => effects.extend(block_effect(&entry)),
        _ => {}
    }
    Merged { entry, changed, effects }
}

/// Merges two entries of one key by the table's rule, for data nodes and for clients
/// merging replicas' answers alike.
pub fn merge_entries(table: Table, a: &Entry, b: &Entry) -> Entry {
    (rules(table).merge)(a, b)
}

fn lww<'a>(a: &'a Entry, b: &'a Entry) -> &'a Entry {
    if newer(b, a) { b } else { a }
}

/// Field-wise merge of two live values; tombstones and undecodable values fall back to
/// last-writer-wins of the whole entry.
fn merge_fields<T: Message + Default>(a: &Entry, b: &Entry, f: fn(&T, &T) -> T) -> Entry {
    let winner = lww(a, b);
    if a.tombstone || b.tombstone {
        return winner.clone();
    }
    let (Ok(va), Ok(vb)) = (T::decode(a.value.as_ref()), T::decode(b.value.as_ref())) else {
        return winner.clone();
    };
    // Merge in a fixed order (the LWW winner first) so the result does not depend on
    // which side is local.
    let (first, second) = if std::ptr::eq(winner, a) { (&va, &vb) } else { (&vb, &va) };
    let merged = f(first, second);
    Entry { value: merged.encode_to_vec().into(), ..winner.clone() }
}

/// The register with the higher timestamp; equal timestamps keep `first`'s value.
fn reg<V: Clone>(first: (V, u64), second: (V, u64)) -> (V, u64) {
    if second.1 > first.1 { second } else { first }
}

fn merge_access_key(a: &model::AccessKey, b: &model::AccessKey) -> model::AccessKey {
    let (name, name_ts) = reg((a.name.clone(), a.name_ts), (b.name.clone(), b.name_ts));
    let (allow_create_bucket, allow_create_bucket_ts) =
        reg((a.allow_create_bucket, a.allow_create_bucket_ts), (b.allow_create_bucket, b.allow_create_bucket_ts));
    let (secret, secret_ts) = reg((a.secret.clone(), a.secret_ts), (b.secret.clone(), b.secret_ts));
    model::AccessKey {
        name,
        name_ts,
        allow_create_bucket,
        allow_create_bucket_ts,
        secret,
        secret_ts,
        root: a.root || b.root,
        ..a.clone()
    }
}

fn merge_bucket(a: &model::Bucket, b: &model::Bucket) -> model::Bucket {
    let (max_size, max_size_ts) = reg((a.max_size, a.max_size_ts), (b.max_size, b.max_size_ts));
    let (max_objects, max_objects_ts) = reg((a.max_objects, a.max_objects_ts), (b.max_objects, b.max_objects_ts));
    let (tags, tags_ts) = reg((a.tags.clone(), a.tags_ts), (b.tags.clone(), b.tags_ts));
    let (cors, cors_ts) = reg((a.cors.clone(), a.cors_ts), (b.cors.clone(), b.cors_ts));
    let (website, website_ts) = reg((a.website.clone(), a.website_ts), (b.website.clone(), b.website_ts));
    let (lifecycle, lifecycle_ts) = reg((a.lifecycle.clone(), a.lifecycle_ts), (b.lifecycle.clone(), b.lifecycle_ts));
    model::Bucket {
        max_size,
        max_size_ts,
        max_objects,
        max_objects_ts,
        tags,
        tags_ts,
        cors,
        cors_ts,
        website,
        website_ts,
        lifecycle,
        lifecycle_ts,
        ..a.clone()
    }
}

fn merge_object(a: &model::Object, b: &model::Object) -> model::Object {
    if a.version_id != b.version_id {
        return a.clone();
    }
    let (tags, tags_ts) = reg((a.tags.clone(), a.tags_ts), (b.tags.clone(), b.tags_ts));
    model::Object { tags, tags_ts, ..a.clone() }
}

fn merge_grant(a: &model::Grant, b: &model::Grant) -> model::Grant {
    let (read, read_ts) = reg((a.read, a.read_ts), (b.read, b.read_ts));
    let (write, write_ts) = reg((a.write, a.write_ts), (b.write, b.write_ts));
    let (owner, owner_ts) = reg((a.owner, a.owner_ts), (b.owner, b.owner_ts));
    model::Grant { read, read_ts, write, write_ts, owner, owner_ts }
}

fn merge_pending(a: &model::PendingVersion, b: &model::PendingVersion) -> model::PendingVersion {
    model::PendingVersion {
        refreshed_ms: a.refreshed_ms.max(b.refreshed_ms),
        release: a.release || b.release,
        ..a.clone()
    }
}

fn ballot_key(b: &Option<Ballot>) -> (u64, u64) {
    b.as_ref().map(|b| (b.round, b.proposer)).unwrap_or((0, 0))
}

fn merge_acceptor(a: &AcceptorState, b: &AcceptorState) -> AcceptorState {
    let promised = if ballot_key(&b.promised) > ballot_key(&a.promised) { b.promised } else { a.promised };
    let acc = if ballot_key(&b.accepted) > ballot_key(&a.accepted) { b } else { a };
    AcceptorState { promised, accepted: acc.accepted, value: acc.value.clone() }
}

/// The data versions `lost` uses and `kept` does not.
fn release_effect(lost: &Entry, kept: &Entry) -> Option<Effect> {
    let obj = model::Object::decode(lost.value.as_ref()).ok()?;
    let still = (!kept.tombstone).then(|| model::Object::decode(kept.value.as_ref()).ok()).flatten();
    let used = |dv: &[u8]| still.as_ref().is_some_and(|k| k.parts.iter().any(|p| p.data_version == dv));
    let dvs: Vec<Vec<u8>> =
        obj.parts.iter().filter(|p| !used(&p.data_version)).map(|p| p.data_version.to_vec()).collect();
    (!dvs.is_empty()).then(|| Effect::Release { object_key: lost.key.to_vec(), data_versions: dvs })
}

fn block_effect(e: &Entry) -> Vec<Effect> {
    parse_block_ref_key(&e.key).map(|(h, _)| Effect::BlockRefs(h)).into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<T: Message>(key: &[u8], v: &T, ts: u64) -> Entry {
        Entry {
            key: key.to_vec().into(),
            value: v.encode_to_vec().into(),
            timestamp: ts,
            tiebreak: 0,
            tombstone: false,
        }
    }

    #[test]
    fn concurrent_grants_of_different_rights_both_survive() {
        let read = model::Grant { read: true, read_ts: 10, ..Default::default() };
        let write = model::Grant { write: true, write_ts: 11, ..Default::default() };
        let a = entry(b"g", &read, 10);
        let b = entry(b"g", &write, 11);
        for m in [merge_entries(Table::BucketGrant, &a, &b), merge_entries(Table::BucketGrant, &b, &a)] {
            let g = model::Grant::decode(m.value.as_ref()).unwrap();
            assert!(g.read && g.write);
        }
        // And revoking (a later false) wins over the older true.
        let revoke = model::Grant { read: false, read_ts: 12, ..Default::default() };
        let m = merge_entries(Table::BucketGrant, &a, &entry(b"g", &revoke, 12));
        assert!(!model::Grant::decode(m.value.as_ref()).unwrap().read);
    }

    #[test]
    fn the_losing_object_value_is_released_in_either_order() {
        let obj = |dv: u8| model::Object {
            parts: vec![model::PartData { data_version: vec![dv; 16].into(), ..Default::default() }],
            ..Default::default()
        };
        let old = entry(b"o", &obj(1), 10);
        let new = entry(b"o", &obj(2), 20);
        let lost = || vec![Effect::Release { object_key: b"o".to_vec(), data_versions: vec![vec![1; 16]] }];
        let m = merge(Table::Object, Some(&old), &new);
        assert_eq!(m.effects, lost());
        let m = merge(Table::Object, Some(&new), &old);
        assert!(!m.changed);
        assert_eq!(m.effects, lost());
        // The same value again releases nothing.
        assert!(merge(Table::Object, Some(&new), &new).effects.is_empty());
    }

    #[test]
    fn tag_changes_merge_with_their_version_and_release_nothing() {
        let tagged = |ts: u64, v: &str| model::Object {
            version_id: vec![7; 16].into(),
            parts: vec![model::PartData { data_version: vec![1; 16].into(), ..Default::default() }],
            tags: Some(model::TagSet { tags: vec![model::Tag { key: "k".into(), value: v.into() }] }),
            tags_ts: ts,
            ..Default::default()
        };
        // Written with the object's own timestamp: the newer tags win either way round.
        let (a, b) = (entry(b"o", &tagged(1, "old"), 10), entry(b"o", &tagged(2, "new"), 10));
        for (x, y) in [(&a, &b), (&b, &a)] {
            let m = merge(Table::Object, Some(x), y);
            let o = model::Object::decode(m.entry.value.as_ref()).unwrap();
            assert_eq!(o.tags.unwrap().tags[0].value, "new");
            assert!(m.effects.is_empty(), "a tag change released data: {:?}", m.effects);
        }
        // A newer object replaces the tagged one entirely, and releases its data.
        let other = model::Object {
            version_id: vec![8; 16].into(),
            parts: vec![model::PartData { data_version: vec![2; 16].into(), ..Default::default() }],
            ..Default::default()
        };
        let m = merge(Table::Object, Some(&b), &entry(b"o", &other, 11));
        assert!(model::Object::decode(m.entry.value.as_ref()).unwrap().tags.is_none());
        assert_eq!(m.effects, vec![Effect::Release { object_key: b"o".to_vec(), data_versions: vec![vec![1; 16]] }]);
    }

    #[test]
    fn acceptor_states_merge_to_the_highest_ballots() {
        let b = |r| Some(Ballot { round: r, proposer: 1 });
        let x = AcceptorState { promised: b(5), accepted: b(3), value: b"three".to_vec().into() };
        let y = AcceptorState { promised: b(4), accepted: b(4), value: b"four".to_vec().into() };
        let m = merge_entries(Table::Register, &entry(b"r", &x, 0), &entry(b"r", &y, 0));
        let s = AcceptorState::decode(m.value.as_ref()).unwrap();
        assert_eq!(s.promised, b(5));
        assert_eq!(&s.value[..], b"four");
    }
}
