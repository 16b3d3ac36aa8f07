#!/usr/bin/env python3
"""Candidate ensembles for scripts/choose-members.sh.

usage: scripts/member_subsets.py write OUT_DIR MANIFEST...
         one folder per non-empty subset of the members of the exported f32 MANIFESTs (the first
         gives [input] and [[classes]]), each with its ONNX files and ensemble.toml
       scripts/member_subsets.py rank OUT_DIR
         each candidate's validation top-1, balanced accuracy and their mean, from the
         predictions.csv that `dermedge-tools evaluate --out OUT_DIR/<candidate>/val` wrote, best first
"""
import itertools
import os
import re
import shutil
import sys

from predictions import figures, read_predictions

MEMBER = re.compile(r"\[\[members\]\]\n(?:[^\[\n][^\n]*\n)*")


def write(out, manifests):
    head = None
    members = {}
    for path in manifests:
        text = open(path).read()
        if head is None:
            head = text[: text.index("[[members]]")]
        for block in MEMBER.findall(text):
            name = re.search(r'file = "([^"]+)"', block).group(1)
            members.setdefault(name, (os.path.dirname(path), block.rstrip("\n")))
    names = sorted(members)
    for size in range(1, len(names) + 1):
        for subset in itertools.combinations(names, size):
            folder = os.path.join(out, "+".join(n.removesuffix(".onnx") for n in subset))
            os.makedirs(folder, exist_ok=True)
            for name in subset:
                shutil.copy(os.path.join(members[name][0], name), folder)
            blocks = "\n\n".join(members[n][1] for n in subset)
            with open(os.path.join(folder, "ensemble.toml"), "w") as f:
                f.write(head + blocks + "\n")
            print(folder)


def rank(out):
    table = []
    for name in sorted(os.listdir(out)):
        predictions = os.path.join(out, name, "val", "predictions.csv")
        if os.path.isfile(predictions):
            f = figures(*read_predictions(predictions))
            top1, balanced = 100 * f["top1"], 100 * f["balanced"]
            table.append(((top1 + balanced) / 2, top1, balanced, name))
    print("| members | top-1 | balanced | mean |\n| --- | --- | --- | --- |")
    for mean, top1, balanced, name in sorted(table, reverse=True):
        print(f"| {name} | {top1:.2f}% | {balanced:.2f}% | {mean:.3f} |")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 3 and sys.argv[1] == "rank":
        rank(sys.argv[2])
    else:
        sys.exit(__doc__)
