//! Every bound in one place, named with its unit last.

/// Most operations in one branch (success or failure) of a txn, and most compares (etcd `--max-txn-ops`).
pub const TXN_OPS_MAX: usize = 128;
/// Largest client request accepted, in bytes (etcd `--max-request-bytes`, 1.5 MiB).
pub const REQUEST_BYTES_MAX: usize = 1_572_864;
/// Room etcd leaves above the request limit for gRPC framing before gRPC itself refuses.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// How long a client request may wait for a leader, a commit or a read index.
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// How often a request without a usable leader looks again.
pub const LEADER_POLL_MS: u64 = 20;
/// Largest member-to-member message (append batches, snapshot chunks).
pub const PEER_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most encoded entry bytes the leader sends a follower in one replication message (openraft
/// also caps the count, at 300 entries); a single larger entry still goes alone.
pub const REPLICATION_BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest log entry a proposal can make: a full batch plus the one command that overflows it
/// (each command is at most a request plus gRPC framing), with room for the entry's framing.
const LOG_ENTRY_BYTES_MAX: usize =
    PROPOSAL_BATCH_BYTES_MAX + REQUEST_BYTES_MAX + GRPC_OVERHEAD_BYTES + 64 * 1024;
/// Most commands the leader puts in one batched log entry.
pub const PROPOSAL_BATCH_COMMANDS_MAX: usize = 256;
/// Most encoded command bytes in one batched log entry; a larger command is proposed alone.
pub const PROPOSAL_BATCH_BYTES_MAX: usize = 512 * 1024;
/// Commands waiting for the batch collector before proposers wait for room.
pub const PROPOSALS_QUEUED_MAX: usize = 4096;
/// Snapshots travel between members in pieces of this size.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// A snapshot transfer whose next piece has not moved for this long is abandoned (by the
/// sender, and by the receiver waiting for it) and started again; no deadline covers a whole
/// transfer, whose length grows with the state.
pub const SNAPSHOT_TRANSFER_STALL_MS: u64 = 30_000;
/// How often a member retries recording its client URLs until it succeeds.
pub const PUBLISH_RETRY_MS: u64 = 100;
/// How long a starting member waits for its client URLs to be recorded before serving anyway.
pub const PUBLISH_WAIT_MS: u64 = 10_000;
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 1_000;
pub const PEER_KEEPALIVE_MS: u64 = 1_000;
/// Take a snapshot (and allow purging the log) after this many applied entries: etcd 3.4's
/// default. A snapshot serializes the whole state, so taking one every 10,000 entries cost a
/// busy member a measurable share of its CPU.
pub const SNAPSHOT_LOGS_SINCE_LAST: u64 = 100_000;
/// Entries kept behind a snapshot, so a briefly lagging member catches up from the log rather
/// than from a whole snapshot (etcd's `SnapshotCatchUpEntries`).
pub const SNAPSHOT_CATCH_UP_ENTRIES: u64 = 5_000;
/// Memory redb may use for the state database's pages (its read cache, and up to half of it
/// for pages written but not yet flushed to the file). redb's default, 1 GiB, made a member's
/// memory grow to ~800 MB while it took in 100 MB of values; reads beyond this are served by
/// the OS page cache, as etcd's are.
pub const STATE_DB_CACHE_BYTES: usize = 128 * 1024 * 1024;
/// Force an fsync of the state database at least this often, in applied entries, to bound
/// how much log is replayed after a crash.
pub const SM_DURABLE_EVERY_ENTRIES: u64 = 1_000;
/// Responses a watcher may have waiting for its stream before it falls back to being served
/// from history (etcd buffers 128 per stream).
pub const WATCHER_BUFFER_RESPONSES: usize = 128;
/// Events read from history per catch-up round; whole revisions, so the last revision may
/// add more (etcd reads up to 1000 revisions).
pub const WATCH_CATCH_UP_BATCH_EVENTS: usize = 1_000;
/// Unsynced watchers served per catch-up round (etcd's `maxWatchersPerSync`).
pub const WATCH_CATCH_UP_WATCHERS_MAX: usize = 512;
/// How soon the catch-up task retries watchers whose buffers were full.
pub const WATCH_CATCH_UP_RETRY_MS: u64 = 20;
/// Responses queued between a watch stream's task and gRPC.
pub const WATCH_STREAM_OUT_RESPONSES: usize = 16;

/// Longest lease TTL a grant may ask for, in seconds (etcd's `MaxLeaseTTL`).
pub const LEASE_TTL_S_MAX: i64 = 9_000_000_000;
/// How often the leader looks for expired leases.
pub const LEASE_EXPIRY_TICK_MS: u64 = 100;
/// Most expired leases revoked per expiry tick (about etcd's 1000 revokes per second).
pub const LEASE_REVOKES_PER_TICK_MAX: usize = 100;
/// How often the leader looks for leases whose recorded remaining TTL has gone stale.
pub const LEASE_CHECKPOINT_TICK_MS: u64 = 500;
/// A lease not renewed for this long (or for half its TTL, if less) gets its remaining TTL
/// recorded in the log, bounding how far a leader change can extend it (etcd's checkpoint
/// interval, 5 min).
pub const LEASE_CHECKPOINT_STALENESS_MS_MAX: u64 = 300_000;
/// Most leases recorded in one checkpoint log entry (etcd's batch size).
pub const LEASE_CHECKPOINT_BATCH_MAX: usize = 1_000;
/// Most leases checkpointed per checkpoint tick; the rest wait for the next tick.
pub const LEASE_CHECKPOINTS_PER_TICK_MAX: usize = 5_000;
/// Keep-alive responses queued per stream before the server stops reading its requests.
pub const LEASE_KEEPALIVE_RESPONSES_QUEUED_MAX: usize = 16;
/// Pieces of a client's `Snapshot` stream (etcd sends 32 KiB).
pub const SNAPSHOT_STREAM_CHUNK_BYTES: usize = 32 * 1024;
/// Snapshot pieces produced ahead of the client.
pub const SNAPSHOT_STREAM_QUEUE_CHUNKS: usize = 8;
/// etcd's default `--quota-backend-bytes` (2 GiB), used when the flag is 0.
pub const QUOTA_BACKEND_BYTES_DEFAULT: u64 = 2 * 1024 * 1024 * 1024;
/// How often a member compares its state database's size with the quota.
pub const QUOTA_CHECK_INTERVAL_MS: u64 = 500;
/// How often revision-mode auto-compaction looks at the revision, as a Go duration (etcd's
/// fixed 5 minutes).
pub const AUTO_COMPACTION_REVISION_CHECK: &str = "5m";
/// Periodic auto-compaction compacts at most this far apart (etcd: 1 hour).
pub const AUTO_COMPACTION_PERIOD_MAX_MS: u64 = 60 * 60 * 1000;
/// Periodic auto-compaction samples the revision this many times per compaction interval.
pub const AUTO_COMPACTION_SAMPLES_PER_INTERVAL: u32 = 10;
/// How long MoveLeader waits for the target to take over.
pub const MOVE_LEADER_TIMEOUT_MS: u64 = REQUEST_TIMEOUT_MS;

/// Election Observe responses queued between its task and gRPC.
pub const OBSERVE_RESPONSES_QUEUED_MAX: usize = 16;

/// Decoded size of one request's header list a client connection whose `:authority` is being
/// repaired may send (name + value + 32 per field, as HTTP/2 counts it): hyper's own
/// SETTINGS_MAX_HEADER_LIST_SIZE, so the repair refuses nothing the server would accept.
pub const HTTP2_HEADER_LIST_BYTES_MAX: usize = 16 * 1024;
/// Bytes of HEADERS and CONTINUATION frames (frame headers and padding included) buffered for
/// one header block on the client port while its `:authority` is checked or repaired.
pub const HTTP2_HEADER_BLOCK_BYTES_MAX: usize = 2 * HTTP2_HEADER_LIST_BYTES_MAX;
/// Bytes read from a client connection at a time while its frames are being looked at.
pub const HTTP2_READ_CHUNK_BYTES: usize = 8 * 1024;
/// HPACK dynamic table a client encoder may use (HTTP/2's default SETTINGS_HEADER_TABLE_SIZE,
/// which the server never changes).
pub const HPACK_TABLE_BYTES: usize = 4096;
/// Largest frame payload any HTTP/2 peer must accept (the protocol's initial
/// SETTINGS_MAX_FRAME_SIZE, which a server may only raise): repaired blocks are cut to it.
pub const HTTP2_FRAME_PAYLOAD_BYTES_MIN: usize = 16 * 1024;

const _: () = assert!(SNAPSHOT_CHUNK_BYTES < PEER_MESSAGE_BYTES_MAX);
// A full batch plus one largest request (the command that overflows it is proposed alone).
const _: () = assert!(PROPOSAL_BATCH_BYTES_MAX + GRPC_OVERHEAD_BYTES < PEER_MESSAGE_BYTES_MAX);
const _: () = assert!(REQUEST_BYTES_MAX + GRPC_OVERHEAD_BYTES < PEER_MESSAGE_BYTES_MAX);
// A replication message is within the budget or a single entry, plus openraft's own fields.
const _: () = assert!(REPLICATION_BATCH_BYTES_MAX + LOG_ENTRY_BYTES_MAX < PEER_MESSAGE_BYTES_MAX);
const _: () = assert!(LEADER_POLL_MS < REQUEST_TIMEOUT_MS);
/// Largest reply to a forwarded write that carries no keys or values (a header, ids, and at
/// most `TXN_OPS_MAX` empty op responses: a few KiB); only such writes share a `ForwardBatch`.
const FORWARDED_REPLY_BATCHED_BYTES_MAX: usize = 64 * 1024;
// Peer clients decode up to `PEER_MESSAGE_BYTES_MAX` (`raft::channels::peer_client`). The
// largest reply a forwarding member gets back must fit: a full batch of small replies, a put's
// `prev_kv` (a value within the request limit), or a module call's output. A DeleteRange's
// `prev_kv`s and a txn's ranges grow with the keyspace; past this limit they still fail.
const _: () = assert!(
    PROPOSAL_BATCH_COMMANDS_MAX * FORWARDED_REPLY_BATCHED_BYTES_MAX + GRPC_OVERHEAD_BYTES
        <= PEER_MESSAGE_BYTES_MAX
);
const _: () = assert!(GUEST_OUTPUT_BYTES_MAX + GRPC_OVERHEAD_BYTES < PEER_MESSAGE_BYTES_MAX);
const _: () = assert!(LEASE_CHECKPOINT_BATCH_MAX <= LEASE_CHECKPOINTS_PER_TICK_MAX);
const _: () = assert!(LEASE_EXPIRY_TICK_MS < LEASE_CHECKPOINT_STALENESS_MS_MAX);
// A header list at the limit, literally encoded, fits one block (literals are shorter than the
// 32 bytes per field HTTP/2 adds).
const _: () = assert!(HTTP2_HEADER_LIST_BYTES_MAX < HTTP2_HEADER_BLOCK_BYTES_MAX);
const _: () = assert!(HPACK_TABLE_BYTES <= HTTP2_HEADER_LIST_BYTES_MAX);

/// Most learners a cluster may have at once (etcd 3.4's `maxLearners`).
pub const LEARNERS_MAX: usize = 1;
/// A learner may be promoted once its log reaches this share of the leader's, in percent
/// (etcd's `readyPercent`).
pub const LEARNER_READY_PERCENT: u64 = 90;
/// How long a member joining an existing cluster keeps asking its peers for its member id.
pub const JOIN_LOOKUP_WAIT_MS: u64 = 30_000;
/// Pause between rounds of asking peers for this member's id.
pub const JOIN_LOOKUP_RETRY_MS: u64 = 200;
/// How often a member checks whether it was removed from the cluster.
pub const REMOVAL_POLL_MS: u64 = 200;
/// A member without a leader asks its peers whether it was removed every this many polls.
pub const REMOVAL_PROBE_EVERY_POLLS: u64 = 5;
/// On a clean stop, how long the tasks that end by themselves (serving loops finishing their
/// requests, lease expiry) get, all together, before the rest of the shutdown goes on without them.
pub const SHUTDOWN_DRAIN_MS: u64 = 5_000;
/// After Raft stopped on a fatal error, how long health watchers get to hear NOT_SERVING before
/// the process exits.
pub const FATAL_EXIT_GRACE_MS: u64 = 200;
/// A member that found no leader at this many checks in a row, one election timeout apart,
/// ends the streams that asked for a leader (etcd's `maxNoLeaderCnt`).
pub const NO_LEADER_STREAM_END_ELECTIONS: u32 = 3;
/// How many of the longest election timeouts a request waits on a member that sees no leader
/// before it fails with `etcdserver: no leader`: room for one more election, far less than
/// `REQUEST_TIMEOUT_MS` (etcd 3.4 waits its full 7 s request timeout instead).
pub const NO_LEADER_REQUEST_WAIT_ELECTIONS: u32 = 1;
/// How long a process that failed waits for its blocking tasks before it exits anyway.
pub const FAILED_EXIT_TASKS_WAIT_MS: u64 = 500;

/// `baton lock|elect --ttl`: the session lease's TTL when none is given. Short, so a holder
/// whose `baton` died frees the lock soon; long enough to ride out a leader election.
pub const CLI_SESSION_TTL_S: i64 = 10;
/// Keep-alives a session sends per TTL (etcd's clientv3 renews every third of the TTL), so
/// one or two lost renewals do not lose the lease.
pub const CLI_KEEPALIVES_PER_TTL: u32 = 3;
/// Pause before a session re-opens a keep-alive stream that broke (a member went away).
pub const CLI_KEEPALIVE_RETRY_MS: u64 = 200;
/// `--kill-grace`: how long a command whose lock or leadership was lost has to exit after
/// SIGTERM before it gets SIGKILL (Docker's and Kubernetes' stop grace is of this order).
pub const CLI_KILL_GRACE_S: u64 = 10;
/// Bound on each clean-up call (release, resign, lease revoke) on the way out, so an
/// unreachable cluster cannot hold the exit: the lease's TTL cleans up anyway.
pub const CLI_CLEANUP_TIMEOUT_MS: u64 = 5_000;
const _: () = assert!(CLI_SESSION_TTL_S > 0 && CLI_KEEPALIVES_PER_TTL > 1);
/// How long a CLI command retries a call the cluster answered UNAVAILABLE (no leader during an
/// election), when repeating it is harmless (a lease grant, a call bound to its lease, a read).
pub const CLI_UNAVAILABLE_WAIT_MS: u64 = 10_000;

/// Fuel a module call gets when the caller names none (about one unit per Wasm operator).
pub const GUEST_FUEL_DEFAULT: u64 = 10_000_000;
/// Most fuel a caller may grant one module call.
pub const GUEST_FUEL_MAX: u64 = 1_000_000_000;
/// Linear memory one module instance may grow to (16 MiB).
pub const GUEST_MEMORY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Table elements one module instance may grow to.
pub const GUEST_TABLE_ELEMENTS_MAX: usize = 100_000;
/// Wasm stack of one call; deeper recursion traps with `stack overflow`.
pub const GUEST_STACK_BYTES: usize = 512 * 1024;
/// Largest module (component) accepted at deploy.
pub const MODULE_BYTES_MAX: usize = 1024 * 1024;
/// Longest module name.
pub const MODULE_NAME_BYTES_MAX: usize = 128;
/// Largest `baton:functions` custom section (a module's declared functions, JSON) accepted at
/// deploy; the host parses it at deploy and at every Describe, so it stays small.
pub const MODULE_FUNCTIONS_SECTION_BYTES_MAX: usize = 64 * 1024;
/// Most functions one module may declare.
pub const MODULE_FUNCTIONS_MAX: usize = 256;
/// Longest declared function name.
pub const MODULE_FUNCTION_NAME_BYTES_MAX: usize = 128;
const _: () = assert!(MODULE_FUNCTIONS_SECTION_BYTES_MAX < MODULE_BYTES_MAX);
/// Largest input of one module call.
pub const GUEST_INPUT_BYTES_MAX: usize = 1024 * 1024;
/// Largest output of one module call.
pub const GUEST_OUTPUT_BYTES_MAX: usize = 1024 * 1024;
/// Largest key plus value one module `put` may write: what one etcd Put request may carry, so
/// every value in the store fits a request and a watch event whoever wrote it.
pub const GUEST_PUT_BYTES_MAX: usize = REQUEST_BYTES_MAX;
/// Most key and value bytes one run of a module call may write (puts add up, an overwrite
/// counts again). Fuel alone would let one run write about 1 GB on every member in one apply.
pub const GUEST_RUN_WRITE_BYTES_MAX: usize = 4 * REQUEST_BYTES_MAX;
/// Most keys one `range` host call returns, whatever limit the guest asks for.
pub const GUEST_RANGE_KEYS_MAX: usize = 10_000;
/// Instances the pooling allocator keeps room for; calls run one at a time on the apply path,
/// the rest serves read-only calls.
pub const GUEST_POOL_INSTANCES: u32 = 16;
/// Read-only calls one member runs at once (more wait their turn). Below the pool size, so the
/// apply path always finds an instance: failing to get one there stops the member.
pub const READ_ONLY_CALLS_RUNNING_MAX: usize = 8;
const _: () = assert!((READ_ONLY_CALLS_RUNNING_MAX as u32) < GUEST_POOL_INSTANCES);
/// Fuel a module's host call costs: a base (about a B-tree lookup's worth of instructions) ...
pub const GUEST_HOST_CALL_FUEL: u64 = 1_000;
/// ... plus this per key-value it returns or deletes ...
pub const GUEST_HOST_KV_FUEL: u64 = 100;
/// ... plus this per key or value byte it moves ...
pub const GUEST_HOST_BYTE_FUEL: u64 = 1;
/// ... plus this per key a sorted, filtered or counted range looks at (each is read and
/// decoded, whether it matches or not).
pub const GUEST_HOST_SCAN_FUEL: u64 = 50;
/// Key ranges, and leases, one waiting module call may wait on (each).
pub const GUEST_WAIT_CONDITIONS_MAX: usize = 64;
/// Most permits the built-in semaphore module hands out per semaphore: its holders must fit
/// one guest range, so `holders` lists them all and a grant is found with one sorted read.
pub const SEMAPHORE_PERMITS_MAX: u32 = 10_000;
const _: () = assert!(SEMAPHORE_PERMITS_MAX as usize <= GUEST_RANGE_KEYS_MAX);
/// The shortest a timed wait parks, even when its deadline has passed: a guest that keeps
/// asking to wait until a past time costs its member one proposal per this long, not a loop.
pub const GUEST_WAIT_TIMER_FLOOR_MS: u64 = 10;
/// Lease ends buffered for parked module calls; one that falls further behind re-runs its call.
pub const LEASE_ENDS_BUFFERED: usize = 1024;
/// Compiled modules kept in memory; past this the cache starts over.
pub const COMPILED_MODULES_CACHED_MAX: usize = 64;

const _: () = assert!(GUEST_FUEL_DEFAULT <= GUEST_FUEL_MAX);
const _: () = assert!(MODULE_BYTES_MAX < REQUEST_BYTES_MAX);
/// Size a new Raft log segment is zero-filled to (a larger batch gets a segment of its own size):
/// a rotation writes this much once, about every 16 MiB of log.
pub const RAFT_LOG_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Encoded bytes of durable log entries kept decoded in memory. Entries the state machine is
/// about to apply and followers are about to receive are recent, so they are nearly always
/// there. Each cached command also keeps its encoding (it is sent to followers as is), so the
/// cache holds about twice this much, plus the decoded form's overhead.
pub const RAFT_LOG_CACHED_ENTRY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Records per write while importing a log from the old redb format, so no single write is the
/// size of the whole log.
pub const RAFT_LOG_IMPORT_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Largest encoded snapshot meta accepted when reading a snapshot file's header (a membership
/// of a few members).
pub const SNAPSHOT_META_BYTES_MAX: u32 = 1024 * 1024;
/// Buffer of the writer that builds or receives a snapshot file.
pub const SNAPSHOT_WRITE_BUFFER_BYTES: usize = 1024 * 1024;
/// Buffer of each pass over a snapshot file while restoring it.
pub const SNAPSHOT_RESTORE_READ_BYTES: usize = 1024 * 1024;
/// TTL of the lease the etcd Lock and Election services grant for a request that names none
/// (etcd's default session TTL).
pub const RECIPE_SESSION_TTL_S: i64 = 60;
/// How long the etcd Lock and Election services look for their built-in module (a new cluster
/// deploys its built-ins just after founding) before answering UNAVAILABLE.
pub const RECIPE_MODULE_WAIT_MS: u64 = 5_000;
/// Pause between those looks.
pub const RECIPE_MODULE_RETRY_MS: u64 = 100;
const _: () = assert!(RECIPE_MODULE_RETRY_MS > 0 && RECIPE_MODULE_RETRY_MS < RECIPE_MODULE_WAIT_MS);
/// Tries a new leader makes to deploy each built-in module that differs before giving up
/// (with a log line) until it leads again.
pub const BUILTIN_DEPLOY_ATTEMPTS: u32 = 100;
/// Pause between those tries.
pub const BUILTIN_DEPLOY_RETRY_MS: u64 = 200;
/// A module version stored before Baton recorded who deployed it counts as a built-in only if
/// it is its name's only version and was deployed at or below this log index: those Batons
/// deployed the built-ins right after founding, within a few dozen entries (membership, leader
/// blanks, each founder's published URLs, 4 deploys per founder). Above it, a version is taken
/// for a user's and never replaced.
pub const LEGACY_BUILTIN_DEPLOY_INDEX_MAX: u64 = 100;
