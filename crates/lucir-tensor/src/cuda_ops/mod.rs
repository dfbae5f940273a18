//! The CUDA arms of the ops: each takes device tensors (the caller matched on the storage
//! enum, [`crate::device`]), calls its `lucir-cuda` launcher, and wraps the output buffer as a
//! device tensor. In a build without the `cuda` feature no device tensor can exist, and these
//! functions are stubs that return `Error::Cuda(NotCompiled)`.

#[cfg(feature = "cuda")]
mod real;
#[cfg(feature = "cuda")]
mod real_heads;
#[cfg(feature = "cuda")]
mod real_images;
#[cfg(not(feature = "cuda"))]
mod stub;

#[cfg(feature = "cuda")]
pub(crate) use real::*;
#[cfg(feature = "cuda")]
pub(crate) use real_heads::*;
#[cfg(feature = "cuda")]
pub(crate) use real_images::*;
#[cfg(not(feature = "cuda"))]
pub(crate) use stub::*;
