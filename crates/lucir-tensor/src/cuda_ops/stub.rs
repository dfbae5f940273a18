//! The CUDA arms of a build without the `cuda` feature: no device tensor can exist, so each
//! returns `Error::Cuda(NotCompiled)` (the storage type is uninhabited).

use crate::conv2d::InputGrad;
use crate::device::{CudaIndices, CudaStorage, Gpu};
use crate::{BatchNormStats, MarginRankPairs, MaxPoolArgmax, MaxPoolGeometry, SgdHyper};
use crate::{Error, Float, Result, Tensor, Transpose};

fn not_compiled<R>() -> Result<R> {
    Err(Error::Cuda(lucir_cuda::Error::NotCompiled))
}

pub(crate) fn upload<T: Float>(_: &Gpu, _: &[usize], _: &[f32]) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn download<T: Float>(_: &[usize], c: &CudaStorage) -> Result<Tensor<T>> {
    match *c {}
}

pub(crate) fn zeros<T: Float>(_: &Gpu, _: &[usize]) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn add_assign<T: Float>(_: &mut Tensor<T>, _: &Tensor<T>) -> Result<()> {
    not_compiled()
}

pub(crate) fn add<T: Float>(_: &Tensor<T>, _: &Tensor<T>) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn add_relu<T: Float>(_: &Tensor<T>, _: &Tensor<T>) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn relu<T: Float>(_: &Tensor<T>) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn relu_bwd<T: Float>(_: &Tensor<T>, _: Tensor<T>) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn matmul<T: Float>(
    _: [usize; 3],
    _: &Tensor<T>,
    _: Transpose,
    _: &Tensor<T>,
    _: Transpose,
) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn conv2d<T: Float>(_: [usize; 9], _: &Tensor<T>, _: &Tensor<T>) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn conv2d_bwd<T: Float>(
    _: [usize; 9],
    _: [&Tensor<T>; 3],
    _: InputGrad<'_, Tensor<T>>,
    _: bool,
) -> Result<(Option<Tensor<T>>, Tensor<T>)> {
    not_compiled()
}

pub(crate) fn batch_norm_train<T: Float>(
    _: &Tensor<T>,
    _: [&Tensor<T>; 2],
    _: T,
    _: Option<&Tensor<T>>,
    _: bool,
) -> Result<(Tensor<T>, BatchNormStats<T>)> {
    not_compiled()
}

pub(crate) fn batch_norm_stats<T: Float>(_: &Tensor<T>, _: T) -> Result<BatchNormStats<T>> {
    not_compiled()
}

pub(crate) fn batch_norm_train_bwd<T: Float>(
    _: &Tensor<T>,
    _: [&Tensor<T>; 2],
    _: &BatchNormStats<T>,
    _: &Tensor<T>,
    _: bool,
) -> Result<(Tensor<T>, Tensor<T>, Tensor<T>)> {
    not_compiled()
}

pub(crate) fn batch_norm_eval<T: Float>(
    _: &Tensor<T>,
    _: [&Tensor<T>; 2],
    _: (&Tensor<T>, &Tensor<T>),
    _: T,
    _: Option<&Tensor<T>>,
    _: bool,
) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn batch_norm_eval_bwd<T: Float>(
    _: &Tensor<T>,
    _: [&Tensor<T>; 2],
    _: (&Tensor<T>, &Tensor<T>),
    _: T,
    _: &Tensor<T>,
    _: bool,
) -> Result<(Tensor<T>, Tensor<T>, Tensor<T>)> {
    not_compiled()
}

pub(crate) fn batch_norm_update_running<T: Float>(
    _: (&mut Tensor<T>, &mut Tensor<T>),
    _: &BatchNormStats<T>,
    _: f64,
) -> Result<()> {
    not_compiled()
}

pub(crate) fn global_avg_pool<T: Float>(_: &Tensor<T>, _: [usize; 4]) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn global_avg_pool_bwd<T: Float>(_: &Tensor<T>, _: [usize; 4]) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn log_softmax_rows<T: Float>(_: &Tensor<T>, _: [usize; 2]) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn log_softmax_rows_bwd<T: Float>(
    _: &Tensor<T>,
    _: &Tensor<T>,
    _: [usize; 2],
) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn cross_entropy<T: Float>(
    _: &Tensor<T>,
    _: &[usize],
    _: [usize; 2],
) -> Result<(Tensor<T>, Tensor<T>)> {
    not_compiled()
}

