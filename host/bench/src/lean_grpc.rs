//! Unary gRPC calls made straight over `h2`, for the benchmark's hottest loop (`incr`).
//!
//! The client shares the machine's cores with the servers it measures, so every microsecond it
//! spends per call is taken from them. tonic's channel sends each request through a buffer task
//! and hyper pipes each request body from a task of its own; here the requester's task writes
//! the whole request into the connection and waits for the answer, nothing in between. Both
//! systems compared (`--mode cas` on etcd, `--mode invoke` on Baton) go through this path.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, HeaderValue, Method, Request};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tonic::Status;

/// gRPC's length-prefixed message header: a compression flag and a big-endian length.
const FRAME_HEADER_BYTES: usize = 5;

/// gRPC paths of the methods the lean callers use (etcd's and Baton's services).
pub(crate) mod paths {
    pub(crate) const KV_PUT: &str = "/etcdserverpb.KV/Put";
    pub(crate) const KV_DELETE_RANGE: &str = "/etcdserverpb.KV/DeleteRange";
    pub(crate) const KV_RANGE: &str = "/etcdserverpb.KV/Range";
    pub(crate) const KV_TXN: &str = "/etcdserverpb.KV/Txn";
    pub(crate) const MAINTENANCE_STATUS: &str = "/etcdserverpb.Maintenance/Status";
    pub(crate) const MODULES_INVOKE: &str = "/baton.v1.Modules/Invoke";
    pub(crate) const MODULES_DESCRIBE: &str = "/baton.v1.Modules/Describe";
}

/// One HTTP/2 connection to one member; clones share it (each call is its own stream).
#[derive(Clone)]
pub(crate) struct LeanChannel {
    send: SendRequest<Bytes>,
    /// `http://host:port`, the prefix of every request's URI.
    origin: String,
    request_timeout: Duration,
    /// The deadline sent with every call (`grpc-timeout`), so the server stops waiting too.
    timeout_header: HeaderValue,
}

impl LeanChannel {
    /// Connects to `endpoint` (`host:port`, with or without `http://`).
    pub(crate) async fn connect(
        endpoint: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let address = endpoint.strip_prefix("http://").unwrap_or(endpoint);
        let address = address.trim_end_matches('/');
        if address.contains("://") {
            bail!("{endpoint}: only plain http:// endpoints are supported");
        }
        let stream = timeout(connect_timeout, TcpStream::connect(address))
            .await
            .with_context(|| format!("{endpoint}: connect timed out"))?
            .with_context(|| format!("{endpoint}: connect failed"))?;
        // Small requests and replies: without this each waits for Nagle's algorithm.
        stream.set_nodelay(true)?;
        let (send, connection) = h2::client::handshake(stream)
            .await
            .with_context(|| format!("{endpoint}: HTTP/2 handshake failed"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "benchmark connection ended");
            }
        });
        let millis = request_timeout.as_millis().clamp(1, 99_999_999);
        Ok(Self {
            send,
            origin: format!("http://{address}"),
            request_timeout,
            timeout_header: HeaderValue::from_str(&format!("{millis}m"))?,
        })
    }

    /// Calls the unary method `path` (e.g. `/etcdserverpb.KV/Range`).
    pub(crate) async fn unary<Q, R>(&self, path: &str, request: &Q) -> Result<R, Status>
    where
        Q: prost::Message,
        R: prost::Message + Default,
    {
        self.unary_then(path, request, || {}).await
    }

    /// As [`Self::unary`], calling `sent` once the request is handed to the connection: a
    /// caller whose answer may be long in coming (a parked module call) learns it is out.
    pub(crate) async fn unary_then<Q, R>(
        &self,
        path: &str,
        request: &Q,
        sent: impl FnOnce() + Send,
    ) -> Result<R, Status>
    where
        Q: prost::Message,
        R: prost::Message + Default,
    {
        match timeout(self.request_timeout, self.exchange(path, request, sent)).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{path}: no answer within {:?}",
                self.request_timeout
            ))),
        }
    }

    async fn exchange<Q, R>(
        &self,
        path: &str,
        request: &Q,
        sent: impl FnOnce() + Send,
    ) -> Result<R, Status>
    where
        Q: prost::Message,
        R: prost::Message + Default,
    {
        let head = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.origin))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", self.timeout_header.clone())
            .body(())
            .map_err(|e| Status::internal(format!("building the request: {e}")))?;
        let len = request.encoded_len();
        let mut frame = BytesMut::with_capacity(FRAME_HEADER_BYTES + len);
        frame.put_u8(0);
        frame.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        request
            .encode(&mut frame)
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))?;

        let mut send = self.send.clone().ready().await.map_err(transport)?;
        let (response, mut body_out) = send.send_request(head, false).map_err(transport)?;
        body_out
            .send_data(frame.freeze(), true)
            .map_err(transport)?;
        sent();

        let (parts, mut body) = response.await.map_err(transport)?.into_parts();
        if !parts.status.is_success() {
            return Err(Status::unknown(format!("HTTP status {}", parts.status)));
        }
        // A failure may come as headers only, with no body or trailers.
        check_status(&parts.headers)?;
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(transport)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        match body.trailers().await.map_err(transport)? {
            Some(trailers) => check_status(&trailers)?,
            None if parts.headers.contains_key("grpc-status") => {}
            None => return Err(Status::internal("reply ended without a grpc-status")),
        }
        decode_frame(data.freeze())
    }
}

