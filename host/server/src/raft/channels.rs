//! Cached gRPC channels to peers, keyed by peer URL. A tonic `Channel` multiplexes every RPC
//! over one HTTP/2 connection and reconnects by itself, so building one per RPC would only add
//! handshakes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use baton_limits::{PEER_CONNECT_TIMEOUT_MS, PEER_KEEPALIVE_MS, PEER_MESSAGE_BYTES_MAX};
use baton_proto::batonpb::raft_peer_client::RaftPeerClient;

/// A peer client over `channel` that takes messages as large as a peer's server sends
/// (`PEER_MESSAGE_BYTES_MAX`) rather than tonic's 4 MiB default, which would turn a committed
/// write with a large reply into a failure on the member that forwarded it.
pub(crate) fn peer_client(channel: Channel) -> RaftPeerClient<Channel> {
    RaftPeerClient::new(channel)
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
}

#[derive(Clone, Default)]
pub(crate) struct PeerChannels {
    by_url: Arc<Mutex<HashMap<String, Channel>>>,
}

impl PeerChannels {
    /// The channel to `url`, created on first use. Connecting is lazy: an unreachable peer shows
    /// up as an error on the RPC, not here.
    pub(crate) fn get(&self, url: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.by_url.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(url) {
            return Ok(ch.clone());
        }
        let channel = Endpoint::from_shared(url.to_string())?
            .connect_timeout(Duration::from_millis(PEER_CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_millis(PEER_KEEPALIVE_MS))
            .keep_alive_while_idle(true)
            .connect_lazy();
        map.insert(url.to_string(), channel.clone());
        Ok(channel)
    }
}
