//! The training log's rows and its loss/accuracy plot (PNG, drawn with `image`).
//!
//! Left panel: loss (blue train, orange validation). Right panel: accuracy on a 0-1 scale with
//! grid lines every 0.1 (blue train accuracy, orange validation accuracy, green validation
//! balanced accuracy, purple the weight average's validation balanced accuracy when one is kept).
//! One x step per epoch; a grey vertical line marks the end of the frozen phase.

use std::path::Path;

use anyhow::Context;
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

/// One epoch of a member's training log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: usize,
    pub phase: String,
    pub lr: f64,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_balanced_accuracy: f64,
    /// Recall of the melanoma class on the validation side.
    #[serde(default)]
    pub val_melanoma_sensitivity: f64,
    /// The weight average's validation figures, when the run keeps one.
    #[serde(default)]
    pub average: Option<ValidationFigures>,
    pub seconds: f64,
}

/// Validation figures of one set of weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValidationFigures {
    pub loss: f64,
    pub accuracy: f64,
    pub balanced_accuracy: f64,
    pub melanoma_sensitivity: f64,
}

impl EpochRow {
    /// Column names of `log.csv`.
    pub const CSV_HEADER: &'static str = "epoch,phase,lr,train_loss,train_accuracy,val_loss,val_accuracy,val_balanced_accuracy,val_melanoma_sensitivity,average_val_loss,average_val_accuracy,average_val_balanced_accuracy,average_val_melanoma_sensitivity,seconds";

    /// The row as CSV (the average's columns empty when none is kept).
    pub fn csv(&self) -> String {
        let average = self.average.map_or(",,,".to_string(), |a| {
            format!(
                "{:.5},{:.4},{:.4},{:.4}",
                a.loss, a.accuracy, a.balanced_accuracy, a.melanoma_sensitivity
            )
        });
        format!(
            "{},{},{:.3e},{:.5},{:.4},{:.5},{:.4},{:.4},{:.4},{average},{:.1}",
            self.epoch,
            self.phase,
            self.lr,
            self.train_loss,
            self.train_accuracy,
            self.val_loss,
            self.val_accuracy,
            self.val_balanced_accuracy,
            self.val_melanoma_sensitivity,
            self.seconds
        )
    }

    /// The figures the run selects and stops on: the average's when one is kept.
    pub fn selected_balanced_accuracy(&self) -> f64 {
        self.average
            .map_or(self.val_balanced_accuracy, |a| a.balanced_accuracy)
    }
}

const BLUE: Rgb<u8> = Rgb([31, 119, 180]);
const ORANGE: Rgb<u8> = Rgb([255, 127, 14]);
const GREEN: Rgb<u8> = Rgb([44, 160, 44]);
const PURPLE: Rgb<u8> = Rgb([148, 103, 189]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const AXIS: Rgb<u8> = Rgb([90, 90, 90]);

struct Panel {
    x0: u32,
    y0: u32,
    width: u32,
    height: u32,
    max_y: f64,
    epochs: usize,
}

impl Panel {
    fn point(&self, epoch: usize, value: f64) -> (f64, f64) {
        let fx = if self.epochs <= 1 {
            0.5
        } else {
            (epoch - 1) as f64 / (self.epochs - 1) as f64
        };
        let fy = (value / self.max_y).clamp(0.0, 1.0);
        (
            self.x0 as f64 + fx * self.width as f64,
            self.y0 as f64 + (1.0 - fy) * self.height as f64,
        )
    }

    fn frame(&self, img: &mut RgbImage, grid_step: f64) {
        let mut v = grid_step;
        while v < self.max_y {
            let (_, y) = self.point(1, v);
            hline(img, self.x0, self.x0 + self.width, y as u32, GRID);
            v += grid_step;
        }
        hline(
            img,
            self.x0,
            self.x0 + self.width,
            self.y0 + self.height,
            AXIS,
        );
        vline(img, self.x0, self.y0, self.y0 + self.height, AXIS);
    }

    fn series(&self, img: &mut RgbImage, rows: &[(usize, f64)], colour: Rgb<u8>) {
        for pair in rows.windows(2) {
            let a = self.point(pair[0].0, pair[0].1);
            let b = self.point(pair[1].0, pair[1].1);
            line(img, a, b, colour);
        }
        for &(e, v) in rows {
            let (x, y) = self.point(e, v);
            dot(img, x, y, colour);
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, colour: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, colour);
    }
}

fn hline(img: &mut RgbImage, x0: u32, x1: u32, y: u32, colour: Rgb<u8>) {
    for x in x0..=x1 {
        put(img, x as i64, y as i64, colour);
    }
}

fn vline(img: &mut RgbImage, x: u32, y0: u32, y1: u32, colour: Rgb<u8>) {
    for y in y0..=y1 {
        put(img, x as i64, y as i64, colour);
    }
}

fn line(img: &mut RgbImage, a: (f64, f64), b: (f64, f64), colour: Rgb<u8>) {
    let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) as usize).max(1);
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let x = a.0 + t * (b.0 - a.0);
        let y = a.1 + t * (b.1 - a.1);
        put(img, x as i64, y as i64, colour);
        put(img, x as i64, y as i64 + 1, colour);
    }
}

