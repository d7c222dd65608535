//! Calls to Baton's modules (`baton.v1.Modules/Invoke`) from the workload, classified the way
//! the history needs: what the call returned, a refusal that certainly changed nothing, or an
//! outcome nobody knows (the call may have committed).

use std::time::Duration;

use baton_proto::baton::v1::modules_client::ModulesClient;
use baton_proto::baton::v1::{InvokeRequest, InvokeResponse};
use tonic::transport::Channel;

use crate::cluster::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};

/// hyper-util's message for a TCP connect that failed: the request never left the client.
const CONNECT_ERROR_TEXT: &str = "tcp connect error";

pub type Modules = ModulesClient<Channel>;

/// How a call that did not return an answer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The call did not happen: not sent, refused before it was proposed, or the guest's last
    /// run refused (FAILED_PRECONDITION; that run wrote nothing, though the runs before a wait,
    /// such as a lock waiter's key, did commit).
    Refused(String),
    /// Sent, and no answer: it may have committed.
    Unknown(String),
}

/// A client for `endpoint`; connects lazily, so members that are down do not fail it.
pub fn client(endpoint: &str) -> Option<Modules> {
    let channel = Channel::from_shared(endpoint.to_owned())
        .ok()?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_lazy();
    Some(ModulesClient::new(channel))
}

/// Invokes `module.function(input)` with the caller's `lease` (0: none), bounded by
/// `REQUEST_TIMEOUT`.
pub async fn invoke(
    client: &mut Modules,
    call: (&str, &str),
    input: String,
    lease: i64,
    read_only: bool,
) -> Result<InvokeResponse, CallError> {
    let request = request(call, input, lease, read_only);
    invoke_within(client, request, REQUEST_TIMEOUT).await
}

pub fn request(
    (module, function): (&str, &str),
    input: String,
    lease: i64,
    read_only: bool,
) -> InvokeRequest {
    InvokeRequest {
        name: module.into(),
        function: function.into(),
        input: input.into_bytes(),
        lease,
        read_only,
        ..Default::default()
    }
}

/// Sends `request`, giving up on an answer after `limit` (a call that waits, such as a lock's
/// acquire, may need longer than a plain request).
pub async fn invoke_within(
    client: &mut Modules,
    request: InvokeRequest,
    limit: Duration,
) -> Result<InvokeResponse, CallError> {
    match tokio::time::timeout(limit, client.invoke(request)).await {
        Ok(Ok(reply)) => Ok(reply.into_inner()),
        Ok(Err(status)) => Err(classify(&status)),
        Err(_) => Err(CallError::Unknown("no answer in time".into())),
    }
}

fn classify(status: &tonic::Status) -> CallError {
    use tonic::Code;
    let text = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        // Refused by the guest at apply, or checked before anything was proposed.
        Code::FailedPrecondition | Code::InvalidArgument | Code::NotFound => {
            CallError::Refused(text)
        }
        _ if never_sent(status) => CallError::Refused(text),
        _ => CallError::Unknown(text),
    }
}

/// Whether the channel could not even connect. Only locally raised errors carry a source chain;
/// a status from the server has none (its text may quote the server's own connect failures).
fn never_sent(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    let mut source = status.source();
    while let Some(e) = source {
        if e.to_string().contains(CONNECT_ERROR_TEXT) {
            return true;
        }
        source = e.source();
    }
    false
}
