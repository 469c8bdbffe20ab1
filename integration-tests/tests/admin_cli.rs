//! The admin HTTP endpoint and the `hangar` admin CLI.

use std::process::Output;

use aws_sdk_s3::primitives::ByteStream;
use hangar_integration_tests::*;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a CLI failure: non-zero exit and exactly one readable stderr line.
#[track_caller]
fn assert_cli_error(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: expected failure, got success; stdout: {}", stdout(out));
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: stderr should be one line, got:\n{stderr}");
    assert!(lines[0].len() > 5, "{what}: unhelpful message {:?}", lines[0]);
}

#[tokio::test]
async fn health_and_metrics() {
    let server = Server::start().await;
    let (status, body) = server.admin_get("/health").await;
    assert_eq!((status, body.trim()), (200, "ok"));

    // Some S3 traffic so request metrics exist.
    let s3 = server.s3_client();
    s3.create_bucket().bucket("metrics-bucket").send().await.expect("create bucket");
    let _ = s3.get_object().bucket("metrics-bucket").key("missing").send().await;

    let (status, body) = server.admin_get("/metrics").await;
    assert_eq!(status, 200);
    let samples: Vec<&str> = body.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert!(!samples.is_empty(), "no metric samples:\n{body}");
    for line in &samples {
        let value = line.rsplit(' ').next().unwrap_or("");
        assert!(value.parse::<f64>().is_ok(), "not Prometheus text format: {line}");
    }
    // Garage's names and labels: the S3 operation, not the HTTP method.
    assert!(body.contains("api_s3_request_counter{api_endpoint=\"CreateBucket\"} 1\n"), "{body}");
    assert!(body.contains("api_s3_error_counter{api_endpoint=\"GetObject\",status_code=\"404\"} 1\n"), "{body}");

    let (status, _) = server.admin_get("/no-such-admin-path").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn key_lifecycle() {
    let server = Server::start().await;
    let key = server.create_key("alice").await;
    assert!(key.id.starts_with("GK"), "key id {:?}", key.id);
    assert_eq!(key.name, "alice");
    assert!(key.secret.len() >= 32 && key.secret.bytes().all(|b| b.is_ascii_hexdigit()), "secret {:?}", key.secret);

    let list = server.cli_ok(["key", "list"]).await;
    assert!(list.contains(&key.id) && list.contains("alice"), "key list:\n{list}");
    for selector in [key.id.as_str(), "alice"] {
        let info = server.cli_ok(["key", "info", selector]).await;
        assert!(info.contains(&key.id) && info.contains("alice"), "key info {selector}:\n{info}");
    }

    // The key authenticates (it has no buckets yet).
    let s3 = server.s3_client_for_key(&key);
    let buckets = s3.list_buckets().send().await.expect("new key can list buckets");
    assert!(buckets.buckets().is_empty());

    let second = server.create_key("bob").await;
    assert_ne!(second.id, key.id);
    assert_ne!(second.secret, key.secret);

    server.cli_ok(["key", "delete", "alice", "--yes"]).await;
    catalog_settles().await;
    let list = server.cli_ok(["key", "list"]).await;
    assert!(!list.contains(&key.id), "deleted key still listed:\n{list}");
    assert!(list.contains(&second.id), "other key vanished:\n{list}");
    expect_s3_error(s3.list_buckets().send().await, 403, Some("InvalidAccessKeyId"));
    assert_cli_error(&server.cli(["key", "info", "alice"]).await, "key info of a deleted key");
    assert_cli_error(&server.cli(["key", "delete", "alice", "--yes"]).await, "deleting a deleted key");
}

#[tokio::test]
async fn bucket_lifecycle() {
    let server = Server::start().await;
    server.cli_ok(["bucket", "create", "cli-bucket"]).await;
    assert_cli_error(&server.cli(["bucket", "create", "cli-bucket"]).await, "creating an existing bucket");
    assert_cli_error(&server.cli(["bucket", "create", "Bad_Name"]).await, "invalid bucket name");

    let list = server.cli_ok(["bucket", "list"]).await;
    assert!(list.contains("cli-bucket"), "bucket list:\n{list}");
    let info = server.cli_ok(["bucket", "info", "cli-bucket"]).await;
    assert!(info.contains("cli-bucket"), "bucket info:\n{info}");

    // Buckets created through S3 show up too.
    server.s3_client().create_bucket().bucket("s3-made").send().await.expect("create via S3");
    let list = server.cli_ok(["bucket", "list"]).await;
    assert!(list.contains("s3-made"), "bucket list:\n{list}");

    // Give a key access and use it.
    let key = server.create_key("writer").await;
    server.cli_ok(["bucket", "allow", "--read", "--write", "--owner", "cli-bucket", "--key", "writer"]).await;
    let info = server.cli_ok(["bucket", "info", "cli-bucket"]).await;
    assert!(info.contains(&key.id) || info.contains("writer"), "bucket info does not show the key:\n{info}");
    let s3 = server.s3_client_for_key(&key);
    s3.put_object().bucket("cli-bucket").key("k").body(ByteStream::from_static(b"x")).send().await.expect("put");

    assert_cli_error(&server.cli(["bucket", "delete", "cli-bucket", "--yes"]).await, "deleting a non-empty bucket");
    s3.delete_object().bucket("cli-bucket").key("k").send().await.expect("delete object");
    server.cli_ok(["bucket", "delete", "cli-bucket", "--yes"]).await;
    let list = server.cli_ok(["bucket", "list"]).await;
    assert!(!list.contains("cli-bucket"), "deleted bucket still listed:\n{list}");
    catalog_settles().await;
    expect_s3_error(s3.head_bucket().bucket("cli-bucket").send().await, 404, None);

    assert_cli_error(&server.cli(["bucket", "info", "cli-bucket"]).await, "info of a deleted bucket");
    assert_cli_error(&server.cli(["bucket", "delete", "never-existed", "--yes"]).await, "deleting a missing bucket");
    assert_cli_error(
        &server.cli(["bucket", "allow", "--read", "never-existed", "--key", "writer"]).await,
        "allow on a missing bucket",
    );
    assert_cli_error(
        &server.cli(["bucket", "allow", "--read", "s3-made", "--key", "no-such-key"]).await,
        "allow for a missing key",
    );
}

#[tokio::test]
async fn status_shows_layout_and_node() {
    let server = Server::start().await;
    let out = server.cli_ok(["status"]).await;
    assert!(out.to_lowercase().contains("layout"), "status:\n{out}");
    assert!(out.to_lowercase().contains("version"), "status lacks the layout version:\n{out}");
    assert!(out.lines().count() >= 2, "status should list the node(s):\n{out}");
}

#[tokio::test]
async fn admin_token_from_file_or_env() {
    let server = Server::start().await;
    let token_file = server.data_dir.join("meta").join("admin_token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap_or_else(|e| panic!("{} should exist: {e}", token_file.display()))
        .trim()
        .to_string();
    assert!(!token.is_empty());

    // With no data dir to read from, the token comes from the environment.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let run = |env_token: &str| {
        let mut cmd = cli_command_at(server.rpc_addr, elsewhere.path(), ["key", "list"]);
        cmd.env("HANGAR_ADMIN_TOKEN", env_token);
        cmd
    };
    let ok = run(&token).output().await.expect("run CLI");
    assert!(ok.status.success(), "CLI with HANGAR_ADMIN_TOKEN failed: {}", String::from_utf8_lossy(&ok.stderr));

    let bad = run("not-the-token").output().await.expect("run CLI");
    assert_cli_error(&bad, "wrong admin token");
}

#[tokio::test]
async fn cli_reports_unreachable_server() {
    let server = Server::start().await;
    let mut cmd = cli_command_at(free_addr(), &server.data_dir, ["key", "list"]);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .expect("CLI hangs when the server is unreachable")
        .expect("run CLI");
    assert_cli_error(&out, "unreachable rpc address");
}
