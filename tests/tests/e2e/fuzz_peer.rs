//! Fuzzes the peer port (`batonpb.RaftPeer`) of a real 3-member cluster (Baton only: etcd's
//! peer protocol is another one), with raw bytes sent on each method's path, round-robin to
//! every member.
//!
//! Per method it sends random bytes and mutations (bit flips, truncation, inserted junk, huge
//! varints, duplication) of a structurally valid request: postcard-encoded openraft messages
//! inside `RaftPayload`/`SnapshotChunk`, `LogCommand`s for Forward/ForwardBatch, the lease,
//! membership and read-index requests. The two streams (StreamAppend, InstallSnapshot) get one
//! to three such messages.
//!
//! The peer port has no authentication (RISKS R01): a forged Raft message with a current term
//! is obeyed by design, and could legitimately break the cluster. So every Raft message that
//! still decodes after mutation is made stale before it is sent (its vote's term set to 0, below
//! any real one): the fuzz reaches decoding and openraft's refusal, never a forged leader. A
//! MemberAdd that succeeds (a mutation may keep it valid) is removed again at once. Forwarded
//! commands are sent as mutated: they are what a leader proposes, and every member applies them.
//!
//! Checked for every request: an answer arrives within [`ANSWER_BOUND`], and it is OK or a
//! status the server sent (not a transport error, which is what a panicking handler or a
//! dropped connection looks like) with a message. After the run: no member has exited, every
//! member serves a write and a linearizable read, and all three report the same HashKV at the
//! same revision.
//!
//! Replay: `BATON_PEER_FUZZ_SEED=<seed>` (each run prints its seed); longer run:
//! `BATON_PEER_FUZZ_ITERS=<requests per method>` (default [`ITERS_DEFAULT`]).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use baton_apply::entry::{Command, TypeConfig, codec};
use baton_e2e::{Backend, Cluster, run_test, seed_from_env};
use baton_proto::batonpb as raftpb;
use baton_proto::etcdserverpb as pb;
use etcd_client::{AlarmAction, AlarmOptions, AlarmType, GetOptions};
use openraft::alias::{CommittedLeaderIdOf, EntryOf, LogIdOf, SnapshotMetaOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use openraft::vote::RaftLeaderId;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::fuzz_grpc::{RawCodec, varint};

const SEED_ENV: &str = "BATON_PEER_FUZZ_SEED";
const ITERS_ENV: &str = "BATON_PEER_FUZZ_ITERS";
/// Requests per method by default: 1 600 requests in about 10 s in a debug build.
const ITERS_DEFAULT: usize = 100;
/// The deadline sent with each request (grpc-timeout).
const RPC_DEADLINE: Duration = Duration::from_secs(3);
/// Past this without an answer, a request counts as a hang.
const ANSWER_BOUND: Duration = Duration::from_secs(20);
/// Largest random-bytes request.
const RANDOM_BYTES_MAX: usize = 2048;
/// How long the members get to apply the last write before their hashes are compared.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);
/// A node id no member has: the sender of every fuzzed Raft message.
const STRANGER: u64 = 0x0bad_cafe;
/// Keys forwarded writes use.
const PREFIX: &str = "peer-fuzz/";
/// Failures listed in the error; the rest are counted.
const FAILURES_SHOWN_MAX: usize = 20;

type Vote = VoteOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Entry = EntryOf<TypeConfig>;
type SnapshotMeta = SnapshotMetaOf<TypeConfig>;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Method {
    Vote,
    AppendEntries,
    StreamAppend,
    InstallSnapshot,
    TransferLeader,
    Forward,
    ForwardBatch,
    ReadIndex,
    Publish,
    LeaseKeepAlive,
    LeaseTimeToLive,
    Membership,
    MemberAdd,
    MemberRemove,
    MemberUpdate,
    MemberPromote,
}

const METHODS: [Method; 16] = [
    Method::Vote,
    Method::AppendEntries,
    Method::StreamAppend,
    Method::InstallSnapshot,
    Method::TransferLeader,
    Method::Forward,
    Method::ForwardBatch,
    Method::ReadIndex,
    Method::Publish,
    Method::LeaseKeepAlive,
    Method::LeaseTimeToLive,
    Method::Membership,
    Method::MemberAdd,
    Method::MemberRemove,
    Method::MemberUpdate,
    Method::MemberPromote,
];

impl Method {
    fn path(self) -> &'static str {
        match self {
            Method::Vote => "/batonpb.RaftPeer/Vote",
            Method::AppendEntries => "/batonpb.RaftPeer/AppendEntries",
            Method::StreamAppend => "/batonpb.RaftPeer/StreamAppend",
            Method::InstallSnapshot => "/batonpb.RaftPeer/InstallSnapshot",
            Method::TransferLeader => "/batonpb.RaftPeer/TransferLeader",
            Method::Forward => "/batonpb.RaftPeer/Forward",
            Method::ForwardBatch => "/batonpb.RaftPeer/ForwardBatch",
            Method::ReadIndex => "/batonpb.RaftPeer/ReadIndex",
            Method::Publish => "/batonpb.RaftPeer/Publish",
            Method::LeaseKeepAlive => "/batonpb.RaftPeer/LeaseKeepAlive",
            Method::LeaseTimeToLive => "/batonpb.RaftPeer/LeaseTimeToLive",
            Method::Membership => "/batonpb.RaftPeer/Membership",
            Method::MemberAdd => "/batonpb.RaftPeer/MemberAdd",
            Method::MemberRemove => "/batonpb.RaftPeer/MemberRemove",
            Method::MemberUpdate => "/batonpb.RaftPeer/MemberUpdate",
            Method::MemberPromote => "/batonpb.RaftPeer/MemberPromote",
        }
    }
}

