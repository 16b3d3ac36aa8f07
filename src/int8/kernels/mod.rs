//! The loops the int8 ops run, per architecture, and the one place that asks the CPU what it
//! can run.
//!
//! A [`KernelSet`] names one family of CPUs: `portable` (plain Rust loops and tract-linalg's
//! generic matrix kernels, the reference), `x86-avx2`, `x86-avx512` and `x86-avx512-vnni` (this
//! crate's x86 kernels, the last with `vpdpbusd` matrix products and depthwise layers, and
//! tract-linalg's native ones), `x86-avx512-vnni-vbmi` (the VNNI set whose depthwise layers
//! gather their taps with `vpermb` instead of laying them out in memory), `aarch64-neon` (this crate's matrix product and depthwise
//! kernels on `smull`/`smlal` pairs, which requantize in their registers, and the other loops
//! compiled for aarch64, whose vectors are NEON) and `aarch64-neon-sdot` (the same with `sdot`
//! for the matrix product and the depthwise layers). The rewrite picks one set for a member (the best
//! this CPU runs, or the one `DERMEDGE_INT8_KERNELS` names) and every op it builds keeps it, so
//! a plan says which code it runs. Every set writes the same integers as [`KernelSet::PORTABLE`];
//! only the instructions differ.

#[cfg(target_arch = "aarch64")]
mod aarch64;
pub mod depthwise;
pub mod fixed_order;
pub mod general_depthwise;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub mod grouped_depthwise;
pub mod matmul;
pub mod quads;
pub mod shifted_depthwise;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub mod triple_depthwise;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::fmt;
use std::sync::OnceLock;

/// The environment variable that forces a kernel set (for tests and benchmarks).
pub const KERNELS_VAR: &str = "DERMEDGE_INT8_KERNELS";

/// What this CPU can run, asked once per process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CpuFeatures {
    avx2_fma: bool,
    avx512_bw: bool,
    avx512_vnni: bool,
    avx512_vbmi: bool,
    dotprod: bool,
}

impl CpuFeatures {
    fn get() -> CpuFeatures {
        static PROBED: OnceLock<CpuFeatures> = OnceLock::new();
        *PROBED.get_or_init(CpuFeatures::probe)
    }

    #[cfg(target_arch = "x86_64")]
    fn probe() -> CpuFeatures {
        let avx2_fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let avx512_bw =
            avx2_fma && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw");
        CpuFeatures {
            avx2_fma,
            avx512_bw,
            avx512_vnni: avx512_bw && is_x86_feature_detected!("avx512vnni"),
            avx512_vbmi: avx512_bw && is_x86_feature_detected!("avx512vbmi"),
            dotprod: false,
        }
    }

    #[cfg(target_arch = "aarch64")]
    fn probe() -> CpuFeatures {
        CpuFeatures {
            dotprod: std::arch::is_aarch64_feature_detected!("dotprod"),
            ..CpuFeatures::default()
        }
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn probe() -> CpuFeatures {
        CpuFeatures::default()
    }
}

/// The families of kernel sets, from the least to the most specific for a CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Family {
    Portable,
    X86Avx2,
    X86Avx512,
    X86Avx512Vnni,
    X86Avx512VnniVbmi,
    Aarch64Neon,
    Aarch64NeonSdot,
}

const FAMILIES: [Family; 7] = [
    Family::Portable,
    Family::X86Avx2,
    Family::X86Avx512,
    Family::X86Avx512Vnni,
    Family::X86Avx512VnniVbmi,
    Family::Aarch64Neon,
    Family::Aarch64NeonSdot,
];

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::Portable => "portable",
            Family::X86Avx2 => "x86-avx2",
            Family::X86Avx512 => "x86-avx512",
            Family::X86Avx512Vnni => "x86-avx512-vnni",
            Family::X86Avx512VnniVbmi => "x86-avx512-vnni-vbmi",
            Family::Aarch64Neon => "aarch64-neon",
            Family::Aarch64NeonSdot => "aarch64-neon-sdot",
        }
    }

    fn runs_on(self, cpu: CpuFeatures) -> bool {
        match self {
            Family::Portable => true,
            Family::X86Avx2 => cpu.avx2_fma,
            Family::X86Avx512 => cpu.avx512_bw,
            Family::X86Avx512Vnni => cpu.avx512_vnni,
            Family::X86Avx512VnniVbmi => cpu.avx512_vnni && cpu.avx512_vbmi,
            // NEON (Advanced SIMD) is part of every aarch64 Linux target.
            Family::Aarch64Neon => cfg!(target_arch = "aarch64"),
            Family::Aarch64NeonSdot => cfg!(target_arch = "aarch64") && cpu.dotprod,
        }
    }
}

