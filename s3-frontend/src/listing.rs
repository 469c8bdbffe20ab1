//! Listing objects with prefix, delimiter and paging: one engine behind ListObjects v1/v2.

use hangar_common::meta_client::{prefix_end, successor};
use hangar_proto::metadata::Table;
use hangar_proto::model::Object;
use s3s::S3Error;

use crate::backend::Backend;
use crate::errors::OrS3;

pub struct ListParams<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// First key (inclusive) that may be returned.
    pub start: Vec<u8>,
    pub max_keys: usize,
}

#[derive(Default)]
pub struct Listed {
    pub objects: Vec<(String, Object)>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// Where the next page starts (inclusive), when truncated.
    pub next_start: Option<Vec<u8>>,
    /// The last key or common prefix returned.
    pub last: Option<String>,
}

/// The start key after a v1 marker / v2 start-after: past the marker itself, and past
/// every key under it when it is a common prefix.
pub fn start_after(marker: &str, prefix: &str, delimiter: Option<&str>) -> Vec<u8> {
    match delimiter {
        Some(d) if !d.is_empty() && marker.len() > prefix.len() && marker.ends_with(d) => prefix_end(marker.as_bytes()),
        _ => successor(marker.as_bytes()),
    }
}

pub async fn list(backend: &Backend, bucket_id: &[u8], p: ListParams<'_>) -> Result<Listed, S3Error> {
    let mut out = Listed::default();
    if p.max_keys == 0 {
        return Ok(out);
    }
    let full = |k: &[u8]| [bucket_id, k].concat();
    let end = match prefix_end(p.prefix.as_bytes()) {
        e if e.is_empty() => prefix_end(bucket_id),
        e => full(&e),
    };
    let mut cursor = p.start.max(p.prefix.as_bytes().to_vec());
    let delimiter = p.delimiter.filter(|d| !d.is_empty());
    'pages: loop {
        let want = (p.max_keys - out.objects.len() - out.common_prefixes.len() + 1).min(1000) as u32;
        let (page, more) =
            backend.meta.range::<Object>(Table::Object, full(&cursor), end.clone(), want).await.or_s3()?;
        if page.is_empty() {
            return Ok(out);
        }
        for f in page {
            let key = String::from_utf8_lossy(&f.key[bucket_id.len()..]).into_owned();
            if out.objects.len() + out.common_prefixes.len() == p.max_keys {
                out.truncated = true;
                out.next_start = Some(key.into_bytes());
                return Ok(out);
            }
            if let Some(d) = delimiter
                && let Some(i) = key[p.prefix.len()..].find(d)
            {
                let cp = key[..p.prefix.len() + i + d.len()].to_string();
                cursor = prefix_end(cp.as_bytes());
                out.last = Some(cp.clone());
                out.common_prefixes.push(cp);
                if cursor.is_empty() {
                    return Ok(out);
                }
                // Everything under this prefix is skipped: query again past it.
                continue 'pages;
            }
            cursor = successor(key.as_bytes());
            out.last = Some(key.clone());
            out.objects.push((key, f.value));
        }
        if !more {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_skip_common_prefixes() {
        assert_eq!(start_after("a/", "", Some("/")), b"a0".to_vec());
        assert_eq!(start_after("a/b", "", Some("/")), b"a/b\0".to_vec());
        assert_eq!(start_after("a/", "a/", Some("/")), b"a/\0".to_vec());
        assert_eq!(start_after("k", "", None), b"k\0".to_vec());
    }
}
