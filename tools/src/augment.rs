//! Seeded training augmentations on upright RGB images, applied before the runtime's own
//! preprocessing: flips, 90-degree rotations, a small affine warp, colour jitter and a random
//! resized crop. Dermatoscopic images have no canonical orientation, so all of these keep the label.

use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};

use crate::rng::SeededRng;

/// Which augmentations run and how strong they are. `AugmentConfig::none()` changes nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentConfig {
    pub flip_horizontal: bool,
    pub flip_vertical: bool,
    pub rotate_90: bool,
    /// Largest rotation of the affine warp, in degrees.
    pub max_rotation_deg: f32,
    /// Largest relative zoom of the affine warp (0.1 = 0.9x to 1.1x).
    pub max_zoom: f32,
    /// Largest shift of the affine warp, as a share of width and height.
    pub max_shift: f32,
    /// Largest relative change of brightness, contrast and saturation.
    pub color_jitter: f32,
    /// Smallest share of the image area a random resized crop keeps (1.0 = no crop).
    pub min_crop_area: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            flip_horizontal: true,
            flip_vertical: true,
            rotate_90: true,
            max_rotation_deg: 15.0,
            max_zoom: 0.1,
            max_shift: 0.05,
            color_jitter: 0.2,
            min_crop_area: 0.6,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all.
    pub fn none() -> AugmentConfig {
        AugmentConfig {
            flip_horizontal: false,
            flip_vertical: false,
            rotate_90: false,
            max_rotation_deg: 0.0,
            max_zoom: 0.0,
            max_shift: 0.0,
            color_jitter: 0.0,
            min_crop_area: 1.0,
        }
    }
}

fn symmetric(rng: &mut SeededRng, amplitude: f32) -> f32 {
    ((rng.uniform() * 2.0 - 1.0) as f32) * amplitude
}

/// A random variant of `image` of the same size.
pub fn augment(image: &RgbImage, config: &AugmentConfig, rng: &mut SeededRng) -> RgbImage {
    let (w, h) = image.dimensions();
    let mut out = image.clone();
    if config.flip_horizontal && rng.uniform() < 0.5 {
        imageops::flip_horizontal_in_place(&mut out);
    }
    if config.flip_vertical && rng.uniform() < 0.5 {
        imageops::flip_vertical_in_place(&mut out);
    }
    if config.rotate_90 {
        out = match rng.next_u64() % 4 {
            1 => imageops::rotate90(&out),
            2 => imageops::rotate180(&out),
            3 => imageops::rotate270(&out),
            _ => out,
        };
    }
    if config.max_rotation_deg > 0.0 || config.max_zoom > 0.0 || config.max_shift > 0.0 {
        let angle = symmetric(rng, config.max_rotation_deg).to_radians();
        let zoom = 1.0 + symmetric(rng, config.max_zoom);
        let shift = (
            symmetric(rng, config.max_shift),
            symmetric(rng, config.max_shift),
        );
        out = affine(&out, angle, zoom, shift);
    }
    if config.min_crop_area < 1.0 {
        out = random_resized_crop(&out, config.min_crop_area, rng);
    }
    if out.dimensions() != (w, h) {
        out = imageops::resize(&out, w, h, FilterType::Triangle);
    }
    if config.color_jitter > 0.0 {
        let brightness = 1.0 + symmetric(rng, config.color_jitter);
        let contrast = 1.0 + symmetric(rng, config.color_jitter);
        let saturation = 1.0 + symmetric(rng, config.color_jitter);
        jitter_colour(&mut out, brightness, contrast, saturation);
    }
    out
}

fn sample_bilinear(image: &RgbImage, x: f32, y: f32) -> Rgb<u8> {
    let (w, h) = image.dimensions();
    let reflect = |v: f32, n: u32| {
        let n = n as f32;
        let period = 2.0 * n;
        let v = v.rem_euclid(period);
        if v >= n {
            period - v - 1.0
        } else {
            v
        }
    };
    let (x, y) = (
        reflect(x, w).clamp(0.0, w as f32 - 1.0),
        reflect(y, h).clamp(0.0, h as f32 - 1.0),
    );
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let p = |xx, yy| image.get_pixel(xx, yy).0.map(f32::from);
    let (a, b, c, d) = (p(x0, y0), p(x1, y0), p(x0, y1), p(x1, y1));
    Rgb(std::array::from_fn(|i| {
        let top = a[i] + (b[i] - a[i]) * fx;
        let bottom = c[i] + (d[i] - c[i]) * fx;
        (top + (bottom - top) * fy).round().clamp(0.0, 255.0) as u8
    }))
}

