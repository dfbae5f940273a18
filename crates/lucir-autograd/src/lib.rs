//! A minimal reverse-mode autograd for lucir-rs.
//!
//! Nodes live in an arena ([`Tape`]): a [`Var`] is an index, creation order is topological, and
//! [`Tape::backward`] is one reverse loop in which each node adds (`+=`) its local derivative into
//! its inputs. Each op lives in its own file under `ops/` with its forward (a `Tape` method) and
//! its backward (a small struct holding only what the backward needs) side by side.
//!
//! Shapes follow lucir-tensor's legend: B rows, C classes, D feature width, N×C×H×W images.
//! Everything is generic over [`Float`]: f32 for training, f64 for [`gradcheck`].

mod error;
pub mod gradcheck;
mod ops;
mod optim;
mod param;
mod tape;

pub use error::{Error, Result};
pub use lucir_tensor::{Float, Tensor};
pub use ops::batch_norm::BatchNormTrainOut;
pub use ops::custom::CustomBackward;
pub use optim::{MultiStepLr, ParamGroup, Sgd};
pub use param::{Param, ParamId};
pub use tape::{BackwardCtx, Tape, Var};
