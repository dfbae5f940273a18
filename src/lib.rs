//! lucir-rs: class-incremental learning with LUCIR (Hou et al., CVPR 2019).
//!
//! This root crate re-exports the workspace crates so that the cross-crate tests in `tests/`
//! and the benchmarks in `benches/` see one library.

pub use lucir_autograd as autograd;
pub use lucir_cuda as cuda;
pub use lucir_data as data;
pub use lucir_method as method;
pub use lucir_nn as nn;
pub use lucir_tensor as tensor;
