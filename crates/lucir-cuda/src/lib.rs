//! CUDA kernels for the LUCIR heads through cudarc (placeholder crate: the kernels are not built yet).
