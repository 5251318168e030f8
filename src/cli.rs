//! The command line. (Being implemented.)

/// Runs the CLI; returns the process exit code.
pub fn run() -> i32 {
    0
}
