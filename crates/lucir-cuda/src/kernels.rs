//! The PTX module registry: one entry per `kernels/*.cu`, its functions, and (with the `cuda`
//! feature) the PTX text embedded from `kernels/ptx/`.

/// Threads per block of the row-wise kernels (`LUCIR_BLOCK` in `kernels/common.cuh`).
pub const BLOCK: u32 = 256;
/// Side of the shared-memory tiles of the cosine kernels (`TILE` in `kernels/cosine_logits.cu`).
pub const TILE: u32 = 16;
/// Rows per block of the margin-ranking kernels, one warp each (`MR_ROWS` in
/// `kernels/margin_rank.cu`).
pub const MR_ROWS: u32 = 4;
/// Largest K the margin-ranking kernels take (`LUCIR_MAX_K` in `kernels/common.cuh`).
pub const MAX_K: usize = 16;
/// Threads per block of the per-channel batch-norm reductions, one block per channel
/// (`BN_THREADS` in `kernels/batch_norm.cu`).
pub const BN_THREADS: u32 = 1024;

/// A kernel source file and the functions it defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    /// File stem: `kernels/<name>.cu`, `kernels/ptx/<name>.ptx`.
    pub name: &'static str,
    /// `extern "C"` functions of the module.
    pub functions: &'static [&'static str],
}

/// `kernels/cosine_logits.cu`, in the order `cosine_logits::Kernels` takes them.
pub const COSINE_LOGITS: Kernel = Kernel {
    name: "cosine_logits",
    functions: &[
        "cosine_logits_norms_f32",
        "cosine_logits_fwd_f32",
        "cosine_logits_bwd_gemm_f32",
        "cosine_logits_bwd_project_f32",
        "cosine_logits_bwd_sigma_f32",
    ],
};

/// `kernels/margin_rank.cu`, in the order `margin_rank::Kernels` takes them.
pub const MARGIN_RANK: Kernel = Kernel {
    name: "margin_rank",
    functions: &["margin_rank_fwd_f32", "margin_rank_bwd_f32"],
};

/// `kernels/feature_distill.cu`, in the order `feature_distill::Kernels` takes them.
pub const FEATURE_DISTILL: Kernel = Kernel {
    name: "feature_distill",
    functions: &["feature_distill_fwd_f32", "feature_distill_bwd_f32"],
};

/// `kernels/elementwise.cu`, in the order `elementwise::Kernels` takes them.
pub const ELEMENTWISE: Kernel = Kernel {
    name: "elementwise",
    functions: &[
        "add_f32",
        "add_relu_f32",
        "relu_f32",
        "relu_bwd_f32",
        "axpy_f32",
    ],
};

/// `kernels/batch_norm.cu`, in the order `batch_norm::Kernels` takes them.
pub const BATCH_NORM: Kernel = Kernel {
    name: "batch_norm",
    functions: &[
        "batch_norm_stats_f32",
        "batch_norm_eval_affine_f32",
        "batch_norm_fwd_f32",
        "batch_norm_running_f32",
        "batch_norm_bwd_reduce_f32",
        "batch_norm_bwd_f32",
    ],
};

/// `kernels/pool.cu`, in the order `pool::Kernels` takes them.
pub const POOL: Kernel = Kernel {
    name: "pool",
    functions: &[
        "global_avg_pool_fwd_f32",
        "global_avg_pool_bwd_f32",
        "max_pool2d_fwd_f32",
        "max_pool2d_bwd_f32",
    ],
};

/// `kernels/softmax.cu`, in the order `softmax::Kernels` takes them.
pub const SOFTMAX: Kernel = Kernel {
    name: "softmax",
    functions: &[
        "log_softmax_rows_fwd_f32",
        "log_softmax_rows_bwd_f32",
        "cross_entropy_fwd_f32",
        "cross_entropy_bwd_f32",
        "cross_entropy_mean_f32",
    ],
};

/// `kernels/linear.cu`, in the order `linear::Kernels` takes them.
pub const LINEAR: Kernel = Kernel {
    name: "linear",
    functions: &["linear_bias_fwd_f32", "linear_bias_bwd_f32"],
};

/// `kernels/augment.cu`.
pub const AUGMENT: Kernel = Kernel {
    name: "augment",
    functions: &["augment_f32"],
};

/// `kernels/im2col.cu`, in the order `im2col::Kernels` takes them.
pub const IM2COL: Kernel = Kernel {
    name: "im2col",
    functions: &["im2col_f32", "col2im_f32", "sum_batches_f32"],
};

