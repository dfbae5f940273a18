//! What this CPU can run, found out at run time: [`Avx512`] and [`Avx2Fma`], the tokens without
//! which no AVX-512 or AVX2 kernel can be called or built, and [`Version`], the version of the slice loops of
//! `simd` this CPU runs (in tests, one forced on a thread).

use std::sync::OnceLock;

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

/// Proof that this CPU runs AVX2 and FMA instructions: the token of the 8-lane direct
/// convolution kernels, which run the 3×3 stride-1 layers where AVX-512 is missing (AMD's Zen 3
/// and earlier, Intel's client cores). Built, like [`Avx512`], only by asking the CPU at run
/// time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx2Fma(());

impl Avx2Fma {
    /// The token if this CPU has AVX2 and FMA; `None` otherwise, and always off x86-64.
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Some(Self(()));
        }
        None
    }
}

/// Proof that this CPU runs the AVX-512 bf16 dot product `vdpbf16ps` (AVX512-BF16) beside
/// AVX-512F, BW and VL: the token of the bf16 convolution kernels ([`crate::Precision::Bf16`]),
/// built, like [`Avx512`], only by asking the CPU at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx512Bf16(Avx512);

impl Avx512Bf16 {
    /// The token if this CPU has AVX512-BF16, AVX-512F, BW and VL; `None` otherwise, and
    /// always off x86-64.
    pub fn detect() -> Option<Self> {
        let f = Avx512::detect()?;
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512bf16") && has!("avx512bw") && has!("avx512vl") {
                return Some(Self(f));
            }
        }
        let _ = f;
        None
    }

    /// The AVX-512F token it includes.
    pub fn avx512(self) -> Avx512 {
        self.0
    }
}

/// The versions the slice loops of `simd` are compiled in, widest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    /// AVX-512F + AVX-512VL.
    Avx512,
    /// AVX2 + FMA.
    Avx2Fma,
    /// Whatever the build targets (baseline x86-64 by default).
    Portable,
}

impl Version {
    /// Every version, widest first.
    #[cfg(test)]
    pub(crate) const ALL: [Version; 3] = [Version::Avx512, Version::Avx2Fma, Version::Portable];

    /// Whether this CPU runs the version.
    pub(crate) fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Version::Avx512 => has!("avx512f") && has!("avx512vl"),
                Version::Avx2Fma => has!("avx2") && has!("fma"),
                Version::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Version::Portable
        }
    }

    /// The widest version this CPU runs, found once.
    pub(crate) fn detected() -> Self {
        static DETECTED: OnceLock<Version> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            [Version::Avx512, Version::Avx2Fma]
                .into_iter()
                .find(|v| v.available())
                .unwrap_or(Version::Portable)
        })
    }

    /// The version the slice loops run: [`Version::detected`], or in tests the one that
    /// [`Version::force`] set on this thread.
    #[inline]
    pub(crate) fn current() -> Self {
        #[cfg(test)]
        if let Some(v) = FORCED.with(std::cell::Cell::get) {
            return v;
        }
        Self::detected()
    }

    /// The version's name: `avx512`, `avx2-fma` or `baseline`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Version::Avx512 => "avx512",
            Version::Avx2Fma => "avx2-fma",
            Version::Portable => "baseline",
        }
    }

    /// Runs `f` with the slice loops called on this thread forced to this version; `None`,
    /// without running `f`, where the CPU lacks it.
    #[cfg(test)]
    pub(crate) fn force<R>(self, f: impl FnOnce() -> R) -> Option<R> {
        if !self.available() {
            return None;
        }
        let before = FORCED.replace(Some(self));
        let r = f();
        FORCED.set(before);
        Some(r)
    }
}

#[cfg(test)]
thread_local! {
    /// The version [`Version::force`] set on this thread, if any.
    static FORCED: std::cell::Cell<Option<Version>> = const { std::cell::Cell::new(None) };
}
