//! Int8 matrix products for the pointwise convolutions: tract-linalg's integer kernels and this
//! crate's x86-64 pair and quad products, the fastest chosen per shape within an x86 kernel set;
//! on aarch64 the `sdot` product on the dot-product set and tract-linalg's own rule on the NEON
//! one; and the requantization of their i32 sums (inside the registers of the `sdot` and quad
//! products).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tract_core::internal::*;
use tract_linalg::mmm::{AsInputValue, FusedSpec, MMMInputValue, MatMatMul};
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_linalg::{MmmDispatch, WeightType};

#[cfg(target_arch = "aarch64")]
use super::aarch64::sdot_product::{self, SdotColumns, SdotRows, TileInstructions};
#[cfg(target_arch = "x86_64")]
use super::x86::pair_product::{self, PairColumns, PairRows};
#[cfg(target_arch = "x86_64")]
use super::x86::quad_product::{self, QuadPanels, QuadRows};
use super::{for_each_chunk, KernelSet, VectorLoop};
use crate::int8::grid::OutputGrid;
use crate::int8::layout::Layout;

/// Output values one thread requantizes at a time.
const REQUANT_VALUES_PER_TASK: usize = 16 * 1024;

/// An int8 matrix read through strides: element `(i, j)` is `values[i * strides.0 + j * strides.1]`.
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    pub values: &'a [i8],
    pub shape: (usize, usize),
    pub strides: (usize, usize),
}

impl<'a> Strided<'a> {
    /// The first `rows * columns` values of `values` as a row-major matrix.
    pub fn row_major(values: &'a [i8], rows: usize, columns: usize) -> Strided<'a> {
        Strided {
            values,
            shape: (rows, columns),
            strides: (columns, 1),
        }
    }

    /// The same values read as the transposed matrix.
    pub fn transposed(self) -> Strided<'a> {
        Strided {
            values: self.values,
            shape: (self.shape.1, self.shape.0),
            strides: (self.strides.1, self.strides.0),
        }
    }

    /// Element `(i, j)`.
    pub fn at(&self, i: usize, j: usize) -> i8 {
        self.values[i * self.strides.0 + j * self.strides.1]
    }
}

/// The int8 matrix kernel chosen for one `(m, k, n)` shape.
#[derive(Debug, Clone)]
pub enum KernelChoice {
    /// One of tract-linalg's integer kernels, with the index of its int8 packing.
    Tract {
        kernel: Box<dyn MatMatMul>,
        packing: usize,
    },
    /// This crate's AVX2 pair product ([`pair_product`]).
    #[cfg(target_arch = "x86_64")]
    Pairs,
    /// This crate's AVX-512 VNNI quad product ([`quad_product`]).
    #[cfg(target_arch = "x86_64")]
    Quads,
    /// This crate's aarch64 matrix product ([`sdot_product`]) on `sdot` or on plain NEON.
    #[cfg(target_arch = "aarch64")]
    Arm(TileInstructions),
}

impl KernelChoice {
    /// The kernel's name.
    pub fn name(&self) -> &str {
        match self {
            KernelChoice::Tract { kernel, .. } => kernel.name(),
            #[cfg(target_arch = "x86_64")]
            KernelChoice::Pairs => "dermedge_avx2_pairs_i32_6x16",
            #[cfg(target_arch = "x86_64")]
            KernelChoice::Quads => "dermedge_avx512vnni_quads_i32_8x32",
            #[cfg(target_arch = "aarch64")]
            KernelChoice::Arm(instructions) => instructions.kernel_name(),
        }
    }
}

fn int8_packing(kernel: &dyn MatMatMul) -> Option<usize> {
    let int8 = WeightType::Plain(DatumType::I8);
    kernel
        .packings()
        .iter()
        .position(|(a, b)| a.precursor() == int8 && b.precursor() == int8)
}

