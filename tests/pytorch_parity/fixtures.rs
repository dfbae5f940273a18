//! The fixtures of the PyTorch parity tests and what reads them: paths, tensors and metadata
//! of the safetensors files, the models and batches they describe, normwise comparison, and
//! the LUCIR step computed with the generic ops.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lucir::autograd::{ParamGroup, Sgd, Tape, Var};
use lucir::method::{Arch, Head, Network};
use lucir::nn::{torch_name, CosineLinear, Float, Init, Mode, Module, TensorFile};
use lucir::tensor::Tensor;

pub const F64_TOL: f64 = 1e-9;
pub const F32_TOL: f64 = 1e-4;
/// SGD updates of the f32 step against PyTorch's f64: on the fixture's batch one ReLU of
/// layer3.1's output (f64 value 2.1e-6 among elements ≈ 1) is 0 in f32, which moves the
/// gradients of every earlier layer by ≈ 2e-3 in the first step and 7e-3 in the second (PyTorch's
/// own f32 step happens to keep that unit). Exactness of the production step is checked
/// separately, bit for bit against the generic step in the same precision.
pub const F32_UPDATE_TOL: f64 = 1e-2;
pub const SEQ_TOL: f64 = 1e-3;
pub const BLOCKS: usize = 3;
pub const OLD: usize = 5;
pub const NEW: usize = 3;

pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.safetensors"))
}

pub fn fixture(name: &str) -> (TensorFile, PathBuf) {
    let path = fixture_path(name);
    let file = TensorFile::read(&path).unwrap_or_else(|e| panic!("{e}"));
    (file, path)
}

pub fn values(file: &TensorFile, name: &str) -> Vec<f64> {
    match file.tensors.get(name) {
        Some((_, v)) => v.clone(),
        None => panic!("fixture tensor {name} is missing"),
    }
}

pub fn scalar(file: &TensorFile, name: &str) -> f64 {
    values(file, name)[0]
}

pub fn meta(file: &TensorFile, key: &str) -> f64 {
    file.metadata[key].parse().unwrap()
}

pub fn indices(file: &TensorFile, name: &str) -> Vec<usize> {
    values(file, name).iter().map(|v| *v as usize).collect()
}

/// `‖a − b‖ / ‖b‖` (absolute when b is zero).
pub fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let n: f64 = b.iter().map(|y| y * y).sum();
    d.sqrt() / if n > 0.0 { n.sqrt() } else { 1.0 }
}

pub fn check(what: &str, ours: &[f64], torch: &[f64], tol: f64) {
    let e = rel(ours, torch);
    assert!(
        e <= tol,
        "{what}: relative error {e:.3e} > {tol:e} (ours {:?}…, torch {:?}…)",
        &ours[..ours.len().min(4)],
        &torch[..torch.len().min(4)]
    );
}

pub fn as_f64<T: Float>(t: &Tensor<T>) -> Vec<f64> {
    t.as_slice().iter().map(|v| v.as_f64()).collect()
}

/// The previous-phase model of the fixtures: ResNet-20 with a 5-class cosine head.
pub fn prev_model<T: Float>() -> Network<T> {
    let mut net = Network::<T>::new(Arch::Resnet20, 1, OLD, true, 1).unwrap();
    net.load_safetensors(&fixture_path("resnet20_prev"))
        .unwrap_or_else(|e| panic!("{e}"));
    net
}

/// The current model of the fixtures: the same backbone with a split head (5 old + 3 new).
pub fn cur_model<T: Float>() -> Network<T> {
    let mut net = Network::<T>::new(Arch::Resnet20, 1, OLD, true, 1).unwrap();
    net.head.grow(&mut Init::new(2), NEW, 64).unwrap();
    net.load_safetensors(&fixture_path("resnet20_cur"))
        .unwrap_or_else(|e| panic!("{e}"));
    net
}

/// The cosine head of a network (whole or split).
pub fn cosine_head<T: Float>(net: &Network<T>) -> &CosineLinear<T> {
    match &net.head {
        Head::Cosine(h) => h,
        other => panic!("a whole cosine head expected, got {other:?}"),
    }
}

/// Fashion-MNIST's normalisation (docs/design.md §4) in f64, as PyTorch has it (the loader's
/// f32 constants differ from these by 5e-8, which shows at 3e-9 in f64 features).
pub const FMNIST_MEAN: f64 = 0.2860;
pub const FMNIST_STD: f64 = 0.3530;

/// `(v / 255 − mean) / std` of a u8 pixel value, in f64.
pub fn normalise(v: f64) -> f64 {
    (v / 255.0 - FMNIST_MEAN) / FMNIST_STD
}

/// The step's batch: its u8 images normalised, in precision T.
pub fn step_batch<T: Float>(step: &TensorFile) -> (Tensor<T>, Vec<usize>) {
    let x: Vec<T> = values(step, "images")
        .iter()
        .map(|v| T::of(normalise(*v)))
        .collect();
    let labels = indices(step, "labels");
    (
        Tensor::from_vec(&[labels.len(), 1, 28, 28], x).unwrap(),
        labels,
    )
}

