//! How fast tract-linalg's int8 matrix kernel runs the shipped MobileNetV2 member's 1x1
//! convolutions against its f32 kernel: the ceiling for an int8 member built on those kernels.
//! Each i8 row is the fastest of every runnable int8 kernel. `cargo bench --bench int8-matmul`

use std::time::Instant;

use tract_core::internal::*;
use tract_linalg::mmm::{AsInputValue, FusedSpec, MatMatMul};
use tract_linalg::MmmDispatch;

/// `(output channels, input channels, positions, how many)` of the 1x1 convolutions of a
/// MobileNetV2 at 160x120 (expansions and projections).
const SHAPES: [(usize, usize, usize, usize); 17] = [
    (16, 32, 4800, 1),
    (96, 16, 4800, 1),
    (24, 96, 1200, 1),
    (144, 24, 1200, 1),
    (24, 144, 1200, 1),
    (32, 144, 300, 1),
    (192, 32, 300, 2),
    (32, 192, 300, 2),
    (64, 192, 80, 1),
    (384, 64, 80, 4),
    (64, 384, 80, 3),
    (96, 384, 80, 1),
    (576, 96, 80, 3),
    (96, 576, 80, 2),
    (160, 576, 20, 1),
    (960, 160, 20, 3),
    (160, 960, 20, 2),
];

fn median_ms(
    mmm: &dyn MatMatMul,
    packing: usize,
    dt: DatumType,
    m: usize,
    k: usize,
    n: usize,
) -> f64 {
    let a = Tensor::zero_dt(dt, &[m, k]).unwrap();
    let b = Tensor::zero_dt(dt, &[k, n]).unwrap();
    let (pa_format, pb_format) = &mmm.packings()[packing];
    let pa = pa_format.prepare_one(&a, 1, 0).unwrap();
    let pb = pb_format.prepare_one(&b, 0, 1).unwrap();
    let acc = if dt == DatumType::F32 {
        DatumType::F32
    } else {
        DatumType::I32
    };
    let mut c = Tensor::zero_dt(acc, &[m, n]).unwrap();
    let mut samples = Vec::new();
    for run in 0..60 {
        let started = Instant::now();
        unsafe {
            mmm.run(
                m,
                n,
                &[
                    FusedSpec::AddMatMul {
                        a: AsInputValue::Borrowed(&*pa),
                        b: AsInputValue::Borrowed(&*pb),
                        packing,
                    },
                    FusedSpec::Store(mmm.c_view(Some(0), Some(1)).wrap(&c.view_mut())),
                ],
            )
            .unwrap();
        }
        if run >= 10 {
            samples.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let dispatch = MmmDispatch::native();
    let (mut f32_total, mut i8_total) = (0.0, 0.0);
    println!(
        "{:>5} {:>5} {:>5} {:>3} | {:>9} {:>9} {:>6} | kernels",
        "m", "k", "n", "x", "f32 ms", "i8 ms", "ratio"
    );
    for (m, k, n, count) in SHAPES {
        let f32_mmm = dispatch
            .preferred_kernel(DatumType::F32, Some(m), Some(k), Some(n))
            .unwrap();
        let f = median_ms(&*f32_mmm, 0, DatumType::F32, m, k, n);
        let (q, i8_name, i8_packing) = dispatch
            .runnable()
            .iter()
            .filter(|k| k.internal_type() == DatumType::I32)
            .filter_map(|kernel| {
                let packing = kernel
                    .packings()
                    .iter()
                    .position(|(a, b)| format!("{a:?}{b:?}").contains("I8"))?;
                let ms = median_ms(&**kernel, packing, DatumType::I8, m, k, n);
                Some((ms, kernel.name().to_string(), packing))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap();
        f32_total += f * count as f64;
        i8_total += q * count as f64;
        println!(
            "{m:>5} {k:>5} {n:>5} {count:>3} | {f:>9.4} {q:>9.4} {:>6.2} | {} / {} (packing {i8_packing})",
            f / q,
            f32_mmm.name(),
            i8_name
        );
    }
    println!(
        "all 1x1 convolutions: f32 {f32_total:.3} ms, i8 {i8_total:.3} ms, i8 speed-up {:.2}x",
        f32_total / i8_total
    );
}