/// A set of kernels for the int8 ops that this CPU can run: a value exists only for a set the
/// CPU has the instructions of.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelSet(Family);

/// A kernel set that cannot be used on this CPU, or a name that is none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{KERNELS_VAR}={name}: {reason}; kernel sets this CPU runs: {runnable} (unset it to use the best)"
)]
pub struct KernelSetError {
    name: String,
    reason: &'static str,
    runnable: String,
}

impl KernelSet {
    /// Plain Rust loops, on every CPU: the reference the other sets match bit for bit.
    pub const PORTABLE: KernelSet = KernelSet(Family::Portable);

    /// Every set this CPU runs, the portable one first.
    pub fn runnable() -> Vec<KernelSet> {
        let cpu = CpuFeatures::get();
        FAMILIES
            .into_iter()
            .filter(|f| f.runs_on(cpu))
            .map(KernelSet)
            .collect()
    }

    /// The fastest set this CPU runs.
    pub fn best() -> KernelSet {
        KernelSet::runnable()
            .into_iter()
            .max()
            .unwrap_or(KernelSet::PORTABLE)
    }

    /// The set called `name`, when this CPU runs it.
    pub fn named(name: &str) -> Result<KernelSet, KernelSetError> {
        let error = |reason| KernelSetError {
            name: name.to_string(),
            reason,
            runnable: KernelSet::runnable()
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let family = FAMILIES
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| error("no kernel set has this name"))?;
        if !family.runs_on(CpuFeatures::get()) {
            return Err(error("this CPU lacks its instructions"));
        }
        Ok(KernelSet(family))
    }

    /// The set the rewrite uses: the one `DERMEDGE_INT8_KERNELS` names, else [`KernelSet::best`].
    /// Read once per process.
    pub fn configured() -> Result<KernelSet, KernelSetError> {
        static CONFIGURED: OnceLock<Result<KernelSet, KernelSetError>> = OnceLock::new();
        CONFIGURED
            .get_or_init(|| match std::env::var(KERNELS_VAR) {
                Ok(name) if !name.is_empty() => KernelSet::named(&name),
                _ => Ok(KernelSet::best()),
            })
            .clone()
    }

    /// The set's name, as `inspect` prints it and `DERMEDGE_INT8_KERNELS` takes it.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// Whether the x86-64 AVX2 and FMA kernels may run.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn has_avx2_fma(self) -> bool {
        matches!(
            self.0,
            Family::X86Avx2 | Family::X86Avx512 | Family::X86Avx512Vnni | Family::X86Avx512VnniVbmi
        )
    }

    /// Whether AVX-512 F and BW may run.
    fn has_avx512_bw(self) -> bool {
        matches!(
            self.0,
            Family::X86Avx512 | Family::X86Avx512Vnni | Family::X86Avx512VnniVbmi
        )
    }

    /// Whether this crate's aarch64 NEON kernels may run.
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    fn has_neon(self) -> bool {
        matches!(self.0, Family::Aarch64Neon | Family::Aarch64NeonSdot)
    }

    /// Whether the aarch64 dot-product instructions may run.
    fn has_dotprod(self) -> bool {
        self.0 == Family::Aarch64NeonSdot
    }

    /// Whether AVX-512 VNNI may run.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn has_avx512_vnni(self) -> bool {
        matches!(self.0, Family::X86Avx512Vnni | Family::X86Avx512VnniVbmi)
    }

    /// Whether AVX-512 VBMI (byte permutes) may run, with VNNI.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn has_avx512_vbmi(self) -> bool {
        self.0 == Family::X86Avx512VnniVbmi
    }

    /// Runs `kernel`, compiled for this set's vector instructions: the loops of the int8 ops are
    /// written to vectorize, and wider vectors cut their instructions without changing a value
    /// (Rust never fuses a multiply and an add unless asked to).
    pub fn run<L: VectorLoop>(self, kernel: L) {
        #[cfg(target_arch = "x86_64")]
        {
            if self.has_avx512_bw() {
                // SAFETY: a KernelSet of this family exists only where the CPU has AVX-512 F
                // and BW, AVX2 and FMA (see `Family::runs_on`).
                return unsafe { x86::run_avx512(kernel) };
            }
            if self.has_avx2_fma() {
                // SAFETY: as above, for AVX2 and FMA.
                return unsafe { x86::run_avx2(kernel) };
            }
        }
        kernel.run()
    }

    /// Runs `kernel` on this set's [`FloatVector`](fixed_order::FloatVector)s: 16 lanes on the
    /// AVX-512 sets, 8 on `x86-avx2`, NEON's 4 on the aarch64 sets, four plain lanes on
    /// `portable`. The fixed-order sums give the same bits on each.
    pub fn run_float<L: fixed_order::FloatLoop>(self, kernel: L) {
        #[cfg(target_arch = "x86_64")]
        {
            if self.has_avx512_bw() {
                // SAFETY: a KernelSet of this family exists only where the CPU has AVX-512 F
                // and BW, AVX2 and FMA (see `Family::runs_on`).
                return unsafe { x86::float_vectors::run_float_avx512(kernel) };
            }
            if self.has_avx2_fma() {
                // SAFETY: as above, for AVX2 and FMA.
                return unsafe { x86::float_vectors::run_float_avx2(kernel) };
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if self.has_neon() {
                return aarch64::float_vectors::run_float_neon(kernel);
            }
        }
        kernel.run::<fixed_order::PlainLanes>()
    }
}

