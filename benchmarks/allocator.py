"""A/B of glibc's defaults against :func:`asdcli.allocator.keep_freed_memory`.

Scores as ``asd score`` and ``asd serve`` do: a new process loads a saved run and scores
10-s clips one at a time on one thread. Each detector is trained once (1 epoch, on synthetic
fan clips), then scored by alternating new processes, with and without the setting. Prints
each process's median latency, page faults per clip and peak RSS. Then the setting's cost:
peak RSS and page faults of ``asd train emb-knn`` and ``asd train conv-ae`` (1 epoch, the same
clips), with and without it.

    python -m benchmarks.allocator [--rounds 3] [--only emb-knn,lstm-ae]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DETECTORS = ("lstm-ae", "emb-knn", "conv-ae", "fc-ae")
# A glibc malloc tunable at its default (no perturbation): a setting of the user's, so
# keep_freed_memory leaves glibc's defaults alone.
DEFAULT_TUNABLE = "glibc.malloc.perturb=0"

_CHILD = """
import json, statistics, sys
from pathlib import Path
if sys.argv[3] == "kept":
    from asdcli.allocator import keep_freed_memory
    assert keep_freed_memory()
import torch
torch.set_num_threads(1)
from asdcli.detectors import get_detector
from asdcli.settings import FeatureSettings
from benchmarks.__main__ import score_latencies
det = get_detector(sys.argv[1]).load(Path(sys.argv[2]) / sys.argv[1])
files = sorted((Path(sys.argv[2]) / "data" / "fan" / "test").glob("*.wav"))
ms, faults_per_clip = score_latencies(det, files, FeatureSettings())
peak = next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]
print(json.dumps({"median_ms": statistics.median(ms), "faults_per_clip": faults_per_clip,
                  "peak_rss_mib": int(peak) / 1024, "clips": len(ms)}))
"""


# `asd` itself, then its peak RSS and page faults. For "defaults" the parent sets a glibc
# tunable of the user's, at its default value: `asd` then leaves glibc as it is.
_TRAIN_CHILD = """
import json, resource, sys
from asdcli.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert not exc.code, exc.code
peak = next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]
print(json.dumps({"peak_rss_mib": int(peak) / 1024,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt}))
"""


def _train(root: Path, detectors: list[str]) -> None:
    from asdcli.detectors import get_detector
    from asdcli.detectors.params import DetectorParams, TrainParams
    from asdcli.featurize import featurize
    from asdcli.settings import FeatureSettings
    from asdcli.store import FeatureStore
    from asdcli.synth import synthesize

    synthesize(root / "data", machines=("fan",), n_train=40, n_test=40, seconds=10.0)
    fs = FeatureSettings()
    featurize([root / "data"], fs, root / "features.h5", workers=2)
    store = FeatureStore(root / "features.h5")
    recs = [r for r in store.clips(fs.key()) if r.split == "train"]
    feats = store.load(fs.key(), recs)
    for name in detectors:
        params = getattr(DetectorParams(), name.replace("-", "_"))
        det = get_detector(name)(params, TrainParams(epochs=1, patience=2, device="cpu"))
        det.fit(feats, recs)
        det.save(root / name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.allocator", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="Pairs of processes per detector.")
    parser.add_argument("--only", default=",".join(DETECTORS), help="Comma-separated detectors.")
    args = parser.parse_args(argv)
    detectors = args.only.split(",")
    with tempfile.TemporaryDirectory(prefix="asd-alloc-") as tmp:
        root = Path(tmp)
        _train(root, detectors)
        print("detector  setting   median ms  faults/clip  peak RSS MiB")
        for name in detectors:
            for _ in range(args.rounds):
                for setting in ("defaults", "kept"):  # alternating: the machine drifts
                    out = subprocess.run(
                        [sys.executable, "-c", _CHILD, name, str(root), setting],
                        capture_output=True, text=True, check=True,
                    )  # fmt: skip
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    print(
                        f"{name:9s} {setting:9s} {r['median_ms']:9.1f}"
                        f"  {r['faults_per_clip']:11.0f}  {r['peak_rss_mib']:12.0f}"
                    )
        print("asd train, 1 epoch  setting   faults  peak RSS MiB")
        for name in ("emb-knn", "conv-ae"):
            for setting in ("defaults", "kept"):
                cmd = ["train", name, "--store", str(root / "features.h5"), "--epochs", "1",
                       "--runs", str(root / "runs"), "--device", "cpu"]  # fmt: skip
                env = dict(os.environ)
                if setting == "defaults":
                    env["GLIBC_TUNABLES"] = DEFAULT_TUNABLE
                out = subprocess.run(
                    [sys.executable, "-c", _TRAIN_CHILD, *cmd],
                    capture_output=True, text=True, check=True, env=env,
                )  # fmt: skip
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{name:19s} {setting:9s} {r['faults']:7d}  {r['peak_rss_mib']:12.0f}")


if __name__ == "__main__":  # featurize's workers import this module afresh
    main()
