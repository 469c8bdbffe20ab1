//! Storage behaviour seen from outside: block files on disk, dedup, inline
//! objects, garbage collection, and surviving restarts and crashes.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use hangar_integration_tests::cluster::INLINE_MAX;
use hangar_integration_tests::*;

const MIB: usize = 1 << 20;
/// GC runs every 5 s; with a zero delay, unreferenced blocks go within ~2 runs.
const GC_WAIT: Duration = Duration::from_secs(15);

fn blake2b_256_hex(data: &[u8]) -> String {
    hex::encode(Blake2b::<U32>::digest(data))
}

fn file_name(p: &Path) -> String {
    p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string()
}

#[tokio::test]
async fn large_object_round_trips_across_many_blocks() {
    let (server, s3, bucket) = Server::builder().block_size(MIB).start_with_bucket("large").await;
    // Not a multiple of the block size, so the last block is partial.
    let data = random_bytes(20 * MIB + 12_345);

    let etag = put_bytes(&s3, &bucket, "20mib", &data).await;
    assert_eq!(etag, etag_of(&data));
    assert_eq!(server.block_files().len(), 21, "20 MiB + 12 KiB at 1 MiB blocks is 21 distinct blocks");

    let got = get_bytes(&s3, &bucket, "20mib").await;
    assert_eq!(got.len(), data.len());
    assert!(got == data, "20 MiB object is not byte-identical (md5 {} vs {})", md5_hex(&got), md5_hex(&data));

    let head = s3.head_object().bucket(&bucket).key("20mib").send().await.expect("head");
    assert_eq!(head.content_length(), Some(data.len() as i64));
}

#[tokio::test]
async fn block_files_are_named_by_blake2b_of_their_content() {
    let (server, s3, bucket) = Server::builder().block_size(4096).start_with_bucket("naming").await;
    // 9 full blocks and a 3616-byte tail (above the 3 KiB inline limit).
    let data = random_bytes(40_480);
    put_bytes(&s3, &bucket, "k", &data).await;

    let files = server.block_files();
    assert_eq!(files.len(), 10, "ceil(40480 / 4096) blocks: {files:?}");
    let expected: BTreeSet<String> = data.chunks(4096).map(blake2b_256_hex).collect();
    let found: BTreeSet<String> = files.iter().map(|p| file_name(p)).collect();
    assert_eq!(found, expected, "block file names are not blake2b-256 of the block contents");

    for path in &files {
        let name = file_name(path);
        let rel = path.strip_prefix(server.data_dir.join("blocks")).expect("under blocks/");
        let parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
        assert_eq!(
            parts,
            [name[0..2].to_string(), name[2..4].to_string(), name.clone()],
            "layout of {}",
            path.display()
        );
    }
    assert!(get_bytes(&s3, &bucket, "k").await == data);
}

#[tokio::test]
async fn identical_content_is_stored_once() {
    let (server, s3, b1) = Server::builder().block_size(MIB).start_with_bucket("dedup-a").await;
    let b2 = new_bucket(&s3, "dedup-b").await;
    let data = random_bytes(3 * MIB);

    put_bytes(&s3, &b1, "first", &data).await;
    let after_first = server.block_files();
    assert_eq!(after_first.len(), 3);

    put_bytes(&s3, &b1, "second", &data).await;
    put_bytes(&s3, &b2, "third", &data).await;
    assert_eq!(server.block_files(), after_first, "identical content created new block files");

    // A multipart upload whose parts line up with the blocks dedups too.
    let id = create_upload(&s3, &b2, "mpu").await;
    let etag = upload_part(&s3, &b2, "mpu", &id, 1, &data).await;
    complete_upload(&s3, &b2, "mpu", &id, &[(1, &etag)]).send().await.expect("complete");
    assert_eq!(server.block_files(), after_first, "identical multipart content created new block files");

    put_bytes(&s3, &b1, "different", &random_bytes(3 * MIB)).await;
    assert_eq!(server.block_files().len(), 6);

    for (b, k) in [(&b1, "first"), (&b1, "second"), (&b2, "third"), (&b2, "mpu")] {
        assert!(get_bytes(&s3, b, k).await == data, "{b}/{k} differs");
    }
}

