//! What the client subcommands share: a `baton.v1.Modules` client on the first endpoint that
//! answers, gRPC errors worded as grpcurl and the docs spell them, and `Recipes`, the built-in
//! recipe modules (JSON in and out) beside an etcd client for leases and watches.

use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context, Result};
use serde_json::Value;
use tonic::transport::Channel;

use baton_limits::{CLI_KEEPALIVE_RETRY_MS, CLI_UNAVAILABLE_WAIT_MS};
use baton_proto::baton::v1 as pb;
use baton_proto::baton::v1::modules_client::ModulesClient;

/// A client on the first endpoint that accepts a connection.
pub(crate) async fn connect(endpoints: &[String]) -> Result<ModulesClient<Channel>> {
    let mut last_error = None;
    for endpoint in endpoints {
        let url = with_scheme(endpoint);
        match Channel::from_shared(url.clone())
            .with_context(|| format!("invalid endpoint {endpoint}"))?
            .connect()
            .await
        {
            Ok(channel) => {
                return Ok(ModulesClient::new(channel)
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX));
            }
            Err(e) => last_error = Some(anyhow::Error::new(e).context(url)),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no endpoints given")))
}

/// An etcd client over every endpoint: it balances across them, so a session or a watch
/// outlives one member.
pub(crate) async fn connect_etcd(endpoints: &[String]) -> Result<etcd_client::Client> {
    let urls: Vec<String> = endpoints.iter().map(|e| with_scheme(e)).collect();
    etcd_client::Client::connect(urls.as_slice(), None)
        .await
        .with_context(|| format!("connecting to {}", urls.join(",")))
}

/// etcdctl takes `host:port`; tonic wants a URL.
fn with_scheme(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

/// The code's name (`RESOURCE_EXHAUSTED`), as grpcurl and the docs spell it, then the message.
pub(crate) fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", code_name(e.code()), e.message())
}

fn code_name(code: tonic::Code) -> String {
    // `Code`'s Debug is the CamelCase name; gRPC's canonical spelling is upper snake case.
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// One call of a built-in recipe module.
pub(crate) struct Call<'a> {
    pub(crate) module: &'a str,
    pub(crate) function: &'a str,
    pub(crate) input: Value,
    /// The caller's session lease; 0 for none.
    pub(crate) lease: i64,
    /// Run without a log entry (for functions that only read and wait).
    pub(crate) read_only: bool,
    /// Give up (and abandon the call server-side) after this long; None waits for the module.
    pub(crate) timeout: Option<Duration>,
}

impl<'a> Call<'a> {
    pub(crate) fn new(module: &'a str, function: &'a str, input: Value) -> Self {
        Self {
            module,
            function,
            input,
            lease: 0,
            read_only: false,
            timeout: None,
        }
    }
}

/// Why a call failed: its deadline passed (the caller words that), or anything else.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("gave up after {0:?}")]
    TimedOut(Duration),
    /// No leader, or the member is going away: another try may succeed.
    #[error(transparent)]
    Unavailable(anyhow::Error),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// The recipe modules and the etcd API of one cluster.
pub(crate) struct Recipes {
    modules: ModulesClient<Channel>,
    pub(crate) etcd: etcd_client::Client,
}

impl Recipes {
    pub(crate) async fn connect(endpoints: &[String]) -> Result<Self> {
        let modules = connect(endpoints).await?;
        let etcd = connect_etcd(endpoints).await?;
        Ok(Self { modules, etcd })
    }

    /// Runs the call and parses its JSON answer. A call bound to a lease (its effects are
    /// keyed by that lease) or read-only is repeated while the cluster has no leader.
    pub(crate) async fn call(&mut self, call: Call<'_>) -> Result<Value, CallError> {
        let repeatable = call.lease != 0 || call.read_only;
        let give_up = Instant::now() + Duration::from_millis(CLI_UNAVAILABLE_WAIT_MS);
        loop {
            match self.call_once(&call).await {
                Err(CallError::Unavailable(_)) if repeatable && Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(CLI_KEEPALIVE_RETRY_MS)).await;
                }
                Err(CallError::Unavailable(e)) => return Err(CallError::Failed(e)),
                other => return other,
            }
        }
    }

    async fn call_once(&mut self, call: &Call<'_>) -> Result<Value, CallError> {
        let mut request = tonic::Request::new(pb::InvokeRequest {
            name: call.module.to_owned(),
            function: call.function.to_owned(),
            input: call.input.to_string().into_bytes(),
            lease: call.lease,
            read_only: call.read_only,
            ..Default::default()
        });
        let reply = match call.timeout {
            Some(limit) => {
                // The server abandons a waiting call whose deadline passed; the local bound
                // covers a server that never answers.
                request.set_timeout(limit);
                match tokio::time::timeout(limit, self.modules.invoke(request)).await {
                    Ok(reply) => reply,
                    Err(_) => return Err(CallError::TimedOut(limit)),
                }
            }
            None => self.modules.invoke(request).await,
        };
        let reply = match reply {
            Ok(reply) => reply.into_inner(),
            Err(e) if e.code() == tonic::Code::DeadlineExceeded && call.timeout.is_some() => {
                return Err(CallError::TimedOut(call.timeout.unwrap_or_default()));
            }
            Err(e) if e.code() == tonic::Code::Unavailable => {
                return Err(CallError::Unavailable(status(e)));
            }
            Err(e) => {
                return Err(status(e)
                    .context(format!("{} {}", call.module, call.function))
                    .into());
            }
        };
        let value = serde_json::from_slice(&reply.output).with_context(|| {
            format!(
                "{} {} answered something other than JSON: {}",
                call.module,
                call.function,
                String::from_utf8_lossy(&reply.output)
            )
        })?;
        Ok(value)
    }
}

/// A text field of a module's answer, or its `_hex` twin when the bytes are not UTF-8.
pub(crate) fn text_field(reply: &Value, field: &str) -> Option<String> {
    reply[field]
        .as_str()
        .or_else(|| reply[format!("{field}_hex")].as_str())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::{code_name, text_field};

    #[test]
    fn codes_are_named_as_grpc_spells_them() {
        assert_eq!(
            code_name(tonic::Code::ResourceExhausted),
            "RESOURCE_EXHAUSTED"
        );
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
    }

    #[test]
    fn fields_fall_back_to_hex() {
        let reply = serde_json::json!({"key":"a/1","value_hex":"ff00"});
        assert_eq!(text_field(&reply, "key").as_deref(), Some("a/1"));
        assert_eq!(text_field(&reply, "value").as_deref(), Some("ff00"));
        assert_eq!(text_field(&reply, "token"), None);
    }
}
