//! ListObjects v1 and v2: prefixes, delimiters, pagination, URL encoding.

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::types::EncodingType;
use hangar_integration_tests::*;

const KEYS: [&str; 9] = ["a/1", "a/2", "a/b/3", "a/b/4", "b/1", "c", "d", "e/f/g", "z"];

/// A bucket holding `KEYS` (content = key).
async fn populated(server: &Server) -> (Client, String) {
    let s3 = server.s3_client();
    let bucket = new_bucket(&s3, "list").await;
    // Insert out of order: listing must sort.
    for key in KEYS.iter().rev() {
        put_bytes(&s3, &bucket, key, key.as_bytes()).await;
    }
    (s3, bucket)
}

fn keys_of(contents: &[aws_sdk_s3::types::Object]) -> Vec<String> {
    contents.iter().filter_map(|o| o.key()).map(str::to_string).collect()
}

fn prefixes_of(cps: &[aws_sdk_s3::types::CommonPrefix]) -> Vec<String> {
    cps.iter().filter_map(|p| p.prefix()).map(str::to_string).collect()
}

/// Every ListObjectsV2 page of at most `max_keys` entries, following the
/// continuation tokens up to the first page that is not truncated (at most 19
/// truncated pages before it).
async fn list_v2_pages(s3: &Client, bucket: &str, delimiter: Option<&str>, max_keys: i32) -> Vec<ListObjectsV2Output> {
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .set_delimiter(delimiter.map(str::to_string))
            .max_keys(max_keys)
            .set_continuation_token(token.take())
            .send()
            .await
            .expect("list page");
        let truncated = page.is_truncated() == Some(true);
        if truncated {
            token = Some(page.next_continuation_token().expect("truncated page has a token").to_string());
        }
        pages.push(page);
        if !truncated {
            return pages;
        }
        assert!(pages.len() < 20, "pagination does not terminate");
    }
}

#[tokio::test]
async fn list_v2_prefix_and_delimiter() {
    let server = Server::start().await;
    let (s3, bucket) = populated(&server).await;

    let all = s3.list_objects_v2().bucket(&bucket).send().await.expect("list all");
    assert_eq!(keys_of(all.contents()), KEYS, "all keys, sorted");
    assert_eq!(all.key_count(), Some(KEYS.len() as i32));
    assert_eq!(all.is_truncated(), Some(false));
    let first = &all.contents()[0];
    assert_eq!(first.size(), Some(3), "size of a/1");
    assert_eq!(first.e_tag(), Some(etag_of(b"a/1").as_str()));
    assert!(first.last_modified().is_some());

    let a = s3.list_objects_v2().bucket(&bucket).prefix("a/").send().await.expect("prefix a/");
    assert_eq!(keys_of(a.contents()), ["a/1", "a/2", "a/b/3", "a/b/4"]);

    let top = s3.list_objects_v2().bucket(&bucket).delimiter("/").send().await.expect("delimiter");
    assert_eq!(keys_of(top.contents()), ["c", "d", "z"]);
    assert_eq!(prefixes_of(top.common_prefixes()), ["a/", "b/", "e/"]);
    assert_eq!(top.key_count(), Some(6), "KeyCount counts keys and common prefixes");

    let nested = s3.list_objects_v2().bucket(&bucket).prefix("a/").delimiter("/").send().await.expect("a/ + /");
    assert_eq!(keys_of(nested.contents()), ["a/1", "a/2"]);
    assert_eq!(prefixes_of(nested.common_prefixes()), ["a/b/"]);

    let none = s3.list_objects_v2().bucket(&bucket).prefix("nothing/").send().await.expect("no match");
    assert!(none.contents().is_empty() && none.common_prefixes().is_empty());
    assert_eq!(none.key_count(), Some(0));

    let after = s3.list_objects_v2().bucket(&bucket).start_after("b/1").send().await.expect("start-after");
    assert_eq!(keys_of(after.contents()), ["c", "d", "e/f/g", "z"]);
}

#[tokio::test]
async fn list_v2_pagination() {
    let server = Server::start().await;
    let (s3, bucket) = populated(&server).await;

    // Plain keys, 2 per page.
    let pages = list_v2_pages(&s3, &bucket, None, 2).await;
    let mut seen = Vec::new();
    for page in &pages {
        assert!(page.contents().len() <= 2, "page larger than max-keys");
        seen.extend(keys_of(page.contents()));
    }
    let last = pages.last().expect("at least one page");
    assert!(last.next_continuation_token().is_none(), "last page has no token");
    assert_eq!(seen, KEYS);
    assert_eq!(pages.len(), KEYS.len().div_ceil(2));

    // With a delimiter, common prefixes count towards max-keys and are not repeated.
    let mut entries = Vec::new();
    for page in &list_v2_pages(&s3, &bucket, Some("/"), 2).await {
        assert!(page.contents().len() + page.common_prefixes().len() <= 2, "page larger than max-keys");
        entries.extend(keys_of(page.contents()));
        entries.extend(prefixes_of(page.common_prefixes()));
    }
    entries.sort();
    assert_eq!(entries, ["a/", "b/", "c", "d", "e/", "z"]);

    // max-keys=0 returns nothing.
    let zero = s3.list_objects_v2().bucket(&bucket).max_keys(0).send().await.expect("max-keys 0");
    assert!(zero.contents().is_empty());
}

