//! The `hangar-load` binary against a real server.

use std::process::Output;

use hangar_integration_tests::*;

async fn run_load(server: &Server, args: &[&str]) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hangar-load"))
        .arg("--endpoint")
        .arg(&server.endpoint)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", &server.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &server.secret_key)
        .env("AWS_DEFAULT_REGION", &server.region)
        .output()
        .await
        .expect("run hangar-load");
    assert!(
        out.status.success(),
        "hangar-load {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The report line for `label` ("PUT"/"GET"), as key=value pairs.
fn report(out: &Output, label: &str) -> Vec<(String, String)> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{label}:")))
        .unwrap_or_else(|| panic!("no {label} line in:\n{stdout}"));
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn field<'a>(report: &'a [(String, String)], key: &str) -> &'a str {
    report.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {key} in {report:?}"))
}

#[tokio::test]
async fn load_tool_put_and_get() {
    let server = Server::start().await;
    let out = run_load(&server, &["--bucket", "load", "--size", "64KiB", "--count", "20", "--concurrency", "4"]).await;
    for label in ["PUT", "GET"] {
        let r = report(&out, label);
        assert_eq!(field(&r, "ops"), "20", "{label}");
        assert_eq!(field(&r, "errors"), "0", "{label}");
        assert_eq!(field(&r, "bytes"), (20 * 65536).to_string(), "{label}");
        for key in ["seconds", "ops/s", "MiB/s"] {
            assert!(field(&r, key).parse::<f64>().is_ok(), "{label} {key}");
        }
        for key in ["p50", "p99"] {
            assert!(field(&r, key).trim_end_matches("ms").parse::<f64>().is_ok(), "{label} {key}");
        }
    }
    let list = server.s3_client().list_objects_v2().bucket("load").send().await.expect("list");
    assert_eq!(list.key_count(), Some(20));
}

#[tokio::test]
async fn load_tool_multipart_from_file() {
    let server = Server::start().await;
    // 11 MiB is streamed from a temp file and sent as 5 + 5 + 1 MiB parts.
    let out = run_load(
        &server,
        &[
            "--bucket",
            "load-mpu",
            "--size",
            "11MiB",
            "--count",
            "2",
            "--concurrency",
            "2",
            "--multipart-part-size",
            "5MiB",
        ],
    )
    .await;
    assert_eq!(field(&report(&out, "PUT"), "ops"), "2");
    assert_eq!(field(&report(&out, "GET"), "ops"), "2");
    let head =
        server.s3_client().head_object().bucket("load-mpu").key("hangar-load/obj-00000000").send().await.expect("head");
    assert_eq!(head.content_length(), Some(11 << 20));
    assert!(head.e_tag().is_some_and(|e| e.ends_with("-3\"")), "multipart ETag: {:?}", head.e_tag());

    // GET-only against the same objects.
    let out = run_load(
        &server,
        &["--bucket", "load-mpu", "--size", "11MiB", "--count", "2", "--concurrency", "2", "--op", "get"],
    )
    .await;
    assert_eq!(field(&report(&out, "GET"), "errors"), "0");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("PUT:"), "--op get ran PUTs");
}

/// `--unsigned-payload` bodies (single PUTs and parts) are taken, several endpoints share the
/// requests, `--fresh-connections` works, and a listing walks every page under the prefix.
#[tokio::test]
async fn load_tool_unsigned_payload_endpoints_and_listing() {
    let server = Server::start().await;
    let both = format!("{0},{0}", server.endpoint);
    let args = ["--endpoint", &both, "--bucket", "unsigned", "--unsigned-payload", "--concurrency", "4"];
    let out = run_load(&server, &[&args[..], &["--size", "2MiB", "--count", "4"]].concat()).await;
    assert_eq!(field(&report(&out, "PUT"), "errors"), "0");
    assert_eq!(field(&report(&out, "GET"), "bytes"), (4 * (2 << 20)).to_string());
    let out = run_load(
        &server,
        &[&args[..], &["--size", "2MiB", "--count", "4", "--op", "get", "--fresh-connections"]].concat(),
    )
    .await;
    assert_eq!(field(&report(&out, "GET"), "errors"), "0");
    let out = run_load(
        &server,
        &[&args[..], &["--size", "6MiB", "--count", "1", "--multipart-part-size", "5MiB", "--prefix", "mpu/"]].concat(),
    )
    .await;
    assert_eq!(field(&report(&out, "GET"), "bytes"), (6 << 20).to_string());

    // --unique over 8 MiB: a payload file per object; another seed, other bytes.
    let etags = |prefix: &'static str| {
        let s3 = server.s3_client();
        async move {
            let mut tags = Vec::new();
            for i in 0..2 {
                let key = format!("{prefix}obj-{i:08}");
                let head = s3.head_object().bucket("unsigned").key(key).send().await.expect("head");
                tags.push(head.e_tag().unwrap_or_default().to_string());
            }
            tags
        }
    };
    let big = ["--size", "9MiB", "--count", "2", "--unique", "--op", "put"];
    run_load(&server, &[&args[..], &big, &["--prefix", "big1/"]].concat()).await;
    run_load(&server, &[&args[..], &big, &["--prefix", "big2/", "--seed", "2"]].concat()).await;
    let (one, two) = (etags("big1/").await, etags("big2/").await);
    assert_ne!(one[0], one[1], "--unique objects share their bytes");
    assert!(one.iter().all(|t| !two.contains(t)), "another seed wrote the same bytes: {one:?} {two:?}");

    // 1 200 keys: a listing takes two pages.
    let put = ["--size", "0", "--count", "1200", "--op", "put", "--prefix", "many/"];
    run_load(&server, &[&args[..], &put].concat()).await;
    let out =
        run_load(&server, &[&args[..], &["--size", "0", "--count", "2", "--op", "list", "--prefix", "many/"]].concat())
            .await;
    let r = report(&out, "LIST");
    assert_eq!(field(&r, "ops"), "2");
    assert_eq!(field(&r, "bytes"), "2400", "keys listed over both listings");
}
