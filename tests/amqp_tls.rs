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

/// lapin (Rust) over TLS: trusts the test CA, declares, publishes with a confirm and
/// gets the message back.
fn lapin_over_tls(port: u16, ca: &str) {
    use lapin::options::{
        BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    };
    use lapin::tcp::OwnedTLSConfig;
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tls = OwnedTLSConfig {
            identity: None,
            cert_chain: Some(std::fs::read_to_string(ca).unwrap()),
        };
        let uri = format!("amqps://guest:guest@localhost:{port}/%2f");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let conn = loop {
            match Connection::connect_with_config(
                &uri,
                ConnectionProperties::default(),
                tls.clone(),
                lapin::runtime::default_runtime().unwrap(),
            )
            .await
            {
                Ok(c) => break c,
                Err(e) if std::time::Instant::now() > deadline => panic!("lapin over TLS: {e}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        };
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            "lapin-tls".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let confirm = ch
            .basic_publish(
                "".into(),
                "lapin-tls".into(),
                BasicPublishOptions::default(),
                b"over tls",
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "{confirm:?}");
        let got = ch
            .basic_get("lapin-tls".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("the message");
        assert_eq!(got.delivery.data, b"over tls");
        conn.close(200, "bye".into()).await.unwrap();
    });
}

fn pika(args: &[&str]) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    common::python_script("tls", &args);
}

/// A node with an AMQPS listener on a port of its own (returned) and `extra` TLS
/// settings.
fn tls_node(data: &Path, cert: &str, key: &str, extra: &[&str]) -> (NodeProcess, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--amqps-listen",
        &listen,
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ];
    args.extend_from_slice(extra);
    (NodeProcess::start_with(data, free_port(), &args), port)
}

#[test]
fn pika_connects_over_tls_and_client_certificates_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key, client_cert, client_key] = certificates(dir.path());

    let (node, port) = tls_node(&dir.path().join("tls"), &cert, &key, &[]);
    pika(&[&port.to_string(), &ca]);
    lapin_over_tls(port, &ca);
    drop(node);

    let (node, port) = tls_node(
        &dir.path().join("mtls"),
        &cert,
        &key,
        &["--tls-client-ca", &ca],
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
            .args(["--http-listen", "off", "--prometheus-listen", "off"])
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
