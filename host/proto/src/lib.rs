//! Generated code only: protobuf messages for the etcd v3 API, Baton's client API (`baton.v1`)
//! and `batonpb` (Baton's replicated-log format and member-to-member service); with feature
//! `grpc`, their tonic clients and servers too. The layers below the server use the messages
//! without the feature and so build without tonic.
//!
//! The sources are Baton's own `.proto` files under `host/proto/`, kept
//! wire-identical to etcd (same packages, field numbers and method paths), so
//! stock etcd clients talk to Baton unchanged. Each proto package is a sibling
//! module because prost refers across packages as `super::<package>::Type`.

/// `tonic::include_proto!` without tonic: the generated file for a proto package.
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}

#[allow(
    clippy::allow_attributes_without_reason,
    reason = "generated code: tonic emits bare allow attributes"
)]
pub mod authpb {
    include_proto!("authpb");
}

/// Baton's own client API (`baton.v1`): modules.
pub mod baton {
    #[allow(
        clippy::allow_attributes_without_reason,
        reason = "generated code: tonic emits bare allow attributes"
    )]
    pub mod v1 {
        include_proto!("baton.v1");
    }
}

#[allow(
    clippy::allow_attributes_without_reason,
    reason = "generated code: tonic emits bare allow attributes"
)]
pub mod batonpb {
    include_proto!("batonpb");
}

#[allow(
    clippy::allow_attributes_without_reason,
    reason = "generated code: tonic emits bare allow attributes"
)]
pub mod etcdserverpb {
    include_proto!("etcdserverpb");
}

#[allow(
    clippy::allow_attributes_without_reason,
    reason = "generated code: tonic emits bare allow attributes"
)]
pub mod mvccpb {
    include_proto!("mvccpb");
}

#[allow(
    clippy::allow_attributes_without_reason,
    reason = "generated code: tonic emits bare allow attributes"
)]
pub mod v3electionpb {
    include_proto!("v3electionpb");
}

#[allow(
    clippy::allow_attributes_without_reason,
    reason = "generated code: tonic emits bare allow attributes"
)]
pub mod v3lockpb {
    include_proto!("v3lockpb");
}

/// Encoded `FileDescriptorSet` of every compiled `.proto`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/baton_descriptor.bin"));

#[cfg(test)]
mod tests;
