//! End-to-end harness: real Baton or etcd 3.4 processes on loopback, driven by etcd clients.
//!
//! Every test body is written once and run against both servers through [`backend_test!`], so
//! etcd proves the test and the same test then proves Baton.
//!
//! Running: `cargo nextest run -p baton-e2e -E 'test(/etcd$/)'` (or `cargo test -p baton-e2e --
//! etcd`) for the reference runs, `/baton$/` for Baton. etcd and etcdctl come from Debian's
//! `etcd-server` and `etcd-client` packages. The baton binary is `$BATON_BIN` when set, else
//! built once per test process with cargo; with several worktrees sharing one target dir,
//! `target/debug/baton` is whichever worktree built last, so pin it with `BATON_BIN` there.

mod backend;
mod binaries;
mod client;
mod cluster;
pub mod inspect;
mod member;
mod ports;

use std::future::Future;
use std::time::Duration;

pub use backend::{Backend, MemberAddrs};
pub use binaries::{BATON_BIN_ENV, baton_bin, etcd_bin, etcdctl_bin};
pub use client::{
    CONNECT_TIMEOUT, REQUEST_TIMEOUT, assert_grpc_error, connect, connect_with_timeout, grpc_status,
};
pub use cluster::{Cluster, READY_TIMEOUT};
pub use ports::free_port;

/// Upper bound on one test, so a hung server fails the test instead of stalling the suite.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(300);

/// The seed of a randomized test: `$var` when set (to replay a failure), else a fresh one.
pub fn seed_from_env(var: &str) -> anyhow::Result<u64> {
    use anyhow::Context;
    match std::env::var(var) {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("{var}={text:?} is not a u64")),
        Err(_) => Ok(rand::random()),
    }
}

/// A one-member cluster and a client for it, the setup most KV tests share.
pub async fn start_single(backend: Backend) -> anyhow::Result<(Cluster, etcd_client::Client)> {
    let cluster = Cluster::start(backend, 1).await?;
    let client = cluster.client().await?;
    Ok((cluster, client))
}

/// Drives one test body; fails with the error chain on `Err` or on the overall timeout.
/// Cluster logs are printed when the cluster drops (captured, shown only on failure).
pub async fn run_test(backend: Backend, body: impl Future<Output = anyhow::Result<()>>) {
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("[{backend}] test failed: {e:?}"),
        Err(_) => panic!("[{backend}] test timed out after {TEST_TIMEOUT:?}"),
    }
}

/// For each `async fn name(backend: Backend) -> anyhow::Result<()>`, generates the tests
/// `name::etcd` and `name::baton`. Filter with `-E 'test(/etcd/)'` or `cargo test -- etcd`.
#[macro_export]
macro_rules! backend_test {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                $crate::run_test($crate::Backend::Etcd, super::$name($crate::Backend::Etcd)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn baton() {
                $crate::run_test($crate::Backend::Baton, super::$name($crate::Backend::Baton)).await;
            }
        }
    )+};
}
