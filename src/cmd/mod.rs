//! One file per subcommand (as tokio-rs/mini-redis's `src/cmd/`): each
//! takes its plain configuration (`crate::config`, converted from the
//! command line by `cli`) and does its job, returning the process's exit
//! code. `cli::app::dispatch` calls one of them.
//!
//! A command may use the pipeline's stages, the I/O, observability, the
//! engine and the CTR model; nothing below it imports `cmd`
//! (`tests/architecture.rs`).

mod demo;
mod generate;
mod learn;
mod migrate;
mod predict;
mod report;
mod run;

pub use demo::demo;
pub use generate::generate;
pub use learn::learn;
pub use migrate::migrate;
pub use predict::predict;
pub use report::report;
pub use run::run;

#[cfg(test)]
mod tests {
    use super::generate::DELIVERY_FAILED;
    use super::predict::{NO_PREDICTION, STALE};
    use crate::cli::exit;

    #[test]
    fn the_help_lists_the_codes_the_commands_return() {
        assert!(exit::GENERATE.contains(&format!("  {DELIVERY_FAILED}    some events were not delivered")));
        assert!(exit::PREDICT.contains(&format!("  {NO_PREDICTION}    no prediction cached")));
        assert!(exit::PREDICT.contains(&format!("  {STALE}    the cached prediction is older")));
        assert!(exit::TOP.contains(&format!("  {DELIVERY_FAILED}    generate: some events were not delivered")));
        assert!(exit::TOP.contains(&format!("  {STALE}    predict: the cached prediction is older")));
    }
}