/// tract-linalg's kernels that belong to `set`: the generic ones for the portable set, else the
/// ones written for the CPU, without AVX-512 below the AVX-512 sets and without the arm64
/// dot-product ones below the aarch64 dot-product set.
fn tract_kernels(set: KernelSet) -> Vec<KernelChoice> {
    MmmDispatch::native()
        .runnable()
        .iter()
        .filter(|kernel| kernel.internal_type() == DatumType::I32 && !kernel.emulated())
        .filter(|kernel| match kernel.arch() {
            None => set == KernelSet::PORTABLE,
            Some(_) => {
                set != KernelSet::PORTABLE
                    && (set.has_avx512_bw() || !kernel.name().contains("avx512"))
                    && (set.has_dotprod() || !kernel.name().ends_with("_dot"))
            }
        })
        .filter_map(|kernel| {
            Some(KernelChoice::Tract {
                packing: int8_packing(&**kernel)?,
                kernel: kernel.clone(),
            })
        })
        .collect()
}

/// tract-linalg's arm64 NEON integer kernel that this crate falls back to for weights holding
/// -128.
#[cfg(target_arch = "aarch64")]
const ARM64_NEON_KERNEL: &str = "arm64simd_mmm_i32_8x8";

/// tract-linalg's runnable integer kernel called `name`, with its int8 packing.
#[cfg(target_arch = "aarch64")]
fn tract_kernel_named(name: &str) -> Option<KernelChoice> {
    let kernel = MmmDispatch::native()
        .runnable()
        .iter()
        .find(|kernel| kernel.name() == name)?
        .clone();
    Some(KernelChoice::Tract {
        packing: int8_packing(&*kernel)?,
        kernel,
    })
}

/// Seconds for one `m x k` by `k x n` product on `choice` as a layer runs it
/// ([`PackedWeights::multiply_int8`] on `set`). The best of three runs.
fn time_kernel(
    set: KernelSet,
    choice: &KernelChoice,
    m: usize,
    k: usize,
    n: usize,
) -> TractResult<f64> {
    let weights = Tensor::zero::<i8>(&[m, k])?;
    let packed = PackedWeights::new(choice.clone(), &weights, Layout::ChannelsFirst)?;
    let scales = ChannelScales::new(vec![1.0; m], vec![0.0; m])?;
    let grid = OutputGrid::new(1.0, 128, f32::NEG_INFINITY, f32::INFINITY);
    let mut out = vec![0i8; m * n];
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let input = Tensor::zero::<i8>(&[k, n])?.into_tvalue();
        let started = Instant::now();
        packed.multiply_int8(input, Layout::ChannelsFirst, (&scales, grid), set, &mut out)?;
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// The fastest int8 kernel of `set` for an `m x k` by `k x n` product, timed once per set,
/// shape and process (members of an ensemble share their shapes), or `None` when the set has no
/// integer kernel with int8 packing. Results are exact integers whichever kernel runs.
pub fn choose_kernel(
    set: KernelSet,
    m: usize,
    k: usize,
    n: usize,
) -> TractResult<Option<KernelChoice>> {
    type Chosen = HashMap<(KernelSet, usize, usize, usize), KernelChoice>;
    static CHOSEN: OnceLock<Mutex<Chosen>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(Default::default);
    let key = (set, m, k, n);
    if let Some(choice) = chosen.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(Some(choice));
    }
    #[allow(unused_mut)]
    let mut candidates = tract_kernels(set);
    #[cfg(target_arch = "x86_64")]
    if set.has_avx2_fma() {
        candidates.push(KernelChoice::Pairs);
    }
    #[cfg(target_arch = "x86_64")]
    if set.has_avx512_vnni() {
        candidates.push(KernelChoice::Quads);
    }
    // This crate's aarch64 product packs activations with NEON transposes and requantizes its
    // sums in registers, where tract's kernels pack element by element and write i32 sums out
    // (fewer instructions per image under qemu): it alone runs on the aarch64 sets, so the
    // board runs what its instruction counts were measured on.
    #[cfg(target_arch = "aarch64")]
    if set.has_dotprod() {
        candidates = vec![KernelChoice::Arm(TileInstructions::Sdot)];
    } else if set.has_neon() {
        candidates = vec![KernelChoice::Arm(TileInstructions::NeonPairs)];
    }
    let mut best: Option<(f64, KernelChoice)> = None;
    let timed = candidates.len() > 1;
    for choice in candidates {
        let seconds = if timed {
            time_kernel(set, &choice, m, k, n)?
        } else {
            0.0
        };
        if best.as_ref().is_none_or(|(b, _)| seconds < *b) {
            best = Some((seconds, choice));
        }
    }
    Ok(best.map(|(_, choice)| {
        log::debug!("int8 kernel for {m}x{k}x{n} ({set}): {}", choice.name());
        if let Ok(mut chosen) = chosen.lock() {
            chosen.insert(key, choice.clone());
        }
        choice
    }))
}