#[tokio::test]
async fn small_objects_are_inline() {
    let (server, s3, bucket) = Server::start_with_bucket("inline").await;
    for (key, len) in [("empty", 0), ("one", 1), ("kib", 1024), ("limit", INLINE_MAX)] {
        put_bytes(&s3, &bucket, key, &random_bytes(len)).await;
    }
    assert!(server.block_files().is_empty(), "objects <= 16 KiB created block files: {:?}", server.block_files());
    let data = random_bytes(INLINE_MAX);
    put_bytes(&s3, &bucket, "limit", &data).await;
    assert_eq!(get_bytes(&s3, &bucket, "limit").await, data);
    let listed = s3.list_objects_v2().bucket(&bucket).send().await.expect("list");
    let sizes: Vec<(&str, i64)> =
        listed.contents().iter().map(|o| (o.key().unwrap_or(""), o.size().unwrap_or(-1))).collect();
    let want = [("empty", 0), ("kib", 1024), ("limit", INLINE_MAX as i64), ("one", 1)];
    assert_eq!(sizes, want, "a listing gives inline objects' sizes (it does not carry their data)");

    put_bytes(&s3, &bucket, "over", &random_bytes(INLINE_MAX + 1)).await;
    assert_eq!(server.block_files().len(), 1, "an object of 16 KiB + 1 byte needs a block file");
}

#[tokio::test]
async fn unreferenced_blocks_are_garbage_collected() {
    let (server, s3, bucket) = Server::builder().block_size(MIB).gc_delay_secs(0).start_with_bucket("gc").await;
    let shared = random_bytes(2 * MIB + 100);
    let other = random_bytes(MIB);
    put_bytes(&s3, &bucket, "a", &shared).await;
    put_bytes(&s3, &bucket, "b", &shared).await;
    put_bytes(&s3, &bucket, "c", &other).await;
    assert_eq!(server.block_files().len(), 4);

    // Blocks still referenced by "b" must survive at least one GC run.
    s3.delete_object().bucket(&bucket).key("a").send().await.expect("delete a");
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(server.block_files().len(), 4, "GC removed blocks that are still referenced");
    assert!(get_bytes(&s3, &bucket, "b").await == shared, "b damaged by GC");

    s3.delete_object().bucket(&bucket).key("b").send().await.expect("delete b");
    let gone = wait_until(GC_WAIT, || async { server.block_files().len() == 1 }).await;
    assert!(gone, "blocks of deleted objects remain: {:?}", server.block_files());

    // Overwriting releases the old content's blocks.
    put_bytes(&s3, &bucket, "c", b"now tiny and inline").await;
    let gone = wait_until(GC_WAIT, || async { server.block_files().is_empty() }).await;
    assert!(gone, "blocks of overwritten object remain: {:?}", server.block_files());
    assert_eq!(get_bytes(&s3, &bucket, "c").await, b"now tiny and inline");
}

#[tokio::test]
async fn aborted_upload_blocks_are_garbage_collected() {
    let (server, s3, bucket) = Server::builder().block_size(MIB).gc_delay_secs(0).start_with_bucket("gc-mpu").await;
    let id = create_upload(&s3, &bucket, "k").await;
    upload_part(&s3, &bucket, "k", &id, 1, &random_bytes(2 * MIB)).await;
    assert_eq!(server.block_files().len(), 2);
    s3.abort_multipart_upload().bucket(&bucket).key("k").upload_id(&id).send().await.expect("abort");
    let gone = wait_until(GC_WAIT, || async { server.block_files().is_empty() }).await;
    assert!(gone, "blocks of an aborted upload remain: {:?}", server.block_files());
}