impl fmt::Debug for KernelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for KernelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `(row tile, column panel)` pairs of a tiled product, the larger operand outside: it is
/// read once, the smaller one again for each of its tiles.
pub(crate) fn tile_order(
    row_tiles: usize,
    panels: usize,
    rows_outside: bool,
) -> impl Iterator<Item = (usize, usize)> {
    let (outer, inner) = if rows_outside {
        (row_tiles, panels)
    } else {
        (panels, row_tiles)
    };
    (0..outer)
        .flat_map(move |o| (0..inner).map(move |i| if rows_outside { (o, i) } else { (i, o) }))
}

/// A loop that [`KernelSet::run`] compiles once per vector width. `run` must be
/// `#[inline(always)]`, so that its body is compiled with the caller's target features.
pub trait VectorLoop {
    fn run(self);
}

/// Outputs smaller than this run on the calling thread: waking the pool costs more.
const PARALLEL_MIN_VALUES: usize = 64 * 1024;

/// Calls `task(index, chunk)` on consecutive `chunk_len` chunks of `out`, on the threads of
/// tract's current executor (`--threads`), so the int8 ops scale like tract's own kernels; small
/// outputs stay on the calling thread.
pub fn for_each_chunk<T: Send>(
    out: &mut [T],
    chunk_len: usize,
    task: impl Fn(usize, &mut [T]) + Send + Sync,
) {
    use rayon::prelude::*;
    use tract_linalg::multithread::{current_tract_executor, Executor};
    let chunk_len = chunk_len.max(1);
    match current_tract_executor() {
        Executor::MultiThread(pool)
            if out.len() >= PARALLEL_MIN_VALUES && out.len() > chunk_len =>
        {
            pool.install(|| {
                out.par_chunks_mut(chunk_len)
                    .enumerate()
                    .for_each(|(i, chunk)| task(i, chunk))
            })
        }
        _ => out
            .chunks_mut(chunk_len)
            .enumerate()
            .for_each(|(i, chunk)| task(i, chunk)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_portable_set_always_runs_and_names_round_trip() {
        let runnable = KernelSet::runnable();
        assert_eq!(runnable[0], KernelSet::PORTABLE);
        assert!(runnable.contains(&KernelSet::best()));
        for set in runnable {
            assert_eq!(KernelSet::named(set.name()), Ok(set));
        }
    }

    #[test]
    fn an_unknown_or_unrunnable_set_is_refused_with_the_runnable_ones() {
        let error = KernelSet::named("x86-sse9").unwrap_err().to_string();
        assert!(error.contains("DERMEDGE_INT8_KERNELS=x86-sse9"), "{error}");
        assert!(error.contains("portable"), "{error}");
        let unrunnable = FAMILIES
            .into_iter()
            .find(|f| !f.runs_on(CpuFeatures::get()));
        if let Some(family) = unrunnable {
            let error = KernelSet::named(family.name()).unwrap_err().to_string();
            assert!(error.contains("lacks its instructions"), "{error}");
        }
    }
}
