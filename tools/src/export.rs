//! Trained classifiers to ONNX with the project's writer (BatchNorm folded into the convolutions),
//! and the `ensemble.toml` that lists them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use dermedge::manifest::{
    DecisionSettings, EnsembleStatus, InputSpec, Manifest, MemberOutput, MemberSpec,
};
use dermedge::preprocess::sha256_hex;

use crate::nn::{host_values, Activation};
use crate::nn::{Backbone, Classifier, ConvBn, InvertedResidualNet, ResNet, TinyCnn};
use crate::onnx::{encode, ConvParams, DenseParams, GraphBuilder};

/// The convolution of `layer` with its BatchNorm folded in: `w' = w g / sqrt(v + eps)`,
/// `b' = beta - mean g / sqrt(v + eps)`.
pub fn fold_conv_bn(layer: &ConvBn) -> ConvParams {
    let [out, per_group, k, _] = layer.conv.weight.shape().dims();
    let mut weight = host_values(layer.conv.weight.val());
    let gamma = host_values(layer.bn.gamma.val());
    let beta = host_values(layer.bn.beta.val());
    let mean = host_values(layer.bn.running_mean.value());
    let var = host_values(layer.bn.running_var.value());
    let eps = layer.bn.epsilon as f32;
    let per_out = per_group * k * k;
    let mut bias = vec![0.0; out];
    for o in 0..out {
        let scale = gamma[o] / (var[o] + eps).sqrt();
        for w in &mut weight[o * per_out..(o + 1) * per_out] {
            *w *= scale;
        }
        bias[o] = beta[o] - mean[o] * scale;
    }
    ConvParams {
        out_channels: out,
        in_channels_per_group: per_group,
        kernel: k,
        stride: layer.conv.stride[0],
        groups: layer.conv.groups,
        pads: layer.pads,
        weight,
        bias,
    }
}

fn conv_bn(g: &mut GraphBuilder, x: &str, layer: &ConvBn) -> String {
    let y = g.conv(x, &fold_conv_bn(layer));
    match layer.activation {
        Activation::Identity => y,
        Activation::Relu => g.relu(&y),
        Activation::Relu6 => g.relu6(&y),
    }
}

fn tiny(g: &mut GraphBuilder, x: &str, net: &TinyCnn) -> String {
    net.layers
        .iter()
        .fold(x.to_string(), |x, layer| conv_bn(g, &x, layer))
}

fn inverted(g: &mut GraphBuilder, x: &str, net: &InvertedResidualNet) -> String {
    let mut x = conv_bn(g, x, &net.stem);
    for block in &net.blocks {
        let hidden = match &block.expand {
            Some(expand) => conv_bn(g, &x, expand),
            None => x.clone(),
        };
        let dw = conv_bn(g, &hidden, &block.depthwise);
        let out = conv_bn(g, &dw, &block.project);
        x = if block.residual { g.add(&out, &x) } else { out };
    }
    conv_bn(g, &x, &net.last)
}

fn resnet(g: &mut GraphBuilder, x: &str, net: &ResNet) -> String {
    let stem = conv_bn(g, x, &net.stem);
    let mut x = g.max_pool(&stem, 3, 2, 1);
    for block in net.stages.iter().flatten() {
        let shortcut = match &block.downsample {
            Some(down) => conv_bn(g, &x, down),
            None => x.clone(),
        };
        let r = conv_bn(g, &x, &block.reduce);
        let s = conv_bn(g, &r, &block.spatial);
        let e = conv_bn(g, &s, &block.expand);
        let sum = g.add(&e, &shortcut);
        x = g.relu(&sum);
    }
    x
}

fn dense(layer: &burn::nn::Linear) -> DenseParams {
    let [inputs, outputs] = layer.weight.shape().dims();
    DenseParams {
        inputs,
        outputs,
        weight: host_values(layer.weight.val()),
        bias: layer
            .bias
            .as_ref()
            .map(|b| host_values(b.val()))
            .unwrap_or_else(|| vec![0.0; outputs]),
    }
}

/// The classifier in eval mode as an ONNX model for a `[1, 3, height, width]` input; the output is
/// the 7 logits.
pub fn classifier_onnx(model: &Classifier, height: usize, width: usize, doc: &str) -> Vec<u8> {
    let mut g = GraphBuilder::new();
    let input = "image";
    let maps = match &model.backbone {
        Backbone::Tiny(net) => tiny(&mut g, input, net),
        Backbone::Inverted(net) => inverted(&mut g, input, net),
        Backbone::ResNet(net) => resnet(&mut g, input, net),
    };
    let pooled = g.global_pool_flatten(&maps);
    let hidden = g.dense(&pooled, &dense(&model.head.hidden));
    let hidden = g.relu(&hidden);
    let output = dense(&model.head.output);
    let classes = output.outputs;
    let logits = g.dense(&hidden, &output);
    encode(&g.finish(
        (input, &[1, 3, height, width]),
        (&logits, &[1, classes]),
        doc,
    ))
}

/// One exported member before it is listed in a manifest.
#[derive(Debug, Clone)]
pub struct ExportedMember {
    pub file: PathBuf,
    pub sha256: String,
    pub backbone: String,
    pub weight: f32,
}

/// Writes `bytes` as `dir/file` and returns its manifest entry.
pub fn write_member(
    dir: &Path,
    file: &str,
    bytes: &[u8],
    backbone: &str,
) -> anyhow::Result<ExportedMember> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(file);
    std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(ExportedMember {
        file: PathBuf::from(file),
        sha256: sha256_hex(bytes),
        backbone: backbone.into(),
        weight: 1.0,
    })
}

/// What the manifest says about the ensemble beyond its members.
#[derive(Debug, Clone)]
pub struct EnsembleInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub status: EnsembleStatus,
    /// The one input spec of every member.
    pub input: InputSpec,
    pub decision: DecisionSettings,
}

impl EnsembleInfo {
    /// A trained ensemble for inputs of `spec`, without decision settings yet.
    pub fn trained(
        name: &str,
        version: &str,
        description: String,
        spec: &InputSpec,
    ) -> EnsembleInfo {
        EnsembleInfo {
            name: name.into(),
            version: version.into(),
            description,
            status: EnsembleStatus::Trained,
            input: spec.clone(),
            decision: DecisionSettings::default(),
        }
    }
}

/// Writes `dir/ensemble.toml` listing `members`; returns its path.
pub fn write_manifest(
    dir: &Path,
    info: &EnsembleInfo,
    members: &[ExportedMember],
) -> anyhow::Result<PathBuf> {
    let manifest = Manifest {
        name: info.name.clone(),
        version: info.version.clone(),
        status: info.status,
        description: info.description.clone(),
        input: info.input.clone(),
        classes: dermedge::manifest::ham10000_classes(),
        members: members
            .iter()
            .map(|m| MemberSpec {
                file: m.file.clone(),
                sha256: m.sha256.clone(),
                weight: m.weight,
                backbone: m.backbone.clone(),
                precision: "f32".into(),
                output: MemberOutput::Logits,
            })
            .collect(),
        inference: Default::default(),
        decision: info.decision.clone(),
    };
    let path = dir.join("ensemble.toml");
    std::fs::write(&path, manifest.to_toml())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
