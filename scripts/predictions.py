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
    return read_predictions_with_images(path)[1:]


def read_predictions_with_images(path):
    """(image ids, probabilities, labels, class codes) of a predictions.csv."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        classes = [c[2:] for c in reader.fieldnames if c.startswith("p_")]
        rows = list(reader)
    images = [r["image_id"] for r in rows]
    probabilities = [[float(r["p_" + c]) for c in classes] for r in rows]
    labels = [classes.index(r["label"]) for r in rows]
    return images, probabilities, labels, classes


def hit_rates(hits, labels, classes, weights=None):
    """Accuracy, balanced accuracy (mean recall over the classes present) and each class's recall
    (0 for a class without images) of top-1 `hits`, image `i` counted `weights[i]` times (once
    by default); `classes` is the number of classes."""
    weights = weights or [1] * len(hits)
    correct, seen = [0] * classes, [0] * classes
    for hit, label, weight in zip(hits, labels, weights):
        seen[label] += weight
        correct[label] += weight * hit
    recall = [c / n if n else 0.0 for c, n in zip(correct, seen)]
    present = [r for r, n in zip(recall, seen) if n]
    return sum(correct) / sum(seen), sum(present) / len(present), recall


def figures(probabilities, labels, classes, prior=None, tau=0.0):
    """Top-1, top-3, balanced accuracy and melanoma recall, the probabilities first divided by
    `prior` raised to `tau` (no correction by default)."""
    prior = prior or [1.0] * len(classes)
    k = len(classes)
    hits, top3 = [], 0
    for p, label in zip(probabilities, labels):
        adjusted = [pi / prior_i**tau for pi, prior_i in zip(p, prior)]
        ranked = sorted(range(k), key=lambda i: -adjusted[i])
        hits.append(ranked[0] == label)
        top3 += label in ranked[:3]
    top1, balanced, recall = hit_rates(hits, labels, k)
    watched = watched_class()
    return {
        "top1": top1,
        "top3": top3 / len(labels),
        "balanced": balanced,
        "melanoma": recall[classes.index(watched)] if watched in classes else float("nan"),
    }
