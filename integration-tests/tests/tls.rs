//! gRPC between components over mutual TLS (`[rpc_tls]`), end to end: the single-process
//! server's frontend reaches its data node and control plane through TLS, the CLI needs the
//! cluster CA and a client certificate, and a certificate from another CA is refused.

use std::path::Path;

use hangar_integration_tests::Server;
use hangar_integration_tests::util::{get_bytes, new_bucket, put_bytes};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// Writes `<name>-ca.pem`, `<name>.pem` and `<name>-key.pem` (valid for 127.0.0.1 and localhost).
fn make_pki(dir: &Path, name: &str) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("node key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("params");
    let cert = params.signed_by(&key, &issuer).expect("node certificate");
    std::fs::write(dir.join(format!("{name}-ca.pem")), ca_cert.pem()).expect("write CA");
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write cert");
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).expect("write key");
}

/// CLI flags: trust `<name>-ca.pem`, present `<name>.pem`.
fn tls_args(dir: &Path, name: &str) -> Vec<String> {
    let p = |f: String| dir.join(f).display().to_string();
    vec![
        "--tls-ca".into(),
        p(format!("{name}-ca.pem")),
        "--tls-cert".into(),
        p(format!("{name}.pem")),
        "--tls-key".into(),
        p(format!("{name}-key.pem")),
    ]
}

#[tokio::test]
async fn components_talk_over_mutual_tls() {
    let pki = tempfile::tempdir().expect("temp dir");
    make_pki(pki.path(), "cluster");
    make_pki(pki.path(), "other");
    let file = |f: &str| pki.path().join(f).display().to_string();
    let server = Server::builder()
        .env("HANGAR_RPC_TLS_CA_FILE", file("cluster-ca.pem"))
        .env("HANGAR_RPC_TLS_CERT_FILE", file("cluster.pem"))
        .env("HANGAR_RPC_TLS_KEY_FILE", file("cluster-key.pem"))
        .env("HANGAR_RPC_TLS_REQUIRE_CLIENT_CERT", "true")
        .start()
        .await;

    // S3 works: every request crossed gRPC (frontend -> data node) over TLS.
    let s3 = server.s3_client();
    let bucket = new_bucket(&s3, "tls").await;
    let data = vec![7u8; 2 * 1024 * 1024];
    put_bytes(&s3, &bucket, "obj", &data).await;
    assert_eq!(get_bytes(&s3, &bucket, "obj").await, data);

    // The CLI with the cluster's CA and a client certificate gets through...
    let mut args = tls_args(pki.path(), "cluster");
    args.push("status".into());
    let out = server.cli(&args).await;
    assert!(out.status.success(), "status over TLS failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Layout version: 1"));

    // ...plain text does not...
    let out = server.cli(["status"]).await;
    assert!(!out.status.success(), "a plain-text client reached a TLS control plane");

    // ...and neither does a client whose certificate another CA signed, even though it
    // trusts the server's: the server demands a client certificate from the cluster CA.
    let mut args = tls_args(pki.path(), "other");
    args[1] = file("cluster-ca.pem");
    args.push("status".into());
    let out = server.cli(&args).await;
    assert!(!out.status.success(), "a certificate from another CA was accepted");
}