/// The weights of a pointwise layer, packed for the kernel that computes its product.
#[derive(Debug, Clone)]
pub enum PackedWeights {
    /// On tract-linalg's kernel: the weights are its left operand for a channels-first output,
    /// its right one for a channels-last output.
    Tract {
        choice: KernelChoice,
        weights: Arc<Box<dyn MMMInputValue>>,
        output: Layout,
    },
    /// On the pair product, weights on the left: channels-first output.
    #[cfg(target_arch = "x86_64")]
    PairsWeightsLeft(Arc<PairRows>),
    /// On the pair product, weights on the right: channels-last output.
    #[cfg(target_arch = "x86_64")]
    PairsWeightsRight(Arc<PairColumns>),
    /// On the quad product, weights on the left: channels-first output.
    #[cfg(target_arch = "x86_64")]
    QuadsWeightsLeft(Arc<QuadRows>),
    /// On the quad product, weights on the right: channels-last output.
    #[cfg(target_arch = "x86_64")]
    QuadsWeightsRight(Arc<QuadPanels>),
    /// On the aarch64 product, weights on the left: channels-first output.
    #[cfg(target_arch = "aarch64")]
    ArmWeightsLeft(Arc<SdotRows>, TileInstructions),
    /// On the aarch64 product, weights on the right: channels-last output.
    #[cfg(target_arch = "aarch64")]
    ArmWeightsRight(Arc<SdotColumns>, TileInstructions),
}

impl PackedWeights {
    /// Packs `weights` (`[output_channels, input_channels]`) for `choice` and `output`.
    pub fn new(choice: KernelChoice, weights: &Tensor, output: Layout) -> TractResult<Self> {
        Ok(match &choice {
            KernelChoice::Tract { kernel, packing } => {
                let (a_format, b_format) = &kernel.packings()[*packing];
                let format = match output {
                    Layout::ChannelsFirst => a_format,
                    Layout::ChannelsLast => b_format,
                };
                let weights = Arc::new(format.prepare_one(weights, 1, 0)?);
                PackedWeights::Tract {
                    choice,
                    weights,
                    output,
                }
            }
            #[cfg(target_arch = "x86_64")]
            KernelChoice::Pairs => {
                let (co, ci) = (weights.shape()[0], weights.shape()[1]);
                let values = weights.try_as_plain_ram()?;
                let values = Strided::row_major(values.as_slice::<i8>()?, co, ci);
                match output {
                    Layout::ChannelsFirst => {
                        PackedWeights::PairsWeightsLeft(Arc::new(PairRows::new(values)))
                    }
                    Layout::ChannelsLast => PackedWeights::PairsWeightsRight(Arc::new(
                        PairColumns::new(values.transposed()),
                    )),
                }
            }
            #[cfg(target_arch = "x86_64")]
            KernelChoice::Quads => {
                let (co, ci) = (weights.shape()[0], weights.shape()[1]);
                let values = weights.try_as_plain_ram()?;
                let values = Strided::row_major(values.as_slice::<i8>()?, co, ci);
                match output {
                    Layout::ChannelsFirst => {
                        PackedWeights::QuadsWeightsLeft(Arc::new(QuadRows::weights(values)))
                    }
                    Layout::ChannelsLast => PackedWeights::QuadsWeightsRight(Arc::new(
                        QuadPanels::weights(values.transposed()),
                    )),
                }
            }
            #[cfg(target_arch = "aarch64")]
            KernelChoice::Arm(instructions) => {
                let (co, ci) = (weights.shape()[0], weights.shape()[1]);
                let values = weights.try_as_plain_ram()?;
                let values = Strided::row_major(values.as_slice::<i8>()?, co, ci);
                let instructions = *instructions;
                let packed = match output {
                    Layout::ChannelsFirst => {
                        let rows = SdotRows::weights(values, instructions);
                        rows.runs_on(instructions)
                            .then(|| PackedWeights::ArmWeightsLeft(Arc::new(rows), instructions))
                    }
                    Layout::ChannelsLast => {
                        let columns = SdotColumns::weights(values.transposed(), instructions);
                        columns.runs_on(instructions).then(|| {
                            PackedWeights::ArmWeightsRight(Arc::new(columns), instructions)
                        })
                    }
                };
                match packed {
                    Some(packed) => packed,
                    // Weights holding -128 (not from this project's quantizer) on tract's
                    // NEON kernel.
                    None => {
                        let fallback = tract_kernel_named(ARM64_NEON_KERNEL).ok_or_else(|| {
                            format_err!("no {ARM64_NEON_KERNEL} kernel for weights with -128")
                        })?;
                        PackedWeights::new(fallback, weights, output)?
                    }
                }
            }
        })
    }

