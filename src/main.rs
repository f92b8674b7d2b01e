//! The `jobgate` binary; everything it does lives in the library.

fn main() -> std::process::ExitCode {
    jobgate::cli::main()
}
