//! An op defined by the caller: a forward value computed elsewhere (e.g. on a GPU) and a
//! backward closure that maps the output gradient to input gradients. The CUDA head kernels
//! enter the tape this way.

use lucir_tensor::{Float, Tensor};

use crate::tape::Backward;
use crate::{BackwardCtx, Error, Result, Tape, Var};

/// Backward of a custom op: `(∂L/∂output, input values) → ∂L/∂input` per input (`None` for an
/// input that gets no gradient).
pub type CustomBackward<T> =
    Box<dyn Fn(&Tensor<T>, &[&Tensor<T>]) -> Result<Vec<Option<Tensor<T>>>> + Send + Sync>;

struct CustomBack<T> {
    inputs: Vec<Var>,
    backward: CustomBackward<T>,
}

impl<T: Float> Tape<T> {
    /// Records `value` as a function of `inputs` whose gradient `backward` computes.
    pub fn custom(
        &mut self,
        inputs: &[Var],
        value: Tensor<T>,
        backward: CustomBackward<T>,
    ) -> Result<Var> {
        let back = CustomBack {
            inputs: inputs.to_vec(),
            backward,
        };
        Ok(self.push(value, inputs, back))
    }
}

impl<T: Float> Backward<T> for CustomBack<T> {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let values: Vec<&Tensor<T>> = self.inputs.iter().map(|v| ctx.value(*v)).collect();
        let grads = (self.backward)(ctx.g(), &values)?;
        if grads.len() != self.inputs.len() {
            return Err(Error::invalid(
                "custom",
                format!(
                    "backward returned {} gradients for {} inputs",
                    grads.len(),
                    self.inputs.len()
                ),
            ));
        }
        for (v, g) in self.inputs.iter().zip(grads) {
            if let Some(g) = g {
                ctx.add(*v, g)?;
            }
        }
        Ok(())
    }
}
