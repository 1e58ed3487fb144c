//! The gRPC server: its services and TLS, wired by [`Application::build`],
//! served by [`Application::run_until_stopped`].
//!
//! [`Application::build`]: super::Application::build
//! [`Application::run_until_stopped`]: super::Application::run_until_stopped

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use hyper::server::conn::http2;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::service::{interceptor::InterceptedService, Routes};
use tonic_health::server::HealthReporter;
use tower::{Layer, ServiceExt};

use super::{AppResolver, RouterService};
use crate::{
    api::{
        overload::{stamp_receipts, GateLayer, Limiter, StampedTcp, StreamExecutor},
        CallRouterService,
    },
    config::{ServeConfig, TlsConfig, MAX_LOCAL_ERROR_RESET_STREAMS},
    proto::{self, call_router_server::CallRouterServer},
    routing::Router,
};

/// Longest a client may take over its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection's HTTP/2 receive window for `streams` streams at once.
///
/// h2 closes a connection (`ENHANCE_YOUR_CALM`, `too_many_data_frames`)
/// once the small DATA frames it holds unread cost more than half its
/// window, each counted as up to 256 bytes. A unary request's message is
/// one such frame, held until the stream's task reads it: under overload,
/// every stream of a connection may be waiting for the CPU with its
/// message unread, and with hyper's 1 MB window a few thousand such
/// streams would tear down the connection of a gateway the daemon is only
/// shedding. The window holds two such frames for every stream, and is
/// never less than hyper's.
fn connection_window(streams: u32) -> u32 {
    const SMALL_FRAME: u32 = 256;
    streams.saturating_mul(4 * SMALL_FRAME).max(1 << 20)
}

/// The gRPC services, wired and reporting SERVING, not yet listening.
pub(super) struct GrpcServer {
    routes: Routes,
    pub(super) health: HealthReporter,
    tls: Option<TlsAcceptor>,
    max_concurrent_streams: u32,
    max_in_flight: usize,
    /// The adaptive limit's admissions at the edge.
    gate: GateLayer,
    /// The limit itself, for `/readyz`.
    pub(super) limiter: Arc<Limiter>,
}

impl GrpcServer {
    /// The routing API and reflection behind the gateways' tokens, and
    /// health, which is not.
    pub(super) async fn new(
        config: &ServeConfig,
        router: Arc<Router<AppResolver>>,
        tls: Option<TlsAcceptor>,
    ) -> anyhow::Result<Self> {
        let authenticate = config.tokens()?.interceptor();
        let max_message_bytes = config.grpc.max_message_bytes;
        let limiter = Arc::new(Limiter::new(config.limit_settings()));
        let gate = GateLayer::new(limiter.clone(), config.grpc.overload_refusal);
        let service = CallRouterService::new(router, config.grpc.request_timeout);
        let service = CallRouterServer::new(service)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<RouterService>().await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let routes = Routes::new(health_service)
            .add_service(InterceptedService::new(
                reflection().build_v1()?,
                authenticate.clone(),
            ))
            .add_service(InterceptedService::new(
                reflection().build_v1alpha()?,
                authenticate.clone(),
            ))
            .add_service(InterceptedService::new(service, authenticate));
        Ok(Self {
            routes,
            health,
            tls,
            max_concurrent_streams: config.grpc.max_concurrent_streams,
            max_in_flight: config.grpc.max_in_flight,
            gate,
            limiter,
        })
    }

