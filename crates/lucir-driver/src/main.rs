//! `lucir-driver`: the command-line program of lucir-rs.
//!
//! The experiment runner (presets, phases, results) is not built yet; until it is, the program
//! says so and exits with a runtime error instead of pretending to run an experiment.

fn main() -> anyhow::Result<()> {
    anyhow::bail!(
        "the LUCIR experiment runner is not implemented yet in this version of lucir-driver; \
         the tensor, autograd and network crates are available as libraries"
    )
}
