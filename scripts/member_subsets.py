#!/usr/bin/env python3
"""Candidate ensembles for scripts/choose-members.sh.

usage: scripts/member_subsets.py write OUT_DIR MANIFEST...
         one folder per non-empty subset of the members of the exported f32 MANIFESTs (the first
         gives [input] and [[classes]]; a member whose input differs from that [input] keeps its
         own as [members.input]), each with its ONNX files and ensemble.toml, and prints the
         folders it wrote; a folder that already holds validation predictions of the same ensemble
         (the same members and head, calibrated or not) is kept as it is and not printed
       scripts/member_subsets.py compose OUT_DIR VERSION DESCRIPTION MANIFEST...
         one ensemble of every member of the MANIFESTs (as `write` makes its largest subset), its
         version and description set, e.g. to assemble members exported from several runs
       scripts/member_subsets.py rank OUT_DIR [SPLIT_CSV]
         each candidate's validation top-1, balanced accuracy and their mean, from the
         predictions.csv that `dermedge-tools evaluate --out OUT_DIR/<candidate>/val` wrote, best
         first; with the split, also how far each candidate's mean may lie from the leader's
         (5th to 95th percentile of the difference over 400 draws of the validation lesions with
         replacement, the same draws for every candidate): how much of the ranking is chance
"""
import itertools
import json
import os
import shutil
import sys
import tomllib

from predictions import hit_rates, read_predictions_with_images

def toml_value(value):
    """A TOML literal of a string, number, boolean or list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def member_block(member, own_input):
    """The [[members]] table of `member`, with `own_input` as its [members.input] when given."""
    lines = ["[[members]]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in member.items() if k != "input"]
    if own_input is not None:
        lines += ["", "[members.input]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in own_input.items()]
    return "\n".join(lines)


def read_members(manifests):
    """The text before the first manifest's [[members]], and each member's folder and table."""
    head = head_input = None
    members = {}
    for path in manifests:
        text = open(path).read()
        manifest = tomllib.loads(text)
        if head is None:
            head, head_input = text[: text.index("[[members]]")], manifest["input"]
        for member in manifest["members"]:
            own = member.get("input", manifest["input"])
            block = member_block(member, None if own == head_input else own)
            members.setdefault(member["file"], (os.path.dirname(path), block))
    return head, members


def ensemble_text(head, members, subset):
    """The ensemble.toml of the members named in `subset`."""
    return head + "\n\n".join(members[n][1] for n in subset) + "\n"


def write_ensemble(folder, head, members, subset):
    """`folder`/ensemble.toml with the members named in `subset`, and their ONNX files."""
    os.makedirs(folder, exist_ok=True)
    for name in subset:
        shutil.copy(os.path.join(members[name][0], name), folder)
    with open(os.path.join(folder, "ensemble.toml"), "w") as f:
        f.write(ensemble_text(head, members, subset))


def evaluated(folder, text):
    """Whether `folder` holds validation predictions of the ensemble `text` describes: its
    ensemble.toml is `text` with the [decision] that calibrate appended."""
    manifest = os.path.join(folder, "ensemble.toml")
    if not os.path.isfile(os.path.join(folder, "val", "predictions.csv")):
        return False
    if not os.path.isfile(manifest):
        return False
    existing = open(manifest).read().split("\n[decision]")[0]
    return existing.rstrip() == text.rstrip()


def write(out, manifests):
    head, members = read_members(manifests)
    names = sorted(members)
    for size in range(1, len(names) + 1):
        for subset in itertools.combinations(names, size):
            folder = os.path.join(out, "+".join(n.removesuffix(".onnx") for n in subset))
            if evaluated(folder, ensemble_text(head, members, subset)):
                continue
            write_ensemble(folder, head, members, subset)
            print(folder)


def compose(out, version, description, manifests):
    head, members = read_members(manifests)
    lines = head.split("\n")
    for key, value in (("version", version), ("description", description)):
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{key} = "))
        lines[at] = f"{key} = {toml_value(value)}"
    write_ensemble(out, "\n".join(lines), members, sorted(members))
    print(out)


def top1_hits(probabilities, labels):
    """Whether each image's top-1 class is its label."""
    return [max(range(len(p)), key=p.__getitem__) == label for p, label in zip(probabilities, labels)]


def mean_of_top1_and_balanced(hits, labels, weights, classes):
    """The ranking figure (percent) of the images counted `weights` times each."""
    top1, balanced, _ = hit_rates(hits, labels, classes, weights)
    return 50 * (top1 + balanced)


def bootstrap_differences(candidates, leader, lesion_of, resamples=400, seed=1):
    """For each candidate, the 5th and 95th percentiles of its ranking figure minus the leader's
    over `resamples` draws of the validation lesions with replacement (every image of a drawn
    lesion counted as often as it was drawn): the same images for every candidate."""
    import random

    rng = random.Random(seed)
    images = candidates[leader][0]
    lesions = sorted({lesion_of[i] for i in images})
    index = {lesion: at for at, lesion in enumerate(lesions)}
    image_lesion = [index[lesion_of[i]] for i in images]
    draws = {name: [] for name in candidates}
    for _ in range(resamples):
        counts = [0] * len(lesions)
        for _ in lesions:
            counts[rng.randrange(len(lesions))] += 1
        weights = [counts[at] for at in image_lesion]
        _, hits, labels, classes = candidates[leader]
        base = mean_of_top1_and_balanced(hits, labels, weights, classes)
        for name, (_, hits, labels, classes) in candidates.items():
            draws[name].append(mean_of_top1_and_balanced(hits, labels, weights, classes) - base)
    interval = {}
    for name, values in draws.items():
        values.sort()
        interval[name] = (values[len(values) // 20], values[len(values) * 19 // 20])
    return interval


def lesions_of(split):
    """Each image's lesion, from a split CSV."""
    import csv

    with open(split, newline="") as f:
        return {row["image_id"]: row["lesion_id"] for row in csv.DictReader(f)}


def rank(out, split=None):
    table, candidates = [], {}
    for name in sorted(os.listdir(out)):
        predictions = os.path.join(out, name, "val", "predictions.csv")
        if os.path.isfile(predictions):
            images, probabilities, labels, classes = read_predictions_with_images(predictions)
            hits = top1_hits(probabilities, labels)
            top1, balanced, _ = hit_rates(hits, labels, len(classes))
            table.append((50 * (top1 + balanced), 100 * top1, 100 * balanced, name))
            candidates[name] = (images, hits, labels, len(classes))
    table.sort(reverse=True)
    interval = {}
    if split and table:
        leader = table[0][3]
        same_images = all(c[0] == candidates[leader][0] for c in candidates.values())
        if same_images:
            interval = bootstrap_differences(candidates, leader, lesions_of(split))
    if interval:
        print("| members | top-1 | balanced | mean | mean - leader's, 90% lesion bootstrap |")
        print("| --- | --- | --- | --- | --- |")
    else:
        print("| members | top-1 | balanced | mean |\n| --- | --- | --- | --- |")
    for mean, top1, balanced, name in table:
        row = f"| {name} | {top1:.2f}% | {balanced:.2f}% | {mean:.3f} |"
        if interval:
            low, high = interval[name]
            row += f" {low:+.2f} to {high:+.2f} |"
        print(row)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 6 and sys.argv[1] == "compose":
        compose(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    elif len(sys.argv) in (3, 4) and sys.argv[1] == "rank":
        rank(*sys.argv[2:])
    else:
        sys.exit(__doc__)
