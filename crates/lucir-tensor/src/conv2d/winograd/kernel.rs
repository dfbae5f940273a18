//! The transforms of the 3×3 kernels (see the parent module): `U = G g Gᵀ` of the weights and
//! `dw = Gᵀ S G` of the summed products, for 2×2 and 4×4 output tiles. Scalar code: they run
//! once per kernel and call.

/// `G g Gᵀ` of a 3×3 kernel (row-major), row-major 4×4.
pub(super) fn transform_kernel(g: &[f32]) -> [f32; 16] {
    // G g: rows g0, (g0 + g1 + g2)/2, (g0 − g1 + g2)/2, g2 of the kernel's rows.
    let mut gg = [[0.0f32; 3]; 4];
    for k in 0..3 {
        let (a, b, c) = (g[k], g[3 + k], g[6 + k]);
        gg[0][k] = a;
        gg[1][k] = (a + b + c) * 0.5;
        gg[2][k] = (a - b + c) * 0.5;
        gg[3][k] = c;
    }
    let mut u = [0.0f32; 16];
    for (i, r) in gg.iter().enumerate() {
        let (a, b, c) = (r[0], r[1], r[2]);
        u[4 * i] = a;
        u[4 * i + 1] = (a + b + c) * 0.5;
        u[4 * i + 2] = (a - b + c) * 0.5;
        u[4 * i + 3] = c;
    }
    u
}

/// F(4×4, 3×3)'s `G` (6×3): the kernel's values at 0, ±1, ±2 and ∞, scaled.
const G4: [[f32; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// `G g Gᵀ` of a 3×3 kernel for F(4×4, 3×3), row-major 6×6.
pub(super) fn transform_kernel4(g: &[f32]) -> [f32; 36] {
    let mut gg = [[0.0f32; 3]; 6];
    for (i, gi) in G4.iter().enumerate() {
        for k in 0..3 {
            gg[i][k] = gi[0] * g[k] + gi[1] * g[3 + k] + gi[2] * g[6 + k];
        }
    }
    let mut u = [0.0f32; 36];
    for i in 0..6 {
        for (j, gj) in G4.iter().enumerate() {
            u[6 * i + j] = gg[i][0] * gj[0] + gg[i][1] * gj[1] + gg[i][2] * gj[2];
        }
    }
    u
}

/// `Gᵀ S G` for F(4×4, 3×3): the 3×3 weight gradient from the 6×6 summed products `s`.
fn finish_kernel4(s: &[f32; 36]) -> [f32; 9] {
    let mut t = [[0.0f32; 6]; 3];
    for (k, tk) in t.iter_mut().enumerate() {
        for (j, v) in tk.iter_mut().enumerate() {
            *v = (0..6).map(|i| G4[i][k] * s[6 * i + j]).sum();
        }
    }
    let mut dw = [0.0f32; 9];
    for k in 0..3 {
        for l in 0..3 {
            dw[3 * k + l] = (0..6).map(|j| t[k][j] * G4[j][l]).sum();
        }
    }
    dw
}

/// `dw[o, c] = Gᵀ S G` of the summed products, `S_ξ[c, o]` at `(ξ·Ci + c)·co16 + o`: Co × Ci
/// × 3×3, for tiles of side `m`.
pub(super) fn finish_weight_grad(
    s: &[f32],
    ci: usize,
    co: usize,
    co16: usize,
    m: usize,
) -> Vec<f32> {
    let mut dw = vec![0.0f32; co * ci * 9];
    for o in 0..co {
        for c in 0..ci {
            if m == 4 {
                let m: [f32; 36] = std::array::from_fn(|xi| s[(xi * ci + c) * co16 + o]);
                dw[(o * ci + c) * 9..][..9].copy_from_slice(&finish_kernel4(&m));
                continue;
            }
            let m: [f32; 16] = std::array::from_fn(|xi| s[(xi * ci + c) * co16 + o]);
            // Gᵀ m: rows m0 + (m1 + m2)/2, (m1 − m2)/2, (m1 + m2)/2 + m3 of m's rows.
            let mut t = [[0.0f32; 4]; 3];
            for j in 0..4 {
                let (a, b, c, d) = (m[j], m[4 + j], m[8 + j], m[12 + j]);
                t[0][j] = a + (b + c) * 0.5;
                t[1][j] = (b - c) * 0.5;
                t[2][j] = (b + c) * 0.5 + d;
            }
            let out = &mut dw[(o * ci + c) * 9..][..9];
            for (k, r) in t.iter().enumerate() {
                let (a, b, c, d) = (r[0], r[1], r[2], r[3]);
                out[3 * k] = a + (b + c) * 0.5;
                out[3 * k + 1] = (b - c) * 0.5;
                out[3 * k + 2] = (b + c) * 0.5 + d;
            }
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::{finish_weight_grad, transform_kernel, transform_kernel4, G4};

    /// `G g Gᵀ` then `Gᵀ (·) G` of a one-hot 4×4 matrix are the transforms' definitions, checked
    /// entry by entry against the matrices written out.
    #[test]
    fn kernel_transforms_match_their_matrices() {
        let gm = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        let g: Vec<f32> = (0..9).map(|i| (i as f32 * 0.37).sin()).collect();
        let u = transform_kernel(&g);
        for i in 0..4 {
            for j in 0..4 {
                let mut want = 0.0f64;
                for k in 0..3 {
                    for l in 0..3 {
                        want += gm[i][k] * f64::from(g[3 * k + l]) * gm[j][l];
                    }
                }
                assert!((f64::from(u[4 * i + j]) - want).abs() < 1e-6, "U[{i}][{j}]");
            }
        }
        let s: Vec<f32> = (0..16).map(|i| (i as f32 * 0.61).cos()).collect();
        let dw = finish_weight_grad(&s, 1, 1, 1, 2);
        for k in 0..3 {
            for l in 0..3 {
                let mut want = 0.0f64;
                for i in 0..4 {
                    for j in 0..4 {
                        want += gm[i][k] * f64::from(s[4 * i + j]) * gm[j][l];
                    }
                }
                assert!(
                    (f64::from(dw[3 * k + l]) - want).abs() < 1e-6,
                    "dw[{k}][{l}]"
                );
            }
        }
    }

    /// The same for 4×4 tiles: `G g Gᵀ` and `Gᵀ S G` with F(4×4, 3×3)'s `G`, in f64.
    #[test]
    fn kernel_transforms_4x4_match_their_matrices() {
        let g: Vec<f32> = (0..9).map(|i| (i as f32 * 0.37).sin()).collect();
        let u = transform_kernel4(&g);
        let gm = |i: usize, k: usize| f64::from(G4[i][k]);
        for i in 0..6 {
            for j in 0..6 {
                let mut want = 0.0f64;
                for k in 0..3 {
                    for l in 0..3 {
                        want += gm(i, k) * f64::from(g[3 * k + l]) * gm(j, l);
                    }
                }
                assert!((f64::from(u[6 * i + j]) - want).abs() < 1e-6, "U[{i}][{j}]");
            }
        }
        let s: Vec<f32> = (0..36).map(|i| (i as f32 * 0.61).cos()).collect();
        let dw = finish_weight_grad(&s, 1, 1, 1, 4);
        for k in 0..3 {
            for l in 0..3 {
                let mut want = 0.0f64;
                for i in 0..6 {
                    for j in 0..6 {
                        want += gm(i, k) * f64::from(s[6 * i + j]) * gm(j, l);
                    }
                }
                assert!(
                    (f64::from(dw[3 * k + l]) - want).abs() < 1e-6,
                    "dw[{k}][{l}]"
                );
            }
        }
    }
}
