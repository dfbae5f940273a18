//! The LUCIR method's pieces on hand-computed cases, herding against its brute-force reference,
//! and an end-to-end smoke run of the whole protocol on small synthetic data.

#[path = "../crates/lucir-autograd/tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use common::*;
use lucir::autograd::Tape;
use lucir::data::{Augment, ClassOrder, MemoryBudget, Normalization, Phases, Split};
use lucir::method::{
    accuracy_split, adaptive_lambda, average_incremental_accuracy, forgetting, herding,
    herding_ref, imprint_weights, nme_class_means, predict_nme, run_protocol, Arch, Event,
    Features, IncrementalLearner, Method, MethodConfig, Observer, PhaseResult, ProtocolData,
};
use lucir::tensor::Tensor;
use proptest::prelude::*;

fn feats(dim: usize, rows: &[&[f32]]) -> Features {
    Features {
        dim,
        data: rows.iter().flat_map(|r| r.iter().copied()).collect(),
        labels: vec![0; rows.len()],
    }
}

/// θ_new = a·normalise(mean f̄) with a = mean ‖θ_old‖:
/// old rows (3,4) and (0,2) → a = (5 + 2)/2 = 3.5; features (1,0) and (0,1) → mean (½,½) →
/// normalised (1/√2, 1/√2) → θ = 3.5/√2·(1, 1).
#[test]
fn imprinting_scales_the_normalised_mean_by_the_old_norm() {
    let old = Tensor::from_vec(&[2, 2], vec![3.0f32, 4.0, 0.0, 2.0]).unwrap();
    let per_class = vec![feats(2, &[&[1.0, 0.0], &[0.0, 1.0]])];
    let w = imprint_weights(&per_class, &old).unwrap();
    let e = 3.5 / 2f32.sqrt();
    assert!((w.as_slice()[0] - e).abs() < 1e-6 && (w.as_slice()[1] - e).abs() < 1e-6);
    let err = imprint_weights(&[feats(2, &[])], &old);
    assert!(
        matches!(err, Err(lucir::method::Error::Config(_))),
        "{err:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Herding's w-iteration picks exactly what the explicit mean-matching greedy picks (d ≥ 3:
    /// in one dimension unit features are ±1 and every step is a tie; n ≥ 3: with two unit
    /// vectors both are equally close to their mean).
    #[test]
    fn herding_matches_brute_force_reference(
        n in 3usize..40, d in 3usize..12, m in 1usize..25, seed in any::<u64>(),
    ) {
        let x = uniform(&mut rng(seed), &[n, d], -1.0, 1.0);
        let f = Features { dim: d, data: x.as_slice().iter().map(|v| *v as f32).collect(), labels: vec![0; n] }
            .normalized();
        let fast = herding(&f, m);
        prop_assert_eq!(fast.len(), m.min(n));
        prop_assert_eq!(fast, herding_ref(&f, m));
    }
}

/// λ = λ_base·√(|Co|/|Cn|) (5·√(5/1) = 11.18 for fmnist-quick's first incremental phase),
/// λ_base with the adaptive switch off, 0 in the base phase and for the baselines.
#[test]
fn lambda_per_phase_follows_the_adaptive_rule() {
    let mut cfg = MethodConfig::lucir(Arch::Resnet20, 12);
    assert!((adaptive_lambda(&cfg, 5, 1) - 5.0 * 5f64.sqrt()).abs() < 1e-12);
    assert!((adaptive_lambda(&cfg, 50, 10) - 5.0 * 5f64.sqrt()).abs() < 1e-12);
    assert!((adaptive_lambda(&cfg, 9, 1) - 15.0).abs() < 1e-12);
    assert_eq!(adaptive_lambda(&cfg, 0, 5), 0.0);
    cfg.adaptive_lambda = false;
    assert_eq!(adaptive_lambda(&cfg, 9, 1), 5.0);
    cfg.less_forget = false;
    assert_eq!(adaptive_lambda(&cfg, 9, 1), 0.0);
    let mut ft = MethodConfig::lucir(Arch::Resnet20, 12);
    ft.method = Method::Finetune;
    assert_eq!(adaptive_lambda(&ft, 9, 1), 0.0);
}

/// Margin ranking, hand-computed. Classes 0,1 old; 2,3,4 new; K = 2, m = 0.5.
/// Row 0 (label 0): s⁺ = 0.9, top-2 new = 0.7 (col 2), 0.5 (col 4):
///   terms 0.5 − 0.9 + 0.7 = 0.3 and 0.5 − 0.9 + 0.5 = 0.1.
/// Row 1 (label 3, new): ignored. Row 2 (label 1): s⁺ = 0.8, top-2 new = 0.2, 0.1:
///   terms −0.1 and −0.2, both inactive.
/// P = 2 rows × 2 = 4 pairs; L = (0.3 + 0.1)/4 = 0.1; ∂cos[0,0] = −2/4, ∂cos[0,2] = ∂cos[0,4] = ¼.
#[test]
fn margin_rank_on_a_hand_computed_case() {
    let cos = Tensor::from_vec(
        &[3, 5],
        vec![
            0.9, 0.1, 0.7, 0.3, 0.5, //
            0.2, 0.2, 0.9, 0.1, 0.3, //
            0.0, 0.8, 0.2, 0.1, -0.5,
        ],
    )
    .unwrap();
    let mut t = Tape::<f64>::new();
    let c = t.leaf(cos);
    let loss = t.margin_rank(c, &[0, 3, 1], 2, 2, 0.5).unwrap();
    assert!((t.value(loss).item().unwrap() - 0.1).abs() < 1e-12);
    t.backward(loss).unwrap();
    let g = t.grad(c).unwrap().as_slice().to_vec();
    let mut want = vec![0.0; 15];
    want[0] = -0.5;
    want[2] = 0.25;
    want[4] = 0.25;
    for (a, b) in g.iter().zip(&want) {
        assert!((a - b).abs() < 1e-12, "{g:?}");
    }
    // No old-class sample: the loss is 0 and nothing flows back.
    let mut t = Tape::<f64>::new();
    let c = t.leaf(Tensor::from_vec(&[1, 3], vec![0.1, 0.2, 0.3]).unwrap());
    let loss = t.margin_rank(c, &[2], 2, 2, 0.5).unwrap();
    assert_eq!(t.value(loss).item().unwrap(), 0.0);
}

/// NME: class means of unit features (plain and mirrored averaged), prediction by the largest
/// cosine. Class 0 exemplars point along x, class 1 along y.
#[test]
fn nme_classifies_by_nearest_normalised_mean() {
    let c0 = feats(2, &[&[2.0, 0.2], &[2.0, -0.2]]);
    let c1 = feats(2, &[&[0.0, 1.0], &[0.2, 5.0]]);
    let means = nme_class_means(&[c0.clone(), c1.clone()], &[c0, c1]);
    assert_eq!(means.len(), 4);
    assert!((means[0] - 1.0).abs() < 1e-3 && means[1].abs() < 1e-6);
    let test = feats(2, &[&[1.0, 0.2], &[-0.1, 0.5], &[5.0, 4.0]]);
    assert_eq!(predict_nme(&test, &means), vec![0, 1, 0]);
}

/// Average incremental accuracy is the plain mean over all phases, base included; accuracy
/// splits and forgetting on hand cases.
#[test]
fn metrics_arithmetic() {
    assert!((average_incremental_accuracy(&[80.0, 70.0, 60.0]) - 70.0).abs() < 1e-12);
    let (all, old, new) = accuracy_split(&[0, 1, 2, 2], &[0, 1, 1, 2], 2);
    assert_eq!((all, old, new), (75.0, 200.0 / 3.0, 100.0));
    // Class 0: 90 → 60 (drop 30); class 1: 80 → 100 (−20); class 2 is new.
    let nan = f64::NAN;
    let h = vec![vec![90.0, 80.0, nan], vec![60.0, 100.0, 50.0]];
    assert!((forgetting(&h) - 5.0).abs() < 1e-12);
    assert_eq!(forgetting(&h[..1]), 0.0);
}

/// Synthetic data: class c lights up quadrant c of an 8×8 image, plus noise.
fn synthetic(per_class: usize, seed: u64) -> Split {
    let mut r = rng(seed);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for i in 0..4 * per_class {
        let c = i % 4;
        let noise = uniform(&mut r, &[64], 0.0, 60.0);
        for y in 0..8 {
            for x in 0..8 {
                let lit = (y / 4) * 2 + x / 4 == c;
                images.push((noise.as_slice()[y * 8 + x] + if lit { 180.0 } else { 0.0 }) as u8);
            }
        }
        labels.push(c);
    }
    Split {
        images: images.into(),
        labels,
        shape: [1, 8, 8],
    }
}

#[derive(Default)]
struct Record {
    epochs: usize,
    phases: Vec<PhaseResult>,
    memory_sizes: Vec<usize>,
    /// (phase, done, total) of each test-progress event.
    evals: Vec<(usize, usize, usize)>,
}

impl Observer for Record {
    fn event(&mut self, e: &Event) -> lucir::method::Result<()> {
        match *e {
            Event::EpochEnd { .. } => self.epochs += 1,
            Event::Eval { phase, done, total } => self.evals.push((phase, done, total)),
            _ => {}
        }
        Ok(())
    }
    fn phase_done(&mut self, r: &PhaseResult, l: &IncrementalLearner) -> lucir::method::Result<()> {
        self.phases.push(r.clone());
        self.memory_sizes.push(l.memory.len());
        Ok(())
    }
}

fn smoke_data() -> Arc<ProtocolData> {
    Arc::new(ProtocolData {
        train: Arc::new(synthetic(24, 1)),
        test: Arc::new(synthetic(10, 2)),
        order: ClassOrder::explicit(4, vec![2, 0, 3, 1]).unwrap(),
        phases: Phases::equal(4, 2, 1).unwrap(),
        norm: Normalization {
            mean: vec![0.3],
            std: vec![0.3],
        },
        augment: Augment {
            crop: 8,
            pad: 1,
            flip: true,
        },
    })
}

fn smoke_config(method: Method) -> MethodConfig {
    let mut cfg = MethodConfig::lucir(Arch::Resnet20, 3);
    cfg.method = method;
    cfg.batch = 16;
    cfg.memory = MemoryBudget::PerClass(5);
    cfg.cbf = method == Method::Lucir;
    cfg.cbf_epochs = 1;
    cfg
}

/// The whole protocol, 3 phases (2 + 1 + 1 classes), for LUCIR with class-balanced fine-tuning
/// and for both baselines: every phase is trained, evaluated and reported, exemplars are kept
/// per class, λ follows the rule, and the easy synthetic task is learned well above chance.
#[test]
fn end_to_end_smoke_run_of_all_methods() {
    for method in [Method::Lucir, Method::Finetune, Method::Icarl] {
        let cfg = smoke_config(method);
        let mut learner = IncrementalLearner::new(cfg.clone(), smoke_data()).unwrap();
        let mut rec = Record::default();
        let result = run_protocol(&mut learner, &mut rec).unwrap();
        assert_eq!(result.phases.len(), 3, "{method:?}");
        assert_eq!(rec.memory_sizes, vec![10, 15, 20], "{method:?}");
        // 3 training epochs per phase, plus 1 CBF epoch in each incremental LUCIR phase.
        let cbf = if method == Method::Lucir { 2 } else { 0 };
        assert_eq!(rec.epochs, 9 + cbf, "{method:?}");
        assert_eq!(learner.net.head.classes(), 4);
        let seen: Vec<usize> = result.phases.iter().map(|p| p.classes_seen).collect();
        assert_eq!(seen, vec![2, 3, 4]);
        // Testing reports its progress, batch by batch, up to every test image of the classes
        // seen (10 per class).
        for (phase, classes) in [(0, 2), (1, 3), (2, 4)] {
            let ev: Vec<_> = rec.evals.iter().filter(|e| e.0 == phase).collect();
            assert!(ev.windows(2).all(|w| w[0].1 < w[1].1), "{ev:?}");
            assert_eq!(
                ev.last().map(|e| (e.1, e.2)),
                Some((10 * classes, 10 * classes))
            );
        }
        if method == Method::Lucir {
            assert!((result.phases[1].lambda - 5.0 * 2f64.sqrt()).abs() < 1e-9);
            assert!(result.phases.iter().all(|p| p.sigma.is_some()));
        }
        for p in &result.phases {
            assert!((0.0..=100.0).contains(&p.acc_cnn) && (0.0..=100.0).contains(&p.acc_nme));
            assert!(p.images_per_s > 0.0);
        }
        assert!(
            result.phases[0].acc_nme > 75.0,
            "{method:?}: base-phase NME accuracy {:.1}% on a trivially separable task",
            result.phases[0].acc_nme
        );
        let mean = (result.phases.iter().map(|p| p.acc_cnn).sum::<f64>()) / 3.0;
        assert!((result.avg_inc_acc_cnn - mean).abs() < 1e-9);
    }
}
