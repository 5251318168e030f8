//! The `audithawk` binary: everything lives in the library; see [`audithawk::cli`].

fn main() {
    std::process::exit(audithawk::cli::run());
}
