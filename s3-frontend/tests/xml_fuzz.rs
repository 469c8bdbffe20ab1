//! Property tests ("fuzzing" where cargo-fuzz's nightly toolchain is not available) of the
//! XML request bodies the frontend acts on: DeleteObjects, CompleteMultipartUpload and
//! CreateBucket bodies, as arbitrary bytes and as valid documents cut and corrupted at
//! random. Parsing never panics, and a CompleteMultipartUpload that parses is either
//! refused or turned into parts that really were uploaded, in order. `PROPTEST_CASES` sets
//! the number of cases (CI runs a bounded number).

use std::collections::BTreeMap;

use hangar_proto::model::Part as StoredPart;
use hangar_s3_frontend::handlers::multipart::choose_parts;
use proptest::prelude::*;
use s3s::dto::{CompletedMultipartUpload, CreateBucketConfiguration, Delete};
use s3s::xml::{Deserialize, Deserializer};

fn parse<T: for<'x> Deserialize<'x>>(bytes: &[u8]) -> Option<T> {
    let mut d = Deserializer::new(bytes);
    let v = T::deserialize(&mut d).ok()?;
    d.expect_eof().ok()?;
    Some(v)
}

fn complete_xml(parts: &[(i64, String)]) -> String {
    let mut s = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        s.push_str(&format!("<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"));
    }
    s.push_str("</CompleteMultipartUpload>");
    s
}

fn delete_xml(keys: &[String], quiet: bool) -> String {
    let mut s = format!("<Delete><Quiet>{quiet}</Quiet>");
    for k in keys {
        s.push_str(&format!("<Object><Key>{k}</Key></Object>"));
    }
    s.push_str("</Delete>");
    s
}

/// A valid document, cut short and/or with a byte changed.
fn mangle(doc: String, cut: Option<usize>, flip: Option<(usize, u8)>) -> Vec<u8> {
    let mut b = doc.into_bytes();
    if let Some((at, byte)) = flip
        && !b.is_empty()
    {
        let i = at % b.len();
        b[i] = byte;
    }
    if let Some(c) = cut {
        b.truncate(c % (b.len() + 1));
    }
    b
}

fn stored_parts() -> impl Strategy<Value = BTreeMap<u32, Vec<StoredPart>>> {
    proptest::collection::btree_map(
        1u32..20,
        proptest::collection::vec(
            (any::<u64>(), "[0-9a-f]{32}").prop_map(|(size, etag)| StoredPart {
                size: size % (16 << 20),
                etag,
                data_version: vec![1; 16].into(),
                ..Default::default()
            }),
            1..3,
        ),
        0..8,
    )
    .prop_map(|mut m| {
        for (n, v) in m.iter_mut() {
            for p in v {
                p.part_number = *n;
            }
        }
        m
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse::<Delete>(&bytes);
        let _ = parse::<CompletedMultipartUpload>(&bytes);
        let _ = parse::<CreateBucketConfiguration>(&bytes);
    }

    #[test]
    fn mangled_delete_bodies_never_panic(
        keys in proptest::collection::vec("[ -~]{0,40}", 0..20),
        quiet in any::<bool>(),
        cut in proptest::option::of(any::<usize>()),
        flip in proptest::option::of((any::<usize>(), any::<u8>())),
    ) {
        let doc = mangle(delete_xml(&keys, quiet), cut, flip);
        if let Some(d) = parse::<Delete>(&doc) {
            prop_assert!(d.objects.len() <= keys.len() + 1);
        }
    }

    #[test]
    fn completes_choose_only_uploaded_parts_in_order(
        listed in proptest::collection::vec((-3i64..25, "[0-9a-f\"]{0,34}"), 0..12),
        stored in stored_parts(),
        cut in proptest::option::of(any::<usize>()),
        flip in proptest::option::of((any::<usize>(), any::<u8>())),
    ) {
        let doc = mangle(complete_xml(&listed), cut, flip);
        let Some(body) = parse::<CompletedMultipartUpload>(&doc) else { return Ok(()) };
        let parts = body.parts.unwrap_or_default();
        if let Ok((chosen, etag)) = choose_parts(&parts, &stored) {
            prop_assert_eq!(chosen.len(), parts.len());
            prop_assert!(chosen.windows(2).all(|w| w[0].part_number < w[1].part_number));
            for c in &chosen {
                let uploaded = stored.get(&c.part_number).is_some_and(|v| v.iter().any(|s| s.etag == c.etag));
                prop_assert!(uploaded, "part {} was never uploaded", c.part_number);
            }
            let (hash, n) = etag.split_once('-').expect("multipart ETag");
            prop_assert_eq!(hash.len(), 32);
            prop_assert_eq!(n.parse::<usize>().ok(), Some(chosen.len()));
        }
    }
}
