//! What a new user meets in the first hour: the root key, the admin CLI (run as the real
//! binary), its help and errors, the server's configuration, quotas and bucket names.

use std::process::Output;

use aws_sdk_s3::primitives::ByteStream;
use hangar_integration_tests::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts a CLI failure with one readable stderr line containing `needle`.
#[track_caller]
fn assert_fails_with(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success; stdout: {}", text(&out.stdout));
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "stderr should be one line, got:\n{stderr}");
    assert!(lines[0].contains(needle), "stderr lacks {needle:?}:\n{stderr}");
}

async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, len: usize) -> Result<(), String> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(vec![7u8; len]))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)))
}

#[tokio::test]
async fn the_root_key_reaches_every_bucket_and_stays() {
    let server = Server::start().await;
    let root = server.s3_client();
    server.cli_ok(["bucket", "create", "shared"]).await;
    let names = bucket_names(&root).await;
    assert!(names.contains(&"shared".to_string()), "root does not list a CLI-made bucket: {names:?}");
    put(&root, "shared", "k", 10).await.expect("root writes a CLI-made bucket");
    assert_eq!(get_bytes(&root, "shared", "k").await, vec![7u8; 10]);

    // Undeletable; rotatable.
    let deleted = server.cli(["key", "delete", &server.access_key, "--yes"]).await;
    assert_fails_with(&deleted, "root key");
    let rotated = server.cli_ok(["key", "rotate", &server.access_key]).await;
    catalog_settles().await;
    let new = KeyInfo::parse(&rotated).expect("rotate prints the key");
    assert_eq!(new.id, server.access_key);
    assert_ne!(new.secret, server.secret_key);
    let stale = server.s3_client();
    let err = expect_s3_error(stale.list_buckets().send().await, 403, Some("SignatureDoesNotMatch"));
    let message = err.as_service_error().and_then(|e| e.meta().message()).unwrap_or_default().to_string();
    assert!(message.contains("signature") && !message.contains("Unknown"), "unhelpful message {message:?}");
    let fresh = server.s3_client_for(&new.id, &new.secret);
    assert_eq!(get_bytes(&fresh, "shared", "k").await, vec![7u8; 10]);

    // A restart keeps the same root key and prints its current secret.
    let server = server.stop().await.start().await;
    assert_eq!((server.access_key.as_str(), server.secret_key.as_str()), (new.id.as_str(), new.secret.as_str()));
    let keys = server.cli_ok(["key", "list"]).await;
    assert_eq!(keys.lines().filter(|l| l.contains("root")).count(), 1, "one root key:\n{keys}");

    // The file naming the root key lost (a crash right after creating it): the key is found.
    let stopped = server.stop().await;
    std::fs::remove_file(stopped.data_dir.join("meta").join("root_key")).expect("remove root_key");
    let server = stopped.start().await;
    assert_eq!(server.access_key, new.id, "a new root key replaced the lost one");
}

#[tokio::test]
async fn key_names_are_unique_and_keys_are_managed_like_garage() {
    let server = Server::start().await;
    let alice = server.create_key("alice").await;
    assert_fails_with(&server.cli(["key", "create", "alice"]).await, "alice");
    // Every command naming alice still works.
    let info = server.cli_ok(["key", "info", "alice"]).await;
    assert!(info.contains(&alice.id) && !info.contains(&alice.secret), "secret shown without --show-secret:\n{info}");
    let info = server.cli_ok(["key", "info", "alice", "--show-secret"]).await;
    assert!(info.contains(&alice.secret), "--show-secret:\n{info}");

    server.cli_ok(["key", "rename", "alice", "carol"]).await;
    assert!(server.cli_ok(["key", "info", "carol"]).await.contains(&alice.id));
    assert_fails_with(&server.cli(["key", "info", "alice"]).await, "alice");
    // The old name is free again; a taken one is not.
    let again = server.create_key("alice").await;
    assert_fails_with(&server.cli(["key", "rename", "alice", "carol"]).await, "carol");

    server.cli_ok(["key", "import", "GKimported0001", "secret-of-the-import", "-n", "imported"]).await;
    let s3 = server.s3_client_for("GKimported0001", "secret-of-the-import");
    s3.list_buckets().send().await.expect("an imported key authenticates");
    assert_fails_with(&server.cli(["key", "import", "GKimported0001", "another-secret", "-n", "x"]).await, "exists");

    // Destructive commands want --yes.
    assert_fails_with(&server.cli(["key", "delete", "alice"]).await, "--yes");
    server.cli_ok(["key", "delete", "alice", "--yes"]).await;
    assert!(!server.cli_ok(["key", "list"]).await.contains(&again.id));
}

