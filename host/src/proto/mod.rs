//! Generated protobuf types and tonic services: the etcd v3 API, plus `batonpb` (Baton's
//! replicated-log format and member-to-member service).
//!
//! The sources are Baton's own `.proto` files under `host/proto/`, kept
//! wire-identical to etcd (same packages, field numbers and method paths), so
//! stock etcd clients talk to Baton unchanged. Each proto package is a sibling
//! module because prost refers across packages as `super::<package>::Type`.

#[allow(
    clippy::allow_attributes_without_reason,
    reason = "generated code: tonic emits bare allow attributes"
)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// Baton's own client API (`baton.v1`): modules.
pub mod baton {
    #[allow(
        clippy::allow_attributes_without_reason,
        reason = "generated code: tonic emits bare allow attributes"
    )]
    pub mod v1 {
        tonic::include_proto!("baton.v1");
    }
}

#[allow(
    clippy::allow_attributes_without_reason,
    reason = "generated code: tonic emits bare allow attributes"
)]
pub mod batonpb {
    tonic::include_proto!("batonpb");
}

#[allow(
    clippy::allow_attributes_without_reason,
    reason = "generated code: tonic emits bare allow attributes"
)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

#[allow(
    clippy::allow_attributes_without_reason,
    reason = "generated code: tonic emits bare allow attributes"
)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

#[allow(
    clippy::allow_attributes_without_reason,
    reason = "generated code: tonic emits bare allow attributes"
)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

#[allow(
    clippy::allow_attributes_without_reason,
    reason = "generated code: tonic emits bare allow attributes"
)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// Encoded `FileDescriptorSet` of every compiled `.proto`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/baton_descriptor.bin"));

#[cfg(test)]
mod tests;
