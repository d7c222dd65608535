//! The async runtime every `baton` subcommand runs on.

/// A multi-threaded tokio runtime with the LIFO slot turned off where tokio allows it.
///
/// With the slot on, a task woken by the running task runs next. When an applied batch answers
/// its waiting requests (a dozen or more under load), each then wakes its HTTP/2 connection task,
/// which runs straight away and writes that one reply: one `writev` (and one wake-up of the
/// peer) per reply. With the slot off, woken tasks queue in order, so all the replies of a batch
/// are ready before their connection's task runs, and it writes them in one go. The same holds
/// for `baton bench`'s requests. Measured on `bench incr --mode invoke` (3 members, 32 clients):
/// the leader's CPU per call -13 %, the client's -30 %, calls/s +10 %; single-client put latency
/// unchanged. The option exists only when tokio is compiled with `--cfg tokio_unstable`
/// (`.cargo/config.toml` passes it); without it the runtime keeps tokio's default.
///
/// `workers`: how many worker threads; None for tokio's default (one per core, or
/// `TOKIO_WORKER_THREADS`).
pub(crate) fn build(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(workers) = workers {
        builder.worker_threads(workers.max(1));
    }
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.build()
}

/// `TOKIO_WORKER_THREADS`, when set to a number.
fn workers_from_env() -> Option<usize> {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Worker threads for `baton bench`: `TOKIO_WORKER_THREADS`, else one. The load generator
/// shares the machine with the servers it measures; one worker drives hundreds of requests at a
/// time and spares the cores the wake-ups a second one costs (on `bench incr`, 2 cores: client
/// CPU per call -20 %, calls/s +3 %).
pub(crate) fn bench_workers() -> usize {
    workers_from_env().unwrap_or(1)
}