pub fn lambda(old: usize, new: usize) -> f64 {
    5.0 * (old as f64 / new as f64).sqrt()
}

/// Our values of each parameter at the fixture's sampled indices, by PyTorch name.
pub fn sampled<T: Float>(
    file: &TensorFile,
    named: Vec<(String, Tensor<T>)>,
) -> BTreeMap<String, Vec<f64>> {
    named
        .into_iter()
        .map(|(name, t)| {
            let tn = torch_name(&name, BLOCKS);
            let idx = indices(file, &format!("idx.{tn}"));
            let v = t.as_slice();
            (tn, idx.iter().map(|&i| v[i].as_f64()).collect())
        })
        .collect()
}

pub fn check_sampled(what: &str, file: &TensorFile, ours: &BTreeMap<String, Vec<f64>>, tol: f64) {
    assert!(!ours.is_empty());
    for (name, v) in ours {
        check(
            &format!("{what} of {name}"),
            v,
            &values(file, &format!("{what}.{name}")),
            tol,
        );
    }
}

pub struct StepOut {
    pub features: Vec<f64>,
    pub features_prev: Vec<f64>,
    pub cos: Vec<f64>,
    pub logits: Vec<f64>,
    pub ce: f64,
    pub lf: f64,
    pub mr: f64,
    pub mr_k5: f64,
    pub total: f64,
}

/// One incremental LUCIR step in precision T with the generic ops, assembled as
/// docs/design.md §3 states: CE on σ·cos, the less-forget loss with `lam` and margin ranking
/// (K = 2, m = 0.5) over the `old` classes; then SGD (momentum in `sgd`, weight decay 5e-4) with
/// LUCIR's groups at `lr` (old-class block frozen). The parameters' gradients go to `grads`.
pub fn lucir_step_generic<T: Float>(
    cur: &mut Network<T>,
    prev: &mut Network<T>,
    (images, labels): (&Tensor<T>, &[usize]),
    (old, lam, lr): (usize, f64, f64),
    sgd: &mut Sgd<T>,
    grads: &mut Vec<(String, Tensor<T>)>,
) -> StepOut {
    let mut t = Tape::no_grad();
    let x = t.constant(images.clone());
    let fv = prev.backbone.forward(&mut t, x, Mode::Eval).unwrap();
    let f_star = t.value(fv).clone();
    let mut tape = Tape::new();
    let x = tape.constant(images.clone());
    let f = cur.backbone.forward(&mut tape, x, Mode::Train).unwrap();
    let Head::Split(head) = &cur.head else {
        panic!("the current model has a split head");
    };
    let (theta, sigma) = head.theta_sigma(&mut tape).unwrap();
    let cos = tape.cosine_logits(f, theta).unwrap();
    let logits = tape.scale(cos, sigma).unwrap();
    let ce = tape.cross_entropy(logits, labels).unwrap();
    let lf = tape.feature_distill(f, &f_star, T::of(lam)).unwrap();
    let mr = tape.margin_rank(cos, labels, old, 2, T::of(0.5)).unwrap();
    let mr_k5 = tape.margin_rank(cos, labels, old, 5, T::of(0.5)).unwrap();
    let total = tape.add(ce, lf).unwrap();
    let total = tape.add(total, mr).unwrap();
    let item = |v: Var| tape.value(v).item().unwrap().as_f64();
    let out = StepOut {
        features: as_f64(tape.value(f)),
        features_prev: as_f64(&f_star),
        cos: as_f64(tape.value(cos)),
        logits: as_f64(tape.value(logits)),
        ce: item(ce),
        lf: item(lf),
        mr: item(mr),
        mr_k5: item(mr_k5),
        total: item(total),
    };
    tape.backward(total).unwrap();
    *grads = cur
        .params()
        .into_iter()
        .map(|(n, p)| (n, tape.param_grad(p).unwrap().clone()))
        .collect();
    let wd = 5e-4;
    let Network { backbone, head } = cur;
    let Head::Split(head) = head else {
        unreachable!("checked above")
    };
    let groups = &mut [
        ParamGroup::named(lr, wd, backbone.params_mut()),
        ParamGroup {
            lr: 0.0,
            weight_decay: 0.0,
            params: vec![&mut head.old],
        },
        ParamGroup {
            lr,
            weight_decay: wd,
            params: vec![&mut head.new, &mut head.sigma],
        },
    ];
    sgd.step(&tape, groups).unwrap();
    out
}

pub fn params_of<T: Float, M: Module<T>>(m: &M) -> Vec<(String, Tensor<T>)> {
    m.params()
        .into_iter()
        .map(|(n, p)| (n, p.value.clone()))
        .collect()
}

pub fn updates<T: Float>(
    after: Vec<(String, Tensor<T>)>,
    before: &[(String, Tensor<T>)],
) -> Vec<(String, Tensor<T>)> {
    after
        .into_iter()
        .zip(before)
        .map(|((n, a), (_, b))| {
            let d: Vec<T> = a
                .as_slice()
                .iter()
                .zip(b.as_slice())
                .map(|(x, y)| *x - *y)
                .collect();
            (n, Tensor::from_vec(a.shape(), d).unwrap())
        })
        .collect()
}
