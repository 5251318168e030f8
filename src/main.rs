//! The `audithawk` binary: everything lives in the library; see [`audithawk::cli`].

// mimalloc rather than glibc's malloc: the hot paths allocate many short-lived objects
// (decoded events, alerts, held correlation records) from several threads, where glibc's
// per-thread arenas fragment and spend a measurable share of the time (docs/performance.md
// has the before/after). Set in the binary only, so that library users choose their own.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(audithawk::cli::run());
}
