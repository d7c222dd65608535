//! The `baton` binary: all behaviour lives in the library; see `baton::cli`.

/// The write path allocates a little for every request at every stage (gRPC frames, log entries,
/// B-tree pages); glibc's allocator took ~15% of a busy leader's CPU, mimalloc much less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    disable_transparent_huge_pages();
    baton::cli::main()
}

/// With transparent huge pages on, every fresh page the allocator hands out under load faulted
/// in a whole 2 MiB page and zeroed it: ~10% of a follower's CPU during contended Invokes
/// (`clear_page_erms` under `do_huge_pmd_anonymous_page`). Without them a busy member spent
/// ~15% less CPU per call. Like Redis and most databases, Baton opts out for its own process.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        // Only a cost, never a correctness matter: keep going.
        eprintln!("baton: could not disable transparent huge pages: {error}");
    }
}