#[tokio::test]
async fn restart_keeps_everything() {
    let (server, s3, bucket) = Server::builder().block_size(MIB).start_with_bucket("persist").await;
    let small = b"small inline object".to_vec();
    let big = random_bytes(3 * MIB + 7);
    put_bytes(&s3, &bucket, "small", &small).await;
    s3.put_object()
        .bucket(&bucket)
        .key("big")
        .body(ByteStream::from(big.clone()))
        .content_type("application/x-big")
        .metadata("note", "survives restarts")
        .send()
        .await
        .expect("put big");
    let key = server.create_key("persistent").await;
    server.cli_ok(["bucket", "allow", "--read", &bucket, "--key", "persistent"]).await;
    server.cli_ok(["bucket", "create", "admin-made"]).await;

    // An upload in progress across the restart.
    let part1 = random_bytes(5 * MIB);
    let id = create_upload(&s3, &bucket, "mpu").await;
    let e1 = upload_part(&s3, &bucket, "mpu", &id, 1, &part1).await;

    let (old_ak, old_sk) = (server.access_key.clone(), server.secret_key.clone());
    let blocks_before = server.block_files();
    let server = server.stop().await.start().await;
    assert_eq!(
        (server.access_key.as_str(), server.secret_key.as_str()),
        (old_ak.as_str(), old_sk.as_str()),
        "root key changed"
    );
    assert_eq!(server.block_files(), blocks_before);

    let s3 = server.s3_client();
    let names = bucket_names(&s3).await;
    assert!(names.contains(&bucket), "bucket lost: {names:?}");
    assert_eq!(get_bytes(&s3, &bucket, "small").await, small);
    let got = s3.get_object().bucket(&bucket).key("big").send().await.expect("get big");
    assert_eq!(got.content_type(), Some("application/x-big"));
    assert_eq!(got.metadata().and_then(|m| m.get("note")).map(String::as_str), Some("survives restarts"));
    assert!(body_bytes(got.body).await == big, "big object changed across restart");

    let info = server.cli_ok(["key", "info", "persistent"]).await;
    assert!(info.contains(&key.id), "key info after restart:\n{info}");
    assert!(server.cli_ok(["bucket", "list"]).await.contains("admin-made"));
    let ks3 = server.s3_client_for_key(&key);
    assert_eq!(get_bytes(&ks3, &bucket, "small").await, small, "key rights lost across restart");

    let part2 = b"final part".to_vec();
    let e2 = upload_part(&s3, &bucket, "mpu", &id, 2, &part2).await;
    complete_upload(&s3, &bucket, "mpu", &id, &[(1, &e1), (2, &e2)]).send().await.expect("complete after restart");
    assert!(get_bytes(&s3, &bucket, "mpu").await == [part1, part2].concat());

    // And a clean shutdown once more.
    server.stop().await;
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let (server, s3, bucket) = Server::builder().block_size(MIB).start_with_bucket("crash").await;
    put_bytes(&s3, &bucket, "doomed", b"deleted before the crash").await;

    let small = b"acknowledged inline".to_vec();
    let big = random_bytes(2 * MIB + 1);
    put_bytes(&s3, &bucket, "small", &small).await;
    put_bytes(&s3, &bucket, "big", &big).await;
    s3.delete_object().bucket(&bucket).key("doomed").send().await.expect("delete");
    let late_bucket = new_bucket(&s3, "late").await;
    // SIGKILL immediately after the acknowledgements.
    let server = server.kill9().start().await;

    let s3 = server.s3_client();
    assert_eq!(get_bytes(&s3, &bucket, "small").await, small, "inline object lost in crash");
    assert!(get_bytes(&s3, &bucket, "big").await == big, "block object lost or damaged in crash");
    expect_s3_error(s3.get_object().bucket(&bucket).key("doomed").send().await, 404, Some("NoSuchKey"));
    s3.head_bucket().bucket(&late_bucket).send().await.expect("bucket created before the crash");
}
