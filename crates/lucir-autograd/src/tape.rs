//! The arena tape: values, gradients and backward closures indexed by [`Var`].

use std::collections::HashMap;

use lucir_tensor::{Float, Tensor};

use crate::{Error, Param, ParamId, Result};

/// Handle to a node of a [`Tape`] (an index into its arena).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(pub(crate) usize);

/// The backward half of an op: adds the op's input gradients given its output gradient.
pub(crate) trait Backward<T: Float>: Send + Sync {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()>;
}

/// What a backward sees: the output gradient, every recorded value, and the gradient sinks.
#[derive(Debug)]
pub struct BackwardCtx<'a, T> {
    values: &'a [Tensor<T>],
    requires: &'a [bool],
    grads: &'a mut [Option<Tensor<T>>],
    g: Option<Tensor<T>>,
}

impl<T: Float> BackwardCtx<'_, T> {
    /// `∂L/∂(this node's output)`. Not available after [`BackwardCtx::take_g`].
    pub fn g(&self) -> &Tensor<T> {
        self.g
            .as_ref()
            .expect("an op reads its output gradient only before taking it")
    }

    /// Takes ownership of the output gradient, so an op can pass it on or modify it in place
    /// instead of allocating a new tensor.
    pub fn take_g(&mut self) -> Tensor<T> {
        self.g
            .take()
            .expect("an op takes its output gradient at most once")
    }

    /// The forward value of `v`.
    pub fn value(&self, v: Var) -> &Tensor<T> {
        &self.values[v.0]
    }

    /// Whether `v` needs a gradient (ops skip work for inputs that do not).
    pub fn wants(&self, v: Var) -> bool {
        self.requires[v.0]
    }

    /// Takes the gradient `v` has gathered so far out of its slot, so that an op can add its
    /// own share into it (and hand it back with [`BackwardCtx::add`]) instead of storing the
    /// share first and adding it afterwards.
    pub fn take_grad(&mut self, v: Var) -> Option<Tensor<T>> {
        self.grads[v.0].take()
    }

    /// Adds `grad` into `v`'s gradient (a no-op when `v` needs none).
    pub fn add(&mut self, v: Var, grad: Tensor<T>) -> Result<()> {
        if !self.requires[v.0] {
            return Ok(());
        }
        grad.expect_shape("backward", self.values[v.0].shape())?;
        match &mut self.grads[v.0] {
            Some(acc) => acc.add_assign(&grad)?,
            slot @ None => *slot = Some(grad),
        }
        Ok(())
    }
}

/// A recording of one forward pass.
pub struct Tape<T: Float> {
    values: Vec<Tensor<T>>,
    grads: Vec<Option<Tensor<T>>>,
    backs: Vec<Option<Box<dyn Backward<T>>>>,
    requires: Vec<bool>,
    params: HashMap<ParamId, Var>,
    grad_enabled: bool,
}

impl<T: Float> std::fmt::Debug for Tape<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tape")
            .field("nodes", &self.values.len())
            .field("params", &self.params.len())
            .field("grad_enabled", &self.grad_enabled)
            .finish()
    }
}

impl<T: Float> Default for Tape<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> Tape<T> {
    /// A tape that records backward information.
    pub fn new() -> Self {
        Self {
            values: Vec::new(),
            grads: Vec::new(),
            backs: Vec::new(),
            requires: Vec::new(),
            params: HashMap::new(),
            grad_enabled: true,
        }
    }

    /// A tape for inference: nothing requires a gradient and no backward is recorded.
    pub fn no_grad() -> Self {
        Self {
            grad_enabled: false,
            ..Self::new()
        }
    }

