//! Who may talk to the daemon: bearer tokens (with rotation), TLS and mutual
//! TLS with a certificate authority made by the test.

use rcgen::{
    BasicConstraints, Certificate as CaCertificate, CertificateParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use secrecy::SecretString;
use switchboard::{
    config::ServeConfig,
    proto::{call_router_client::CallRouterClient, LookupNumberRequest},
    Application,
};
use tonic::{
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
    Code, Request,
};
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    ServerReflectionRequest,
};

use crate::helpers::{reason, spawn_seeded_app_with, switchboard_command, Stack};

const OLD_TOKEN: &str = "gateway-token-old-0123456789";
const NEW_TOKEN: &str = "gateway-token-new-0123456789";

fn lookup(token: Option<&str>) -> Request<LookupNumberRequest> {
    let mut request = Request::new(LookupNumberRequest {
        number: "+14155550100".into(),
        default_region: String::new(),
    });
    if let Some(token) = token {
        let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[tokio::test]
async fn tokens_are_required_rotatable_and_health_stays_open() {
    let mut app = spawn_seeded_app_with(|c| {
        c.auth.api_tokens = Some(SecretString::from(format!("{OLD_TOKEN},{NEW_TOKEN}")));
    })
    .await;
    let missing = app.client.lookup_number(lookup(None)).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert_eq!(reason(&missing), "missing_token");
    let wrong = app
        .client
        .lookup_number(lookup(Some("gateway-token-bad-0123456789")))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(reason(&wrong), "invalid_token");
    // both tokens of a rotation work
    for token in [OLD_TOKEN, NEW_TOKEN] {
        app.client
            .lookup_number(lookup(Some(token)))
            .await
            .unwrap_or_else(|s| panic!("{token}: {s:?}"));
    }

    // load balancers probe health without credentials
    let mut health = HealthClient::new(app.channel());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    // but the API's description is not public
    let mut reflection = ServerReflectionClient::new(app.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let refused = reflection
        .server_reflection_info(once(request))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

fn once<T: Send + 'static>(item: T) -> impl futures::Stream<Item = T> + Send {
    futures::stream::iter([item])
}

#[tokio::test]
async fn an_open_port_needs_tokens_and_tokens_need_tls_unless_explicitly_waived() {
    let stack = Stack::from_env();
    let config = |addr: &str, allow: bool| {
        let mut config = ServeConfig::with_defaults(
            &stack.pooled_url(stack.pgbouncer_port, "postgres"),
            &stack.daemon_direct_url("postgres"),
            &stack.redis_url,
        );
        config.grpc.grpc_addr = addr.parse().unwrap();
        config.admin.admin_addr = "127.0.0.1:0".parse().unwrap();
        config.auth.allow_unauthenticated = allow;
        config
    };
    let error = Application::build(config("0.0.0.0:0", false))
        .await
        .err()
        .expect("an open address without tokens is refused");
    assert!(
        error.to_string().contains("SWITCHBOARD_API_TOKENS"),
        "{error}"
    );
    assert!(config("0.0.0.0:0", true).validate().is_ok());
    assert!(config("127.0.0.1:0", false).validate().is_ok());
    // tokens on an open port: only with TLS, here or in front
    let mut with_tokens = config("0.0.0.0:0", false);
    with_tokens.auth.api_tokens = Some(SecretString::from(NEW_TOKEN.to_string()));
    let error = with_tokens.validate().unwrap_err();
    assert!(error.contains("in clear"), "{error}");
    with_tokens.tls.tls_cert = Some("/etc/switchboard/cert.pem".into());
    with_tokens.tls.tls_key = Some("/etc/switchboard/key.pem".into());
    assert!(with_tokens.validate().is_ok());
    with_tokens.tls.tls_cert = None;
    with_tokens.tls.tls_key = None;
    with_tokens.tls.tls_terminated_upstream = true;
    assert!(with_tokens.validate().is_ok());
    // and on loopback, as the demo runs
    let mut local = config("127.0.0.1:0", false);
    local.auth.api_tokens = Some(SecretString::from(NEW_TOKEN.to_string()));
    assert!(local.validate().is_ok());
}

/// A certificate authority made for one test.
struct TestCa {
    cert_pem: String,
    cert: CaCertificate,
    key: KeyPair,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            cert,
            key,
        }
    }

    /// A leaf certificate and its key, in PEM.
    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        // a server certificate names both forms clients use
        let mut names = vec![name.to_string()];
        if name == "localhost" {
            names.push("127.0.0.1".into());
        }
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `contents` to `name` in `dir`, returning the path.
fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

async fn tls_client(
    addr: std::net::SocketAddr,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<CallRouterClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(CallRouterClient::new(channel))
}

#[tokio::test]
async fn tls_and_mutual_tls_handshakes() {
    let ca = TestCa::new("switchboard test CA");
    let other_ca = TestCa::new("somebody else's CA");
    let server = ca.issue("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let gateway = ca.issue("gateway", ExtendedKeyUsagePurpose::ClientAuth);
    let stranger = other_ca.issue("stranger", ExtendedKeyUsagePurpose::ClientAuth);
    let dir = tempfile::tempdir().unwrap();
    let cert = write(&dir, "server.pem", &server.0);
    let key = write(&dir, "server.key", &server.1);
    let client_ca = write(&dir, "clients.pem", &ca.cert_pem);

    // TLS: any client that trusts the CA
    let app = spawn_seeded_app_with(|c| {
        c.tls.tls_cert = Some(cert.clone());
        c.tls.tls_key = Some(key.clone());
    })
    .await;
    let mut client = tls_client(app.grpc_addr, &ca.cert_pem, None)
        .await
        .expect("TLS handshake");
    client.lookup_number(lookup(None)).await.unwrap();
    let mut plaintext = app.client.clone();
    assert!(
        plaintext.lookup_number(lookup(None)).await.is_err(),
        "plaintext is not served on a TLS port"
    );
    assert!(
        tls_client(app.grpc_addr, &other_ca.cert_pem, None)
            .await
            .is_err(),
        "a client that does not trust the server's CA refuses it"
    );

    // mutual TLS: only clients with a certificate from the client CA
    let app = spawn_seeded_app_with(|c| {
        c.tls.tls_cert = Some(cert.clone());
        c.tls.tls_key = Some(key.clone());
        c.tls.tls_client_ca = Some(client_ca.clone());
    })
    .await;
    let mut client = tls_client(app.grpc_addr, &ca.cert_pem, Some(&gateway))
        .await
        .expect("mutual TLS handshake");
    client.lookup_number(lookup(None)).await.unwrap();
    for (who, identity) in [("no certificate", None), ("a stranger's", Some(&stranger))] {
        let refused = match tls_client(app.grpc_addr, &ca.cert_pem, identity).await {
            Err(_) => true,
            Ok(mut client) => client.lookup_number(lookup(None)).await.is_err(),
        };
        assert!(refused, "a client with {who} certificate is refused");
    }
}

#[tokio::test]
async fn an_unusable_certificate_stops_the_start_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::from_env();
    let mut config = ServeConfig::with_defaults(
        &stack.pooled_url(stack.pgbouncer_port, "postgres"),
        &stack.daemon_direct_url("postgres"),
        &stack.redis_url,
    );
    config.grpc.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.admin.admin_addr = "127.0.0.1:0".parse().unwrap();
    config.spool.spool_dir = dir.path().join("spool");
    config.tls.tls_cert = Some(write(&dir, "cert.pem", "not a certificate"));
    config.tls.tls_key = Some(dir.path().join("missing.key"));
    let error = Application::build(config).await.err().expect("refused");
    assert!(
        format!("{error:#}").contains("SWITCHBOARD_TLS_KEY"),
        "{error:#}"
    );
}

#[tokio::test]
async fn the_cli_client_brings_its_token_over_tls() {
    let ca = TestCa::new("switchboard test CA");
    let server = ca.issue("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let dir = tempfile::tempdir().unwrap();
    let cert = write(&dir, "server.pem", &server.0);
    let key = write(&dir, "server.key", &server.1);
    let ca_path = write(&dir, "ca.pem", &ca.cert_pem);
    let app = spawn_seeded_app_with(|c| {
        c.tls.tls_cert = Some(cert);
        c.tls.tls_key = Some(key);
        c.auth.api_tokens = Some(SecretString::from(NEW_TOKEN.to_string()));
    })
    .await;
    let addr = format!("https://{}", app.grpc_addr);
    let run = |token: Option<&str>| {
        let mut command = switchboard_command();
        command.args(["client", "--addr", &addr, "--ca-cert"]);
        command.arg(&ca_path);
        if let Some(token) = token {
            command.env("SWITCHBOARD_CLIENT_TOKEN", token);
        }
        command.args(["lookup", "+14155550100"]);
        command
    };
    let with_token = run(Some(NEW_TOKEN));
    let without = run(None);
    let (with_token, without) = tokio::task::spawn_blocking(move || {
        let mut with_token = with_token;
        let mut without = without;
        (with_token.output().unwrap(), without.output().unwrap())
    })
    .await
    .unwrap();
    assert!(
        with_token.status.success(),
        "{}{}",
        String::from_utf8_lossy(&with_token.stdout),
        String::from_utf8_lossy(&with_token.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&with_token.stdout).unwrap();
    assert_eq!(json["route"]["organization"]["slug"], "acme-dental");
    let json: serde_json::Value = serde_json::from_slice(&without.stdout).unwrap();
    assert_eq!(json["reason"], "missing_token");
}