#[tokio::test]
async fn list_v1_marker_pagination() {
    let server = Server::start().await;
    let (s3, bucket) = populated(&server).await;

    let all = s3.list_objects().bucket(&bucket).send().await.expect("list v1");
    assert_eq!(keys_of(all.contents()), KEYS);
    assert_eq!(all.is_truncated(), Some(false));

    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..20 {
        let page = s3
            .list_objects()
            .bucket(&bucket)
            .max_keys(3)
            .set_marker(marker.clone())
            .send()
            .await
            .expect("list v1 page");
        let keys = keys_of(page.contents());
        assert!(keys.len() <= 3);
        seen.extend(keys.clone());
        if page.is_truncated() != Some(true) {
            marker = None;
            break;
        }
        // Without a delimiter NextMarker is optional; clients use the last key.
        marker = Some(page.next_marker().map(str::to_string).unwrap_or_else(|| keys.last().expect("key").clone()));
    }
    assert!(marker.is_none(), "v1 pagination does not terminate");
    assert_eq!(seen, KEYS);

    // With a delimiter a truncated response must carry NextMarker.
    let page = s3.list_objects().bucket(&bucket).delimiter("/").max_keys(2).send().await.expect("v1 delimiter page");
    assert_eq!(page.is_truncated(), Some(true));
    assert_eq!(prefixes_of(page.common_prefixes()), ["a/", "b/"]);
    let next = page.next_marker().expect("NextMarker with delimiter").to_string();
    let rest = s3.list_objects().bucket(&bucket).delimiter("/").marker(&next).send().await.expect("v1 delimiter rest");
    assert_eq!(keys_of(rest.contents()), ["c", "d", "z"]);
    assert_eq!(prefixes_of(rest.common_prefixes()), ["e/"]);

    let prefixed = s3.list_objects().bucket(&bucket).prefix("a/b/").send().await.expect("v1 prefix");
    assert_eq!(keys_of(prefixed.contents()), ["a/b/3", "a/b/4"]);
}

#[tokio::test]
async fn list_with_url_encoding() {
    let (_server, s3, bucket) = Server::start_with_bucket("enc").await;
    let keys = ["dir one/file+ü.txt", "dir one/sub dir/x", "plain"];
    for key in keys {
        put_bytes(&s3, &bucket, key, b"x").await;
    }

    let out = s3
        .list_objects_v2()
        .bucket(&bucket)
        .encoding_type(EncodingType::Url)
        .delimiter("/")
        .prefix("dir one/")
        .send()
        .await
        .expect("list v2 encoding-type=url");
    let raw_keys = keys_of(out.contents());
    assert_eq!(raw_keys.len(), 1);
    assert!(!raw_keys[0].contains(' ') && !raw_keys[0].contains('ü'), "key not encoded: {:?}", raw_keys[0]);
    assert_eq!(url_decode(&raw_keys[0]), "dir one/file+ü.txt");
    let raw_prefixes = prefixes_of(out.common_prefixes());
    assert_eq!(raw_prefixes.iter().map(|p| url_decode(p)).collect::<Vec<_>>(), ["dir one/sub dir/"]);
    assert_eq!(out.prefix().map(url_decode).as_deref(), Some("dir one/"));

    let v1 = s3.list_objects().bucket(&bucket).encoding_type(EncodingType::Url).send().await.expect("list v1 url");
    let mut decoded: Vec<String> = keys_of(v1.contents()).iter().map(|k| url_decode(k)).collect();
    decoded.sort();
    assert_eq!(decoded, keys);
}

#[tokio::test]
async fn list_empty_bucket() {
    let (_server, s3, bucket) = Server::start_with_bucket("empty").await;
    let out = s3.list_objects_v2().bucket(&bucket).send().await.expect("list");
    assert!(out.contents().is_empty());
    assert_eq!(out.key_count(), Some(0));
    assert_eq!(out.is_truncated(), Some(false));
    let v1 = s3.list_objects().bucket(&bucket).send().await.expect("list v1");
    assert!(v1.contents().is_empty());
}
