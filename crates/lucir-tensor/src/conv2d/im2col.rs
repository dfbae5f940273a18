//! Column matrices of the convolution: im2col (a general one and a block-copy one for
//! stride-1 "same" convolutions) and its adjoint col2im.

use super::Dims;
use crate::Float;

/// im2col of a "same" stride-1 convolution: per (channel, ki, kj) one block copy of the image
/// shifted by (ki − pad)·W + (kj − pad), then zeros where the shift left the image.
fn im2col_same<T: Float>(d: &Dims, x: &[T], col: &mut [T], ld: usize) {
    let (h, w) = (d.h, d.w);
    let hw = h * w;
    for c in 0..d.ci {
        let plane = &x[c * hw..(c + 1) * hw];
        for ki in 0..d.kh {
            for kj in 0..d.kw {
                let row = &mut col[((c * d.kh + ki) * d.kw + kj) * ld..][..hw];
                let dy = ki as isize - d.pad as isize;
                let dx = kj as isize - d.pad as isize;
                let off = dy * w as isize + dx;
                // Destination positions t with 0 ≤ t + off < H·W.
                let lo = (-off).clamp(0, hw as isize) as usize;
                let hi = (hw as isize - off).clamp(0, hw as isize) as usize;
                row[..lo].fill(T::zero());
                row[hi.max(lo)..].fill(T::zero());
                if lo < hi {
                    let s = (lo as isize + off) as usize;
                    row[lo..hi].copy_from_slice(&plane[s..s + hi - lo]);
                }
                // Columns that wrapped around a row edge are padding.
                if dx != 0 {
                    let (c0, c1) = if dx < 0 {
                        (0, ((-dx) as usize).min(w))
                    } else {
                        (w.saturating_sub(dx as usize), w)
                    };
                    // Column-major order: a strided store per image row, not a `memset`
                    // call per image row (which is what the row-major loop compiles to).
                    for col in c0..c1 {
                        for oy in 0..h {
                            row[oy * w + col] = T::zero();
                        }
                    }
                }
            }
        }
    }
}

/// Unfolds one image (Ci×H×W) into its column matrix ((Ci·KH·KW) × (Ho·Wo)), row `r` at
/// `col[r·ld..]` (`ld ≥ Ho·Wo`: the columns of several images can sit side by side).
pub(super) fn im2col<T: Float>(d: &Dims, x: &[T], col: &mut [T], ld: usize) {
    if d.same_shape() {
        return im2col_same(d, x, col, ld);
    }
    for c in 0..d.ci {
        let plane = &x[c * d.h * d.w..(c + 1) * d.h * d.w];
        for ki in 0..d.kh {
            for kj in 0..d.kw {
                let row = ((c * d.kh + ki) * d.kw + kj) * ld;
                let (lo, hi) = d.valid_range(kj, d.w, d.wo);
                for oy in 0..d.ho {
                    let dst = &mut col[row + oy * d.wo..row + (oy + 1) * d.wo];
                    let Some(iy) = d.src(oy, ki, d.h) else {
                        dst.fill(T::zero());
                        continue;
                    };
                    dst[..lo].fill(T::zero());
                    dst[hi..].fill(T::zero());
                    if lo == hi {
                        continue;
                    }
                    let first = iy * d.w + lo * d.stride + kj - d.pad;
                    if d.stride == 1 {
                        dst[lo..hi].copy_from_slice(&plane[first..first + hi - lo]);
                    } else {
                        for (j, v) in dst[lo..hi].iter_mut().enumerate() {
                            *v = plane[first + j * d.stride];
                        }
                    }
                }
            }
        }
    }
}

/// Folds a column matrix back onto one image, summing overlaps (the adjoint of [`im2col`]).
/// `x` must hold zeros on entry.
pub(super) fn col2im<T: Float>(d: &Dims, col: &[T], x: &mut [T]) {
    let hw = d.hw_out();
    for c in 0..d.ci {
        let plane = &mut x[c * d.h * d.w..(c + 1) * d.h * d.w];
        for ki in 0..d.kh {
            for kj in 0..d.kw {
                let row = ((c * d.kh + ki) * d.kw + kj) * hw;
                let (lo, hi) = d.valid_range(kj, d.w, d.wo);
                if lo == hi {
                    continue;
                }
                for oy in 0..d.ho {
                    let Some(iy) = d.src(oy, ki, d.h) else {
                        continue;
                    };
                    let src = &col[row + oy * d.wo + lo..row + oy * d.wo + hi];
                    let first = iy * d.w + lo * d.stride + kj - d.pad;
                    if d.stride == 1 {
                        for (o, v) in plane[first..first + hi - lo].iter_mut().zip(src) {
                            *o += *v;
                        }
                    } else {
                        for (j, v) in src.iter().enumerate() {
                            plane[first + j * d.stride] += *v;
                        }
                    }
                }
            }
        }
    }
}