fn dot(img: &mut RgbImage, x: f64, y: f64, colour: Rgb<u8>) {
    for dx in -2..=2 {
        for dy in -2..=2 {
            put(img, x as i64 + dx, y as i64 + dy, colour);
        }
    }
}

/// Draws the loss and accuracy curves of `rows` into a PNG at `path`.
pub fn write_training_plot(path: &Path, rows: &[EpochRow]) -> anyhow::Result<()> {
    let mut img = RgbImage::from_pixel(900, 360, Rgb([255, 255, 255]));
    let epochs = rows.iter().map(|r| r.epoch).max().unwrap_or(1);
    let max_loss = rows
        .iter()
        .flat_map(|r| [r.train_loss, r.val_loss])
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-6)
        * 1.1;
    let loss = Panel {
        x0: 40,
        y0: 20,
        width: 390,
        height: 300,
        max_y: max_loss,
        epochs,
    };
    let accuracy = Panel {
        x0: 480,
        y0: 20,
        width: 390,
        height: 300,
        max_y: 1.0,
        epochs,
    };
    loss.frame(&mut img, max_loss / 5.0);
    accuracy.frame(&mut img, 0.1);
    let frozen_end = rows
        .iter()
        .filter(|r| r.phase == "frozen")
        .map(|r| r.epoch)
        .max();
    if let Some(e) = frozen_end {
        for panel in [&loss, &accuracy] {
            let (x, _) = panel.point(e, 0.0);
            vline(&mut img, x as u32, panel.y0, panel.y0 + panel.height, AXIS);
        }
    }
    let series = |f: fn(&EpochRow) -> f64| -> Vec<(usize, f64)> {
        rows.iter().map(|r| (r.epoch, f(r))).collect()
    };
    loss.series(&mut img, &series(|r| r.train_loss), BLUE);
    loss.series(&mut img, &series(|r| r.val_loss), ORANGE);
    accuracy.series(&mut img, &series(|r| r.train_accuracy), BLUE);
    accuracy.series(&mut img, &series(|r| r.val_accuracy), ORANGE);
    accuracy.series(&mut img, &series(|r| r.val_balanced_accuracy), GREEN);
    let averaged: Vec<(usize, f64)> = rows
        .iter()
        .filter_map(|r| r.average.map(|a| (r.epoch, a.balanced_accuracy)))
        .collect();
    accuracy.series(&mut img, &averaged, PURPLE);
    img.save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A 420x360 canvas with a unit-square panel at (40, 20), 360x300, grid every 0.1.
fn unit_square_canvas() -> RgbImage {
    let mut img = RgbImage::from_pixel(420, 360, Rgb([255, 255, 255]));
    let panel = Panel {
        x0: 40,
        y0: 20,
        width: 360,
        height: 300,
        max_y: 1.0,
        epochs: 2,
    };
    panel.frame(&mut img, 0.1);
    img
}

/// Reliability diagram: per confidence bin, a bar of the bin's accuracy (blue) and a dot at its
/// mean confidence (orange); the grey diagonal is perfect calibration.
pub fn write_reliability_plot(path: &Path, bins: &[crate::evaluate::Bin]) -> anyhow::Result<()> {
    let mut img = unit_square_canvas();
    line(&mut img, (40.0, 320.0), (400.0, 20.0), Rgb([170, 170, 170]));
    let n = bins.len().max(1) as f64;
    for (i, bin) in bins.iter().enumerate().filter(|(_, b)| b.count > 0) {
        let x0 = 40.0 + i as f64 / n * 360.0;
        let x1 = 40.0 + (i + 1) as f64 / n * 360.0;
        let top = 320.0 - bin.accuracy * 300.0;
        for x in (x0 as u32 + 1)..(x1 as u32) {
            vline(&mut img, x, top as u32, 320, BLUE);
        }
        dot(
            &mut img,
            (x0 + x1) / 2.0,
            320.0 - bin.confidence * 300.0,
            ORANGE,
        );
    }
    img.save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A curve of `(x, y)` points in the unit square (an ROC curve: false positive rate against
/// true positive rate), blue, with the grey chance diagonal.
pub fn write_curve_plot(path: &Path, points: &[(f64, f64)]) -> anyhow::Result<()> {
    let mut img = unit_square_canvas();
    let at = |(x, y): (f64, f64)| (40.0 + x * 360.0, 320.0 - y * 300.0);
    line(
        &mut img,
        at((0.0, 0.0)),
        at((1.0, 1.0)),
        Rgb([170, 170, 170]),
    );
    for pair in points.windows(2) {
        line(&mut img, at(pair[0]), at(pair[1]), BLUE);
    }
    img.save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}
