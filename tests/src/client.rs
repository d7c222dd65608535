//! Client construction and gRPC error assertions shared by the tests.

use std::fmt::Debug;
use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{Client, ConnectOptions};

/// Per-request bound for ordinary test traffic; generous because CI machines are slow.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on establishing a TCP/HTTP2 connection to one endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A client over `endpoints` with the default request timeout.
pub async fn connect(endpoints: &[String]) -> Result<Client> {
    connect_with_timeout(endpoints, REQUEST_TIMEOUT).await
}

/// A client over `endpoints` whose every request fails after `request_timeout`.
pub async fn connect_with_timeout(
    endpoints: &[String],
    request_timeout: Duration,
) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_timeout(request_timeout)
        .with_connect_timeout(CONNECT_TIMEOUT.min(request_timeout));
    Client::connect(endpoints, Some(options))
        .await
        .with_context(|| format!("connecting to {endpoints:?}"))
}

/// The gRPC status inside an etcd-client error, if it is one.
pub fn grpc_status(error: &etcd_client::Error) -> Option<&tonic::Status> {
    match error {
        etcd_client::Error::GRpcStatus(status) => Some(status),
        _ => None,
    }
}

/// Asserts that `result` failed with exactly this gRPC code and message.
#[track_caller]
pub fn assert_grpc_error<T: Debug>(
    result: Result<T, etcd_client::Error>,
    code: tonic::Code,
    message: &str,
) {
    match result {
        Ok(value) => panic!("expected gRPC error {code:?} {message:?}, got success: {value:?}"),
        Err(error) => match grpc_status(&error) {
            Some(status) => {
                assert_eq!(
                    (status.code(), status.message()),
                    (code, message),
                    "unexpected gRPC status (full: {status:?})"
                );
            }
            None => {
                panic!("expected gRPC error {code:?} {message:?}, got non-gRPC error: {error:?}")
            }
        },
    }
}