    /// Name of the kernel the weights are packed for.
    pub fn kernel_name(&self) -> &str {
        match self {
            PackedWeights::Tract { choice, .. } => choice.name(),
            #[cfg(target_arch = "x86_64")]
            PackedWeights::PairsWeightsLeft(_) | PackedWeights::PairsWeightsRight(_) => {
                KernelChoice::Pairs.name()
            }
            #[cfg(target_arch = "x86_64")]
            PackedWeights::QuadsWeightsLeft(_) | PackedWeights::QuadsWeightsRight(_) => {
                KernelChoice::Quads.name()
            }
            #[cfg(target_arch = "aarch64")]
            PackedWeights::ArmWeightsLeft(_, instructions)
            | PackedWeights::ArmWeightsRight(_, instructions) => instructions.kernel_name(),
        }
    }

    /// `acc = weights x input` (`[co, n]`, for a channels-first output) or
    /// `input^T x weights^T` (`[n, co]`, channels-last), with `input` holding `ci x n` values
    /// in `input_layout`.
    pub fn multiply(
        &self,
        input: Tensor,
        input_layout: Layout,
        acc: &mut Tensor,
    ) -> TractResult<()> {
        let (rows, columns) = (acc.shape()[0], acc.shape()[1]);
        match self {
            PackedWeights::Tract {
                choice: KernelChoice::Tract { kernel, packing },
                weights,
                output,
            } => {
                let n = match output {
                    Layout::ChannelsFirst => columns,
                    Layout::ChannelsLast => rows,
                };
                let ci = input.len() / n.max(1);
                let (a_format, b_format) = &kernel.packings()[*packing];
                let activations = match output {
                    Layout::ChannelsFirst => b_format,
                    Layout::ChannelsLast => a_format,
                };
                let packed_input = match input_layout {
                    Layout::ChannelsFirst => {
                        activations.prepare_one(&input.into_shape(&[ci, n])?, 0, 1)?
                    }
                    Layout::ChannelsLast => {
                        activations.prepare_one(&input.into_shape(&[n, ci])?, 1, 0)?
                    }
                };
                let weights = AsInputValue::Borrowed(&***weights);
                let packed_input = AsInputValue::Borrowed(&*packed_input);
                let (a, b) = match output {
                    Layout::ChannelsFirst => (weights, packed_input),
                    Layout::ChannelsLast => (packed_input, weights),
                };
                // SAFETY: the packed operands and `acc` have the `rows x ci x columns` shape
                // the kernel is told.
                unsafe {
                    kernel.run(
                        rows,
                        columns,
                        &[
                            FusedSpec::AddMatMul {
                                a,
                                b,
                                packing: *packing,
                            },
                            FusedSpec::Store(kernel.c_view(Some(0), Some(1)).wrap(&acc.view_mut())),
                        ],
                    )
                }
            }
            #[cfg(target_arch = "x86_64")]
            PackedWeights::Tract { .. } => bail!("tract weights packed for another kernel"),
            #[cfg(target_arch = "x86_64")]
            PackedWeights::PairsWeightsLeft(weights) => {
                let values = input.try_as_plain_ram()?;
                let x = input_matrix(values.as_slice::<i8>()?, input_layout, columns);
                let mut out = acc.try_as_plain_ram_mut()?;
                pair_product::product(weights, &PairColumns::new(x), out.as_slice_mut::<i32>()?)
            }
            #[cfg(target_arch = "x86_64")]
            PackedWeights::PairsWeightsRight(weights) => {
                let values = input.try_as_plain_ram()?;
                let x = input_matrix(values.as_slice::<i8>()?, input_layout, rows);
                let mut out = acc.try_as_plain_ram_mut()?;
                let out = out.as_slice_mut::<i32>()?;
                pair_product::product(&PairRows::new(x.transposed()), weights, out)
            }
            #[cfg(target_arch = "x86_64")]
            PackedWeights::QuadsWeightsLeft(weights) => {
                let values = input.try_as_plain_ram()?;
                let x = input_matrix(values.as_slice::<i8>()?, input_layout, columns);
                let mut out = acc.try_as_plain_ram_mut()?;
                let x = QuadPanels::activations(x);
                quad_product::product(weights, &x, out.as_slice_mut::<i32>()?)
            }
            #[cfg(target_arch = "x86_64")]
            PackedWeights::QuadsWeightsRight(weights) => {
                let values = input.try_as_plain_ram()?;
                let x = input_matrix(values.as_slice::<i8>()?, input_layout, rows);
                let mut out = acc.try_as_plain_ram_mut()?;
                let x = QuadRows::activations(x.transposed());
                quad_product::product(&x, weights, out.as_slice_mut::<i32>()?)
            }
            #[cfg(target_arch = "aarch64")]
            PackedWeights::Tract { .. } => bail!("tract weights packed for another kernel"),
            #[cfg(target_arch = "aarch64")]
            PackedWeights::ArmWeightsLeft(weights, instructions) => {
                let values = input.try_as_plain_ram()?;
                let x = SdotColumns::new(
                    input_matrix(values.as_slice::<i8>()?, input_layout, columns),
                    *instructions,
                );
                let mut out = acc.try_as_plain_ram_mut()?;
                sdot_product::product(weights, &x, *instructions, out.as_slice_mut::<i32>()?)
            }
            #[cfg(target_arch = "aarch64")]
            PackedWeights::ArmWeightsRight(weights, instructions) => {
                let values = input.try_as_plain_ram()?;
                let x = input_matrix(values.as_slice::<i8>()?, input_layout, rows);
                let mut out = acc.try_as_plain_ram_mut()?;
                let x = SdotRows::new(x.transposed(), *instructions);
                sdot_product::product(&x, weights, *instructions, out.as_slice_mut::<i32>()?)
            }
        }
    }
}

