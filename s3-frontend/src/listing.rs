//! Listing objects with prefix, delimiter and paging: one engine behind ListObjects v1/v2.
//! Cursors are object table keys (the model's key encoding keeps key order, and an encoded
//! prefix selects exactly the keys that start with it).

use hangar_model::Store;
use hangar_model::keys::{prefix_end, successor};
use hangar_model::schema::{Objects, object_key, object_prefix, parse_object_key};
use hangar_proto::model::Object;
use s3s::S3Error;

use crate::errors::OrS3;

pub struct ListParams<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// The first key that may be returned, if not the first of the prefix.
    pub start: Start,
    pub max_keys: usize,
}

/// Where a listing starts.
pub enum Start {
    Beginning,
    /// At this key (a continuation token).
    At(String),
    /// Past this key (a v1 marker or v2 start-after), and past every key under it when
    /// it is a common prefix.
    After(String),
}

#[derive(Default)]
pub struct Listed {
    pub objects: Vec<(String, Object)>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// The key the next page starts at, when truncated.
    pub next_start: Option<String>,
    /// The last key or common prefix returned.
    pub last: Option<String>,
}

pub async fn list(store: &Store, bucket_id: &[u8], p: ListParams<'_>) -> Result<Listed, S3Error> {
    let mut out = Listed::default();
    if p.max_keys == 0 {
        return Ok(out);
    }
    let delimiter = p.delimiter.filter(|d| !d.is_empty());
    let first = object_prefix(bucket_id, p.prefix);
    let end = prefix_end(&first);
    let mut cursor = match &p.start {
        Start::Beginning => first.clone(),
        Start::At(k) => object_key(bucket_id, k),
        Start::After(m) => match delimiter {
            Some(d) if m.len() > p.prefix.len() && m.ends_with(d) => prefix_end(&object_prefix(bucket_id, m)),
            _ => successor(&object_key(bucket_id, m)),
        },
    }
    .max(first);
    'pages: loop {
        if !end.is_empty() && cursor >= end {
            return Ok(out);
        }
        let want = (p.max_keys - out.objects.len() - out.common_prefixes.len() + 1).min(1000) as u32;
        let (page, more) = store.tables.range_summaries::<Objects>(cursor.clone(), end.clone(), want).await.or_s3()?;
        if page.is_empty() {
            return Ok(out);
        }
        for f in page {
            let Some(key) = parse_object_key(&f.key) else { continue };
            if out.objects.len() + out.common_prefixes.len() == p.max_keys {
                out.truncated = true;
                out.next_start = Some(key);
                return Ok(out);
            }
            if let Some(d) = delimiter
                && let Some(i) = key.get(p.prefix.len()..).and_then(|rest| rest.find(d))
            {
                let cp = key[..p.prefix.len() + i + d.len()].to_string();
                cursor = prefix_end(&object_prefix(bucket_id, &cp));
                out.last = Some(cp.clone());
                out.common_prefixes.push(cp);
                // Everything under this prefix is skipped: query again past it.
                continue 'pages;
            }
            cursor = successor(&f.key);
            out.last = Some(key.clone());
            out.objects.push((key, f.value));
        }
        if !more {
            return Ok(out);
        }
    }
}
