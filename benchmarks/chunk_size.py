"""Scoring chunk size: images/s and memory of `log_prob` against `max_batch_elements`, in one process.

`LikelihoodEstimator` decodes at most `max_batch_elements` (image, sample) pairs per call.
For each size given, the default model of `--architecture` (untrained: the speed does not
depend on the weights) scores the same `--images` binary images with k importance samples;
sizes are interleaved over `--rounds` rounds and reported as the median images/s and the
median over rounds of its ratio to the library's default for that architecture
(`default_batch_elements`) in the same round. The
scores must agree across sizes (to float32 rounding): the check is part of the run.

With `--memory`, each size also runs in a fresh subprocess that reports how far scoring
raised the process's peak resident memory (`peak_rss_mb`) above what it was before the first
call: the working set of the size's calls, plus one tracing (about the same for every size).

    python benchmarks/chunk_size.py --out benchmarks/results/chunk-size-DATE.json --memory
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from roofline import cpu_model  # noqa: E402

import tfpvae  # noqa: E402
from tfpvae.likelihood import LikelihoodEstimator, binarize, default_batch_elements  # noqa: E402

SIZES = (1024, 4096, 8192, 16384, 32768)


def _images(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return binarize(rng.uniform(size=(n, 28, 28, 1)).astype(np.float32) ** 4, seed=0)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: VmHWM on Linux (ru_maxrss elsewhere).

    VmHWM belongs to the process's own memory map; ru_maxrss on Linux carries the parent's
    peak across fork and exec, so a subprocess started by a large benchmark would read its parent's.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux; bytes on macOS


def peak_growth_mb(architecture: str, size: int, images: int, k: int) -> float:
    """Peak resident memory added by scoring `images` images at `size` pairs per call, in MB."""
    model = tfpvae.VAE(input_shape=(28, 28, 1), architecture=architecture, seed=0)
    estimator = LikelihoodEstimator.from_model(model, max_batch_elements=size)
    x = _images(images)
    before = peak_rss_mb()
    estimator.log_prob(x, k, seed=0, progress=False)
    return peak_rss_mb() - before


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architecture", default="mlp", help="network of the model measured (default mlp)")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help=f"max_batch_elements (default {SIZES})")
    p.add_argument("--num-samples", type=int, default=64, help="importance samples k (default 64)")
    p.add_argument("--images", type=int, default=1024, help="images scored per round (default 1024)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--memory", action="store_true", help="also measure each size's peak memory in a subprocess")
    p.add_argument("--memory-only", type=int, metavar="SIZE", help=argparse.SUPPRESS)  # the subprocess
    p.add_argument("--out", help="write the JSON result here")
    args = p.parse_args(argv)
    k = args.num_samples
    if args.memory_only:
        print(json.dumps({"peak_growth_mb": peak_growth_mb(args.architecture, args.memory_only, args.images, k)}))
        return 0

    model = tfpvae.VAE(input_shape=(28, 28, 1), architecture=args.architecture, seed=0)
    default = default_batch_elements(model)
    sizes = sorted(set(args.sizes) | {default})
    x = _images(args.images)
    estimators = {size: LikelihoodEstimator.from_model(model, max_batch_elements=size) for size in sizes}
    for estimator in estimators.values():
        estimator.log_prob(x[:64], k, seed=0, progress=False)  # traced before timing
    rates = {size: [] for size in sizes}
    scores = {}
    for _ in range(args.rounds):
        for size, estimator in estimators.items():
            start = time.perf_counter()
            scores[size] = estimator.log_prob(x, k, seed=0, progress=False)
            rates[size].append(args.images / (time.perf_counter() - start))
    spread = max(float(np.abs(scores[size] - scores[default]).max()) for size in sizes)
    if spread > 1e-3:
        raise AssertionError(f"scores differ across chunk sizes by {spread:.2e} nats")
    rows = []
    for size in sizes:
        row = {
            "max_batch_elements": size,
            "images_per_s": round(statistics.median(rates[size]), 1),
            # Paired by round: each round's sizes ran back to back, so drift cancels in the ratio.
            "ratio_to_default": round(statistics.median(r / d for r, d in zip(rates[size], rates[default])), 3),
        }
        if args.memory:
            command = [sys.executable, __file__, "--architecture", args.architecture, "--memory-only", str(size)]
            command += ["--images", str(args.images), "--num-samples", str(k)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            row["peak_growth_mb"] = round(json.loads(out.strip().splitlines()[-1])["peak_growth_mb"], 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "cpu": cpu_model(),
        "architecture": args.architecture,
        "num_samples": k,
        "images": args.images,
        "rounds": args.rounds,
        "default": default,
        "largest_score_difference_nats": spread,
        "rows": rows,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
