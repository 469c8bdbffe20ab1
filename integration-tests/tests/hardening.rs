//! What hostile clients and faults did to a single server, each now refused or survived:
//! truncated aws-chunked bodies, a full disk, data that cannot be read after the status
//! line, space left behind by a crash, cross-tenant multipart injection, unauthenticated
//! form uploads, silent connections, slow readers, unbounded metric labels, long-lived
//! presigned URLs, log amplification, and a few wrong answers.

use std::time::Duration;

use hangar_integration_tests::sigv4::{self, STREAMING_SIGNED, STREAMING_UNSIGNED_TRAILER, encode_path};
use hangar_integration_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---- aws-chunked bodies ----------------------------------------------------------------

#[tokio::test]
async fn aws_chunked_bodies_must_come_whole() {
    let (server, s3, bucket) = Server::start_with_bucket("chunked").await;
    let signer = server.signer();
    let host = server.s3_addr.to_string();

    // A streaming upload whose body is not chunk-encoded at all.
    let mut req = server
        .raw_request("PUT", &encode_path(&bucket, "plain"))
        .header("content-encoding", "aws-chunked")
        .header("x-amz-decoded-content-length", "11")
        .body(b"hello world".to_vec());
    server.sign_now(&mut req, STREAMING_SIGNED);
    let (status, code) = status_and_code(server.send_raw(&req).await).await;
    assert_eq!((status, code.as_deref()), (400, Some("IncompleteBody")), "unframed body");

    // Unsigned chunks with a trailer announced: 5 of 1000 bytes and no trailer.
    let mut req = server
        .raw_request("PUT", &encode_path(&bucket, "short-trailer"))
        .header("content-encoding", "aws-chunked")
        .header("x-amz-decoded-content-length", "1000")
        .header("x-amz-trailer", "x-amz-checksum-crc32")
        .body(b"5\r\nhello\r\n".to_vec());
    server.sign_now(&mut req, STREAMING_UNSIGNED_TRAILER);
    let (status, code) = status_and_code(server.send_raw(&req).await).await;
    assert_eq!((status, code.as_deref()), (400, Some("IncompleteBody")), "short body without its trailer");

    // The right length, but the announced trailer never comes.
    let data = b"hello";
    let mut req = server
        .raw_request("PUT", &encode_path(&bucket, "no-trailer"))
        .header("content-encoding", "aws-chunked")
        .header("x-amz-decoded-content-length", "5")
        .header("x-amz-trailer", "x-amz-checksum-crc32")
        .body(b"5\r\nhello\r\n0\r\n\r\n".to_vec());
    server.sign_now(&mut req, STREAMING_UNSIGNED_TRAILER);
    let (status, code) = status_and_code(server.send_raw(&req).await).await;
    assert_eq!((status, code.as_deref()), (400, Some("IncompleteBody")), "trailer missing");

    // Signed chunks, every data byte present, but no final chunk.
    let full = random_bytes(5000);
    let path = encode_path(&bucket, "no-final");
    let req = signer.streaming_put_with(&host, &path, &full, 1000, None, 5000, false);
    let (status, code) = status_and_code(server.send_raw(&req).await).await;
    assert_eq!((status, code.as_deref()), (400, Some("IncompleteBody")), "final chunk missing");

    // A complete signed stream of 100 bytes that declared 5000.
    let path = encode_path(&bucket, "cut");
    let req = signer.streaming_put_with(&host, &path, &full[..100], 100, None, 5000, true);
    let (status, code) = status_and_code(server.send_raw(&req).await).await;
    assert_eq!((status, code.as_deref()), (400, Some("IncompleteBody")), "100 of 5000 bytes");

    for key in ["plain", "short-trailer", "no-trailer", "no-final", "cut"] {
        assert_no_object(&s3, &bucket, key).await;
    }

    // And whole streams still work.
    let req = signer.streaming_put(&host, &encode_path(&bucket, "whole"), &full, 1000, None);
    assert_eq!(server.send_raw(&req).await.status().as_u16(), 200);
    assert_eq!(get_bytes(&s3, &bucket, "whole").await, full);
    let body = sigv4::trailer_body(data, 64, "x-amz-checksum-crc32", &sigv4::crc32_base64(data));
    let mut req = server
        .raw_request("PUT", &encode_path(&bucket, "trailer"))
        .header("content-encoding", "aws-chunked")
        .header("x-amz-decoded-content-length", "5")
        .header("x-amz-trailer", "x-amz-checksum-crc32")
        .body(body);
    server.sign_now(&mut req, STREAMING_UNSIGNED_TRAILER);
    assert_eq!(server.send_raw(&req).await.status().as_u16(), 200);
}

