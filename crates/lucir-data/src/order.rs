//! Class order and incremental phases (docs/design.md §3 "Class order", §4).
//!
//! The seeded order is numpy's legacy `np.random.seed(seed); np.random.shuffle(classes)`
//! (MT19937 seeded with `init_genrand`, Fisher–Yates from the end with masked rejection
//! sampling), so orders match the PyTorch implementations that use it: seed 1993 gives the
//! paper's CIFAR-100 order.

use rand_mt::Mt;

use crate::{Error, Result};

/// numpy's legacy `random_interval(max)`: a uniform integer in `0..=max`.
fn random_interval(mt: &mut Mt, max: u32) -> u32 {
    if max == 0 {
        return 0;
    }
    let mut mask = max;
    for s in [1, 2, 4, 8, 16] {
        mask |= mask >> s;
    }
    loop {
        let v = mt.next_u32() & mask;
        if v <= max {
            return v;
        }
    }
}

/// `0..n` shuffled exactly as numpy's legacy `RandomState(seed).shuffle` does.
pub fn numpy_shuffle(n: usize, seed: u32) -> Vec<usize> {
    let mut mt = Mt::new(seed);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = random_interval(&mut mt, i as u32) as usize;
        v.swap(i, j);
    }
    v
}

/// The order in which classes are learned: `order[p]` is the dataset class id at position `p`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassOrder {
    order: Vec<usize>,
    position: Vec<usize>,
}

impl ClassOrder {
    /// numpy's seeded shuffle of `0..classes`.
    pub fn seeded(classes: usize, seed: u32) -> Self {
        Self::explicit(classes, numpy_shuffle(classes, seed)).expect("a permutation is valid")
    }

    /// An explicit order, which must list every class id `0..classes` exactly once.
    pub fn explicit(classes: usize, order: Vec<usize>) -> Result<Self> {
        if order.len() != classes {
            return Err(Error::Config(format!(
                "class order lists {} classes, the dataset has {classes}",
                order.len()
            )));
        }
        let mut position = vec![usize::MAX; classes];
        for (p, &c) in order.iter().enumerate() {
            if c >= classes {
                return Err(Error::Config(format!(
                    "class order names class {c}, the dataset has classes 0–{}",
                    classes - 1
                )));
            }
            if position[c] != usize::MAX {
                return Err(Error::Config(format!("class order names class {c} twice")));
            }
            position[c] = p;
        }
        Ok(Self { order, position })
    }

    /// Dataset class ids in learning order.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Position of dataset class `class` in the order.
    pub fn position(&self, class: usize) -> usize {
        self.position[class]
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are no classes.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The number of new classes in each phase (the first is the base phase).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phases {
    sizes: Vec<usize>,
}

impl Phases {
    /// `base` classes, then phases of `inc` classes until `classes` are used.
    pub fn equal(classes: usize, base: usize, inc: usize) -> Result<Self> {
        if base == 0 || base > classes {
            return Err(Error::Config(format!(
                "base phase of {base} classes is impossible with {classes} classes"
            )));
        }
        let rest = classes - base;
        if rest > 0 && (inc == 0 || !rest.is_multiple_of(inc)) {
            return Err(Error::Config(format!(
                "the {rest} classes after a base of {base} do not split into phases of {inc}"
            )));
        }
        let mut sizes = vec![base];
        sizes.extend(std::iter::repeat_n(inc, rest.checked_div(inc).unwrap_or(0)));
        Ok(Self { sizes })
    }

    /// An explicit list of phase sizes; they must be positive and sum to `classes`.
    pub fn explicit(classes: usize, sizes: Vec<usize>) -> Result<Self> {
        if sizes.is_empty() || sizes.contains(&0) {
            return Err(Error::Config(format!(
                "phase sizes {sizes:?} must be a non-empty list of positive numbers"
            )));
        }
        let sum: usize = sizes.iter().sum();
        if sum != classes {
            return Err(Error::Config(format!(
                "phase sizes {sizes:?} add up to {sum}, the dataset has {classes} classes"
            )));
        }
        Ok(Self { sizes })
    }

    /// Classes introduced by each phase.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// Number of phases, the base phase included.
    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    /// Whether there is no phase.
    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    /// Class positions `lo..hi` that phase `p` introduces.
    pub fn range(&self, p: usize) -> std::ops::Range<usize> {
        let lo: usize = self.sizes[..p].iter().sum();
        lo..lo + self.sizes[p]
    }
}