#[tokio::test]
async fn racing_creations_of_one_key_name_leave_one_key() {
    let server = Server::start().await;
    for round in 0..100 {
        let name = format!("racer-{round}");
        let (a, b) = tokio::join!(server.cli(["key", "create", &name]), server.cli(["key", "create", &name]));
        let won = [&a, &b].iter().filter(|o| o.status.success()).count();
        assert_eq!(
            won,
            1,
            "round {round}: {won} creations of `{name}` succeeded\n{}\n{}",
            text(&a.stderr),
            text(&b.stderr)
        );
        server.cli_ok(["key", "info", &name]).await;
    }
    let list = server.cli_ok(["key", "list"]).await;
    assert_eq!(list.lines().filter(|l| l.contains("racer-")).count(), 100, "{list}");

    // A rename racing a creation of the name it renames to: one key ends with the name.
    for round in 0..100 {
        let (from, to) = (format!("racer-{round}"), format!("taken-{round}"));
        let (a, b) = tokio::join!(server.cli(["key", "rename", &from, &to]), server.cli(["key", "create", &to]));
        let won = [&a, &b].iter().filter(|o| o.status.success()).count();
        assert_eq!(
            won,
            1,
            "round {round}: {won} of rename and create succeeded\n{}\n{}",
            text(&a.stderr),
            text(&b.stderr)
        );
    }
    let list = server.cli_ok(["key", "list"]).await;
    for round in 0..100 {
        let named = list.lines().filter(|l| l.split_whitespace().nth(1) == Some(&format!("taken-{round}"))).count();
        assert_eq!(named, 1, "round {round}: {named} keys named taken-{round}:\n{list}");
    }
}

