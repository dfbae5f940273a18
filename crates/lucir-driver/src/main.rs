//! `lucir-driver`: the command-line program of lucir-rs (the program itself is the library's
//! [`lucir_driver::main`]).

use std::process::ExitCode;

/// The system allocator, with large buffers on huge pages (see [`lucir_tensor::HugePages`]).
#[global_allocator]
static ALLOC: lucir_tensor::HugePages = lucir_tensor::HugePages;

fn main() -> ExitCode {
    lucir_driver::main()
}
