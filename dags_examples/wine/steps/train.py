"""Fit a random forest on the training split."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

from common import read_split, write_metrics
from sklearn.ensemble import RandomForestClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--n-estimators", type=int, required=True)
    parser.add_argument("--max-depth", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    features, labels = read_split(args.data / "train.csv")
    model = RandomForestClassifier(n_estimators=args.n_estimators, max_depth=args.max_depth, random_state=0, n_jobs=1)
    model.fit(features, labels)
    with open(args.out / "model.pkl", "wb") as fh:
        pickle.dump(model, fh, protocol=5)
    train_accuracy = float(model.score(features, labels))
    print(f"trained {args.n_estimators} trees (max depth {args.max_depth}); train accuracy {train_accuracy:.4f}")
    write_metrics({"train_accuracy": round(train_accuracy, 6)})


if __name__ == "__main__":
    main()