impl PackedWeights {
    /// The layout of the product's output: channels-first for weights on the left.
    fn output_layout(&self) -> Layout {
        match self {
            PackedWeights::Tract { output, .. } => *output,
            #[cfg(target_arch = "x86_64")]
            PackedWeights::PairsWeightsLeft(_) | PackedWeights::QuadsWeightsLeft(_) => {
                Layout::ChannelsFirst
            }
            #[cfg(target_arch = "x86_64")]
            PackedWeights::PairsWeightsRight(_) | PackedWeights::QuadsWeightsRight(_) => {
                Layout::ChannelsLast
            }
            #[cfg(target_arch = "aarch64")]
            PackedWeights::ArmWeightsLeft(..) => Layout::ChannelsFirst,
            #[cfg(target_arch = "aarch64")]
            PackedWeights::ArmWeightsRight(..) => Layout::ChannelsLast,
        }
    }

    /// The layer's int8 output `out` (`scales.channels()` channels, in the layout the weights
    /// were packed for) from `input`: [`PackedWeights::multiply_requantized`] where the kernel
    /// fuses the requantization, else [`PackedWeights::multiply`] on the calling thread and
    /// `kernels`' [`Requantize`] pass on the thread pool.
    pub fn multiply_int8(
        &self,
        input: TValue,
        input_layout: Layout,
        (scales, grid): (&ChannelScales, OutputGrid),
        kernels: KernelSet,
        out: &mut [i8],
    ) -> TractResult<()> {
        if self.fuses_requantization() {
            return self.multiply_requantized(&input, input_layout, scales, grid, out);
        }
        let co = scales.channels();
        ensure!(co != 0 && out.len().is_multiple_of(co));
        let n = out.len() / co;
        let output = self.output_layout();
        let (rows, columns) = match output {
            Layout::ChannelsFirst => (co, n),
            Layout::ChannelsLast => (n, co),
        };
        // SAFETY: i32 is valid for any bits, and the product writes every value.
        let mut acc = unsafe { Tensor::uninitialized::<i32>(&[rows, columns])? };
        // One layer's product takes tens of microseconds: handing its panels to the thread pool
        // costs more than it saves (at 2 threads: 2.1-2.9 ms per member in pointwise layers
        // threaded, 1.65-1.86 ms on the calling thread).
        multithread_tract_scope(Executor::SingleThread, || {
            self.multiply(input.into_tensor(), input_layout, &mut acc)
        })?;
        let acc = acc.try_as_plain_ram()?;
        let acc = acc.as_slice::<i32>()?;
        match output {
            Layout::ChannelsFirst => {
                let rows_per_task = (REQUANT_VALUES_PER_TASK / n).max(1);
                for_each_chunk(out, rows_per_task * n, |task, out| {
                    let first = task * rows_per_task;
                    let rows = out.len() / n;
                    kernels.run(Requantize {
                        acc: &acc[first * n..(first + rows) * n],
                        multiplier: &scales.multiplier()[first..first + rows],
                        offset: &scales.offset()[first..first + rows],
                        grid,
                        layout: Layout::ChannelsFirst,
                        out,
                    })
                })
            }
            Layout::ChannelsLast => {
                let positions_per_task = (REQUANT_VALUES_PER_TASK / co).max(1);
                for_each_chunk(out, positions_per_task * co, |task, out| {
                    let first = task * positions_per_task * co;
                    kernels.run(Requantize {
                        acc: &acc[first..first + out.len()],
                        multiplier: scales.multiplier(),
                        offset: scales.offset(),
                        grid,
                        layout: Layout::ChannelsLast,
                        out,
                    })
                })
            }
        }
        Ok(())
    }

