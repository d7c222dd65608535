//! gRPC server reflection on the client port, v1 and v1alpha (older grpcurl releases ask
//! v1alpha first), so grpcurl and other generic tools work without Baton's `.proto` files.
//!
//! Both answer from the descriptor set `baton_proto` compiles (etcd's API, `baton.v1`) plus
//! those of the health and reflection services. They list exactly [`CLIENT_SERVICES`], the services `client_router`
//! serves; files whose services this port does not serve (etcd's Auth, the peer port's
//! `batonpb`) are still resolvable as files and symbols, as they describe shared messages.

use baton_proto::baton::v1::modules_server;
use baton_proto::etcdserverpb::{
    cluster_server, kv_server, lease_server, maintenance_server, watch_server,
};
use baton_proto::v3electionpb::election_server;
use baton_proto::v3lockpb::lock_server;
use tonic_reflection::pb::{v1, v1alpha};
use tonic_reflection::server::Builder;

/// Every service on the client port; keep in step with `client_router`.
pub(crate) const CLIENT_SERVICES: [&str; 11] = [
    kv_server::SERVICE_NAME,
    watch_server::SERVICE_NAME,
    lease_server::SERVICE_NAME,
    cluster_server::SERVICE_NAME,
    maintenance_server::SERVICE_NAME,
    lock_server::SERVICE_NAME,
    election_server::SERVICE_NAME,
    modules_server::SERVICE_NAME,
    tonic_health::pb::health_server::SERVICE_NAME,
    v1::server_reflection_server::SERVICE_NAME,
    v1alpha::server_reflection_server::SERVICE_NAME,
];

/// Both versions describe both reflection services (by default each would describe only
/// itself, although both are listed).
fn builder() -> Builder<'static> {
    CLIENT_SERVICES.iter().fold(
        Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(baton_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(v1alpha::FILE_DESCRIPTOR_SET),
        |builder, name| builder.with_service_name(*name),
    )
}

/// The v1 reflection service.
pub(crate) fn v1_service() -> anyhow::Result<
    v1::server_reflection_server::ServerReflectionServer<
        impl v1::server_reflection_server::ServerReflection,
    >,
> {
    Ok(builder().build_v1()?)
}

/// The v1alpha reflection service.
pub(crate) fn v1alpha_service() -> anyhow::Result<
    v1alpha::server_reflection_server::ServerReflectionServer<
        impl v1alpha::server_reflection_server::ServerReflection,
    >,
> {
    Ok(builder().build_v1alpha()?)
}
