//! Gradient checking: analytic gradients from [`Tape::backward`] against central finite
//! differences, in f64.
//!
//! The error reported per input is normwise relative:
//! `max_j |a_j − n_j| / max(max_j |n_j|, max_j |a_j|, GRAD_FLOOR · max(1, |L|))`, where `a` is the
//! analytic and `n` the numerical gradient over the checked elements and `L` the loss. The floor
//! matters only for inputs whose whole gradient is below it: a central difference with step
//! 1e-6 carries rounding noise of about |L| · 1e-10 (each evaluation of `L` is off by a few ulps
//! of |L|, divided by the step), so relative errors of gradients much smaller than
//! 1e-3 · max(1, |L|) measure that noise, not the derivative; for them the check bounds the
//! absolute error by 1e-9 · max(1, |L|).

use lucir_tensor::Tensor;

use crate::{Result, Tape, Var};

/// Denominator floor of the relative error per unit of loss (see the module doc).
pub const GRAD_FLOOR: f64 = 1e-3;

/// Result of checking one input.
#[derive(Clone, Debug, PartialEq)]
pub struct InputReport {
    /// Normwise relative error (see the module doc).
    pub rel_error: f64,
    /// Largest |numerical gradient| among the checked elements.
    pub max_abs_grad: f64,
    /// Elements checked.
    pub checked: usize,
}

/// Options of [`check`].
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Finite-difference step.
    pub eps: f64,
    /// At most this many elements per input are checked (evenly spread); `None` checks all.
    pub max_elements: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            eps: 1e-6,
            max_elements: None,
        }
    }
}

/// Evaluates `f` (which must build a one-element loss from the input nodes) once with
/// gradients and then twice per checked element with perturbed inputs; returns one report
/// per input.
pub fn check<F>(inputs: &[Tensor<f64>], f: F, opts: &Options) -> Result<Vec<InputReport>>
where
    F: Fn(&mut Tape<f64>, &[Var]) -> Result<Var>,
{
    let mut tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|t| tape.leaf(t.clone())).collect();
    let loss = f(&mut tape, &vars)?;
    let loss_scale = tape.value(loss).item()?.abs().max(1.0);
    tape.backward(loss)?;
    let analytic: Vec<Tensor<f64>> = vars
        .iter()
        .zip(inputs)
        .map(|(v, t)| {
            tape.grad(*v)
                .cloned()
                .unwrap_or_else(|| Tensor::zeros(t.shape()))
        })
        .collect();

    let eval = |inputs: &[Tensor<f64>]| -> Result<f64> {
        let mut tape = Tape::no_grad();
        let vars: Vec<Var> = inputs.iter().map(|t| tape.leaf(t.clone())).collect();
        let loss = f(&mut tape, &vars)?;
        Ok(tape.value(loss).item()?)
    };

    let mut reports = Vec::with_capacity(inputs.len());
    let mut work: Vec<Tensor<f64>> = inputs.to_vec();
    for i in 0..inputs.len() {
        let len = inputs[i].len();
        let picks: Vec<usize> = match opts.max_elements {
            Some(m) if m < len => (0..m).map(|j| j * len / m).collect(),
            _ => (0..len).collect(),
        };
        let (mut max_diff, mut max_n, mut max_a) = (0.0f64, 0.0f64, 0.0f64);
        for &j in &picks {
            let orig = inputs[i].as_slice()[j];
            work[i].as_slice_mut()[j] = orig + opts.eps;
            let up = eval(&work)?;
            work[i].as_slice_mut()[j] = orig - opts.eps;
            let down = eval(&work)?;
            work[i].as_slice_mut()[j] = orig;
            let num = (up - down) / (2.0 * opts.eps);
            let ana = analytic[i].as_slice()[j];
            max_diff = max_diff.max((num - ana).abs());
            max_n = max_n.max(num.abs());
            max_a = max_a.max(ana.abs());
        }
        reports.push(InputReport {
            rel_error: max_diff / max_n.max(max_a).max(GRAD_FLOOR * loss_scale),
            max_abs_grad: max_n,
            checked: picks.len(),
        });
    }
    Ok(reports)
}
