"""What the prediction scripts share: reading the `predictions.csv` that `dermedge-tools evaluate`
writes, and the figures of a set of predictions."""
import csv

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
MELANOMA = CLASSES.index("mel")


def read_predictions(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    probabilities = [[float(r["p_" + c]) for c in CLASSES] for r in rows]
    labels = [CLASSES.index(r["label"]) for r in rows]
    return probabilities, labels


def figures(probabilities, labels, prior=None, tau=0.0):
    """Top-1, top-3, balanced accuracy and melanoma recall, the probabilities first divided by
    `prior` raised to `tau` (no correction by default)."""
    prior = prior or [1.0] * len(CLASSES)
    k = len(CLASSES)
    correct, seen, top3 = [0] * k, [0] * k, 0
    for p, label in zip(probabilities, labels):
        adjusted = [pi / prior_i**tau for pi, prior_i in zip(p, prior)]
        ranked = sorted(range(k), key=lambda i: -adjusted[i])
        seen[label] += 1
        correct[label] += ranked[0] == label
        top3 += label in ranked[:3]
    recall = [c / s if s else 0.0 for c, s in zip(correct, seen)]
    present = [r for r, s in zip(recall, seen) if s]
    return {
        "top1": sum(correct) / len(labels),
        "top3": top3 / len(labels),
        "balanced": sum(present) / len(present),
        "melanoma": recall[MELANOMA],
    }