// ---- random values and mutations ----------------------------------------------------------

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn pick(&mut self, n: u32) -> u32 {
        self.rng.random_range(0..n)
    }

    fn bytes(&mut self, len_max: usize) -> Vec<u8> {
        let len = self.rng.random_range(0..=len_max);
        let mut out = vec![0; len];
        self.rng.fill(&mut out[..]);
        out
    }

    fn index(&mut self) -> u64 {
        [0, 1, 7, 1_000, u64::MAX][self.pick(5) as usize]
    }

    fn key(&mut self) -> Vec<u8> {
        format!("{PREFIX}{}", self.pick(4)).into_bytes()
    }

    /// Half the time random bytes, else a mutation of `valid`.
    fn body(&mut self, valid: Vec<u8>) -> Vec<u8> {
        if self.rng.random_bool(0.5) {
            self.bytes(RANDOM_BYTES_MAX)
        } else {
            let rounds = 1 + self.pick(3);
            (0..rounds).fold(valid, |body, _| self.mutate(body))
        }
    }

    /// One byte-level mutation; postcard and protobuf both lean on varints and lengths.
    fn mutate(&mut self, mut body: Vec<u8>) -> Vec<u8> {
        let at = |g: &mut Gen, len: usize| g.rng.random_range(0..=len);
        match self.pick(6) {
            0 if !body.is_empty() => {
                let i = self.rng.random_range(0..body.len());
                body[i] ^= 1 << self.pick(8);
            }
            1 => body.truncate(at(self, body.len())),
            2 => {
                let i = at(self, body.len());
                let junk = self.bytes(8);
                body.splice(i..i, junk);
            }
            3 => {
                // A length or count claiming far more than follows.
                let mut huge = Vec::new();
                varint(
                    [u64::from(u32::MAX), u64::MAX, 1 << 31][self.pick(3) as usize],
                    &mut huge,
                );
                let i = at(self, body.len());
                body.splice(i..i, huge);
            }
            4 => {
                let copy = body.clone();
                body.extend_from_slice(&copy);
            }
            _ => {
                if !body.is_empty() {
                    let i = self.rng.random_range(0..body.len());
                    body[i] = self.rng.random();
                }
            }
        }
        body
    }
}

// ---- valid requests ------------------------------------------------------------------------

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(
        CommittedLeaderIdOf::<TypeConfig>::new(term, STRANGER),
        index,
    )
}

fn put(g: &mut Gen) -> raftpb::LogCommand {
    let op = match g.pick(5) {
        0 => raftpb::log_command::Op::DeleteRange(pb::DeleteRangeRequest {
            key: g.key(),
            ..Default::default()
        }),
        1 => raftpb::log_command::Op::LeaseGrant(pb::LeaseGrantRequest {
            ttl: 60,
            id: g.rng.random_range(1..1_000_000),
        }),
        2 => raftpb::log_command::Op::Txn(pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: g.key(),
                    value: g.bytes(16),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        }),
        _ => raftpb::log_command::Op::Put(pb::PutRequest {
            key: g.key(),
            value: g.bytes(64),
            ..Default::default()
        }),
    };
    raftpb::LogCommand {
        leader_time_ms: g.rng.random(),
        op: Some(op),
    }
}

fn vote_request(g: &mut Gen) -> VoteRequest<TypeConfig> {
    VoteRequest::new(Vote::new(0, STRANGER), Some(log_id(0, g.index())))
}

