//! AMQPS: a node with `--amqps-listen`, a certificate and key the test makes (rcgen,
//! its own CA), serves pika over TLS beside plain AMQP; with `--tls-client-ca` it
//! serves only clients with a certificate signed by that CA. Bad TLS settings stop the
//! node at start with a line that names the file.

mod common;

use std::path::Path;
use std::process::Command;

use common::{free_port, NodeProcess};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// Certificate parameters with `names` as subject alternative names and `cn` as the
/// common name (the CA's and the leaves' must differ, or a leaf looks self-signed).
fn params(cn: &str, names: &[&str]) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
}

/// The CA, a server certificate for localhost / 127.0.0.1 and a client certificate,
/// written as PEM files in `dir`: (ca, server cert, server key, client cert, client key).
fn certificates(dir: &Path) -> [String; 5] {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = params("Warren test CA", &[]);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = params("localhost", &["localhost", "127.0.0.1"])
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = params("warren-test-client", &["warren-test-client"])
        .signed_by(&client_key, &ca, &ca_key)
        .unwrap();
    let files = [
        ("ca.pem", ca.pem()),
        ("server.pem", server.pem()),
        ("server.key", server_key.serialize_pem()),
        ("client.pem", client.pem()),
        ("client.key", client_key.serialize_pem()),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    })
}

fn pika(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/amqp/tls.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs (./scripts/test installs pika)");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "tests/amqp/tls.py failed\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}"
    );
}

#[test]
fn pika_connects_over_tls_and_client_certificates_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key, client_cert, client_key] = certificates(dir.path());

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let node = NodeProcess::start_with(
        &dir.path().join("tls"),
        free_port(),
        &[
            "--amqps-listen",
            &listen,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    pika(&[&port.to_string(), &ca]);
    drop(node);

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let node = NodeProcess::start_with(
        &dir.path().join("mtls"),
        free_port(),
        &[
            "--amqps-listen",
            &listen,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
    );
    pika(&[&port.to_string(), &ca, &client_cert, &client_key]);
    drop(node);
}

#[test]
fn bad_tls_settings_stop_the_node_with_a_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["node", "--name", "bad-tls", "--amqp-listen", "off"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--cluster-listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .args(args)
            .output()
            .expect("warren runs");
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let listen = format!("127.0.0.1:{}", free_port());
    let err = run(&["--amqps-listen", &listen]);
    assert!(err.contains("needs --tls-cert and --tls-key"), "{err}");
    let missing = dir.path().join("nope.pem").display().to_string();
    let err = run(&[
        "--amqps-listen",
        &listen,
        "--tls-cert",
        &missing,
        "--tls-key",
        &missing,
    ]);
    assert!(err.contains("nope.pem"), "{err}");
}