    /// Serves on `listener` until `stopped` resolves, then until the
    /// requests in flight are answered.
    ///
    /// The accept loop is ours, not tonic's `Server`, for one reason: the
    /// executor that spawns each stream's task ([`StreamExecutor`]), which
    /// lets the overload gate see how long a request waited for the CPU.
    pub(super) async fn serve(
        self,
        listener: TcpListener,
        stopped: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let executor = StreamExecutor::new(self.limiter.clone());
        let (max_concurrent_streams, max_in_flight) =
            (self.max_concurrent_streams, self.max_in_flight);
        // one per connection: its executor stamps its streams with the
        // connection's own receive stamps
        let http2 = move |received| {
            let mut http2 =
                http2::Builder::new(StreamExecutor::for_connection(&executor, received));
            http2
                .timer(TokioTimer::new())
                // bounded per connection (see the default's docs)
                .max_concurrent_streams(max_concurrent_streams)
                .initial_connection_window_size(connection_window(max_concurrent_streams))
                // Rapid reset (CVE-2023-44487): h2 closes a connection
                // (GOAWAY) once this many streams the client reset are
                // waiting to be taken. h2's 20 would also close a gateway's
                // connection that cancels requests past their deadline during
                // an overload, losing every call on it; as many as may be in
                // flight still bounds the work a resetting client can cause.
                .max_pending_accept_reset_streams(Some(max_in_flight))
                // resets forced by a peer's protocol errors: h2's bound
                .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS));
            http2
        };
        if let Err(error) = stamp_receipts(&listener) {
            tracing::warn!(%error, "the kernel does not stamp what the gRPC connections receive: the overload gate sees waits from when a connection reads a request");
        }
        let service = self.gate.layer(self.routes).map_request(
            |request: http::Request<hyper::body::Incoming>| request.map(tonic::body::Body::new),
        );
        let service = TowerToHyperService::new(service);
        let connections = GracefulShutdown::new();
        tokio::pin!(stopped);
        loop {
            let tcp = tokio::select! {
                () = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(error) => {
                        // out of file descriptors, mostly: the connections
                        // being served go on, the next accept may succeed
                        tracing::warn!(%error, "cannot accept a gRPC connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // the connection refusing it answers the client
            let _ = tcp.set_nodelay(true);
            let tcp = StampedTcp::new(tcp);
            let (http2, service, watcher) = (
                http2(tcp.received()),
                service.clone(),
                connections.watcher(),
            );
            match self.tls.clone() {
                None => {
                    tokio::spawn(watcher.watch(http2.serve_connection(TokioIo::new(tcp), service)));
                }
                Some(tls) => {
                    tokio::spawn(async move {
                        let handshake =
                            tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp)).await;
                        match handshake {
                            Ok(Ok(stream)) => {
                                let _ = watcher
                                    .watch(http2.serve_connection(TokioIo::new(stream), service))
                                    .await;
                            }
                            Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    });
                }
            }
        }
        // no new connections; the open ones finish what they started
        drop(listener);
        connections.shutdown().await;
        Ok(())
    }
}

/// The server's TLS settings from the certificate, key and client CA
/// files, read now so that a missing or unreadable file stops the start.
pub(super) fn tls_config(config: &TlsConfig) -> anyhow::Result<Option<TlsAcceptor>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path, setting: &str| {
        std::fs::read(path).with_context(|| format!("cannot read {} ({setting})", path.display()))
    };
    let unusable = "SWITCHBOARD_TLS_CERT / SWITCHBOARD_TLS_KEY / SWITCHBOARD_TLS_CLIENT_CA are not a usable certificate, key and CA";
    let certs = |pem: &[u8], setting: &str| {
        CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|certs| !certs.is_empty())
            .with_context(|| format!("{setting} holds no PEM certificate"))
    };
    let (cert, key) = (
        read(cert, "SWITCHBOARD_TLS_CERT")?,
        read(key, "SWITCHBOARD_TLS_KEY")?,
    );
    let chain = certs(&cert, "SWITCHBOARD_TLS_CERT")?;
    let key = PrivateKeyDer::from_pem_slice(&key)
        .context("SWITCHBOARD_TLS_KEY holds no PEM private key")?;
    let builder = ServerConfig::builder();
    let builder = match &config.tls_client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for root in certs(
                &read(ca, "SWITCHBOARD_TLS_CLIENT_CA")?,
                "SWITCHBOARD_TLS_CLIENT_CA",
            )? {
                roots.add(root).context(unusable)?;
            }
            let verifier = WebPkiClientVerifier::builder(roots.into())
                .build()
                .context(unusable)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut tls = builder.with_single_cert(chain, key).context(unusable)?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(tls))))
}
