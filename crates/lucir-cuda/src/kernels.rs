//! The PTX module registry: one entry per `kernels/*.cu`, its functions, and (with the `cuda`
//! feature) the PTX text embedded from `kernels/ptx/`.

/// A kernel source file and the functions it defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    /// File stem: `kernels/<name>.cu`, `kernels/ptx/<name>.ptx`.
    pub name: &'static str,
    /// `extern "C"` functions of the module.
    pub functions: &'static [&'static str],
}

/// Every kernel module of the project.
pub const KERNELS: [Kernel; 3] = [
    Kernel {
        name: "cosine_logits",
        functions: &[
            "cosine_logits_norms_f32",
            "cosine_logits_fwd_f32",
            "cosine_logits_bwd_feat_f32",
            "cosine_logits_bwd_weight_f32",
            "cosine_logits_bwd_sigma_f32",
        ],
    },
    Kernel {
        name: "margin_rank",
        functions: &["margin_rank_fwd_f32", "margin_rank_bwd_f32"],
    },
    Kernel {
        name: "feature_distill",
        functions: &["feature_distill_fwd_f32", "feature_distill_bwd_f32"],
    },
];

/// The committed PTX of a module.
#[cfg(feature = "cuda")]
pub(crate) fn ptx(name: &str) -> Option<&'static str> {
    match name {
        "cosine_logits" => Some(include_str!("../../../kernels/ptx/cosine_logits.ptx")),
        "margin_rank" => Some(include_str!("../../../kernels/ptx/margin_rank.ptx")),
        "feature_distill" => Some(include_str!("../../../kernels/ptx/feature_distill.ptx")),
        _ => None,
    }
}