fn transport(e: h2::Error) -> Status {
    Status::unavailable(format!("connection: {e}"))
}

/// The call's error, if `headers` carry a grpc-status other than OK.
fn check_status(headers: &HeaderMap) -> Result<(), Status> {
    match Status::from_header_map(headers) {
        Some(status) if status.code() != tonic::Code::Ok => Err(status),
        _ => Ok(()),
    }
}

/// The one message of a unary reply.
fn decode_frame<R: prost::Message + Default>(mut data: Bytes) -> Result<R, Status> {
    if data.len() < FRAME_HEADER_BYTES {
        return Err(Status::internal("reply carries no message"));
    }
    if data.get_u8() != 0 {
        return Err(Status::internal("compressed reply (none was asked for)"));
    }
    let len = data.get_u32() as usize;
    if data.len() < len {
        return Err(Status::internal("reply message cut short"));
    }
    R::decode(data.slice(..len)).map_err(|e| Status::internal(format!("undecodable reply: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_proto::etcdserverpb::RangeRequest;

    fn framed(flag: u8, message: &[u8], declared: u32) -> Bytes {
        let mut frame = BytesMut::new();
        frame.put_u8(flag);
        frame.put_u32(declared);
        frame.extend_from_slice(message);
        frame.freeze()
    }

    #[test]
    fn a_reply_frame_decodes_to_its_message() {
        let sent = RangeRequest {
            key: b"k".to_vec(),
            limit: 3,
            ..Default::default()
        };
        let bytes = prost::Message::encode_to_vec(&sent);
        let got: RangeRequest = decode_frame(framed(0, &bytes, bytes.len() as u32)).unwrap();
        assert_eq!(got, sent);
        // An empty message is a valid reply (all fields default).
        let empty: RangeRequest = decode_frame(framed(0, &[], 0)).unwrap();
        assert_eq!(empty, RangeRequest::default());
    }

    #[test]
    fn malformed_reply_frames_are_errors_not_panics() {
        let short = decode_frame::<RangeRequest>(Bytes::from_static(&[0, 0]));
        assert!(short.unwrap_err().message().contains("no message"));
        let compressed = decode_frame::<RangeRequest>(framed(1, b"x", 1));
        assert!(compressed.unwrap_err().message().contains("compressed"));
        let cut = decode_frame::<RangeRequest>(framed(0, b"ab", 9));
        assert!(cut.unwrap_err().message().contains("cut short"));
    }

    #[test]
    fn grpc_status_headers_become_errors() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(check_status(&headers).is_ok());
        headers.insert("grpc-status", HeaderValue::from_static("9"));
        headers.insert("grpc-message", HeaderValue::from_static("not%20leader"));
        let status = check_status(&headers).unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.message(), "not leader");
        assert!(check_status(&HeaderMap::new()).is_ok());
    }
}
