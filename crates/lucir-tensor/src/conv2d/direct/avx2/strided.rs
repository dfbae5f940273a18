//! The stride-2 layers (3×3 with padding 1, 1×1 without) on CPUs with AVX2 and FMA: the
//! parent module's kernels on the phase planes and taps of `direct::strided`, driven image by
//! image as there. The phase split and the interleave are copies (and, when adding, one sum)
//! written as plain loops, so every output sums the same terms in the same order as the
//! AVX-512 kernels' and the two give the same bits.

use std::mem::MaybeUninit;

use super::super::strided::{dx_phases, fill_phases_plain, interleave_plain, StridedShape};
use super::super::{forward_images, AlignedPlanes};
use super::{Forward, Planes, Taps, WeightGrad};
use crate::conv2d::InputGrad;
use crate::Avx2Fma;

/// `y = w ⋆ x` with stride 2: `x` N×Ci×H×W, `w` Co×Ci×k×k, `y` N×Co×⌈H/2⌉×⌈W/2⌉, rayon over
/// the images; every output written by the kernel (no zeroing).
///
/// # Panics
/// If the slices do not have those lengths.
pub(in crate::conv2d) fn forward(cpu: Avx2Fma, x: &[f32], w: &[f32], s: StridedShape) -> Vec<f32> {
    s.check(x, w);
    let (in_len, out_len) = (s.in_len(), s.out_len());
    let (ho, wo) = s.out();
    let p = Planes::phases(cpu, ho, wo);
    let fwd = Forward::new(&p, Taps::phases(p.layout(), s.k), w.into(), s.ci, s.co);
    let image = |buf: &mut AlignedPlanes, _, xi: &[f32], yi: &mut [MaybeUninit<f32>]| {
        fill_phases_plain(p.layout(), xi, buf.get_mut(), s.ci, (s.h, s.w), s.k == 3);
        fwd.image(buf.get(), yi, false);
    };
    // SAFETY: `Forward::image` writes every element of each image's output.
    unsafe { forward_images(x, [s.n, in_len, out_len], || p.buffer(4 * s.ci), image) }
}

/// The backward pass of [`forward`]: from `dy` the weight gradient (Co×Ci×k×k) and, if
/// wanted, the input gradient; rayon over chunks of images, one per thread, the weight
/// gradient's partial sums added in chunk order.
///
/// # Panics
/// As [`forward`], and if `dy` does not hold N×Co×⌈H/2⌉×⌈W/2⌉ floats.
pub(in crate::conv2d) fn backward(
    cpu: Avx2Fma,
    [x, w, dy]: [&[f32]; 3],
    s: StridedShape,
    (dx, want_dw): (InputGrad<'_, [f32]>, bool),
) -> (Option<Vec<f32>>, Vec<f32>) {
    s.check(x, w);
    let want_dx = dx.wanted();
    let (in_len, out_len) = (s.in_len(), s.out_len());
    assert_eq!(dy.len(), s.n * out_len, "direct kernel: gradient length");
    if s.n == 0 || in_len == 0 || out_len == 0 {
        return (
            matches!(dx, InputGrad::New).then(|| vec![0.0; s.n * in_len]),
            vec![0.0; w.len()],
        );
    }
    let (ho, wo) = s.out();
    let (xp, dp) = (Planes::phases(cpu, ho, wo), Planes::same(cpu, ho, wo));
    let xtaps = Taps::phases(xp.layout(), s.k);
    let phases = dx_phases(dp.layout(), w, [s.ci, s.co, s.k])
        .map(|(taps, wab)| Forward::new(&dp, taps, wab.into(), s.co, s.ci));
    let phase_len = s.ci * ho * wo;
    let chunk = |dxc: &mut [MaybeUninit<f32>], [xc, dyc]: [&[f32]; 2], add: bool| {
        let mut wg = WeightGrad::new(&xp, &xtaps, s.ci, s.co);
        let mut xb = xp.buffer(if want_dw { 4 * s.ci } else { 0 });
        let mut db = dp.buffer(if want_dx { s.co } else { 0 });
        let mut tmp = vec![MaybeUninit::<f32>::uninit(); if want_dx { 4 * phase_len } else { 0 }];
        for (i, (xi, dyi)) in xc.chunks(in_len).zip(dyc.chunks(out_len)).enumerate() {
            if want_dw {
                let dst = xb.get_mut();
                fill_phases_plain(xp.layout(), xi, dst, s.ci, (s.h, s.w), s.k == 3);
                wg.add_image(xb.get(), dyi);
            }
            if want_dx {
                dp.fill(dyi, &mut db, None);
                for (f, t) in phases.iter().zip(tmp.chunks_mut(phase_len)) {
                    f.image(db.get(), t, false);
                }
                let tmp = tmp.as_slice() as *const [MaybeUninit<f32>] as *const [f32];
                // SAFETY: `Forward::image` wrote every element of the four phases; when adding,
                // `dx` is initialised (`InputGrad::run_chunked` hands it so).
                unsafe {
                    interleave_plain(
                        &*tmp,
                        &mut dxc[i * in_len..][..in_len],
                        s.ci,
                        (s.h, s.w),
                        add,
                    )
                };
            }
        }
        wg.into_dw()
    };
    // SAFETY: with a new input gradient `interleave_plain` writes every element of each image
    // of a chunk; when adding, it stores only the sums of the floats it loads from the buffer
    // and the (initialised) phase results.
    unsafe { dx.run_chunked(s.n, [in_len, out_len], [x, dy], chunk) }
}
