"""The arithmetic an ensemble does per image, by layer kind, and the fewest instructions each kind
could take on the aarch64 dot-product set: what scripts/count-instructions.sh and
scripts/instruction-profile.sh are measured against (board/README.md).

Reads the f32 source members (the int8 members are made from them layer for layer), the input
size and the test-time augmentation from the manifest; the first FLOAT_LAYERS Conv/Gemm layers
are the float stem, as `dermedge-tools quantize --float-layers` keeps them.
usage: python3 scripts/operation_counts.py [MANIFEST] [FLOAT_LAYERS]
  (default models/f32/ensemble.toml 4; needs `pip install onnx`)"""
import os
import sys
import tomllib

import onnx
from onnx import shape_inference

VIEWS = {"none": 1, "horizontal-flip": 2, "flips": 4}

# Fewest instructions per unit on the dot-product set, from the kernels' structure:
# pointwise: 16 products per `sdot`, and an 8x8 tile loads four vectors per 16 `sdot` (1.25);
# requantization: 12 instructions per eight outputs for the reference's rounding (scvtf, fmul,
# fadd, fcvtns twice each; three narrowings and the zero point) and one store;
# depthwise: three `sdot` and three loads per four outputs (three taps per lane, one kernel
# row each) and the requantization; float stem: one `fmla` per four multiply-adds.
FLOORS = {
    "pointwise products": lambda macs, outs: macs / 16 * 1.25,
    "pointwise requantization": lambda macs, outs: outs * 13 / 8,
    "depthwise": lambda macs, outs: outs * (1.5 + 13 / 8),
    "float stem": lambda macs, outs: macs / 4,
}


def layer_counts(path, height, width):
    """(kind, multiply-adds, outputs) of every Conv and Gemm layer of one member for one view."""
    model = onnx.load(path)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value, dims[2].dim_value, dims[3].dim_value = 1, height, width
    model = shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(model.graph.value_info) + list(model.graph.output)
    }
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gemm":
            w = weights[node.input[1]]
            yield "gemm", w[0] * w[1], w[1]
        elif node.op_type == "Conv":
            w = weights[node.input[1]]
            outputs = 1
            for d in shapes[node.output[0]]:
                outputs *= d
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            kind = "depthwise" if group > 1 else ("pointwise" if w[2:] == [1, 1] else "conv")
            yield kind, outputs * w[1] * w[2] * w[3], outputs


def main(manifest_path, float_layers):
    with open(manifest_path, "rb") as f:
        manifest = tomllib.load(f)
    folder = os.path.dirname(manifest_path)
    height, width = manifest["input"]["height"], manifest["input"]["width"]
    views = VIEWS[manifest.get("inference", {}).get("test_time_augmentation", "none")]
    totals = {}
    for member in manifest["members"]:
        for index, (kind, macs, outputs) in enumerate(
            layer_counts(os.path.join(folder, member["file"]), height, width)
        ):
            if index < float_layers:
                parts = ["float stem"]
            elif kind == "pointwise":
                parts = ["pointwise products", "pointwise requantization"]
            elif kind == "depthwise":
                parts = ["depthwise"]
            else:
                parts = [f"other int8 ({kind})"]
            for part in parts:
                total = totals.setdefault(part, [0, 0])
                total[0] += macs * views
                total[1] += outputs * views
    runs = len(manifest["members"]) * views
    print(f"{manifest_path}: {runs} member runs per image at {width}x{height}")
    print(f"{'part':28} {'multiply-adds':>14} {'outputs':>9} {'fewest sdot-set instructions':>29}")
    floor_sum = 0.0
    for part, (macs, outputs) in totals.items():
        floor = FLOORS.get(part)
        floor_text = "" if floor is None else f"{floor(macs, outputs) / 1e6:.1f} M"
        floor_sum += 0 if floor is None else floor(macs, outputs)
        print(f"{part:28} {macs / 1e6:12.1f} M {outputs / 1e6:7.2f} M {floor_text:>29}")
    print(f"{'sum of the floors above':28} {'':14} {'':9} {floor_sum / 1e6:27.1f} M")


if __name__ == "__main__":
    main(
        sys.argv[1] if len(sys.argv) > 1 else "models/f32/ensemble.toml",
        int(sys.argv[2]) if len(sys.argv) > 2 else 4,
    )
