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
/// Snapshots travel between members in pieces of this size.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// How often a member retries recording its client URLs until it succeeds.
pub const PUBLISH_RETRY_MS: u64 = 100;
/// How long a starting member waits for its client URLs to be recorded before serving anyway.
pub const PUBLISH_WAIT_MS: u64 = 10_000;
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 1_000;
pub const PEER_KEEPALIVE_MS: u64 = 1_000;
/// Take a snapshot (and allow purging the log) after this many applied entries.
pub const SNAPSHOT_LOGS_SINCE_LAST: u64 = 10_000;
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
/// Default period of progress notifications to watchers that asked for them (etcd
/// `--experimental-watch-progress-notify-interval`, 10 minutes).
pub const WATCH_PROGRESS_NOTIFY_INTERVAL_MS: u64 = 600_000;
/// Responses queued between a watch stream's task and gRPC.
pub const WATCH_STREAM_OUT_RESPONSES: usize = 16;

const _: () = assert!(SNAPSHOT_CHUNK_BYTES < PEER_MESSAGE_BYTES_MAX);
const _: () = assert!(REQUEST_BYTES_MAX + GRPC_OVERHEAD_BYTES < PEER_MESSAGE_BYTES_MAX);
const _: () = assert!(LEADER_POLL_MS < REQUEST_TIMEOUT_MS);

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
/// Largest input of one module call.
pub const GUEST_INPUT_BYTES_MAX: usize = 1024 * 1024;
/// Largest output of one module call.
pub const GUEST_OUTPUT_BYTES_MAX: usize = 1024 * 1024;
/// Most keys one `range` host call returns, whatever limit the guest asks for.
pub const GUEST_RANGE_KEYS_MAX: usize = 10_000;
/// Instances the pooling allocator keeps room for; calls run one at a time on the apply path,
/// the rest serves deploy-time validation.
pub const GUEST_POOL_INSTANCES: u32 = 16;
/// Compiled modules kept in memory; past this the cache starts over.
pub const COMPILED_MODULES_CACHED_MAX: usize = 64;

const _: () = assert!(GUEST_FUEL_DEFAULT <= GUEST_FUEL_MAX);
const _: () = assert!(MODULE_BYTES_MAX < REQUEST_BYTES_MAX);
/// Tries a new member makes to deploy each built-in module before giving up (with a log line).
pub const BUILTIN_DEPLOY_ATTEMPTS: u32 = 100;
/// Pause between those tries.
pub const BUILTIN_DEPLOY_RETRY_MS: u64 = 200;
