//! What stock gRPC tooling sees: the standard health service, server
//! reflection, and an orderly shutdown.

use futures::StreamExt;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

use crate::helpers::spawn_app;

#[tokio::test]
async fn health_reports_serving_for_the_router_and_the_server() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel());
    for service in ["", "switchboard.v1.CallRouter"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("{service:?}: {s:?}"))
            .into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

async fn reflect(app: &crate::helpers::TestApp, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(app.channel());
    let outbound = futures::stream::iter([ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    }]);
    let mut inbound = client
        .server_reflection_info(outbound)
        .await
        .unwrap()
        .into_inner();
    inbound
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

#[tokio::test]
async fn reflection_lists_and_describes_the_services() {
    let app = spawn_app().await;
    let MessageResponse::ListServicesResponse(list) =
        reflect(&app, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in ["switchboard.v1.CallRouter", "grpc.health.v1.Health"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    // A tool resolving the RouteCall method needs its file and its imports
    // (google/protobuf/struct.proto).
    let MessageResponse::FileDescriptorResponse(files) = reflect(
        &app,
        MessageRequest::FileContainingSymbol("switchboard.v1.CallRouter".into()),
    )
    .await
    else {
        panic!("expected file descriptors");
    };
    use prost::Message;
    let names: Vec<String> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| {
            prost_types::FileDescriptorProto::decode(bytes.as_slice())
                .unwrap()
                .name()
                .to_string()
        })
        .collect();
    assert!(
        names.iter().any(|n| n == "switchboard/v1/router.proto"),
        "{names:?}"
    );
    let MessageResponse::FileDescriptorResponse(dep) = reflect(
        &app,
        MessageRequest::FileByFilename("google/protobuf/struct.proto".into()),
    )
    .await
    else {
        panic!("struct.proto is not served");
    };
    assert_eq!(dep.file_descriptor_proto.len(), 1);
}

#[tokio::test]
async fn shutdown_stops_serving_and_returns_cleanly() {
    let app = spawn_app().await;
    let addr = app.grpc_addr;
    app.stop().await.expect("clean stop");
    // The listener is gone: new connections are refused.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// The server's first HTTP/2 SETTINGS frame, as `(identifier, value)` pairs.
async fn server_settings(addr: std::net::SocketAddr) -> Vec<(u16, u32)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    // the client preface, then an empty SETTINGS frame
    socket
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut header = [0u8; 9];
    socket.read_exact(&mut header).await.unwrap();
    assert_eq!(header[3], 0x4, "the server speaks first with SETTINGS");
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; length];
    socket.read_exact(&mut payload).await.unwrap();
    payload
        .chunks_exact(6)
        .map(|entry| {
            (
                u16::from_be_bytes([entry[0], entry[1]]),
                u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_connection_carries_a_bounded_number_of_streams() {
    const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    let app = crate::helpers::spawn_seeded_app().await;
    let advertised = server_settings(app.grpc_addr).await;
    assert!(
        advertised.contains(&(
            MAX_CONCURRENT_STREAMS,
            switchboard::config::DEFAULT_MAX_CONCURRENT_STREAMS
        )),
        "{advertised:?}"
    );
    let tight = crate::helpers::spawn_seeded_app_with(|c| {
        c.grpc.max_in_flight = 64;
        c.grpc.max_concurrent_streams = 100;
    })
    .await;
    assert!(server_settings(tight.grpc_addr)
        .await
        .contains(&(MAX_CONCURRENT_STREAMS, 100)));
    // below the in-flight limit, requests would wait in the client instead
    // of being refused at once
    let mut config = switchboard::config::ServeConfig::with_defaults(
        "postgres://x@127.0.0.1/db",
        "postgres://x@127.0.0.1/db",
        "redis://127.0.0.1/",
    );
    config.grpc.max_concurrent_streams = 10;
    let error = config.validate().unwrap_err();
    assert!(
        error.contains("SWITCHBOARD_MAX_CONCURRENT_STREAMS"),
        "{error}"
    );
}
