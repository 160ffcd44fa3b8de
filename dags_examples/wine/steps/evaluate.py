"""Score the model on the test split."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

from common import read_split, write_metrics
from sklearn.metrics import accuracy_score, f1_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    with open(args.model / "model.pkl", "rb") as fh:
        model = pickle.load(fh)
    features, labels = read_split(args.data / "test.csv")
    predicted = model.predict(features)
    metrics = {
        "accuracy": round(float(accuracy_score(labels, predicted)), 6),
        "f1_macro": round(float(f1_score(labels, predicted, average="macro")), 6),
        "test_rows": len(labels),
    }
    (args.out / "report.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    print(f"accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['f1_macro']:.4f}")
    write_metrics(metrics)


if __name__ == "__main__":
    main()
