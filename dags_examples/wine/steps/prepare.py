"""Take the day's snapshot of the wine data and split it into train and test sets."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
from common import write_metrics, write_split
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split

#: Share of the rows present in a day's snapshot (rows arrive and are curated daily).
SNAPSHOT_SHARE = 0.85


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--date", required=True, help="the run's date, YYYY-MM-DD")
    parser.add_argument("--test-size", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    features, labels = load_wine(return_X_y=True)
    day_seed = int(hashlib.sha256(args.date.encode()).hexdigest()[:8], 16)
    keep = np.random.default_rng(day_seed).random(len(labels)) < SNAPSHOT_SHARE
    features, labels = features[keep], labels[keep]
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=args.test_size, random_state=args.seed, stratify=labels
    )
    write_split(args.out / "train.csv", x_train, y_train)
    write_split(args.out / "test.csv", x_test, y_test)
    print(f"snapshot {args.date}: {len(labels)} rows -> {len(y_train)} train, {len(y_test)} test")
    write_metrics({"rows": len(labels), "train_rows": len(y_train), "test_rows": len(y_test)})


if __name__ == "__main__":
    main()