/// Rotates by `angle` (radians) and zooms about the centre, then shifts by a share of the size;
/// edges are filled by reflection.
pub fn affine(image: &RgbImage, angle: f32, zoom: f32, shift: (f32, f32)) -> RgbImage {
    let (w, h) = image.dimensions();
    let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let (sin, cos) = angle.sin_cos();
    let (sx, sy) = (shift.0 * w as f32, shift.1 * h as f32);
    RgbImage::from_fn(w, h, |x, y| {
        let dx = (x as f32 - cx - sx) / zoom;
        let dy = (y as f32 - cy - sy) / zoom;
        let src_x = cos * dx + sin * dy + cx;
        let src_y = -sin * dx + cos * dy + cy;
        sample_bilinear(image, src_x, src_y)
    })
}

/// Crops a random region of at least `min_area` of the image, aspect ratio 3:4 to 4:3.
pub fn random_resized_crop(image: &RgbImage, min_area: f32, rng: &mut SeededRng) -> RgbImage {
    let (w, h) = image.dimensions();
    let area = (min_area + (1.0 - min_area) * rng.uniform() as f32) * (w * h) as f32;
    let aspect = (0.75f32.ln() + (4.0f32 / 3.0 / 0.75).ln() * rng.uniform() as f32).exp();
    let cw = ((area * aspect).sqrt().round() as u32).clamp(1, w);
    let ch = ((area / aspect).sqrt().round() as u32).clamp(1, h);
    let x = (rng.next_u64() % u64::from(w - cw + 1)) as u32;
    let y = (rng.next_u64() % u64::from(h - ch + 1)) as u32;
    imageops::crop_imm(image, x, y, cw, ch).to_image()
}

/// Scales brightness, contrast (about the mean grey) and saturation (about each pixel's grey).
pub fn jitter_colour(image: &mut RgbImage, brightness: f32, contrast: f32, saturation: f32) {
    let grey = |p: [f32; 3]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    let n = (image.width() * image.height()).max(1) as f32;
    let mean = image
        .pixels()
        .map(|p| grey(p.0.map(f32::from)))
        .sum::<f32>()
        / n
        * brightness;
    for pixel in image.pixels_mut() {
        let p = pixel.0.map(|v| f32::from(v) * brightness);
        let g = grey(p);
        pixel.0 = std::array::from_fn(|i| {
            let saturated = g + (p[i] - g) * saturation;
            (mean + (saturated - mean) * contrast)
                .round()
                .clamp(0.0, 255.0) as u8
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient() -> RgbImage {
        RgbImage::from_fn(40, 30, |x, y| Rgb([(x * 6) as u8, (y * 8) as u8, 120]))
    }

    #[test]
    fn none_is_the_identity_and_the_default_is_seeded() {
        let img = gradient();
        assert_eq!(
            augment(&img, &AugmentConfig::none(), &mut SeededRng::new(1)),
            img
        );
        let a = augment(&img, &AugmentConfig::default(), &mut SeededRng::new(9));
        let b = augment(&img, &AugmentConfig::default(), &mut SeededRng::new(9));
        let c = augment(&img, &AugmentConfig::default(), &mut SeededRng::new(10));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.dimensions(), img.dimensions());
    }

    #[test]
    fn affine_identity_and_quarter_turn() {
        let img = gradient();
        assert_eq!(affine(&img, 0.0, 1.0, (0.0, 0.0)), img);
        let square = RgbImage::from_fn(21, 21, |x, y| Rgb([(x * 10) as u8, (y * 10) as u8, 0]));
        let turned = affine(&square, std::f32::consts::FRAC_PI_2, 1.0, (0.0, 0.0));
        // Output (x, y) samples the source at (cx + dy, cy - dx): the top-left corner shows the
        // source's bottom-left, (0, 20).
        assert_eq!(turned.get_pixel(0, 0).0, square.get_pixel(0, 20).0);
    }

    #[test]
    fn colour_jitter_by_hand() {
        let mut img = RgbImage::from_pixel(2, 1, Rgb([100, 100, 100]));
        img.put_pixel(1, 0, Rgb([200, 200, 200]));
        // Brightness 0.5 -> 50 and 100, mean 75; contrast 2 -> 25 and 125; grey stays grey.
        jitter_colour(&mut img, 0.5, 2.0, 3.0);
        assert_eq!(img.get_pixel(0, 0).0, [25, 25, 25]);
        assert_eq!(img.get_pixel(1, 0).0, [125, 125, 125]);
    }

    #[test]
    fn crops_keep_at_least_the_minimum_area() {
        let img = gradient();
        let mut rng = SeededRng::new(4);
        for _ in 0..50 {
            let crop = random_resized_crop(&img, 0.6, &mut rng);
            let area = crop.width() * crop.height();
            assert!(area as f32 >= 0.45 * 1200.0, "{:?}", crop.dimensions());
        }
    }
}
