use dermedge::preprocess::{load_image_file, ImageLimits};
use dermedge::quality::{check, GateSettings};
use image::{Rgb, RgbImage};

use crate::util::*;

fn real_images() -> Option<Vec<RgbImage>> {
    let paths = ham10000_images(400)?;
    let limits = ImageLimits::default();
    Some(
        paths
            .iter()
            .step_by(8)
            .map(|p| load_image_file(p, &limits).unwrap().rgb)
            .collect(),
    )
}

fn share_with_reason(images: &[RgbImage], reason: &str) -> f32 {
    let settings = GateSettings::default();
    let hits = images
        .iter()
        .filter(|img| {
            check(img, &settings)
                .reasons
                .iter()
                .any(|r| r.contains(reason))
        })
        .count();
    hits as f32 / images.len() as f32
}

fn map_pixels(img: &RgbImage, f: impl Fn(u8) -> u8) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        Rgb(img.get_pixel(x, y).0.map(&f))
    })
}

#[test]
fn real_images_pass_and_blurred_or_badly_exposed_ones_are_rejected_for_the_right_reason() {
    let Some(images) = real_images() else { return };
    let settings = GateSettings::default();
    let accepted = images
        .iter()
        .filter(|img| check(img, &settings).accepted())
        .count();
    assert!(
        accepted as f32 >= 0.96 * images.len() as f32,
        "{accepted} of {}",
        images.len()
    );

    let blurred: Vec<RgbImage> = images
        .iter()
        .map(|img| image::imageops::blur(img, 2.5))
        .collect();
    assert!(share_with_reason(&blurred, "out of focus") >= 0.95);

    let dark: Vec<RgbImage> = images
        .iter()
        .map(|img| map_pixels(img, |v| v / 6))
        .collect();
    assert!(share_with_reason(&dark, "too dark") >= 0.95);

    let bright: Vec<RgbImage> = images
        .iter()
        .map(|img| map_pixels(img, |v| v.saturating_add(120)))
        .collect();
    let settings = GateSettings::default();
    let rejected = bright
        .iter()
        .filter(|img| !check(img, &settings).accepted())
        .count();
    assert!(
        rejected as f32 >= 0.95 * bright.len() as f32,
        "{rejected} of {}",
        bright.len()
    );
    assert!(
        share_with_reason(&bright, "too bright") + share_with_reason(&bright, "clipped") >= 0.95
    );
}

#[test]
fn blank_and_non_skin_views_are_rejected() {
    let settings = GateSettings::default();
    let blank = RgbImage::from_pixel(320, 240, Rgb([200, 190, 185]));
    let verdict = check(&blank, &settings);
    assert!(
        verdict.reasons.iter().any(|r| r.contains("blank view")),
        "{verdict:?}"
    );

    // A sharp, well-exposed, textured blue-green scene (a cover, a table): no skin.
    let scene = RgbImage::from_fn(320, 240, |x, y| {
        let v = ((x / 4 + y / 4) % 2) as u8 * 60;
        Rgb([30 + v / 2, 90 + v, 120 + v])
    });
    let verdict = check(&scene, &settings);
    assert_eq!(verdict.reasons.len(), 1, "{verdict:?}");
    assert!(
        verdict.reasons[0].contains("no skin in view"),
        "{verdict:?}"
    );
}
