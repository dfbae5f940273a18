//! The library half of `lucir-driver`: run configuration (presets, TOML files, command-line
//! overrides), shared by the binary and its tests.

pub mod config;
