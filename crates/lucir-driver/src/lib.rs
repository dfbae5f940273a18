//! The library half of `lucir-driver`: run configuration (presets, TOML files, command-line
//! overrides), checkpoint files, and fallible printing to standard output, shared by the binary
//! and its tests.

pub mod checkpoint;
pub mod config;
pub mod output;
