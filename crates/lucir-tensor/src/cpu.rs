//! What this CPU can run, found out at run time: [`Avx512`], the token without which no
//! AVX-512 kernel can be called or built.

/// Proof that this CPU runs AVX-512F instructions.
///
/// Its only constructor, [`Avx512::detect`], asks the CPU at run time, so a value of this type
/// exists only where those instructions do. The hand-written AVX-512 kernels (the direct
/// convolutions) take one to be called or built, and their `unsafe` blocks rely on it, not on
/// a check some caller up the chain is trusted to have made. It is a zero-sized `Copy` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx512(());

impl Avx512 {
    /// The token if this CPU has AVX-512F; `None` otherwise, and always off x86-64.
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(Self(()));
        }
        None
    }
}
