#!/usr/bin/env python3
"""Top-1, balanced accuracy and melanoma recall of an evaluated ensemble when its probabilities are
divided by the training-side class prior raised to tau (post-hoc logit adjustment), for a grid of
tau. Reads the `predictions.csv` that `dermedge-tools evaluate` writes and the split CSV.

usage: scripts/prior_correction.py REPORT_DIR/predictions.csv splits/ham10000-seed1.csv
"""
import csv
import sys

from predictions import figures, read_predictions


def training_prior(split_csv, classes):
    counts = dict.fromkeys(classes, 0)
    with open(split_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] == "train":
                counts[row["dx"]] += 1
    total = sum(counts.values())
    return [counts[c] / total for c in classes]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    probabilities, labels, classes = read_predictions(sys.argv[1])
    prior = training_prior(sys.argv[2], classes)
    print(f"{len(labels)} images; training prior " + " ".join(
        f"{c} {p:.3f}" for c, p in zip(classes, prior)))
    print("| tau | top-1 | top-3 | balanced acc. | mean of top-1 and balanced | mel sens. |")
    print("| --- | --- | --- | --- | --- | --- |")
    for tau in [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0]:
        f = figures(probabilities, labels, classes, prior, tau)
        print(f"| {tau:.1f} | {100 * f['top1']:.1f}% | {100 * f['top3']:.1f}% | "
              f"{100 * f['balanced']:.1f}% | {50 * (f['top1'] + f['balanced']):.2f} | "
              f"{100 * f['melanoma']:.1f}% |")


if __name__ == "__main__":
    main()
