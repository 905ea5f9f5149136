"""Precision trade-off: bfloat16 against float32 scoring of trained models, in one process.

For each model (a run folder written by `tfpvae train`, or trained here with its defaults:
10 epochs of MNIST or Fashion-MNIST), on the first `--images` test images of its own data
set, binarised once (seed 0), with k importance samples and the same seed in both precisions:

* speed: images/s of `log_prob` in each precision (median over `--rounds` interleaved
  rounds, wall and process CPU time) and their ratio;
* error: mean test NLL in each precision, their difference (bfloat16 minus float32), and the per-image
  |log p_bf16(x) - log p_f32(x)| (median, 99th percentile, maximum);
* AUROC: every anomaly score (`tfpvae.anomaly.SCORES` but typicality) of `--images`
  normal test images against as many of each shifted set (the other data set, the images
  flipped left-right, inverted, and uniform noise), in each precision, and the largest
  change.

    python benchmarks/precision.py --out benchmarks/results/precision-DATE.json
    python benchmarks/precision.py --model mnist=runs/mnist --model fashion_mnist=runs/fashion
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from roofline import cpu_model  # noqa: E402

import tfpvae  # noqa: E402
from tfpvae.anomaly import compute_scores, detection_metrics  # noqa: E402
from tfpvae.datasets import load_split  # noqa: E402
from tfpvae.likelihood import binarize  # noqa: E402
from tfpvae.precision import native_bfloat16  # noqa: E402
from tfpvae.runs import RunSettings, train_run  # noqa: E402

SCORES = ("log_prob", "elbo", "rate", "distortion", "complexity")
OTHER = {"mnist": "fashion_mnist", "fashion_mnist": "mnist"}


def shifted_sets(name: str, x: np.ndarray, n: int, data_dir: str | None) -> dict[str, np.ndarray]:
    """The anomalous sets for normal test images `x` of data set `name`, n images each."""
    other = load_split(OTHER[name], "test", data_dir)[0][-n:]
    noise = np.random.default_rng(1).uniform(size=x.shape).astype(np.float32)
    return {"other data set": other, "flipped": x[:, :, ::-1], "inverted": 1.0 - x, "uniform noise": noise}


def timed(call) -> tuple[float, float]:
    """(wall, CPU) seconds of call()."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(model, name: str, args) -> dict:
    """Speed, error and AUROC of one model in both precisions."""
    x = load_split(name, "test", args.data_dir)[0][: args.images]
    xb = binarize(x, seed=0)
    k = args.num_samples
    estimators = {p: model.estimator(p) for p in ("float32", "bfloat16")}
    log_p = {p: e.log_prob(xb, k, seed=0) for p, e in estimators.items()}  # also the warm-up
    times = {p: [] for p in estimators}
    for _ in range(args.rounds):
        for p, e in estimators.items():
            times[p].append(timed(lambda e=e: e.log_prob(xb, k, seed=0)))
    speed = {
        p: {
            "images_per_s": round(len(xb) / statistics.median(t[0] for t in ts), 1),
            "cpu_s": round(statistics.median(t[1] for t in ts), 3),
        }
        for p, ts in times.items()
    }
    delta = np.abs(log_p["bfloat16"] - log_p["float32"])
    sets = shifted_sets(name, x, args.images, args.data_dir)
    kw = dict(num_samples=k, seed=0, binarize_seed=0, progress=False)
    aurocs = {}
    for p, e in estimators.items():
        normal = compute_scores(e, x, SCORES, **kw)
        for set_name, anomalous in sets.items():
            scores = compute_scores(e, anomalous, SCORES, **kw)
            for score in SCORES:
                auroc = detection_metrics(normal[score], scores[score])["auroc"]
                aurocs.setdefault(f"{set_name} / {score}", {})[p] = round(auroc, 4)
    largest = max(abs(v["bfloat16"] - v["float32"]) for v in aurocs.values())
    return {
        "model": name,
        "speed": speed,
        "speedup_wall": round(speed["bfloat16"]["images_per_s"] / speed["float32"]["images_per_s"], 2),
        "speedup_cpu": round(speed["float32"]["cpu_s"] / speed["bfloat16"]["cpu_s"], 2),
        "nll_float32": round(float(-log_p["float32"].mean()), 3),
        "nll_bfloat16": round(float(-log_p["bfloat16"].mean()), 3),
        "nll_difference": round(float(log_p["float32"].mean() - log_p["bfloat16"].mean()), 4),
        "abs_delta_median": round(float(np.median(delta)), 4),
        "abs_delta_p99": round(float(np.quantile(delta, 0.99)), 4),
        "abs_delta_max": round(float(delta.max()), 4),
        "aurocs": aurocs,
        "largest_auroc_change": round(largest, 4),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=[], metavar="DATASET=RUN_DIR", help="a trained model")
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"], choices=sorted(OTHER))
    p.add_argument("--epochs", type=int, default=10, help="epochs of the models trained here (default 10)")
    p.add_argument("--images", type=int, default=1000, help="test images, and images per shifted set")
    p.add_argument("--num-samples", type=int, default=64, help="importance samples k (default 64)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-dir", default=os.environ.get("TFPVAE_DATA_DIR"))
    p.add_argument("--out", help="write the JSON result here")
    args = p.parse_args(argv)
    given = dict(pair.split("=", 1) for pair in args.model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            if name in given:
                model = tfpvae.load(given[name])
            else:
                settings = RunSettings(dataset=name, data_dir=args.data_dir, epochs=args.epochs, seed=0)
                model = train_run(Path(tmp) / name, settings, verbose=0, score_limit=1).model
            rows.append(compare(model, name, args))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "aurocs"}), flush=True)
    result = {
        "cpu": cpu_model(),
        "native_bfloat16": native_bfloat16(),
        "num_samples": args.num_samples,
        "images": args.images,
        "rows": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