fn append_request(g: &mut Gen) -> AppendEntriesRequest<TypeConfig> {
    let first = g.index().min(1_000);
    let entries = (0..g.pick(3))
        .map(|i| Entry::new_normal(log_id(0, first + 1 + u64::from(i)), Command::new(put(g))))
        .collect();
    AppendEntriesRequest {
        vote: Vote::new_committed(0, STRANGER),
        prev_log_id: Some(log_id(0, first)),
        entries,
        leader_commit: Some(log_id(0, first)),
    }
}

fn raft_payload(data: Vec<u8>) -> Vec<u8> {
    raftpb::RaftPayload { data }.encode_to_vec()
}

fn encoded<T: serde::Serialize>(value: &T) -> Vec<u8> {
    codec::encode(value).unwrap_or_default()
}

fn snapshot_header(g: &mut Gen, len: u64) -> Vec<u8> {
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(0, g.index())),
        last_membership: Default::default(),
    };
    encoded(&(Vote::new_committed(0, STRANGER), meta, len))
}

/// A valid request of the unary methods that are not Raft's own, before mutation.
fn member_request(g: &mut Gen, method: Method) -> Vec<u8> {
    let id: u64 = g.rng.random();
    let lease = g.rng.random_range(-1..1_000_000);
    match method {
        Method::Publish => raftpb::PublishRequest {
            member_id: id,
            client_urls: vec!["http://127.0.0.1:1".into()],
            name: "stranger".into(),
        }
        .encode_to_vec(),
        Method::LeaseKeepAlive => pb::LeaseKeepAliveRequest { id: lease }.encode_to_vec(),
        Method::LeaseTimeToLive => pb::LeaseTimeToLiveRequest {
            id: lease,
            keys: id.is_multiple_of(2),
        }
        .encode_to_vec(),
        Method::MemberAdd => pb::MemberAddRequest {
            peer_ur_ls: vec![format!("http://127.0.0.1:{}", 1 + id % 1000)],
            is_learner: true,
        }
        .encode_to_vec(),
        Method::MemberRemove => pb::MemberRemoveRequest { id }.encode_to_vec(),
        Method::MemberUpdate => pb::MemberUpdateRequest {
            id,
            peer_ur_ls: vec!["http://127.0.0.1:2".into()],
        }
        .encode_to_vec(),
        Method::MemberPromote => pb::MemberPromoteRequest { id }.encode_to_vec(),
        _ => Vec::new(),
    }
}

/// The request bodies of one call: one for a unary method, one to three for a stream.
fn bodies(g: &mut Gen, method: Method, members: &[u64]) -> Vec<Vec<u8>> {
    let member = members[g.pick(members.len() as u32) as usize];
    let one = match method {
        Method::Vote => {
            let valid = encoded(&vote_request(g));
            raft_payload(g.body(valid))
        }
        Method::AppendEntries => {
            let valid = encoded(&append_request(g));
            raft_payload(g.body(valid))
        }
        Method::StreamAppend => {
            return (0..1 + g.pick(3))
                .map(|_| {
                    let valid = encoded(&append_request(g));
                    raft_payload(g.body(valid))
                })
                .collect();
        }
        Method::InstallSnapshot => {
            let data = g.bytes(256);
            let header = snapshot_header(g, data.len() as u64);
            let first = raftpb::SnapshotChunk {
                header: g.body(header),
                data,
            };
            let mut chunks = vec![first.encode_to_vec()];
            if g.rng.random_bool(0.3) {
                let more = raftpb::SnapshotChunk {
                    header: Vec::new(),
                    data: g.bytes(64),
                };
                chunks.push(g.body(more.encode_to_vec()));
            }
            return chunks;
        }
        Method::TransferLeader => {
            let request = TransferLeaderRequest::<TypeConfig>::new(
                Vote::new_committed(0, STRANGER),
                member,
                Some(log_id(0, g.index())),
            );
            raft_payload(g.body(encoded(&request)))
        }
        Method::Forward => {
            let valid = put(g).encode_to_vec();
            g.body(valid)
        }
        Method::ForwardBatch => {
            let commands = (0..1 + g.pick(4)).map(|_| put(g)).collect();
            g.body(raftpb::ForwardBatchRequest { commands }.encode_to_vec())
        }
        Method::ReadIndex | Method::Membership => g.body(Vec::new()),
        _ => {
            let valid = member_request(g, method);
            g.body(valid)
        }
    };
    vec![one]
}

// ---- keeping Raft messages stale -----------------------------------------------------------