#[tokio::test]
async fn a_payload_that_does_not_match_its_signed_hash_is_refused() {
    let (server, s3, bucket) = Server::start_with_bucket("sha").await;
    let req = server.raw_request("PUT", &encode_path(&bucket, "k")).body(b"the real body".to_vec());
    let (status, code) = status_and_code(server.send_signed(req, &sigv4::sha256_hex(b"another body")).await).await;
    assert_eq!((status, code.as_deref()), (400, Some("XAmzContentSHA256Mismatch")));
    assert_no_object(&s3, &bucket, "k").await;
}

// ---- a full disk -------------------------------------------------------------------------

/// A small filesystem for the server's data: a tmpfs where the test may mount one, else a
/// directory whose free-space reserve the test sets to leave `size` bytes usable.
struct SmallDisk {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl SmallDisk {
    fn new(size_mib: u64) -> SmallDisk {
        let dir = tempfile::Builder::new().prefix("hangar-small-disk-").tempdir().expect("temp dir");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        SmallDisk { dir, mounted }
    }

    /// The reserve to configure so that about `usable_mib` MiB can be written.
    fn reserve_for(&self, usable_mib: u64, reserve_mib: u64) -> u64 {
        if self.mounted {
            reserve_mib << 20
        } else {
            let free = fs_free(self.dir.path());
            free.saturating_sub(usable_mib << 20)
        }
    }

