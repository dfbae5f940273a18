//! The exemplar memory (docs/design.md §3 "Exemplars"): per class position, the training-sample ids
//! chosen by herding, best first, so shrinking keeps a prefix.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How many exemplars are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryBudget {
    /// A fixed number per class (growing memory; LUCIR's default, 20).
    PerClass(usize),
    /// A fixed total shared equally by all classes seen.
    Total(usize),
}

/// Exemplar ids per class position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExemplarMemory {
    /// The budget rule.
    pub budget: MemoryBudget,
    classes: BTreeMap<usize, Vec<usize>>,
}

impl ExemplarMemory {
    /// An empty memory.
    pub fn new(budget: MemoryBudget) -> Self {
        Self {
            budget,
            classes: BTreeMap::new(),
        }
    }

    /// Exemplars per class when `seen` classes share the memory.
    pub fn quota(&self, seen: usize) -> Result<usize> {
        match self.budget {
            MemoryBudget::PerClass(m) => Ok(m),
            MemoryBudget::Total(t) => {
                if seen == 0 {
                    return Ok(t);
                }
                let q = t / seen;
                if q == 0 {
                    return Err(Error::Config(format!(
                        "memory budget of {t} exemplars is too small for {seen} classes"
                    )));
                }
                Ok(q)
            }
        }
    }

    /// Stores the (herding-ordered) exemplars of class position `class`, replacing any.
    pub fn set(&mut self, class: usize, ids: Vec<usize>) {
        self.classes.insert(class, ids);
    }

    /// Cuts every class to its first `quota` exemplars.
    pub fn shrink(&mut self, quota: usize) {
        for ids in self.classes.values_mut() {
            ids.truncate(quota);
        }
    }

    /// The exemplars of one class position.
    pub fn class(&self, class: usize) -> &[usize] {
        self.classes.get(&class).map_or(&[], Vec::as_slice)
    }

    /// Class positions held.
    pub fn classes(&self) -> impl Iterator<Item = usize> + '_ {
        self.classes.keys().copied()
    }

    /// Every `(sample id, class position)`, class by class.
    pub fn samples(&self) -> Vec<(usize, usize)> {
        self.classes
            .iter()
            .flat_map(|(c, ids)| ids.iter().map(move |i| (*i, *c)))
            .collect()
    }

    /// Total exemplars held.
    pub fn len(&self) -> usize {
        self.classes.values().map(Vec::len).sum()
    }

    /// Whether the memory is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
