//! Untrained fixture ensembles: real network topologies with seeded random (He-initialised)
//! weights, written by the project's ONNX writer. They exercise and benchmark the runtime; their
//! manifests say `status = "untrained-fixture"`, which the runtime prints with every result.

use std::path::{Path, PathBuf};

use anyhow::Context;
use dermedge::manifest::{
    ChannelOrder, ClassInfo, ColourConstancy, DecisionSettings, EnsembleStatus, InputSpec,
    Manifest, MemberOutput, MemberSpec, ResizePolicy,
};
use dermedge::preprocess::sha256_hex;

use crate::onnx::{encode, ConvParams, DenseParams, GraphBuilder};
use crate::rng::SeededRng;

/// Network topologies a fixture can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FixtureArch {
    /// Four 3x3 convolutions with one residual block: fast enough for debug-build tests.
    TinyCnn,
    /// MobileNetV2 (width 1.0): inverted residuals with depthwise convolutions, ~2.2 M weights.
    Mobilenetv2,
}

impl FixtureArch {
    /// The backbone name written to the manifest.
    pub fn backbone(self) -> &'static str {
        match self {
            FixtureArch::TinyCnn => "tiny-cnn",
            FixtureArch::Mobilenetv2 => "mobilenetv2",
        }
    }
}

struct Net<'a> {
    graph: GraphBuilder,
    rng: &'a mut SeededRng,
}

impl Net<'_> {
    fn conv(
        &mut self,
        x: &str,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
    ) -> String {
        let per_group = cin / groups;
        let fan_in = per_group * kernel * kernel;
        let std = (2.0 / fan_in as f32).sqrt();
        let params = ConvParams {
            out_channels: cout,
            in_channels_per_group: per_group,
            kernel,
            stride,
            groups,
            pads: [kernel / 2; 4],
            weight: self.rng.normals(cout * fan_in, std),
            bias: self.rng.normals(cout, 0.01),
        };
        self.graph.conv(x, &params)
    }

    fn head(&mut self, x: &str, features: usize, classes: usize) -> String {
        let pooled = self.graph.global_pool_flatten(x);
        let params = DenseParams {
            inputs: features,
            outputs: classes,
            weight: self
                .rng
                .normals(features * classes, (1.0 / features as f32).sqrt()),
            bias: vec![0.0; classes],
        };
        self.graph.dense(&pooled, &params)
    }
}

fn tiny_cnn(net: &mut Net, x: &str, classes: usize) -> String {
    let a = net.conv(x, 3, 8, 3, 2, 1);
    let a = net.graph.relu(&a);
    let b = net.conv(&a, 8, 16, 3, 2, 1);
    let b = net.graph.relu(&b);
    let c = net.conv(&b, 16, 16, 3, 1, 1);
    let c = net.graph.relu(&c);
    let c = net.conv(&c, 16, 16, 3, 1, 1);
    let sum = net.graph.add(&b, &c);
    let sum = net.graph.relu(&sum);
    let d = net.conv(&sum, 16, 32, 3, 2, 1);
    let d = net.graph.relu(&d);
    net.head(&d, 32, classes)
}

/// MobileNetV2 stages: expansion t, channels c, repeats n, first stride s.
const MOBILENETV2_STAGES: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

fn mobilenetv2(net: &mut Net, x: &str, classes: usize) -> String {
    let stem = net.conv(x, 3, 32, 3, 2, 1);
    let mut x = net.graph.relu6(&stem);
    let mut channels = 32;
    for (t, c, n, s) in MOBILENETV2_STAGES {
        for repeat in 0..n {
            let stride = if repeat == 0 { s } else { 1 };
            let hidden = channels * t;
            let mut h = x.clone();
            if t != 1 {
                h = net.conv(&h, channels, hidden, 1, 1, 1);
                h = net.graph.relu6(&h);
            }
            h = net.conv(&h, hidden, hidden, 3, stride, hidden);
            h = net.graph.relu6(&h);
            h = net.conv(&h, hidden, c, 1, 1, 1);
            x = if stride == 1 && channels == c {
                net.graph.add(&x, &h)
            } else {
                h
            };
            channels = c;
        }
    }
    let last = net.conv(&x, channels, 1280, 1, 1, 1);
    let last = net.graph.relu6(&last);
    net.head(&last, 1280, classes)
}

