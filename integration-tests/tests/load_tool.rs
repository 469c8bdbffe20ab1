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
