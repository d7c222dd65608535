//! Every end-to-end test in one binary: each test starts real `baton` (and etcd 3.4) processes
//! on loopback. One binary links the server's crate once instead of once per file, which keeps
//! the build's disk use and link time small.

mod bench_incr;
mod differential;
mod etcdctl;
mod etcdctl_lock;
mod failover;
mod failover_watch_lease;
mod follower;
mod fuzz_grpc;
mod harness;
mod kv;
mod kv_errors;
mod kv_history;
mod kv_range;
mod kv_txn;
mod learner;
mod lease;
mod liveness;
mod lock_election;
mod maintenance;
mod membership;
mod membership_strict;
mod module_contract;
mod module_determinism;
mod module_lock;
mod module_priority_queue;
mod module_queue;
mod module_read_only;
mod module_registry;
mod module_wait;
mod modules;
mod modules_hostile;
mod proposal_batching;
mod python_etcd3;
mod raft_log_damage;
mod rejoin;
mod require_leader;
mod snapshot_catchup;
mod watch;
