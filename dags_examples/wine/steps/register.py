"""Register the model as a versioned model directory when it is good enough.

The release output holds `<model name>/<version>/` with the model and a model card.
The version is the run date plus the model's content hash: sortable, and the same
bytes always get the same version. The artifact store keeps every release with its
lineage (which run, which data, which code produced it), so the release is a pure
function of its inputs and can be cached like any other step.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

from common import write_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--min-accuracy", type=float, required=True)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--date", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    report = json.loads((args.report / "report.json").read_text())
    model_file = args.model / "model.pkl"
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    release: dict[str, object] = {"model_name": args.model_name, "model_sha256": digest, "metrics": report}

    if report["accuracy"] < args.min_accuracy:
        release.update(registered=False, reason=f"accuracy {report['accuracy']} < {args.min_accuracy}")
        print(f"not registered: {release['reason']}")
    else:
        version = f"{args.date}.{digest[:8]}"
        target = args.out / args.model_name / version
        target.mkdir(parents=True)
        shutil.copyfile(model_file, target / "model.pkl")
        card = {"name": args.model_name, "version": version, "model_sha256": digest, "metrics": report}
        (target / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True))
        release.update(registered=True, version=version, path=f"{args.model_name}/{version}")
        print(f"registered {args.model_name} {version} (accuracy {report['accuracy']:.4f})")
    (args.out / "release.json").write_text(json.dumps(release, indent=2, sort_keys=True))
    write_metrics({"registered": bool(release["registered"])})


if __name__ == "__main__":
    main()
