//! How fast the portable depthwise loops run the shipped EfficientNet-Lite0 member's depthwise
//! layers that the 3x3 kernels do not take (5x5, and 3x3 stride 2 padded on one side), at its
//! 200x150 input, one thread: each layer on both loops of `GeneralDepthwiseLayer` and, for the
//! 3x3 layers, on the 3x3 kernels (`ShiftedDepthwise`, which the op takes for them), on every
//! runnable kernel set; and the total of what the op runs. `cargo bench --bench int8-depthwise`

use std::time::Instant;

use dermedge::int8::grid::OutputGrid;
use dermedge::int8::kernels::general_depthwise::{
    DepthwiseGeometry, GeneralDepthwiseLayer, PlaneLoop, LANES,
};
use dermedge::int8::kernels::shifted_depthwise::ShiftedDepthwise;
use dermedge::int8::kernels::KernelSet;

/// `(channels, height, width, kernel, stride, [top, left, bottom, right] padding)` of the
/// member's general depthwise layers, in graph order.
const LAYERS: [(usize, usize, usize, usize, usize, [usize; 4]); 11] = [
    (96, 75, 100, 3, 2, [0, 0, 1, 1]),
    (144, 37, 50, 5, 2, [1, 1, 2, 2]),
    (240, 18, 25, 5, 1, [2, 2, 2, 2]),
    (240, 18, 25, 3, 2, [0, 0, 1, 1]),
    (480, 9, 12, 5, 1, [2, 2, 2, 2]),
    (672, 9, 12, 5, 1, [2, 2, 2, 2]),
    (672, 9, 12, 5, 1, [2, 2, 2, 2]),
    (672, 9, 12, 5, 2, [1, 1, 2, 2]),
    (1152, 4, 6, 5, 1, [2, 2, 2, 2]),
    (1152, 4, 6, 5, 1, [2, 2, 2, 2]),
    (1152, 4, 6, 5, 1, [2, 2, 2, 2]),
];

/// Deterministic bytes: a 64-bit linear congruential sequence's high bits.
fn bytes(seed: u64, len: usize) -> Vec<i8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8 as i8
        })
        .collect()
}

/// The median of 30 timed runs of `layer` over an output of `len` values, in microseconds, and
/// its output.
fn median_us(len: usize, mut layer: impl FnMut(&mut [i8])) -> (f64, Vec<i8>) {
    let mut out = vec![0i8; len];
    let mut samples = Vec::new();
    for run in 0..33 {
        let started = Instant::now();
        layer(&mut out);
        if run >= 3 {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], out)
}

fn main() {
    let sets = KernelSet::runnable();
    println!("median us per layer, one thread: lanes / planar / on the 3x3 kernels (* = the op's)");
    print!("{:<30}", "layer");
    for set in &sets {
        print!(" {:>26}", set.to_string());
    }
    println!();
    let mut totals = vec![[0f64; 3]; sets.len()];
    for (index, layer) in LAYERS.into_iter().enumerate() {
        let geometry = DepthwiseGeometry::from(layer);
        let (channels, height, width, kernel, stride, padding) = layer;
        let seed = index as u64 + 1;
        let weights: Vec<i8> = bytes(seed, channels * kernel * kernel)
            .into_iter()
            .map(|w| w.max(-127))
            .collect();
        let (multiplier, offset) = (vec![0.01; channels], vec![0.5; channels]);
        let grid = OutputGrid::new(1.0, 0, 0.0, 6.0);
        let layer = GeneralDepthwiseLayer::new(
            geometry,
            &weights,
            3,
            multiplier.clone(),
            offset.clone(),
            grid,
        )
        .expect("a valid geometry");
        let shifted = ShiftedDepthwise::new(geometry, &weights, 3, multiplier, offset, grid);
        let input = bytes(seed << 8, channels * height * width);
        let (oh, ow) = layer.output_size();
        let len = channels * oh * ow;
        print!(
            "{:<30}",
            format!("{channels}x{height}x{width} k{kernel} s{stride} {padding:?}")
        );
        for (set, total) in sets.iter().zip(&mut totals) {
            let by_loop = |how| {
                median_us(len, |out| {
                    for (task, chunk) in out.chunks_mut(LANES * oh * ow).enumerate() {
                        layer.convolve_planes_by(how, *set, &input, task * LANES, chunk);
                    }
                })
            };
            let (lanes, lanes_out) = by_loop(PlaneLoop::Lanes);
            let (planar, planar_out) = by_loop(PlaneLoop::Planar);
            assert_eq!(lanes_out, planar_out, "the loops disagree on {geometry:?}");
            let on_3x3 = shifted.as_ref().map(|shifted| {
                let (us, out) = median_us(len, |out| {
                    let padded = shifted.shifted_input(&input);
                    for (task, chunk) in out.chunks_mut(LANES * oh * ow).enumerate() {
                        shifted.convolve_planes(*set, &padded, task * LANES, chunk);
                    }
                });
                assert_eq!(out, lanes_out, "the 3x3 kernels disagree on {geometry:?}");
                us
            });
            let chosen = layer.plane_loop();
            let mark = |on| if on { "*" } else { " " };
            print!(
                " {:>6.0}{} / {:>6.0}{} / {}",
                lanes,
                mark(on_3x3.is_none() && chosen == PlaneLoop::Lanes),
                planar,
                mark(on_3x3.is_none() && chosen == PlaneLoop::Planar),
                on_3x3.map_or("     ".to_string(), |us| format!("{us:>4.0}*"))
            );
            total[0] += lanes;
            total[1] += planar;
            total[2] += on_3x3.unwrap_or(if chosen == PlaneLoop::Lanes {
                lanes
            } else {
                planar
            });
        }
        println!();
    }
    print!("{:<30}", "total: lanes / planar / op's");
    for total in &totals {
        print!(
            " {:>6.0}  / {:>6.0}  / {:>4.0}",
            total[0], total[1], total[2]
        );
    }
    println!();
}
