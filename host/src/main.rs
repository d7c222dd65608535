//! The `baton` binary: all behaviour lives in the library; see `baton::cli`.

/// The write path allocates a little for every request at every stage (gRPC frames, log entries,
/// B-tree pages); glibc's allocator took ~15% of a busy leader's CPU, mimalloc much less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    baton::cli::main()
}
