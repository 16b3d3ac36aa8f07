"""What the prediction scripts share: reading the `predictions.csv` that `dermedge-tools evaluate`
writes, and the figures of a set of predictions. The classes are the file's `p_<code>` columns, in
the evaluated manifest's order."""
import csv
import os
import tomllib

# The manifest whose watched class (`watch = true`: melanoma) the melanoma recall is about.
MANIFEST = os.path.join(os.path.dirname(__file__), "..", "models", "ensemble.toml")


def watched_class(manifest=MANIFEST):
    """Code of the class the manifest marks `watch = true`, or None."""
    with open(manifest, "rb") as f:
        classes = tomllib.load(f)["classes"]
    return next((c["code"] for c in classes if c.get("watch")), None)


def read_predictions(path):
    """(probabilities, labels, class codes) of a predictions.csv."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        classes = [c[2:] for c in reader.fieldnames if c.startswith("p_")]
        rows = list(reader)
    probabilities = [[float(r["p_" + c]) for c in classes] for r in rows]
    labels = [classes.index(r["label"]) for r in rows]
    return probabilities, labels, classes


def figures(probabilities, labels, classes, prior=None, tau=0.0):
    """Top-1, top-3, balanced accuracy and melanoma recall, the probabilities first divided by
    `prior` raised to `tau` (no correction by default)."""
    prior = prior or [1.0] * len(classes)
    k = len(classes)
    correct, seen, top3 = [0] * k, [0] * k, 0
    for p, label in zip(probabilities, labels):
        adjusted = [pi / prior_i**tau for pi, prior_i in zip(p, prior)]
        ranked = sorted(range(k), key=lambda i: -adjusted[i])
        seen[label] += 1
        correct[label] += ranked[0] == label
        top3 += label in ranked[:3]
    recall = [c / s if s else 0.0 for c, s in zip(correct, seen)]
    watched = watched_class()
    present = [r for r, s in zip(recall, seen) if s]
    return {
        "top1": sum(correct) / len(labels),
        "top3": top3 / len(labels),
        "balanced": sum(present) / len(present),
        "melanoma": recall[classes.index(watched)] if watched in classes else float("nan"),
    }