#[tokio::test]
async fn layout_show_keeps_staged_changes_apart_and_history_lists_versions() {
    let server = Server::start().await;
    let status = server.cli_ok(["status"]).await;
    let node = status
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("data"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no data node in status:\n{status}"))
        .to_string();
    server.cli_ok(["layout", "assign", &node, "-z", "dc9", "-c", "5G", "-t", "fast"]).await;
    server.cli_ok(["layout", "config", "-r", "2"]).await;
    let show = server.cli_ok(["layout", "show"]).await;
    let (current, rest) = show.split_once("Staged changes").unwrap_or_else(|| panic!("no staged section:\n{show}"));
    assert!(current.contains("Current layout: version 1"), "{show}");
    assert!(current.contains("dc1") && !current.contains("dc9"), "staged zone shown as current:\n{show}");
    assert!(rest.contains("dc9") && rest.contains("fast") && rest.contains("replication factor 1 -> 2"), "{show}");
    assert!(rest.contains("Cannot apply"), "two copies on one node should not apply:\n{show}");
    assert_fails_with(&server.cli(["layout", "revert"]).await, "--yes");
    server.cli_ok(["layout", "revert", "--yes"]).await;
    assert!(server.cli_ok(["layout", "show"]).await.contains("No staged changes"));
    let history = server.cli_ok(["layout", "history"]).await;
    assert!(history.lines().any(|l| l.starts_with("1 ") && l.contains("current")), "{history}");
}

#[tokio::test]
async fn status_is_one_table_with_units() {
    let server = Server::start().await;
    let status = server.cli_ok(["status"]).await;
    let mut lines = status.lines().skip_while(|l| !l.starts_with("ID "));
    let header = lines.next().unwrap_or_else(|| panic!("no table header:\n{status}"));
    let columns = |l: &str| l.split("  ").filter(|c| !c.trim().is_empty()).count();
    let rows: Vec<&str> = lines.take_while(|l| !l.starts_with('(')).collect();
    assert!(header.contains("TAGS") && header.contains("CAPACITY"), "{status}");
    for role in ["control", "data", "s3"] {
        assert!(rows.iter().any(|r| r.split_whitespace().nth(1) == Some(role)), "no {role} row:\n{status}");
    }
    for r in &rows {
        assert_eq!(columns(r), columns(header), "row and header disagree:\n{header}\n{r}");
    }
    let data = rows.iter().find(|r| r.split_whitespace().nth(1) == Some("data")).expect("data row");
    assert!([" KB", " MB", " GB", " TB", " PB"].iter().any(|u| data.contains(u)), "capacity without a unit: {data}");
}

#[tokio::test]
async fn every_command_and_flag_is_described() {
    let paths: &[&[&str]] = &[
        &[],
        &["server"],
        &["key"],
        &["key", "create"],
        &["key", "import"],
        &["key", "info"],
        &["key", "delete"],
        &["key", "rename"],
        &["key", "rotate"],
        &["key", "allow"],
        &["key", "deny"],
        &["bucket"],
        &["bucket", "create"],
        &["bucket", "list"],
        &["bucket", "info"],
        &["bucket", "delete"],
        &["bucket", "allow"],
        &["bucket", "deny"],
        &["bucket", "alias"],
        &["bucket", "unalias"],
        &["bucket", "set-quotas"],
        &["bucket", "cleanup-incomplete-uploads"],
        &["layout"],
        &["layout", "assign"],
        &["layout", "remove"],
        &["layout", "config"],
        &["layout", "show"],
        &["layout", "apply"],
        &["layout", "revert"],
        &["layout", "history"],
        &["status"],
    ];
    for path in paths {
        let out = std::process::Command::new(hangar_bin()).args(*path).arg("-h").output().expect("run hangar -h");
        let help = text(&out.stdout);
        assert!(out.status.success(), "hangar {path:?} -h failed: {}", text(&out.stderr));
        let lines: Vec<&str> = help.lines().collect();
        let mut section = "";
        for (i, line) in lines.iter().enumerate() {
            if !line.starts_with(' ') {
                section = line;
                continue;
            }
            // Entries start two spaces in; wrapped descriptions further.
            if !["Arguments:", "Options:", "Commands:"].contains(&section) || line.starts_with("   ") {
                continue;
            }
            // `  -z, --zone <ZONE>  The node's zone ...`: a name column, then a description
            // (on the next line when the name is long).
            let parts: Vec<&str> = line.trim().split("  ").filter(|p| !p.trim().is_empty()).collect();
            let next_describes = lines.get(i + 1).is_some_and(|n| n.starts_with("   ") && !n.trim().is_empty());
            assert!(
                parts.len() >= 2 || next_describes,
                "hangar {path:?}: `{}` has no description:\n{help}",
                line.trim()
            );
        }
    }
    let top = text(&std::process::Command::new(hangar_bin()).arg("--help").output().expect("run").stdout);
    assert!(top.contains("HANGAR_ADMIN_TOKEN"), "{top}");
    let server =
        text(&std::process::Command::new(hangar_bin()).args(["server", "--help"]).output().expect("run").stdout);
    for default in ["127.0.0.1:3900", "127.0.0.1:3903", "./hangar-data", "127.0.0.1:3901"] {
        assert!(server.contains(default), "server --help does not show the default {default}:\n{server}");
    }
}

#[tokio::test]
async fn errors_say_where_and_what() {
    let server = Server::start().await;
    // A control plane that is not there: the address tried is named.
    let nowhere = free_addr();
    let out = run_cli(cli_command_at(nowhere, &server.data_dir, ["key", "list"])).await;
    assert_fails_with(&out, &nowhere.to_string());

    // A request signed for another region: the region to use is named.
    let mut conf = server.s3_config();
    conf = conf.region(aws_sdk_s3::config::Region::new("eu-west-1"));
    let other = aws_sdk_s3::Client::from_conf(conf.build());
    let err = expect_s3_error(other.list_buckets().send().await, 400, Some("AuthorizationHeaderMalformed"));
    let message = err.as_service_error().and_then(|e| e.meta().message()).unwrap_or_default().to_string();
    assert!(message.contains("us-east-1") && message.contains("eu-west-1"), "{message}");
    // GetBucketLocation is how clients find the region: it answers whatever it was signed for.
    server.s3_client().create_bucket().bucket("located").send().await.expect("create bucket");
    other.get_bucket_location().bucket("located").send().await.expect("GetBucketLocation signed for another region");

    // A config error names its file.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "metadata_dir = \"/tmp/x\"\nno_such_key = 1\n").expect("write");
    let out = std::process::Command::new(hangar_bin()).args(["data-node", "--config"]).arg(&bad).output().expect("run");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&bad.display().to_string()) && stderr.contains("no_such_key"), "{stderr}");

    // `hangar server` with a replication factor it cannot honour refuses to start.
    let conf = dir.path().join("rf.toml");
    std::fs::write(&conf, "replication_factor = 3\n").expect("write");
    let out = std::process::Command::new(hangar_bin())
        .args(["server", "--config"])
        .arg(&conf)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run");
    assert!(!out.status.success(), "server started with replication_factor = 3");
    assert!(text(&out.stderr).contains("replication_factor"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn client_errors_are_not_logged_as_errors_and_logs_have_no_colour() {
    let server = Server::start().await;
    let stranger = server.s3_client_for("GKnobody000000", "not-a-secret-at-all");
    let _ = stranger.list_buckets().send().await;
    let wrong = server.s3_client_for(&server.access_key, "wrong-secret-0000");
    let _ = wrong.list_buckets().send().await;
    let form = server
        .http()
        .post(format!("{}/bucket", server.endpoint))
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x--")
        .send()
        .await
        .expect("POST");
    assert_eq!(form.status().as_u16(), 501);
    let log = std::fs::read_to_string(server.log_path()).expect("read log");
    assert!(!log.contains('\u{1b}'), "colour codes in the log file:\n{log}");
    assert!(!log.contains("ERROR"), "client errors logged as errors:\n{log}");
}

#[tokio::test]
async fn the_cli_finds_address_and_token_in_the_config() {
    let server = Server::start().await;
    let token = std::fs::read_to_string(server.data_dir.join("meta").join("admin_token")).expect("token");
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{}\n", token.trim())).expect("write");
    let conf = dir.path().join("hangar.toml");
    std::fs::write(
        &conf,
        format!("rpc_bind_addr = \"{}\"\n[admin]\nadmin_token_file = \"{}\"\n", server.rpc_addr, token_file.display()),
    )
    .expect("write");
    let out = tokio::process::Command::new(hangar_bin())
        .arg("-c")
        .arg(&conf)
        .args(["key", "list"])
        .current_dir(dir.path())
        .env_remove("HANGAR_ADMIN_TOKEN")
        .env_remove("HANGAR_RPC_ADDR")
        .output()
        .await
        .expect("run");
    assert!(out.status.success(), "hangar -c CONFIG key list: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&server.access_key));
}

#[tokio::test]
async fn quotas_are_enforced_on_writes() {
    let server = Server::start().await;
    let s3 = server.s3_client();
    server.cli_ok(["bucket", "create", "quota"]).await;
    let info = server.cli_ok(["bucket", "set-quotas", "quota", "--max-objects", "2", "--max-size", "10K"]).await;
    catalog_settles().await;
    assert!(info.contains("max objects 2") && info.contains("10.0 KB"), "{info}");
    put(&s3, "quota", "a", 100).await.expect("first object");
    put(&s3, "quota", "b", 100).await.expect("second object");
    let third = put(&s3, "quota", "c", 100).await.expect_err("a third object passes the object quota");
    assert!(third.contains("QuotaExceeded"), "{third}");
    put(&s3, "quota", "a", 200).await.expect("overwriting stays within the quota");
    // The size quota counts bytes: 200 + 100 held, 20 000 more do not fit.
    server.cli_ok(["bucket", "set-quotas", "quota", "--max-objects", "none"]).await;
    catalog_settles().await;
    let big = put(&s3, "quota", "big", 20_000).await.expect_err("passes the size quota");
    assert!(big.contains("QuotaExceeded"), "{big}");
    let copy = s3.copy_object().bucket("quota").key("copy").copy_source("quota/a").send().await;
    copy.expect("a small copy fits");
    // Parts count against the size quota as they come.
    let upload = s3.create_multipart_upload().bucket("quota").key("parts").send().await.expect("create upload");
    let part = s3
        .upload_part()
        .bucket("quota")
        .key("parts")
        .upload_id(upload.upload_id().expect("id"))
        .part_number(1)
        .body(ByteStream::from(vec![1u8; 20_000]))
        .send()
        .await;
    let err = expect_s3_error(part, 403, Some("QuotaExceeded"));
    drop(err);
    // Deleting makes room at once.
    // a, b and copy are there.
    server.cli_ok(["bucket", "set-quotas", "quota", "--max-objects", "4"]).await;
    catalog_settles().await;
    put(&s3, "quota", "c", 10).await.expect("a fourth object within the new quota");
    put(&s3, "quota", "d", 10).await.expect_err("a fifth object passes the quota");
    s3.delete_object().bucket("quota").key("c").send().await.expect("delete");
    put(&s3, "quota", "d", 10).await.expect("room after a delete");
    server.cli_ok(["bucket", "set-quotas", "quota", "--max-size", "none", "--max-objects", "none"]).await;
    catalog_settles().await;
    put(&s3, "quota", "big", 20_000).await.expect("no quota left");
}

#[tokio::test]
async fn buckets_take_several_names_and_old_uploads_are_cleaned_up() {
    let server = Server::start().await;
    let s3 = server.s3_client();
    server.cli_ok(["bucket", "create", "primary"]).await;
    server.cli_ok(["bucket", "alias", "primary", "secondary"]).await;
    put(&s3, "primary", "k", 5).await.expect("put");
    assert_eq!(get_bytes(&s3, "secondary", "k").await, vec![7u8; 5], "the alias reaches the same objects");
    let names = bucket_names(&s3).await;
    assert!(names.contains(&"primary".into()) && names.contains(&"secondary".into()), "{names:?}");
    server.cli_ok(["bucket", "create", "other"]).await;
    assert_fails_with(&server.cli(["bucket", "alias", "other", "secondary"]).await, "secondary");
    server.cli_ok(["bucket", "unalias", "primary", "primary"]).await;
    catalog_settles().await;
    expect_s3_error(s3.head_bucket().bucket("primary").send().await, 404, None);
    let info = server.cli_ok(["bucket", "info", "secondary"]).await;
    assert!(info.starts_with("Bucket: secondary"), "shown under a name it no longer has:\n{info}");
    // S3 DeleteBucket of one of several names removes that name; the objects stay.
    server.cli_ok(["bucket", "alias", "secondary", "third"]).await;
    s3.delete_bucket().bucket("third").send().await.expect("DeleteBucket of an alias");
    expect_s3_error(s3.head_bucket().bucket("third").send().await, 404, None);
    assert_eq!(get_bytes(&s3, "secondary", "k").await, vec![7u8; 5]);
    assert_fails_with(&server.cli(["bucket", "unalias", "secondary", "secondary"]).await, "last name");

    let upload = s3.create_multipart_upload().bucket("secondary").key("big").send().await.expect("create upload");
    let id = upload.upload_id().expect("upload id").to_string();
    assert_fails_with(
        &server.cli(["bucket", "cleanup-incomplete-uploads", "--older-than", "1h", "secondary"]).await,
        "--yes",
    );
    let kept =
        server.cli_ok(["bucket", "cleanup-incomplete-uploads", "--older-than", "1h", "secondary", "--yes"]).await;
    assert!(kept.contains("aborted 0"), "{kept}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let done =
        server.cli_ok(["bucket", "cleanup-incomplete-uploads", "--older-than", "1s", "secondary", "--yes"]).await;
    assert!(done.contains("aborted 1"), "{done}");
    let listed = s3.list_multipart_uploads().bucket("secondary").send().await.expect("list uploads");
    assert!(listed.uploads().iter().all(|u| u.upload_id() != Some(id.as_str())), "the upload is still listed");
}
