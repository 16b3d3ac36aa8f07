"""Copies an exported f32 ensemble with every member's declared input shape set to WIDTHxHEIGHT
(weights untouched, new checksums, the manifest's [input] size changed), to measure on validation
how members trained at one size score at another. The graphs end in GlobalAveragePool, so any size
runs. usage: python3 scripts/input_size.py SRC_DIR OUT_DIR WIDTH HEIGHT (needs `pip install onnx`)"""
import hashlib
import os
import re
import sys

import onnx


def main(src, out, width, height):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(src, "ensemble.toml")) as f:
        manifest = f.read()
    for name in re.findall(r'file = "([^"]+)"', manifest):
        model = onnx.load(os.path.join(src, name))
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_value, dims[3].dim_value = height, width
        path = os.path.join(out, name)
        onnx.save(model, path)
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        manifest = re.sub(r'(file = "%s"\nsha256 = ")[0-9a-f]+' % re.escape(name),
                          r"\g<1>" + digest, manifest)
    manifest = re.sub(r"(?m)^width = \d+", f"width = {width}", manifest, count=1)
    manifest = re.sub(r"(?m)^height = \d+", f"height = {height}", manifest, count=1)
    with open(os.path.join(out, "ensemble.toml"), "w") as f:
        f.write(manifest)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
