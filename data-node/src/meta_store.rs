//! Metadata tables in sled: one tree per table, each value a prost-encoded `Entry`.
//! Writes merge last-writer-wins by (timestamp, tiebreak), so replaying or reordering
//! inserts converges to the same state; tombstones take part in the merge.

use std::collections::HashMap;
use std::path::Path;

use hangar_common::meta_client::newer;
use hangar_proto::metadata::{Entry, Table};
use prost::Message;

use crate::DataError;

pub struct MetaStore {
    pub db: sled::Db,
    trees: HashMap<i32, sled::Tree>,
}

const TABLES: &[Table] = &[
    Table::Bucket,
    Table::BucketAlias,
    Table::AccessKey,
    Table::Object,
    Table::VersionBlock,
    Table::MultipartUpload,
    Table::UploadPart,
];

impl MetaStore {
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let db = sled::Config::new().path(path).open()?;
        let mut trees = HashMap::new();
        for t in TABLES {
            trees.insert(*t as i32, db.open_tree(t.as_str_name())?);
        }
        Ok(Self { db, trees })
    }

    fn tree(&self, table: i32) -> Result<&sled::Tree, DataError> {
        self.trees.get(&table).ok_or_else(|| DataError::Invalid(format!("unknown table {table}")))
    }

    /// Merges entries and fsyncs. With `if_absent`, an entry is written only where no live
    /// entry exists; the result tells, per entry, whether it was applied.
    pub async fn insert(&self, table: i32, entries: Vec<Entry>, if_absent: bool) -> Result<Vec<bool>, DataError> {
        let tree = self.tree(table)?;
        let mut applied = Vec::with_capacity(entries.len());
        for e in entries {
            let encoded = e.encode_to_vec();
            let mut did = false;
            let mut decode_err = None;
            tree.fetch_and_update(&e.key, |old| {
                did = false;
                let Some(old) = old else {
                    did = true;
                    return Some(encoded.clone());
                };
                match Entry::decode(old) {
                    Ok(o) => {
                        let wins = if if_absent { o.tombstone && newer(&e, &o) } else { newer(&e, &o) };
                        did = wins;
                        Some(if wins { encoded.clone() } else { old.to_vec() })
                    }
                    Err(err) => {
                        decode_err = Some(err);
                        Some(old.to_vec())
                    }
                }
            })?;
            if let Some(err) = decode_err {
                return Err(err.into());
            }
            // Without if_absent a losing write is still "applied": the newer value stands.
            applied.push(did || !if_absent);
        }
        crate::error::flush(&self.db).await?;
        Ok(applied)
    }

    pub fn get(&self, table: i32, key: &[u8]) -> Result<Option<Entry>, DataError> {
        match self.tree(table)?.get(key)? {
            Some(v) => Ok(Some(Entry::decode(v.as_ref())?)),
            None => Ok(None),
        }
    }

    /// Entries with start <= key < end (end empty: unbounded), at most `limit`.
    pub fn range(
        &self,
        table: i32,
        start: &[u8],
        end: &[u8],
        limit: usize,
        include_tombstones: bool,
    ) -> Result<(Vec<Entry>, bool), DataError> {
        let tree = self.tree(table)?;
        let iter = if end.is_empty() { tree.range(start.to_vec()..) } else { tree.range(start.to_vec()..end.to_vec()) };
        let mut out = Vec::new();
        for item in iter {
            let (_, v) = item?;
            let e = Entry::decode(v.as_ref())?;
            if e.tombstone && !include_tombstones {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(e);
        }
        Ok((out, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: &str, val: &str, ts: u64, tb: u64, tomb: bool) -> Entry {
        Entry {
            key: key.as_bytes().to_vec().into(),
            value: val.as_bytes().to_vec().into(),
            timestamp: ts,
            tiebreak: tb,
            tombstone: tomb,
        }
    }

    #[tokio::test]
    async fn last_writer_wins_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = MetaStore::open(&dir.path().join("a")).unwrap();
        let b = MetaStore::open(&dir.path().join("b")).unwrap();
        let t = Table::Object as i32;
        let writes = vec![e("k", "one", 1, 5, false), e("k", "two", 2, 1, false), e("k", "", 2, 0, true)];
        for w in writes.clone() {
            a.insert(t, vec![w], false).await.unwrap();
        }
        for w in writes.into_iter().rev() {
            b.insert(t, vec![w], false).await.unwrap();
        }
        let ga = a.get(t, b"k").unwrap().unwrap();
        assert_eq!(ga, b.get(t, b"k").unwrap().unwrap());
        assert_eq!(&ga.value[..], b"two");
    }

    #[tokio::test]
    async fn if_absent_claims_once_and_range_pages() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let t = Table::BucketAlias as i32;
        assert_eq!(s.insert(t, vec![e("x", "1", 1, 0, false)], true).await.unwrap(), vec![true]);
        assert_eq!(s.insert(t, vec![e("x", "2", 2, 0, false)], true).await.unwrap(), vec![false]);
        assert_eq!(&s.get(t, b"x").unwrap().unwrap().value[..], b"1");
        s.insert(t, vec![e("x", "", 3, 0, true)], false).await.unwrap();
        assert_eq!(s.insert(t, vec![e("x", "3", 4, 0, false)], true).await.unwrap(), vec![true]);

        for k in ["a", "b", "c", "d"] {
            s.insert(t, vec![e(k, k, 1, 0, false)], false).await.unwrap();
        }
        s.insert(t, vec![e("b", "", 9, 0, true)], false).await.unwrap();
        let (page, more) = s.range(t, b"a", b"d", 2, false).unwrap();
        let keys: Vec<_> = page.iter().map(|e| e.key.to_vec()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec()]);
        assert!(!more);
        let (page, more) = s.range(t, b"", b"", 2, true).unwrap();
        assert_eq!(page.len(), 2);
        assert!(more);
    }
}