/// Builds one fixture network as ONNX bytes for a `[1, 3, height, width]` input.
pub fn fixture_onnx(
    arch: FixtureArch,
    width: u32,
    height: u32,
    classes: usize,
    seed: u64,
) -> Vec<u8> {
    let mut rng = SeededRng::new(seed);
    let mut net = Net {
        graph: GraphBuilder::new(),
        rng: &mut rng,
    };
    let input = "image";
    let logits = match arch {
        FixtureArch::TinyCnn => tiny_cnn(&mut net, input, classes),
        FixtureArch::Mobilenetv2 => mobilenetv2(&mut net, input, classes),
    };
    let model = net.graph.finish(
        (input, &[1, 3, height as usize, width as usize]),
        (&logits, &[1, classes]),
        &format!(
            "dermedge untrained fixture ({}), seed {seed}: random weights, for tests only",
            arch.backbone()
        ),
    );
    encode(&model)
}

/// The shape of a fixture ensemble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixtureSpec {
    pub arch: FixtureArch,
    pub members: usize,
    /// Input width and height.
    pub width: u32,
    pub height: u32,
    /// Seed of the first member; member `i` uses `seed + i`.
    pub seed: u64,
}

/// Writes the fixture networks of `spec` with one output per class and their `ensemble.toml`
/// into `dir`; returns the manifest path.
pub fn write_fixture_ensemble(
    dir: &Path,
    spec: &FixtureSpec,
    classes: &[ClassInfo],
) -> anyhow::Result<PathBuf> {
    let FixtureSpec {
        arch,
        members,
        width,
        height,
        seed,
    } = *spec;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut specs = Vec::new();
    for index in 0..members {
        let bytes = fixture_onnx(arch, width, height, classes.len(), seed + index as u64);
        let file = PathBuf::from(format!("{}-{index}.onnx", arch.backbone()));
        let path = dir.join(&file);
        std::fs::write(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        specs.push(MemberSpec {
            file,
            sha256: sha256_hex(&bytes),
            weight: 1.0,
            backbone: arch.backbone().into(),
            precision: "f32".into(),
            output: MemberOutput::Logits,
            input: None,
        });
    }
    let manifest = Manifest {
        name: format!("fixture-{}", arch.backbone()),
        version: "0.0.0".into(),
        status: EnsembleStatus::UntrainedFixture,
        description: format!(
            "{members} untrained {} member(s) with seeded random weights (seed {seed}); outputs are meaningless",
            arch.backbone()
        ),
        input: InputSpec {
            width,
            height,
            resize: ResizePolicy::Stretch,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            channel_order: ChannelOrder::Rgb,
            colour_constancy: ColourConstancy::None,
        },
        classes: classes.to_vec(),
        members: specs,
        inference: Default::default(),
        decision: DecisionSettings::default(),
    };
    let path = dir.join("ensemble.toml");
    std::fs::write(&path, manifest.to_toml())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::tests::shipped;
    use dermedge::Ensemble;

    #[test]
    fn same_seed_same_bytes() {
        let a = fixture_onnx(FixtureArch::TinyCnn, 32, 24, 7, 5);
        assert_eq!(a, fixture_onnx(FixtureArch::TinyCnn, 32, 24, 7, 5));
        assert_ne!(a, fixture_onnx(FixtureArch::TinyCnn, 32, 24, 7, 6));
    }

    #[test]
    fn mobilenetv2_fixture_loads_in_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let spec = FixtureSpec {
            arch: FixtureArch::Mobilenetv2,
            members: 1,
            width: 96,
            height: 96,
            seed: 3,
        };
        let classes = shipped();
        let manifest = write_fixture_ensemble(dir.path(), &spec, classes.infos()).unwrap();
        let ensemble = Ensemble::load(&manifest).unwrap();
        let image = image::RgbImage::from_pixel(120, 90, image::Rgb([180, 120, 100]));
        let prediction = ensemble.classify(&image).unwrap();
        assert_eq!(prediction.probabilities.len(), classes.len());
        assert!((prediction.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        // 2.2 M weights at 4 bytes each.
        let bytes = ensemble.members[0].file_bytes;
        assert!((8_000_000..10_000_000).contains(&bytes), "{bytes}");
    }
}