/// `kernels/sgd.cu`.
pub const SGD: Kernel = Kernel {
    name: "sgd",
    functions: &["sgd_update_f32", "sgd_update_many_f32"],
};

/// `kernels/normalize.cu`, in the order `normalize::Kernels` takes them.
pub const NORMALIZE: Kernel = Kernel {
    name: "normalize",
    functions: &["l2_normalize_rows_fwd_f32", "l2_normalize_rows_bwd_f32"],
};

/// `kernels/scale.cu`, in the order `scale::Kernels` takes them.
pub const SCALE: Kernel = Kernel {
    name: "scale",
    functions: &["scale_fwd_f32", "scale_dot_f32"],
};

/// `kernels/reduce.cu`.
pub const REDUCE: Kernel = Kernel {
    name: "reduce",
    functions: &["sum_scaled_f32"],
};

/// `kernels/kd.cu`, in the order `kd::Kernels` takes them.
pub const KD: Kernel = Kernel {
    name: "kd",
    functions: &[
        "kd_temper_f32",
        "kd_terms_f32",
        "kd_bwd_f32",
        "slice_cols_fwd_f32",
        "slice_cols_bwd_f32",
    ],
};

/// Every kernel module of the project.
pub const KERNELS: [Kernel; 15] = [
    COSINE_LOGITS,
    MARGIN_RANK,
    FEATURE_DISTILL,
    ELEMENTWISE,
    BATCH_NORM,
    POOL,
    SOFTMAX,
    LINEAR,
    SGD,
    NORMALIZE,
    SCALE,
    REDUCE,
    KD,
    AUGMENT,
    IM2COL,
];

/// The committed PTX of a module.
#[cfg(feature = "cuda")]
pub(crate) fn ptx(name: &str) -> Option<&'static str> {
    match name {
        "cosine_logits" => Some(include_str!("../../../kernels/ptx/cosine_logits.ptx")),
        "margin_rank" => Some(include_str!("../../../kernels/ptx/margin_rank.ptx")),
        "feature_distill" => Some(include_str!("../../../kernels/ptx/feature_distill.ptx")),
        "elementwise" => Some(include_str!("../../../kernels/ptx/elementwise.ptx")),
        "batch_norm" => Some(include_str!("../../../kernels/ptx/batch_norm.ptx")),
        "pool" => Some(include_str!("../../../kernels/ptx/pool.ptx")),
        "softmax" => Some(include_str!("../../../kernels/ptx/softmax.ptx")),
        "linear" => Some(include_str!("../../../kernels/ptx/linear.ptx")),
        "sgd" => Some(include_str!("../../../kernels/ptx/sgd.ptx")),
        "normalize" => Some(include_str!("../../../kernels/ptx/normalize.ptx")),
        "scale" => Some(include_str!("../../../kernels/ptx/scale.ptx")),
        "reduce" => Some(include_str!("../../../kernels/ptx/reduce.ptx")),
        "kd" => Some(include_str!("../../../kernels/ptx/kd.ptx")),
        "augment" => Some(include_str!("../../../kernels/ptx/augment.ptx")),
        "im2col" => Some(include_str!("../../../kernels/ptx/im2col.ptx")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{BLOCK, BN_THREADS, MAX_K, MR_ROWS, TILE};

    /// The value of `#define NAME value` in a kernel source.
    fn define(src: &str, name: &str) -> Option<u64> {
        src.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("#define") && w.next() == Some(name))
                .then(|| w.next()?.parse().ok())
                .flatten()
        })
    }

    /// The launchers' constants are the kernels' (one place to change, checked here).
    #[test]
    fn launch_constants_match_the_kernel_sources() {
        let common = include_str!("../../../kernels/common.cuh");
        let cosine = include_str!("../../../kernels/cosine_logits.cu");
        let margin = include_str!("../../../kernels/margin_rank.cu");
        assert_eq!(define(common, "LUCIR_BLOCK"), Some(u64::from(BLOCK)));
        assert_eq!(define(common, "LUCIR_MAX_K"), Some(MAX_K as u64));
        assert_eq!(define(cosine, "TILE"), Some(u64::from(TILE)));
        assert_eq!(define(margin, "MR_ROWS"), Some(u64::from(MR_ROWS)));
        let batch_norm = include_str!("../../../kernels/batch_norm.cu");
        assert_eq!(
            define(batch_norm, "BN_THREADS"),
            Some(u64::from(BN_THREADS))
        );
    }
}
