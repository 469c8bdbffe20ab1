//! Operations that read a state and change it, raced through two frontends of a cluster,
//! 100 rounds each: CompleteMultipartUpload against AbortMultipartUpload, UploadPart against
//! CompleteMultipartUpload, PUTs of one key, conditional PUTs (If-None-Match, If-Match) of
//! one key, and tag changes against PUTs. Exactly one of Complete and Abort wins;
//! an acknowledged object always reads back whole, also after the deletion delay; and once
//! everything is deleted, no block is left on any node.

use std::time::Duration;

use aws_sdk_s3::Client;
use hangar_integration_tests::cluster::Cluster;
use hangar_integration_tests::*;

const ROUNDS: usize = 100;
/// Short delays so that a lost part or a leaked block shows within the test.
const FAST_GC: &str = "block_gc_delay_secs = 1\npending_write_grace_secs = 5\noffload_delay_secs = 2\n";

async fn no_blocks_left(cluster: &Cluster) {
    let gone = wait_until(Duration::from_secs(120), || async { cluster.all_block_files().is_empty() }).await;
    assert!(
        gone,
        "{} block files left after everything was deleted\n{}",
        cluster.all_block_files().len(),
        cluster.logs()
    );
}

async fn delete_all(s3: &Client, bucket: &str) {
    loop {
        let out = s3.list_objects_v2().bucket(bucket).send().await.expect("list");
        if out.contents().is_empty() {
            return;
        }
        for o in out.contents() {
            s3.delete_object().bucket(bucket).key(o.key().unwrap_or_default()).send().await.expect("delete");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_and_abort_racing_have_one_winner_and_lose_nothing() {
    let cluster = Cluster::start_with(3, 2, FAST_GC).await;
    let (a, b) = (cluster.s3_client_no_retry(0), cluster.s3_client_no_retry(1));
    let bucket = new_bucket(&a, "race").await;
    let mut completed = Vec::new();
    for round in 0..ROUNDS {
        let key = format!("r{round}");
        let data = random_bytes(200_000);
        let id = create_upload(&a, &bucket, &key).await;
        let etag = upload_part(&a, &bucket, &key, &id, 1, &data).await;
        let (done, aborted) = tokio::join!(
            complete_upload(&a, &bucket, &key, &id, &[(1, &etag)]).send(),
            b.abort_multipart_upload().bucket(&bucket).key(&key).upload_id(&id).send()
        );
        match (&done, &aborted) {
            (Ok(_), Err(e)) => {
                assert_eq!(err_code(e).as_deref(), Some("NoSuchUpload"), "round {round}: {e:?}");
                completed.push((key, data));
            }
            (Err(e), Ok(_)) => {
                assert_eq!(err_code(e).as_deref(), Some("NoSuchUpload"), "round {round}: {e:?}");
                assert_no_object(&a, &bucket, &key).await;
            }
            _ => panic!("round {round}: both or neither won: complete {done:?}, abort {aborted:?}"),
        }
    }
    assert!(!completed.is_empty(), "Complete never won a race");
    // Past the deletion delay, every acknowledged object is still whole, through both.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (key, data) in &completed {
        assert_eq!(&get_bytes(&a, &bucket, key).await, data, "{key} through frontend 1");
        assert_eq!(&get_bytes(&b, &bucket, key).await, data, "{key} through frontend 2");
    }
    delete_all(&a, &bucket).await;
    no_blocks_left(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_uploaded_again_during_complete_never_takes_the_chosen_data() {
    let cluster = Cluster::start_with(3, 2, FAST_GC).await;
    let (a, b) = (cluster.s3_client_no_retry(0), cluster.s3_client_no_retry(1));
    let bucket = new_bucket(&a, "race").await;
    let mut objects = Vec::new();
    for round in 0..ROUNDS {
        let key = format!("p{round}");
        let (first, second) = (random_bytes(150_000), random_bytes(150_000));
        let id = create_upload(&a, &bucket, &key).await;
        let etag = upload_part(&a, &bucket, &key, &id, 1, &first).await;
        // The same part number again, through the other frontend, while Complete names the
        // first upload's ETag.
        let (done, again) = tokio::join!(
            complete_upload(&a, &bucket, &key, &id, &[(1, &etag)]).send(),
            b.upload_part().bucket(&bucket).key(&key).upload_id(&id).part_number(1).body(second.into()).send()
        );
        done.unwrap_or_else(|e| panic!("round {round}: complete failed: {e:?}"));
        if let Err(e) = again {
            assert_eq!(err_code(&e).as_deref(), Some("NoSuchUpload"), "round {round}: {e:?}");
        }
        objects.push((key, first));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (key, data) in &objects {
        assert_eq!(&get_bytes(&b, &bucket, key).await, data, "{key}");
    }
    delete_all(&a, &bucket).await;
    no_blocks_left(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_puts_of_one_key_free_the_loser() {
    let cluster = Cluster::start_with(3, 2, FAST_GC).await;
    let (a, b) = (cluster.s3_client_no_retry(0), cluster.s3_client_no_retry(1));
    let bucket = new_bucket(&a, "race").await;
    for round in 0..ROUNDS {
        let key = format!("k{}", round % 10);
        let (x, y) = (random_bytes(2 << 20), random_bytes(2 << 20));
        let (rx, ry) = tokio::join!(
            a.put_object().bucket(&bucket).key(&key).body(x.clone().into()).send(),
            b.put_object().bucket(&bucket).key(&key).body(y.clone().into()).send()
        );
        rx.unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        ry.unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        let got = get_bytes(&b, &bucket, &key).await;
        assert!(got == x || got == y, "round {round}: the object is neither PUT");
        assert_eq!(get_bytes(&a, &bucket, &key).await, got, "round {round}: the frontends disagree");
    }
    delete_all(&a, &bucket).await;
    no_blocks_left(&cluster).await;
}

/// Exactly one of two results is a success, the other a 412; which one won.
fn one_winner<T: std::fmt::Debug, E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug>(
    round: usize,
    x: &Result<T, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
    y: &Result<T, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> bool {
    match (x, y) {
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => {
            assert_eq!(err_code(e).as_deref(), Some("PreconditionFailed"), "round {round}: {e:?}");
            x.is_ok()
        }
        _ => panic!("round {round}: both or neither won: {x:?}, {y:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_puts_racing_through_two_frontends_have_one_winner() {
    let cluster = Cluster::start_with(3, 2, FAST_GC).await;
    let (a, b) = (cluster.s3_client_no_retry(0), cluster.s3_client_no_retry(1));
    let bucket = new_bucket(&a, "cond").await;
    for round in 0..ROUNDS {
        // Ten keys, each deleted before it is raced for again: later rounds race over the
        // key's earlier conditional value, which a deletion made stale.
        let key = format!("c{}", round % 10);
        a.delete_object().bucket(&bucket).key(&key).send().await.expect("delete");
        let (x, y) = (random_bytes(300_000), random_bytes(300_000));
        let (rx, ry) = tokio::join!(
            a.put_object().bucket(&bucket).key(&key).if_none_match("*").body(x.clone().into()).send(),
            b.put_object().bucket(&bucket).key(&key).if_none_match("*").body(y.clone().into()).send()
        );
        let created = if one_winner(round, &rx, &ry) { x } else { y };
        assert_eq!(get_bytes(&b, &bucket, &key).await, created, "round {round}: not the winner's data");
        assert_eq!(get_bytes(&a, &bucket, &key).await, created, "round {round}: the frontends disagree");

        // Two writers replacing the value they both read: one wins.
        let etag = etag_of(&created);
        let (p, q) = (random_bytes(1000), random_bytes(1000));
        let (rp, rq) = tokio::join!(
            a.put_object().bucket(&bucket).key(&key).if_match(&etag).body(p.clone().into()).send(),
            b.put_object().bucket(&bucket).key(&key).if_match(&etag).body(q.clone().into()).send()
        );
        let replaced = if one_winner(round, &rp, &rq) { p } else { q };
        assert_eq!(get_bytes(&a, &bucket, &key).await, replaced, "round {round}: not the If-Match winner's data");
    }
    delete_all(&a, &bucket).await;
    no_blocks_left(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_changes_racing_puts_never_undo_them() {
    let cluster = Cluster::start_with(3, 2, FAST_GC).await;
    let (a, b) = (cluster.s3_client_no_retry(0), cluster.s3_client_no_retry(1));
    let bucket = new_bucket(&a, "tagrace").await;
    let mut last = std::collections::BTreeMap::new();
    for round in 0..ROUNDS {
        let key = format!("t{}", round % 10);
        put_bytes(&a, &bucket, &key, &random_bytes(300_000)).await;
        let newer = random_bytes(300_000);
        let tags = aws_sdk_s3::types::Tagging::builder()
            .tag_set(aws_sdk_s3::types::Tag::builder().key("round").value(round.to_string()).build().expect("tag"))
            .build()
            .expect("tagging");
        let (tagged, put) = tokio::join!(
            b.put_object_tagging().bucket(&bucket).key(&key).tagging(tags).send(),
            a.put_object().bucket(&bucket).key(&key).body(newer.clone().into()).send()
        );
        tagged.unwrap_or_else(|e| panic!("round {round}: tagging: {e:?}"));
        put.unwrap_or_else(|e| panic!("round {round}: put: {e:?}"));
        assert_eq!(get_bytes(&b, &bucket, &key).await, newer, "round {round}: a tag change undid a PUT");
        last.insert(key, newer);
    }
    // Past the deletion delay, the data of every acknowledged PUT is still whole.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (key, data) in &last {
        assert_eq!(&get_bytes(&a, &bucket, key).await, data, "{key}");
    }
    delete_all(&a, &bucket).await;
    no_blocks_left(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_complete_and_a_conditional_put_racing_have_one_winner() {
    let cluster = Cluster::start_with(3, 2, FAST_GC).await;
    let (a, b) = (cluster.s3_client_no_retry(0), cluster.s3_client_no_retry(1));
    let bucket = new_bucket(&a, "condmp").await;
    for round in 0..ROUNDS {
        let key = format!("m{round}");
        let (part, other) = (random_bytes(100_000), random_bytes(100_000));
        let id = create_upload(&a, &bucket, &key).await;
        let etag = upload_part(&a, &bucket, &key, &id, 1, &part).await;
        let (done, put) = tokio::join!(
            complete_upload(&a, &bucket, &key, &id, &[(1, &etag)]).if_none_match("*").send(),
            b.put_object().bucket(&bucket).key(&key).if_none_match("*").body(other.clone().into()).send()
        );
        let want = match (&done, &put) {
            (Ok(_), Err(e)) => {
                assert_eq!(err_code(e).as_deref(), Some("PreconditionFailed"), "round {round}: {e:?}");
                part
            }
            (Err(e), Ok(_)) => {
                assert_eq!(err_code(e).as_deref(), Some("PreconditionFailed"), "round {round}: {e:?}");
                other
            }
            _ => panic!("round {round}: both or neither won: {done:?}, {put:?}"),
        };
        assert_eq!(get_bytes(&b, &bucket, &key).await, want, "round {round}: not the winner's data");
        // A Complete refused with 412 leaves its upload open, as in S3: the client aborts it.
        if done.is_err() {
            a.abort_multipart_upload().bucket(&bucket).key(&key).upload_id(&id).send().await.expect("abort");
        }
    }
    delete_all(&a, &bucket).await;
    no_blocks_left(&cluster).await;
}

/// A PUT small enough to live inline is written without reading the value it replaces:
/// it must still order after every value acknowledged before it. Sequential PUTs of one
/// key alternate between the frontends and each is read back at once through the other;
/// racing ones leave one of the two, the same through both; and a value stamped a minute
/// ahead (a writer whose clock runs fast) put on a write quorum of the key's replicas —
/// each pair of the three in turn — is overwritten by the next PUT all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_puts_order_after_every_acknowledged_value() {
    use hangar_integration_tests::peer::{at_layout, is_for, meta, rpc};
    use hangar_proto::metadata::{InsertRequest, RangeRequest, Table};
    use prost::Message;

    let cluster = Cluster::start(3, 2).await;
    let (a, b) = (cluster.s3_client_no_retry(0), cluster.s3_client_no_retry(1));
    let bucket = new_bucket(&a, "small").await;
    let small = |round: usize| format!("value {round} {}", "x".repeat(round * 37 % 4000)).into_bytes();
    for round in 0..ROUNDS {
        let (put, get) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let data = small(round);
        put.put_object().bucket(&bucket).key("seq").body(data.clone().into()).send().await.expect("put");
        assert_eq!(get_bytes(get, &bucket, "seq").await, data, "round {round}: an earlier value came back");
    }
    for round in 0..ROUNDS {
        let (x, y) = (small(round), small(round + 1000));
        let (rx, ry) = tokio::join!(
            a.put_object().bucket(&bucket).key("race").body(x.clone().into()).send(),
            b.put_object().bucket(&bucket).key("race").body(y.clone().into()).send()
        );
        rx.unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        ry.unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        let got = get_bytes(&b, &bucket, "race").await;
        assert!(got == x || got == y, "round {round}: the object is neither PUT");
        assert_eq!(get_bytes(&a, &bucket, "race").await, got, "round {round}: the frontends disagree");
    }

    let layout = cluster.status().await.layout_version;
    for (round, pair) in [[0, 1], [1, 2], [0, 2]].into_iter().enumerate() {
        let key = format!("clock-{round}");
        a.put_object().bucket(&bucket).key(&key).body(b"before".to_vec().into()).send().await.expect("put");
        let req = RangeRequest { table: Table::Object as i32, limit: 10_000, ..Default::default() };
        let entries = rpc(meta(&cluster, 0).range(at_layout(req, layout))).await.expect("range").entries;
        let mut entry = entries.into_iter().find(|e| is_for(e, &key)).expect("the object's entry on node 1");
        let ahead = b"stamped a minute ahead".to_vec();
        let mut obj = hangar_proto::model::Object::decode(entry.value.as_ref()).expect("an object entry");
        obj.version_id = random_bytes(16).into();
        obj.size = ahead.len() as u64;
        obj.etag = md5_hex(&ahead);
        obj.inline_data = Some(ahead.clone().into());
        obj.checksums.clear();
        entry.value = obj.encode_to_vec().into();
        entry.timestamp += 60_000_000;
        for i in pair {
            let req = InsertRequest { table: Table::Object as i32, entries: vec![entry.clone()] };
            rpc(meta(&cluster, i).insert(at_layout(req, layout))).await.expect("insert");
        }
        assert_eq!(get_bytes(&b, &bucket, &key).await, ahead, "pair {pair:?}: the value from ahead is current");
        let after = format!("after the value from ahead, pair {pair:?}").into_bytes();
        b.put_object().bucket(&bucket).key(&key).body(after.clone().into()).send().await.expect("put");
        for s3 in [&a, &b] {
            assert_eq!(get_bytes(s3, &bucket, &key).await, after, "pair {pair:?}: the PUT did not order after it");
        }
    }
}
