//! `adstream` — see `adstream --help` and README.md.

fn main() -> std::process::ExitCode {
    adstream::cli::main()
}
