//! Trained classifiers to ONNX with the project's writer, BatchNorm folded into the convolutions.

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
/// one logit per class.
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