/// The Raft message in `body` as the member would decode it, rewritten with term 0 if it
/// decodes at all: a stale sender, never a forged current one.
fn made_stale(method: Method, body: Vec<u8>, first: bool) -> Vec<u8> {
    match method {
        Method::Vote => restale_payload(body, |data| {
            let mut rpc: VoteRequest<TypeConfig> = codec::decode(data).ok()?;
            rpc.vote.leader_id.term = 0;
            Some(encoded(&rpc))
        }),
        Method::AppendEntries | Method::StreamAppend => restale_payload(body, |data| {
            let mut rpc: AppendEntriesRequest<TypeConfig> = codec::decode(data).ok()?;
            rpc.vote.leader_id.term = 0;
            Some(encoded(&rpc))
        }),
        Method::TransferLeader => restale_payload(body, |data| {
            let rpc: TransferLeaderRequest<TypeConfig> = codec::decode(data).ok()?;
            let stale = TransferLeaderRequest::<TypeConfig>::new(
                Vote::new_committed(0, rpc.from_leader().leader_id.node_id),
                *rpc.to_node_id(),
                rpc.last_log_id().cloned(),
            );
            Some(encoded(&stale))
        }),
        Method::InstallSnapshot if first => {
            let Ok(mut chunk) = raftpb::SnapshotChunk::decode(body.as_slice()) else {
                return body;
            };
            let stale = if let Ok((mut vote, meta, len)) =
                codec::decode::<(Vote, SnapshotMeta, u64)>(&chunk.header)
            {
                vote.leader_id.term = 0;
                Some(encoded(&(vote, meta, len)))
            } else if let Ok((mut vote, meta)) =
                codec::decode::<(Vote, SnapshotMeta)>(&chunk.header)
            {
                vote.leader_id.term = 0;
                Some(encoded(&(vote, meta)))
            } else {
                None
            };
            match stale {
                Some(header) => {
                    chunk.header = header;
                    chunk.encode_to_vec()
                }
                None => body,
            }
        }
        _ => body,
    }
}

fn restale_payload(body: Vec<u8>, restale: impl Fn(&[u8]) -> Option<Vec<u8>>) -> Vec<u8> {
    match raftpb::RaftPayload::decode(body.as_slice()) {
        Ok(payload) => match restale(&payload.data) {
            Some(data) => raft_payload(data),
            None => body,
        },
        Err(_) => body,
    }
}

// ---- sending -------------------------------------------------------------------------------

async fn call(channel: &Channel, method: Method, bodies: Vec<Vec<u8>>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone()).max_decoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| Status::from_error(e.into()))?; // has a source: judged a transport error
    let path = PathAndQuery::from_static(method.path());
    match method {
        Method::StreamAppend => {
            let mut request = Request::new(tonic::codegen::tokio_stream::iter(bodies));
            request.set_timeout(RPC_DEADLINE);
            let mut replies = grpc.streaming(request, path, RawCodec).await?.into_inner();
            while replies.message().await?.is_some() {}
            Ok(())
        }
        Method::InstallSnapshot => {
            let mut request = Request::new(tonic::codegen::tokio_stream::iter(bodies));
            request.set_timeout(RPC_DEADLINE);
            grpc.client_streaming(request, path, RawCodec).await?;
            Ok(())
        }
        _ => {
            let body = bodies.into_iter().next().unwrap_or_default();
            let mut request = Request::new(body);
            request.set_timeout(RPC_DEADLINE);
            let reply = grpc.unary(request, path, RawCodec).await?.into_inner();
            if method == Method::MemberAdd {
                return forget_added(channel, &reply).await;
            }
            Ok(())
        }
    }
}

/// Removes the member a fuzzed MemberAdd managed to add (through the same peer method a
/// member uses), so no unreachable voter weighs on the quorum.
async fn forget_added(channel: &Channel, reply: &[u8]) -> Result<(), Status> {
    let Some(id) = pb::MemberAddResponse::decode(reply)
        .ok()
        .and_then(|r| r.member)
        .map(|m| m.id)
    else {
        return Ok(());
    };
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    let request = Request::new(pb::MemberRemoveRequest { id }.encode_to_vec());
    grpc.unary(
        request,
        PathAndQuery::from_static(Method::MemberRemove.path()),
        RawCodec,
    )
    .await
    .map(|_| ())
}

/// What is wrong with an answer, if anything. A deadline the server enforced is an answer: a
/// forwarded write may wait for a leader.
fn judge(answer: &Result<(), Status>) -> Option<String> {
    match answer {
        Ok(()) => None,
        Err(status) if std::error::Error::source(status).is_some() => {
            Some(format!("transport error (dropped stream?): {status:?}"))
        }
        Err(status) if status.message().is_empty() => Some(format!("empty message: {status:?}")),
        Err(_) => None,
    }
}