    /// Whether [`PackedWeights::multiply_requantized`] runs on these weights.
    pub fn fuses_requantization(&self) -> bool {
        #[cfg(target_arch = "aarch64")]
        if matches!(
            self,
            PackedWeights::ArmWeightsLeft(..) | PackedWeights::ArmWeightsRight(..)
        ) {
            return true;
        }
        #[cfg(target_arch = "x86_64")]
        if matches!(
            self,
            PackedWeights::QuadsWeightsLeft(_) | PackedWeights::QuadsWeightsRight(_)
        ) {
            return true;
        }
        false
    }

    /// [`PackedWeights::multiply`] then [`Requantize`] (on `out`, in the layout the weights were
    /// packed for), without writing the i32 sums out: the sums are requantized in the registers
    /// they are computed in. Fails where [`PackedWeights::fuses_requantization`] is false.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_variables)
    )]
    pub fn multiply_requantized(
        &self,
        input: &Tensor,
        input_layout: Layout,
        scales: &ChannelScales,
        grid: OutputGrid,
        out: &mut [i8],
    ) -> TractResult<()> {
        let channels = scales.channels();
        ensure!(channels != 0 && out.len().is_multiple_of(channels));
        let positions = out.len() / channels;
        match self {
            #[cfg(target_arch = "aarch64")]
            PackedWeights::ArmWeightsLeft(weights, instructions) => {
                let values = input.try_as_plain_ram()?;
                let x = input_matrix(values.as_slice::<i8>()?, input_layout, positions);
                let x = SdotColumns::new(x, *instructions);
                let scales = (scales, true);
                sdot_product::product_requantized(weights, &x, *instructions, scales, grid, out)
            }
            #[cfg(target_arch = "aarch64")]
            PackedWeights::ArmWeightsRight(weights, instructions) => {
                let values = input.try_as_plain_ram()?;
                let x = input_matrix(values.as_slice::<i8>()?, input_layout, positions);
                let x = SdotRows::new(x.transposed(), *instructions);
                let scales = (scales, false);
                sdot_product::product_requantized(&x, weights, *instructions, scales, grid, out)
            }
            #[cfg(target_arch = "x86_64")]
            PackedWeights::QuadsWeightsLeft(weights) => {
                let values = input.try_as_plain_ram()?;
                let x = input_matrix(values.as_slice::<i8>()?, input_layout, positions);
                let x = QuadPanels::activations(x);
                quad_product::product_requantized(weights, &x, (scales, true), grid, out)
            }
            #[cfg(target_arch = "x86_64")]
            PackedWeights::QuadsWeightsRight(weights) => {
                let values = input.try_as_plain_ram()?;
                let x = input_matrix(values.as_slice::<i8>()?, input_layout, positions);
                let x = QuadRows::activations(x.transposed());
                quad_product::product_requantized(&x, weights, (scales, false), grid, out)
            }
            _ => bail!("{} does not requantize its sums itself", self.kernel_name()),
        }
    }
}