pub(crate) fn cross_entropy_bwd<T: Float>(
    _: &Tensor<T>,
    _: &[usize],
    _: &Tensor<T>,
    _: [usize; 2],
) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn add_row_bias<T: Float>(
    _: &mut Tensor<T>,
    _: &Tensor<T>,
    _: [usize; 2],
) -> Result<()> {
    not_compiled()
}

pub(crate) fn column_sums<T: Float>(_: &Tensor<T>, _: [usize; 2]) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn sgd_update<T: Float>(
    _: &mut Tensor<T>,
    _: &Tensor<T>,
    _: Option<Tensor<T>>,
    _: SgdHyper,
) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn sgd_update_many<T: Float>(
    _: Vec<crate::SgdTarget<'_, T>>,
    _: SgdHyper,
) -> Result<Vec<Tensor<T>>> {
    not_compiled()
}

pub(crate) fn full<T: Float>(_: &Gpu, _: &[usize], _: f32) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn l2_normalize_rows<T: Float>(
    _: &Tensor<T>,
    _: [usize; 2],
) -> Result<(Tensor<T>, Tensor<T>)> {
    not_compiled()
}

pub(crate) fn l2_normalize_rows_bwd<T: Float>(
    _: &Tensor<T>,
    _: &Tensor<T>,
    _: &Tensor<T>,
    _: [usize; 2],
) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn concat_rows<T: Float>(
    _: &Tensor<T>,
    _: &Tensor<T>,
    _: [usize; 2],
) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn split_rows<T: Float>(_: &Tensor<T>, _: [usize; 3]) -> Result<(Tensor<T>, Tensor<T>)> {
    not_compiled()
}

pub(crate) fn scale_by<T: Float>(_: &Tensor<T>, _: &Tensor<T>) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn dot<T: Float>(_: &Tensor<T>, _: &Tensor<T>) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn feature_distill<T: Float>(
    _: &Tensor<T>,
    _: &Tensor<T>,
    _: T,
    _: [usize; 2],
) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn feature_distill_bwd<T: Float>(
    _: &Tensor<T>,
    _: &Tensor<T>,
    _: T,
    _: &Tensor<T>,
    _: [usize; 2],
) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn margin_rank<T: Float>(
    _: &Tensor<T>,
    _: &[usize],
    _: &MarginRankPairs,
    _: [usize; 2],
) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn margin_rank_bwd<T: Float>(
    _: &Tensor<T>,
    _: &[usize],
    _: &MarginRankPairs,
    _: &Tensor<T>,
    _: [usize; 2],
) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn max_pool2d<T: Float>(
    _: &Tensor<T>,
    _: MaxPoolGeometry,
    _: [usize; 4],
) -> Result<(Tensor<T>, MaxPoolArgmax)> {
    not_compiled()
}

pub(crate) fn max_pool2d_bwd<T: Float>(
    _: &[usize],
    a: &CudaIndices,
    _: MaxPoolGeometry,
    _: &Tensor<T>,
) -> Result<Tensor<T>> {
    match *a {}
}

pub(crate) fn kd<T: Float>(
    _: &Tensor<T>,
    _: &Tensor<T>,
    _: T,
    _: [usize; 2],
) -> Result<(Tensor<T>, Tensor<T>, Tensor<T>)> {
    not_compiled()
}

pub(crate) fn kd_bwd<T: Float>(
    _: &Tensor<T>,
    _: &Tensor<T>,
    _: T,
    _: &Tensor<T>,
    _: [usize; 2],
) -> Result<Tensor<T>> {
    not_compiled()
}

pub(crate) fn slice_cols<T: Float>(
    _: &Tensor<T>,
    _: [usize; 2],
    _: (usize, usize),
    _: bool,
) -> Result<Tensor<T>> {
    not_compiled()
}

/// A device's bytes; uninhabited without the `cuda` feature.
#[derive(Clone, Debug)]
pub enum ByteStorage {}

pub(crate) fn upload_bytes(_: &Gpu, _: &[u8]) -> Result<ByteStorage> {
    not_compiled()
}

pub(crate) fn render_images(
    images: &crate::DeviceImages,
    _: &[crate::ImagePick],
    _: crate::RenderArgs<'_>,
) -> Result<Tensor<f32>> {
    match images.storage {}
}
