"""Register the model as a new version in a folder registry when it is good enough.

Versions are immutable folders `v1`, `v2`, ... holding the model and a model card;
registering the same model bytes again returns the existing version.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from common import write_metrics


def existing_versions(registry: Path) -> dict[int, dict[str, object]]:
    versions = {}
    for card in registry.glob("v*/card.json"):
        try:
            versions[int(card.parent.name[1:])] = json.loads(card.read_text())
        except ValueError:
            continue
    return versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--min-accuracy", type=float, required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    report = json.loads((args.report / "report.json").read_text())
    model_file = args.model / "model.pkl"
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    release: dict[str, object] = {"model_sha256": digest, "accuracy": report["accuracy"]}

    if report["accuracy"] < args.min_accuracy:
        release.update(registered=False, reason=f"accuracy {report['accuracy']} < {args.min_accuracy}")
        print(f"not registered: {release['reason']}")
    else:
        registry = Path(os.path.expanduser(args.registry))
        registry.mkdir(parents=True, exist_ok=True)
        versions = existing_versions(registry)
        same = [v for v, card in versions.items() if card.get("model_sha256") == digest]
        if same:
            version = min(same)
            print(f"model already registered as v{version}")
        else:
            version = max(versions, default=0) + 1
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=registry))
            shutil.copy2(model_file, staging / "model.pkl")
            card = {"version": version, "model_sha256": digest, "metrics": report}
            (staging / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True))
            staging.chmod(0o755)
            os.rename(staging, registry / f"v{version}")  # a version appears whole or not at all
            print(f"registered model as v{version} in {registry}")
        release.update(registered=True, version=version, path=str(registry / f"v{version}"))
    (args.out / "release.json").write_text(json.dumps(release, indent=2, sort_keys=True))
    write_metrics({"registered": bool(release["registered"]), "version": int(release.get("version", 0))})


if __name__ == "__main__":
    main()