/// `values` as an `input_channels x positions` matrix.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn input_matrix(values: &[i8], layout: Layout, positions: usize) -> Strided<'_> {
    let ci = values.len() / positions.max(1);
    Strided {
        values,
        shape: (ci, positions),
        strides: match layout {
            Layout::ChannelsFirst => (positions, 1),
            Layout::ChannelsLast => (1, ci),
        },
    }
}

/// Output channels the scales of [`ChannelScales`] are padded to whole blocks of: a multiple of
/// the vector block of every product that requantizes in its registers (8 f32 lanes of the sdot
/// product, 32-column panels of the quad product).
pub const SCALE_BLOCK: usize = 32;

/// A layer's requantization, `grid(sum * multiplier[c] + offset[c])` for output channel `c`,
/// zero-padded once, when the layer is built, to whole [`SCALE_BLOCK`]s, so that a product
/// requantizing in its registers reads the scales a vector at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelScales {
    multiplier: Vec<f32>,
    offset: Vec<f32>,
    channels: usize,
    finite: bool,
}

impl ChannelScales {
    /// The scales of `multiplier.len()` channels; fails when `offset` holds another number.
    pub fn new(mut multiplier: Vec<f32>, mut offset: Vec<f32>) -> TractResult<ChannelScales> {
        let channels = multiplier.len();
        ensure!(
            offset.len() == channels,
            "requantization with {channels} multipliers and {} offsets",
            offset.len()
        );
        let finite = multiplier.iter().chain(&offset).all(|v| v.is_finite());
        let padded = channels.div_ceil(SCALE_BLOCK) * SCALE_BLOCK;
        multiplier.resize(padded, 0.0);
        offset.resize(padded, 0.0);
        Ok(ChannelScales {
            multiplier,
            offset,
            channels,
            finite,
        })
    }

    /// Whether every multiplier and offset is finite (then an integer sum never requantizes
    /// from NaN).
    pub fn finite(&self) -> bool {
        self.finite
    }

    /// Output channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// One multiplier per channel.
    pub fn multiplier(&self) -> &[f32] {
        &self.multiplier[..self.channels]
    }

    /// One offset per channel.
    pub fn offset(&self) -> &[f32] {
        &self.offset[..self.channels]
    }

    /// Multipliers and offsets with their zero padding: whole [`SCALE_BLOCK`]s.
    pub fn padded(&self) -> (&[f32], &[f32]) {
        (&self.multiplier, &self.offset)
    }
}

/// `out = grid(acc * multiplier[c] + offset[c])` for channel `c` of each value, `acc` and `out`
/// holding whole channel-first rows or whole channel-last positions; run with
/// [`KernelSet::run`].
pub struct Requantize<'a> {
    pub acc: &'a [i32],
    pub multiplier: &'a [f32],
    pub offset: &'a [f32],
    pub grid: OutputGrid,
    pub layout: Layout,
    pub out: &'a mut [i8],
}

impl VectorLoop for Requantize<'_> {
    #[inline(always)]
    fn run(self) {
        let scales = self.multiplier.iter().zip(self.offset);
        match self.layout {
            Layout::ChannelsFirst => {
                let n = self.out.len() / self.multiplier.len();
                let rows = self.out.chunks_exact_mut(n).zip(self.acc.chunks_exact(n));
                for ((out, acc), (m, b)) in rows.zip(scales) {
                    for (a, o) in acc.iter().zip(out) {
                        *o = self.grid.quantize(*a as f32 * m + b);
                    }
                }
            }
            Layout::ChannelsLast => {
                let co = self.multiplier.len();
                let rows = self.out.chunks_exact_mut(co).zip(self.acc.chunks_exact(co));
                for (out, acc) in rows {
                    for ((a, (m, b)), o) in acc.iter().zip(scales.clone()).zip(out) {
                        *o = self.grid.quantize(*a as f32 * m + b);
                    }
                }
            }
        }
    }
}
