//! Typed access to the metadata tables over the data nodes' MetadataService.

use hangar_proto::metadata::{Entry, GetRequest, InsertRequest, RangeRequest, Table};
use prost::Message;

use crate::Result;
use crate::ids::{next_timestamp, random_u64};
use crate::rpc::MetaGrpc;

/// Most entries one range call returns.
pub const PAGE: u32 = 1000;

#[derive(Clone)]
pub struct MetaClient {
    inner: MetaGrpc,
}

/// A live entry decoded, with the timestamp a later write must exceed.
pub struct Found<T> {
    pub key: Vec<u8>,
    pub value: T,
    pub timestamp: u64,
}

/// A new value for `key`, written after (LWW-newer than) `after` when given.
pub fn entry<T: Message>(key: Vec<u8>, value: &T, after: Option<u64>) -> Entry {
    Entry {
        key: key.into(),
        value: value.encode_to_vec().into(),
        timestamp: stamp(after),
        tiebreak: random_u64(),
        tombstone: false,
    }
}

/// A deletion of `key`.
pub fn tombstone(key: Vec<u8>, after: Option<u64>) -> Entry {
    Entry {
        key: key.into(),
        value: Default::default(),
        timestamp: stamp(after),
        tiebreak: random_u64(),
        tombstone: true,
    }
}

fn stamp(after: Option<u64>) -> u64 {
    let t = next_timestamp();
    match after {
        Some(a) if a >= t => a + 1,
        _ => t,
    }
}

impl MetaClient {
    pub fn new(inner: MetaGrpc) -> Self {
        Self { inner }
    }

    pub async fn get<T: Message + Default>(&self, table: Table, key: &[u8]) -> Result<Option<Found<T>>> {
        let reply = self.inner.clone().get(GetRequest { table: table as i32, key: key.to_vec().into() }).await?;
        match reply.into_inner().entry {
            Some(e) if !e.tombstone => Ok(Some(decode(e)?)),
            _ => Ok(None),
        }
    }

    pub async fn insert(&self, table: Table, entries: Vec<Entry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.inner.clone().insert(InsertRequest { table: table as i32, entries, if_absent: false }).await?;
        Ok(())
    }

    pub async fn put<T: Message>(&self, table: Table, key: Vec<u8>, value: &T, after: Option<u64>) -> Result<()> {
        self.insert(table, vec![entry(key, value, after)]).await
    }

    /// Writes only when no live entry exists; false when one did.
    pub async fn put_if_absent<T: Message>(&self, table: Table, key: Vec<u8>, value: &T) -> Result<bool> {
        let reply = self
            .inner
            .clone()
            .insert(InsertRequest { table: table as i32, entries: vec![entry(key, value, None)], if_absent: true })
            .await?;
        Ok(reply.into_inner().applied.first().copied().unwrap_or(false))
    }

    pub async fn delete(&self, table: Table, key: Vec<u8>, after: Option<u64>) -> Result<()> {
        self.insert(table, vec![tombstone(key, after)]).await
    }

    /// One page of live entries with start <= key < end; `more` when the range goes on.
    pub async fn range<T: Message + Default>(
        &self,
        table: Table,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
    ) -> Result<(Vec<Found<T>>, bool)> {
        let reply = self
            .inner
            .clone()
            .range(RangeRequest {
                table: table as i32,
                start: start.into(),
                end: end.into(),
                limit,
                include_tombstones: false,
            })
            .await?
            .into_inner();
        let items = reply.entries.into_iter().map(decode).collect::<Result<Vec<_>>>()?;
        Ok((items, reply.more))
    }

    /// Every live entry whose key starts with `prefix` (for small tables and bounded scans).
    pub async fn scan_prefix<T: Message + Default>(&self, table: Table, prefix: &[u8]) -> Result<Vec<Found<T>>> {
        let end = prefix_end(prefix);
        let mut start = prefix.to_vec();
        let mut out = Vec::new();
        loop {
            let (page, more) = self.range::<T>(table, start.clone(), end.clone(), PAGE).await?;
            let Some(last) = page.last() else { break };
            start = successor(&last.key);
            out.extend(page);
            if !more {
                break;
            }
        }
        Ok(out)
    }
}

fn decode<T: Message + Default>(e: Entry) -> Result<Found<T>> {
    Ok(Found { value: T::decode(e.value)?, key: e.key.to_vec(), timestamp: e.timestamp })
}

/// The smallest key greater than `key`.
pub fn successor(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// The smallest key greater than every key starting with `prefix` (empty: unbounded).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
        assert_eq!(prefix_end(&[0xff, 0xff]), Vec::<u8>::new());
    }

    #[test]
    fn later_writes_order_after_what_they_read() {
        let far = next_timestamp() + 1_000_000_000;
        let e = tombstone(b"k".to_vec(), Some(far));
        assert_eq!(e.timestamp, far + 1);
    }
}