    /// Whether this tape records gradients.
    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled
    }

    /// Number of recorded nodes.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// A constant input (no gradient).
    pub fn constant(&mut self, value: Tensor<T>) -> Var {
        self.push_node(value, None, false)
    }

    /// An input that receives a gradient (on a gradient-recording tape).
    pub fn leaf(&mut self, value: Tensor<T>) -> Var {
        let req = self.grad_enabled;
        self.push_node(value, None, req)
    }

    /// The node of a parameter: recorded once per tape (a second call returns the same node).
    pub fn param(&mut self, p: &Param<T>) -> Var {
        if let Some(v) = self.params.get(&p.id()) {
            return *v;
        }
        let v = self.leaf(p.value.clone());
        self.params.insert(p.id(), v);
        v
    }

    /// Drops the tape's handles on the parameters' values (after the backward pass, before an
    /// optimiser updates the parameters in place). A device tensor shares its buffer with its
    /// clones and copies it when written while shared, so without this each update would
    /// first copy its parameter; after it, [`Tape::value`] of a parameter's node is empty.
    pub fn release_param_values(&mut self) {
        for v in self.params.values() {
            self.values[v.0] = Tensor::zeros(&[0]);
        }
    }

    /// Makes later [`Tape::param`] calls for `p` return `v` (gradient checks route parameters
    /// through their own leaves this way).
    pub fn bind_param(&mut self, p: &Param<T>, v: Var) {
        self.params.insert(p.id(), v);
    }

    /// The node of a parameter that is used but not trained here (e.g. a frozen block).
    pub fn frozen_param(&mut self, p: &Param<T>) -> Var {
        self.constant(p.value.clone())
    }

    /// The value of a node.
    pub fn value(&self, v: Var) -> &Tensor<T> {
        &self.values[v.0]
    }

    /// The gradient of a leaf after [`Tape::backward`] (`None` if nothing flowed into it).
    pub fn grad(&self, v: Var) -> Option<&Tensor<T>> {
        self.grads.get(v.0).and_then(Option::as_ref)
    }

    /// The gradient of a parameter recorded on this tape.
    pub fn param_grad(&self, p: &Param<T>) -> Option<&Tensor<T>> {
        self.params.get(&p.id()).and_then(|v| self.grad(*v))
    }

    /// Whether `v` carries a gradient.
    pub fn requires_grad(&self, v: Var) -> bool {
        self.requires[v.0]
    }

    /// Records an op's output. `inputs` decide whether the output needs a gradient; the backward
    /// is dropped when it does not.
    pub(crate) fn push<B: Backward<T> + 'static>(
        &mut self,
        value: Tensor<T>,
        inputs: &[Var],
        back: B,
    ) -> Var {
        let req = self.grad_enabled && inputs.iter().any(|v| self.requires[v.0]);
        let back: Option<Box<dyn Backward<T>>> = if req { Some(Box::new(back)) } else { None };
        self.push_node(value, back, req)
    }

    fn push_node(
        &mut self,
        value: Tensor<T>,
        back: Option<Box<dyn Backward<T>>>,
        requires: bool,
    ) -> Var {
        self.values.push(value);
        self.grads.push(None);
        self.backs.push(back);
        self.requires.push(requires);
        Var(self.values.len() - 1)
    }

    /// Back-propagates from a one-element `loss`. Gradients of leaves stay readable through
    /// [`Tape::grad`]; those of intermediate nodes are freed as soon as they are used.
    pub fn backward(&mut self, loss: Var) -> Result<()> {
        if self.values[loss.0].len() != 1 {
            return Err(Error::invalid(
                "backward",
                format!(
                    "loss must have one element, shape is {:?}",
                    self.values[loss.0].shape()
                ),
            ));
        }
        if !self.requires[loss.0] {
            return Err(Error::invalid(
                "backward",
                "the loss does not depend on anything that requires a gradient",
            ));
        }
        let seed = &self.values[loss.0];
        self.grads[loss.0] = Some(Tensor::full_on(&seed.device(), seed.shape(), T::one())?);
        for i in (0..=loss.0).rev() {
            let Some(back) = self.backs[i].take() else {
                continue;
            };
            let Some(g) = self.grads[i].take() else {
                continue;
            };
            let (before, _) = self.grads.split_at_mut(i);
            let mut ctx = BackwardCtx {
                values: &self.values,
                requires: &self.requires,
                grads: before,
                g: Some(g),
            };
            back.backward(&mut ctx)?;
        }
        Ok(())
    }
}
