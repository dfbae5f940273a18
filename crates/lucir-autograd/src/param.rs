//! Trainable parameters: a tensor plus an identity the tape and the optimizer key on.

use std::sync::atomic::{AtomicU64, Ordering};

use lucir_tensor::{Float, Tensor};

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Process-unique identity of a [`Param`]. A clone gets a new one, so a frozen copy of a model
/// and the model itself never share gradients or optimizer state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(u64);

impl ParamId {
    fn fresh() -> Self {
        ParamId(NEXT_ID.fetch_add(1, Ordering::Relaxed))
    }
}

/// A trainable tensor.
#[derive(Debug)]
pub struct Param<T> {
    id: ParamId,
    /// The current value.
    pub value: Tensor<T>,
}

impl<T: Float> Param<T> {
    /// Wraps an initial value.
    pub fn new(value: Tensor<T>) -> Self {
        Self {
            id: ParamId::fresh(),
            value,
        }
    }

    /// The identity the tape and optimizer use.
    pub fn id(&self) -> ParamId {
        self.id
    }
}

impl<T: Float> Clone for Param<T> {
    fn clone(&self) -> Self {
        Self::new(self.value.clone())
    }
}
