//! The gRPC server: its services and TLS, wired by [`Application::build`],
//! served by [`Application::run_until_stopped`].
//!
//! [`Application::build`]: super::Application::build
//! [`Application::run_until_stopped`]: super::Application::run_until_stopped

use std::{future::Future, sync::Arc};

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::{
    service::{interceptor::InterceptedService, Routes},
    transport::{server::TcpIncoming, Certificate, Identity, Server, ServerTlsConfig},
};
use tonic_health::server::HealthReporter;

use super::{AppResolver, RouterService};
use crate::{
    api::{stamp_arrival, CallRouterService},
    config::{ServeConfig, TlsConfig, MAX_LOCAL_ERROR_RESET_STREAMS},
    proto::{self, call_router_server::CallRouterServer},
    routing::Router,
};

/// The gRPC services, wired and reporting SERVING, not yet listening.
pub(super) struct GrpcServer {
    routes: Routes,
    pub(super) health: HealthReporter,
    tls: Option<ServerTlsConfig>,
    max_concurrent_streams: u32,
    max_in_flight: usize,
}

impl GrpcServer {
    /// The routing API and reflection behind the gateways' tokens, and
    /// health, which is not.
    pub(super) async fn new(
        config: &ServeConfig,
        router: Arc<Router<AppResolver>>,
        tls: Option<ServerTlsConfig>,
    ) -> anyhow::Result<Self> {
        let authenticate = config.tokens()?.interceptor();
        let max_message_bytes = config.grpc.max_message_bytes;
        let service = CallRouterServer::new(CallRouterService::new(router, config.limits()))
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
        })
    }

    /// Serves on `listener` until `stopped` resolves, then until the
    /// requests in flight are answered.
    pub(super) async fn serve(
        self,
        listener: TcpListener,
        stopped: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut server = Server::builder()
            // bounded per connection (see the default's docs)
            .max_concurrent_streams(self.max_concurrent_streams)
            // Rapid reset (CVE-2023-44487): h2 closes a connection
            // (GOAWAY) once this many streams the client reset are
            // waiting to be taken. h2's 20 would also close a
            // gateway's connection that cancels requests past their
            // deadline during an overload, losing every call on it;
            // as many as may be in flight still bounds the work a
            // resetting client can cause.
            .http2_max_pending_accept_reset_streams(Some(self.max_in_flight))
            // resets forced by a peer's protocol errors: h2's bound
            .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS));
        if let Some(tls) = self.tls {
            server = server
                .tls_config(tls)
                .context("invalid TLS configuration")?;
        }
        server
            .layer(tower::util::MapRequestLayer::new(
                stamp_arrival::<tonic::body::Body>,
            ))
            .add_routes(self.routes)
            .serve_with_incoming_shutdown(incoming, stopped)
            .await
            .context("gRPC server failed")
    }
}

/// The server's TLS settings from the certificate, key and client CA
/// files, read now so that a missing or unreadable file stops the start.
pub(super) fn tls_config(config: &TlsConfig) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path, setting: &str| {
        std::fs::read(path).with_context(|| format!("cannot read {} ({setting})", path.display()))
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
        read(cert, "SWITCHBOARD_TLS_CERT")?,
        read(key, "SWITCHBOARD_TLS_KEY")?,
    ));
    if let Some(ca) = &config.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(
            ca,
            "SWITCHBOARD_TLS_CLIENT_CA",
        )?));
    }
    // the server only builds its acceptor when it starts: try it now
    Server::builder()
        .tls_config(tls.clone())
        .context("SWITCHBOARD_TLS_CERT / SWITCHBOARD_TLS_KEY / SWITCHBOARD_TLS_CLIENT_CA are not a usable certificate, key and CA")?;
    Ok(Some(tls))
}