    fn grow(&self, size_mib: u64) -> bool {
        self.mounted
            && std::process::Command::new("mount")
                .args(["-o", &format!("remount,size={size_mib}m")])
                .arg(self.dir.path())
                .status()
                .is_ok_and(|s| s.success())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

fn fs_free(p: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df").args(["-B1", "--output=avail"]).arg(p).output().expect("df");
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df output")
}

#[tokio::test]
async fn a_full_disk_gives_a_clear_error_keeps_reads_and_heals() {
    let disk = SmallDisk::new(96);
    let reserve = disk.reserve_for(72, 24);
    let server = Server::builder()
        .data_dir(disk.dir.path().join("data"))
        .env("HANGAR_FREE_SPACE_RESERVE", reserve)
        .gc_delay_secs(1)
        .start()
        .await;
    let s3 = server.s3_client();
    let bucket = new_bucket(&s3, "full").await;
    let mut stored = Vec::new();
    let mut refused = None;
    for i in 0..40 {
        let data = random_bytes(8 << 20);
        let r = s3.put_object().bucket(&bucket).key(format!("o{i}")).body(data.clone().into()).send().await;
        match r {
            Ok(_) => stored.push((format!("o{i}"), data)),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("the disk never filled up");
    assert_eq!(err_status(&err), Some(507), "{err:?}");
    assert_eq!(err_code(&err).as_deref(), Some("InsufficientStorage"), "{err:?}");
    assert!(stored.len() >= 3, "only {} objects fit", stored.len());

    // While full: reads work, the condition shows in /health, nothing half-written is left.
    for (key, data) in &stored {
        assert_eq!(&get_bytes(&s3, &bucket, key).await, data, "{key} while the disk is full");
    }
    let (status, body) = server.admin_get("/health").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("free-space reserve"), "{body}");
    let tmp = server.data_dir.join("blocks").join("tmp");
    assert_eq!(std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0), 0, "temporary block files left behind");

    // Deleting still works (it frees space), and so does writing once there is room again.
    let (gone, _) = stored.remove(0);
    s3.delete_object().bucket(&bucket).key(&gone).send().await.expect("delete while full");
    if !disk.grow(256) {
        for (key, _) in stored.drain(..stored.len() / 2) {
            s3.delete_object().bucket(&bucket).key(&key).send().await.expect("delete while full");
        }
    }
    let data = random_bytes(4 << 20);
    let healed = wait_until(Duration::from_secs(30), || {
        let (s3, bucket, data) = (s3.clone(), bucket.clone(), data.clone());
        async move { s3.put_object().bucket(&bucket).key("after").body(data.into()).send().await.is_ok() }
    })
    .await;
    assert!(healed, "writes did not come back once space was free\n{}", server.log());
    assert_eq!(get_bytes(&s3, &bucket, "after").await, data);
    let (status, body) = server.admin_get("/health").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    for (key, data) in &stored {
        assert_eq!(&get_bytes(&s3, &bucket, key).await, data, "{key} after healing");
    }
    drop(server);
}

// ---- reads that fail ---------------------------------------------------------------

#[tokio::test]
async fn a_get_whose_data_is_gone_answers_an_error_not_an_empty_200() {
    let (server, s3, bucket) = Server::start_with_bucket("lost").await;
    put_bytes(&s3, &bucket, "missing", &random_bytes(3 << 20)).await;
    for f in server.block_files() {
        std::fs::remove_file(f).expect("remove block");
    }
    let err = s3.get_object().bucket(&bucket).key("missing").send().await.expect_err("a GET of lost data succeeded");
    assert!(err_status(&err).is_some_and(|s| s >= 500), "{err:?}");
    assert!(err_code(&err).is_some(), "not an S3 error: {err:?}");

    put_bytes(&s3, &bucket, "corrupt", &random_bytes(2 << 20)).await;
    for f in server.block_files() {
        std::fs::write(&f, b"garbage").expect("corrupt block");
    }
    let err = s3.get_object().bucket(&bucket).key("corrupt").send().await.expect_err("corrupt data was served");
    assert!(err_status(&err).is_some_and(|s| s >= 500), "{err:?}");
}

// ---- space left behind -------------------------------------------------------------

#[tokio::test]
async fn racing_puts_of_one_key_leave_no_space_behind() {
    let (server, s3, bucket) = Server::builder().gc_delay_secs(1).start_with_bucket("race").await;
    for round in 0..20 {
        let key = format!("k{round}");
        let (a, b) = (random_bytes(2 << 20), random_bytes(2 << 20));
        let (ra, rb) = tokio::join!(
            s3.put_object().bucket(&bucket).key(&key).body(a.into()).send(),
            s3.put_object().bucket(&bucket).key(&key).body(b.into()).send()
        );
        ra.expect("put a");
        rb.expect("put b");
    }
    for round in 0..20 {
        s3.delete_object().bucket(&bucket).key(format!("k{round}")).send().await.expect("delete");
    }
    let freed = wait_until(Duration::from_secs(60), || async { server.block_files().is_empty() }).await;
    assert!(freed, "{} block files left after deleting every key\n{}", server.block_files().len(), server.log());
}

#[tokio::test]
async fn a_put_cut_by_kill_9_leaves_no_space_behind() {
    let builder = Server::builder().gc_delay_secs(1).env("HANGAR_PENDING_WRITE_GRACE_SECS", 3);
    let (server, s3, bucket) = builder.start_with_bucket("crash").await;
    put_bytes(&s3, &bucket, "kept", &random_bytes(2 << 20)).await;
    let kept_blocks = server.block_files().len();

    // 200 MiB announced, 40 MiB sent, then the server dies.
    let mut req = server.raw_request("PUT", &encode_path(&bucket, "big"));
    server.sign_now(&mut req, sigv4::UNSIGNED_PAYLOAD);
    let mut head = format!("PUT {} HTTP/1.1\r\n", req.target());
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", 200u64 << 20));
    let mut stream = tokio::net::TcpStream::connect(server.s3_addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    for _ in 0..40 {
        stream.write_all(&random_bytes(1 << 20)).await.expect("body");
    }
    let grew = wait_until(Duration::from_secs(30), || async { server.block_files().len() >= kept_blocks + 30 }).await;
    assert!(grew, "the upload stored nothing");
    let stopped = server.kill9();
    drop(stream);
    let server = stopped.start().await;
    assert!(server.block_files().len() > kept_blocks, "the crash left no blocks to collect");
    let collected = wait_until(Duration::from_secs(90), || async { server.block_files().len() == kept_blocks }).await;
    assert!(
        collected,
        "{} blocks of the cut upload were never collected\n{}",
        server.block_files().len(),
        server.log()
    );
    let s3 = server.s3_client();
    assert_no_object(&s3, &bucket, "big").await;
    assert_eq!(get_bytes(&s3, &bucket, "kept").await.len(), 2 << 20);
}

// ---- cross-tenant multipart injection -----------------------------------------------

#[tokio::test]
async fn uploads_of_other_tenants_cannot_be_reached() {
    let (server, victim, vbucket) = Server::start_with_bucket("victim").await;
    let upload = create_upload(&victim, &vbucket, "doc").await;
    let part = random_bytes(100_000);
    let etag = upload_part(&victim, &vbucket, "doc", &upload, 1, &part).await;

    let attacker_key = server.create_key("attacker").await;
    server.cli_ok(["key", "allow", "--create-bucket", &attacker_key.id]).await;
    let attacker = server.s3_client_for_key(&attacker_key);
    let abucket = new_bucket(&attacker, "attacker").await;

    // A key built to make the upload table key of another upload: refused outright.
    let r = attacker.create_multipart_upload().bucket(&abucket).key(format!("x\0{upload}")).send().await;
    expect_s3_error(r, 400, Some("InvalidArgument"));
    // An upload id that is not one we issued, or one of another bucket.
    let own = create_upload(&attacker, &abucket, "x").await;
    for (key, id) in [("x", format!("{upload}\0{own}")), ("doc", upload.clone()), ("x", upload.clone())] {
        let r = attacker
            .upload_part()
            .bucket(&abucket)
            .key(key)
            .upload_id(&id)
            .part_number(1)
            .body(b"evil".to_vec().into())
            .send()
            .await;
        expect_s3_error(r, 404, Some("NoSuchUpload"));
    }
    let r = attacker
        .upload_part()
        .bucket(&vbucket)
        .key("doc")
        .upload_id(&upload)
        .part_number(1)
        .body(b"evil".to_vec().into())
        .send()
        .await;
    expect_s3_error(r, 403, Some("AccessDenied"));

    let parts = victim.list_parts().bucket(&vbucket).key("doc").upload_id(&upload).send().await.expect("list parts");
    assert_eq!(parts.parts().len(), 1, "{:?}", parts.parts());
    complete_upload(&victim, &vbucket, "doc", &upload, &[(1, &etag)]).send().await.expect("complete");
    assert_eq!(get_bytes(&victim, &vbucket, "doc").await, part);
}

// ---- form uploads ------------------------------------------------------------------

/// Sends a multipart/form-data POST announcing `size` bytes of file, as fast as the server
/// takes them; returns the status line, if any.
async fn form_post(server: &Server, bucket: &str, size: u64) -> String {
    let boundary = "hangarboundary";
    let head_part = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nx\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let total = head_part.len() as u64 + size + tail.len() as u64;
    let mut stream = tokio::net::TcpStream::connect(server.s3_addr).await.expect("connect");
    let head = format!(
        "POST /{bucket} HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {total}\r\n\r\n{head_part}",
        server.s3_addr
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let chunk = vec![0u8; 1 << 20];
    let mut sent = 0;
    while sent < size {
        if stream.write_all(&chunk).await.is_err() {
            break;
        }
        sent += chunk.len() as u64;
    }
    let _ = stream.write_all(tail.as_bytes()).await;
    let mut reply = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut reply))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    String::from_utf8_lossy(&reply[..n]).lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn unauthenticated_form_uploads_cost_no_memory() {
    let (server, _s3, bucket) = Server::start_with_bucket("form").await;
    let before = proc_status_kib(server.pid(), "VmRSS");
    let (a, b) = tokio::join!(form_post(&server, &bucket, 500 << 20), form_post(&server, &bucket, 500 << 20));
    for line in [a, b] {
        assert!(line.is_empty() || line.contains("501"), "a form upload was answered {line:?}");
    }
    let peak = proc_status_kib(server.pid(), "VmHWM");
    // Two 500 MiB uploads at once: memory must not follow them (bound: 64 MiB above the
    // resident size before).
    assert!(peak < before + 64 * 1024, "RSS went from {before} KiB to a peak of {peak} KiB");
    let (status, _) = server.admin_get("/health").await;
    assert_eq!(status, 200);
}

// ---- connections -------------------------------------------------------------------

#[tokio::test]
async fn silent_and_idle_connections_are_closed_and_limited() {
    let server = Server::builder()
        .env("HANGAR_S3_HEADER_TIMEOUT_SECS", 2)
        .env("HANGAR_S3_IDLE_TIMEOUT_SECS", 3)
        .env("HANGAR_S3_MAX_CONNECTIONS", 40)
        .start()
        .await;
    let s3 = server.s3_client();
    // Silent sockets, a half HTTP/2 preface, an idle keep-alive connection after a request.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(server.s3_addr).await.expect("connect"));
    }
    let mut preface = tokio::net::TcpStream::connect(server.s3_addr).await.expect("connect");
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
    let mut idle = tokio::net::TcpStream::connect(server.s3_addr).await.expect("connect");
    idle.write_all(format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", server.s3_addr).as_bytes()).await.unwrap();
    // A full HTTP/2 preface and settings, then nothing: no request ever comes.
    let mut h2 = tokio::net::TcpStream::connect(server.s3_addr).await.expect("connect");
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.expect("write");
    let mut admin = tokio::net::TcpStream::connect(server.admin_addr).await.expect("connect admin");
    for s in silent.iter_mut().chain([&mut preface, &mut idle, &mut h2]) {
        assert!(closed_by_peer(s, Duration::from_secs(15)).await, "a connection was left open");
    }
    assert!(closed_by_peer(&mut admin, Duration::from_secs(30)).await, "the admin port kept a silent connection");

    // Past the limit, new connections are closed at once (whichever of them the server
    // accepted last), and normal service resumes once the silent ones are gone.
    let mut hogs = Vec::new();
    for _ in 0..50 {
        hogs.push(tokio::net::TcpStream::connect(server.s3_addr).await.expect("connect"));
    }
    // All at once, well within the 2 s a silent connection inside the limit is given.
    let closed = futures::future::join_all(hogs.iter_mut().map(|h| closed_by_peer(h, Duration::from_millis(1000))))
        .await
        .into_iter()
        .filter(|c| *c)
        .count();
    assert!((10..50).contains(&closed), "{closed} of 50 connections closed at once with a limit of 40");
    drop(hogs);
    let ok = wait_until(Duration::from_secs(10), || async { s3.list_buckets().send().await.is_ok() }).await;
    assert!(ok, "the server did not serve again after the silent connections");
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(metrics.contains("hangar_connections_refused "), "{metrics}");
}

#[tokio::test]
async fn clients_that_stop_reading_are_cut_off() {
    let server = Server::builder().env("HANGAR_S3_SEND_TIMEOUT_SECS", 2).start().await;
    let s3 = server.s3_client();
    let bucket = new_bucket(&s3, "slow").await;
    put_bytes(&s3, &bucket, "big", &random_bytes(30 << 20)).await;
    let before = proc_status_kib(server.pid(), "VmRSS");
    // Each round: 20 GETs of the 30 MiB object whose clients never read past the first
    // KiB. While they stall the server may hold a few blocks each (read-ahead plus the
    // block being sent), never the object; after the send timeout it lets them go. The
    // allocator need not hand freed memory back to the kernel, so release is judged by
    // a second round: it must fit in the memory the first one left behind.
    let first = stalled_readers_round(&server, &bucket).await;
    assert!(first < before + 20 * 8 * 1024, "20 stalled readers took RSS from {before} to {first} KiB");
    let second = stalled_readers_round(&server, &bucket).await;
    assert!(
        second < first + 32 * 1024,
        "memory of cut-off readers was not reused: RSS peaked at {first} KiB in the first round, {second} KiB in the second"
    );
}

/// Opens 20 GETs of `big` that stop reading, waits until the server has cut them all
/// off, and returns the RSS (KiB) seen while they stalled.
async fn stalled_readers_round(server: &Server, bucket: &str) -> u64 {
    let timed_out = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("hangar_connections_timed_out "))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let start = timed_out(&server.admin_get("/metrics").await.1);
    let mut readers = Vec::new();
    for _ in 0..20 {
        let mut req = server.raw_request("GET", &encode_path(bucket, "big"));
        server.sign_now(&mut req, sigv4::UNSIGNED_PAYLOAD);
        let mut head = format!("GET {} HTTP/1.1\r\n", req.target());
        for (k, v) in &req.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut stream = tokio::net::TcpStream::connect(server.s3_addr).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut first = [0u8; 1024];
        let _ = stream.read(&mut first).await;
        readers.push(stream);
    }
    // The readers' buffers fill while the server is still within its send timeout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = proc_status_kib(server.pid(), "VmRSS");
    // Nobody reads: the server gives up on them after the send timeout.
    let cut = wait_until(Duration::from_secs(20), || async {
        let (_, m) = server.admin_get("/metrics").await;
        timed_out(&m) >= start + 20.0
    })
    .await;
    assert!(cut, "slow readers were not cut off");
    for r in &mut readers {
        assert!(closed_by_peer(r, Duration::from_secs(10)).await, "a slow reader's connection stayed open");
    }
    peak.max(proc_status_kib(server.pid(), "VmRSS"))
}

// ---- metrics, presigned URLs, logs ---------------------------------------------------

#[tokio::test]
async fn metric_labels_come_from_a_fixed_set() {
    let server = Server::start().await;
    for i in 0..300 {
        let mut s = tokio::net::TcpStream::connect(server.s3_addr).await.expect("connect");
        let req = format!("M{i:06} /x{i} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.s3_addr);
        s.write_all(req.as_bytes()).await.expect("write");
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
    }
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(!metrics.contains("M000"), "a made-up method became a label");
    assert!(metrics.len() < 64 * 1024, "/metrics grew to {} bytes", metrics.len());
    assert!(metrics.contains("api_endpoint=\"unknown\""), "{metrics}");
}

#[tokio::test]
async fn sigv2_and_week_long_presigned_urls_are_refused() {
    let (server, s3, bucket) = Server::start_with_bucket("presign").await;
    put_bytes(&s3, &bucket, "k", b"data").await;
    let http = server.http();
    let url = format!("{}/{bucket}/k", server.endpoint);
    let resp = http
        .get(&url)
        .header("authorization", format!("AWS {}:c2lnbmF0dXJl", server.access_key))
        .header("date", "Mon, 01 Jan 2024 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    let (status, code) = status_and_code(resp).await;
    assert_eq!((status, code.as_deref()), (400, Some("InvalidRequest")), "SigV2 header");
    let v2 = format!("{url}?AWSAccessKeyId={}&Expires=4102444800&Signature=c2ln", server.access_key);
    let (status, code) = status_and_code(http.get(&v2).send().await.unwrap()).await;
    assert_eq!((status, code.as_deref()), (400, Some("InvalidRequest")), "SigV2 presigned URL");

    use aws_sdk_s3::presigning::PresigningConfig;
    let week = PresigningConfig::expires_in(Duration::from_secs(604_800)).unwrap();
    let ok = s3.get_object().bucket(&bucket).key("k").presigned(week).await.unwrap();
    assert_eq!(http.get(ok.uri()).send().await.unwrap().status().as_u16(), 200, "7 days is allowed");
    let longer = ok.uri().replace("X-Amz-Expires=604800", "X-Amz-Expires=604801");
    let (status, code) = status_and_code(http.get(&longer).send().await.unwrap()).await;
    assert_eq!((status, code.as_deref()), (400, Some("AuthorizationQueryParametersError")));
}

#[tokio::test]
async fn malformed_bodies_do_not_flood_the_log() {
    let (server, _s3, bucket) = Server::start_with_bucket("logs").await;
    let log_len = || std::fs::metadata(server.log_path()).map(|m| m.len()).unwrap_or(0);
    let before = log_len();
    for size in [1 << 20, 3 << 20] {
        let garbage = vec![b'<'; size];
        let req = server
            .raw_request("POST", &format!("/{bucket}"))
            .query("delete", "")
            .header("content-md5", &content_md5(&garbage))
            .body(garbage.clone());
        let (status, code) = status_and_code(server.send_signed(req, &sigv4::sha256_hex(&garbage)).await).await;
        let want = if size > 2 << 20 { "MaxMessageLengthExceeded" } else { "MalformedXML" };
        assert_eq!((status, code.as_deref()), (400, Some(want)), "{size} bytes");
    }
    let grown = log_len() - before;
    assert!(grown < 16 * 1024, "4 MiB of garbage wrote {grown} bytes of log");
}

// ---- wrong answers -------------------------------------------------------------------

#[tokio::test]
async fn keys_xml_cannot_carry_are_refused_and_upload_listings_encode() {
    let (_server, s3, bucket) = Server::start_with_bucket("keys").await;
    for key in ["a\u{1}b", "nul\0here", "esc\u{1b}"] {
        let r = s3.put_object().bucket(&bucket).key(key).body(b"x".to_vec().into()).send().await;
        expect_s3_error(r, 400, Some("InvalidArgument"));
        let r = s3.create_multipart_upload().bucket(&bucket).key(key).send().await;
        expect_s3_error(r, 400, Some("InvalidArgument"));
    }
    create_upload(&s3, &bucket, "dir/a b ü").await;
    let out = s3
        .list_multipart_uploads()
        .bucket(&bucket)
        .encoding_type(aws_sdk_s3::types::EncodingType::Url)
        .send()
        .await
        .expect("list uploads");
    let keys: Vec<&str> = out.uploads().iter().filter_map(|u| u.key()).collect();
    assert_eq!(keys, ["dir/a%20b%20%C3%BC"], "keys are URL-encoded when asked");
    assert_eq!(url_decode(keys[0]), "dir/a b ü");
}

#[tokio::test]
async fn small_wrong_answers_are_right_now() {
    let (server, s3, bucket) = Server::start_with_bucket("answers").await;
    put_bytes(&s3, &bucket, "k", b"0123456789").await;
    // partNumber=0
    let r = s3.get_object().bucket(&bucket).key("k").part_number(0).send().await;
    expect_s3_error(r, 400, Some("InvalidPartNumber"));
    // A copy source naming a version.
    let r = s3.copy_object().bucket(&bucket).key("c").copy_source(format!("{bucket}/k?versionId=abc")).send().await;
    expect_s3_error(r, 501, Some("NotImplemented"));
    // No Host header (HTTP/1.0 allows leaving it out).
    let mut s = tokio::net::TcpStream::connect(server.s3_addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("write");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.0 400") || reply.starts_with("HTTP/1.1 400"), "{reply}");
    // An XML body over the limit, told by its length before it is read.
    let big = vec![b' '; (2 << 20) + 1];
    let upload = create_upload(&s3, &bucket, "mpu").await;
    let req = server.raw_request("POST", &encode_path(&bucket, "mpu")).query("uploadId", &upload).body(big.clone());
    let (status, code) = status_and_code(server.send_signed(req, &sigv4::sha256_hex(&big)).await).await;
    assert_eq!((status, code.as_deref()), (400, Some("MaxMessageLengthExceeded")));
}

#[tokio::test]
async fn a_slow_upload_is_not_taken_for_an_abandoned_one() {
    let builder = Server::builder().gc_delay_secs(1).env("HANGAR_PENDING_WRITE_GRACE_SECS", 2);
    let (server, s3, bucket) = builder.start_with_bucket("slow").await;
    // 3 MiB over about 8 seconds, four times the grace period.
    let data = random_bytes(3 << 20);
    let mut req = server.raw_request("PUT", &encode_path(&bucket, "slow"));
    server.sign_now(&mut req, sigv4::UNSIGNED_PAYLOAD);
    let mut head = format!("PUT {} HTTP/1.1\r\n", req.target());
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", data.len()));
    let mut stream = tokio::net::TcpStream::connect(server.s3_addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    for chunk in data.chunks(data.len() / 16) {
        stream.write_all(chunk).await.expect("body");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut reply = vec![0u8; 256];
    let n = stream.read(&mut reply).await.expect("reply");
    assert!(
        String::from_utf8_lossy(&reply[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply[..n])
    );
    // Well past the grace period and the deletion delay, the object is whole.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(get_bytes(&s3, &bucket, "slow").await, data);
}

#[tokio::test]
async fn copies_racing_overwrites_of_their_source_are_whole_or_refused() {
    let (_server, s3, bucket) = Server::builder().gc_delay_secs(1).start_with_bucket("copyrace").await;
    let mut copies = Vec::new();
    for round in 0..30 {
        let (old, new) = (random_bytes(3 << 20), random_bytes(3 << 20));
        put_bytes(&s3, &bucket, "src", &old).await;
        let (copied, _) = tokio::join!(
            s3.copy_object().bucket(&bucket).key(format!("dst{round}")).copy_source(format!("{bucket}/src")).send(),
            s3.put_object().bucket(&bucket).key("src").body(new.clone().into()).send()
        );
        if copied.is_ok() {
            copies.push((format!("dst{round}"), old, new));
        }
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (key, old, new) in &copies {
        let got = get_bytes(&s3, &bucket, key).await;
        assert!(&got == old || &got == new, "{key} is not a whole copy ({} bytes)", got.len());
    }
}