// ---- the test ------------------------------------------------------------------------------

/// Every member alive, serving a write and a linearizable read, then one HashKV for all.
async fn assert_cluster_whole(cluster: &mut Cluster) -> Result<()> {
    for m in 0..cluster.size() {
        ensure!(!cluster.has_exited(m), "member {m} has exited");
    }
    let mut revision = 0;
    for m in 0..cluster.size() {
        let mut client = cluster.member_client(m).await?;
        let put = client
            .put(format!("{PREFIX}after/{m}"), "ok", None)
            .await
            .with_context(|| format!("member {m} takes no write after the fuzz"))?;
        revision = revision.max(put.header().map_or(0, |h| h.revision()));
        client
            .get(PREFIX, None)
            .await
            .with_context(|| format!("member {m} serves no linearizable read"))?;
    }
    let mut hashes = Vec::new();
    for m in 0..cluster.size() {
        let mut client = cluster.member_client(m).await?;
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        loop {
            let read = client
                .get(PREFIX, Some(GetOptions::new().with_serializable()))
                .await?;
            if read.header().map_or(0, |h| h.revision()) >= revision {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "member {m} never applied revision {revision}"
            );
            tokio::time::sleep(POLL).await;
        }
        let hash = client.hash_kv(revision).await?;
        hashes.push((m, hash.hash(), hash.compact_version()));
    }
    ensure!(
        hashes
            .iter()
            .all(|&(_, h, c)| (h, c) == (hashes[0].1, hashes[0].2)),
        "HashKV at revision {revision} differs between members: {hashes:?}"
    );
    Ok(())
}

async fn peer_port_fuzz(seed: u64, iters: usize) -> Result<()> {
    let mut cluster = Cluster::start(Backend::Baton, 3).await?;
    let mut client = cluster.client().await?;
    client.put(format!("{PREFIX}before"), "v", None).await?;
    let members: Vec<u64> = (0..cluster.size()).map(|m| cluster.member_id(m)).collect();
    let mut channels = Vec::new();
    for m in 0..cluster.size() {
        let url = cluster.peer_url(m);
        let channel = Channel::from_shared(url.clone())?
            .connect()
            .await
            .with_context(|| format!("connecting to the peer port {url}"))?;
        channels.push(channel);
    }
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
    };
    let mut failures = Vec::new();
    let started = Instant::now();
    for method in METHODS {
        for i in 0..iters {
            let target = i % channels.len();
            let bodies: Vec<Vec<u8>> = bodies(&mut g, method, &members)
                .into_iter()
                .enumerate()
                .map(|(n, body)| made_stale(method, body, n == 0))
                .collect();
            let answer =
                tokio::time::timeout(ANSWER_BOUND, call(&channels[target], method, bodies)).await;
            let problem = match &answer {
                Err(_) => Some(format!("no answer within {ANSWER_BOUND:?}")),
                Ok(answer) => judge(answer),
            };
            if let Some(problem) = problem {
                failures.push(format!(
                    "{} #{i} to member {target}: {problem}",
                    method.path()
                ));
            }
        }
        for m in 0..cluster.size() {
            ensure!(
                !cluster.has_exited(m),
                "member {m} exited during {} (seed {seed})",
                method.path()
            );
        }
    }
    eprintln!(
        "peer fuzz: {} requests in {:?}",
        iters * METHODS.len(),
        started.elapsed()
    );
    // A forwarded command may have raised an alarm; it is not what is being tested next.
    let alarms = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .context("alarm list")?;
    for alarm in alarms.alarms() {
        let mut options = AlarmOptions::new();
        options.with_member(alarm.member_id());
        client
            .alarm(AlarmAction::Deactivate, alarm.alarm(), Some(options))
            .await
            .context("disarming an alarm")?;
    }
    if !failures.is_empty() {
        let shown: Vec<&String> = failures.iter().take(FAILURES_SHOWN_MAX).collect();
        bail!(
            "{} failures (seed {seed}, replay with {SEED_ENV}={seed}): {shown:#?}",
            failures.len()
        );
    }
    assert_cluster_whole(&mut cluster)
        .await
        .with_context(|| format!("after the fuzz (seed {seed}, replay with {SEED_ENV}={seed})"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_port_fuzz_leaves_every_member_serving_and_equal() {
    let seed = seed_from_env(SEED_ENV).expect("seed");
    let iters = std::env::var(ITERS_ENV)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(ITERS_DEFAULT);
    eprintln!("peer fuzz seed {seed} ({SEED_ENV}), {iters} requests per method");
    run_test(Backend::Baton, peer_port_fuzz(seed, iters)).await;
}
