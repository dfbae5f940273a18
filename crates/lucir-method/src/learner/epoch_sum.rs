//! An epoch's loss terms summed over its steps, each weighted by its batch size: on the host as
//! each CPU step's terms are read (f64, the order the CPU path always used), and on the device
//! for steps whose terms stay there (f32 sums, read when the loop asks: every
//! [`READ_EVERY`] steps for the progress display, at a preemption, and at the end of the
//! epoch). So a device step never waits for the device to report its loss.

use lucir_tensor::{scale_by, Tensor};

use crate::{Error, LossTerms, Result, StepLoss};

/// A step on a device reads its loss terms back every this many steps (and the last step of an
/// epoch), for the progress display and an early stop on a non-finite loss.
pub(crate) const READ_EVERY: usize = 25;

/// The weighted sum of an epoch's loss terms so far.
#[derive(Debug)]
pub(crate) struct EpochSum {
    /// Steps read on the host, and a preempted epoch's sum carried over.
    host: LossTerms,
    /// Steps still on the device: their weighted values and which terms they hold.
    device: Option<(Tensor<f32>, [bool; 5])>,
    /// The last batch size as a one-element device tensor (the weight of the next step).
    weight: Option<(usize, Tensor<f32>)>,
}

impl EpochSum {
    /// A sum that starts at `host` (zero, or where a preempted epoch stopped).
    pub(crate) fn new(host: LossTerms) -> Self {
        Self {
            host,
            device: None,
            weight: None,
        }
    }

    /// Adds a step's terms weighted by its batch size `n`.
    pub(crate) fn add(&mut self, loss: &StepLoss<f32>, n: usize) -> Result<()> {
        let (values, present) = match loss {
            StepLoss::Host(terms) => {
                self.host.add(&terms.scaled(n as f64));
                return Ok(());
            }
            StepLoss::Device { values, present } => (values, *present),
        };
        if self.weight.as_ref().is_none_or(|(m, _)| *m != n) {
            self.weight = Some((n, Tensor::full_on(&values.device(), &[1], n as f32)?));
        }
        let w = self.weight.as_ref().map(|(_, w)| w).ok_or(Error::Internal(
            "the batch-size weight is set before it is used",
        ))?;
        let weighted = scale_by(values, w)?;
        match &mut self.device {
            None => self.device = Some((weighted, present)),
            Some((sum, held)) if *held == present => sum.add_assign(&weighted)?,
            Some(_) => {
                return Err(Error::Internal(
                    "steps of one epoch computed different loss terms",
                ))
            }
        }
        Ok(())
    }

    /// The sum: the host part plus the device part read back (one transfer, one wait).
    pub(crate) fn read(&self) -> Result<LossTerms> {
        let mut sum = self.host;
        if let Some((values, present)) = &self.device {
            sum.add(&LossTerms::read(values, *present)?);
        }
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(k: f64) -> LossTerms {
        LossTerms {
            total: 3.0 * k,
            ce: k,
            lf: 2.0 * k,
            mr: 0.0,
            kd: 0.0,
        }
    }

    /// The terms of `terms(k)` as a device step holds them (a CPU tensor stands in for the
    /// device's: the sum's arithmetic is the same ops).
    fn held(k: f64) -> StepLoss<f32> {
        let t = terms(k);
        StepLoss::Device {
            values: Tensor::from_vec(&[3, 1], vec![t.ce as f32, t.lf as f32, t.total as f32])
                .unwrap(),
            present: [true, true, false, false, true],
        }
    }

    #[test]
    fn held_steps_sum_like_read_ones() {
        let steps = [(0.5, 128), (0.25, 128), (1.5, 7)];
        let mut read = EpochSum::new(terms(1.0));
        let mut kept = EpochSum::new(terms(1.0));
        for (k, n) in steps {
            read.add(&StepLoss::Host(terms(k)), n).unwrap();
            kept.add(&held(k), n).unwrap();
        }
        let (a, b) = (read.read().unwrap(), kept.read().unwrap());
        // 1 + 128·0.5 + 128·0.25 + 7·1.5 = 107.5 (ce), exact in f32 as in f64.
        assert_eq!(a.ce, 107.5);
        assert_eq!(a, b);
        assert_eq!(held(2.0).read().unwrap(), terms(2.0));
    }

    #[test]
    fn steps_with_other_terms_are_refused() {
        let mut sum = EpochSum::new(LossTerms::default());
        sum.add(&held(1.0), 4).unwrap();
        let other = StepLoss::Device {
            values: Tensor::from_vec(&[2, 1], vec![1.0f32, 1.0]).unwrap(),
            present: [true, false, false, false, true],
        };
        assert!(matches!(sum.add(&other, 4), Err(Error::Internal(_))));
    }
}
