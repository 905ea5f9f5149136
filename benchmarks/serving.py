"""Serving under load: the exported SavedModel's `score` signature, 1,000 mixed requests from 4 threads, all checked.

Everything runs in one process:

1. the model: a run folder written by `tfpvae train` (`--model`), or the defaults trained
   here for `--epochs` on MNIST (as benchmarks/precision.py does);
2. `tfpvae.export.export` with k importance samples, loaded back with plain
   `tf.saved_model.load`, and one warm-up request;
3. bounded memory: the peak RSS above the RSS before the request (psutil, sampled every
   2 ms in a thread) of one request of `--small` test images, then of one of `--huge`;
   unchunked, the huge one would decode `--huge` x k codes at once;
4. load: `--requests` `score` requests of 1..`--max-images` MNIST test images each (sizes
   uniform, images drawn with replacement), random ids and one of four random seeds, sent
   from `--threads` threads: throughput (requests/s and images/s over the wall time),
   latency percentiles (per request, from call to answer, queueing excluded) and the peak
   RSS during the load;
5. every row of every answer (the load and both single requests) against the in-process
   scores of the same images, ids and seed (the model's `LikelihoodEstimator.scores`, one
   call per seed): the largest |served - in-process| per score. The script exits 1 if one
   exceeds `--atol`.

    python benchmarks/serving.py --out benchmarks/results/serving-DATE.json
    python benchmarks/serving.py --model runs/mnist --requests 200
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from roofline import cpu_model  # noqa: E402

import tfpvae  # noqa: E402
from tfpvae._keras import tf  # noqa: E402
from tfpvae.datasets import load_split  # noqa: E402
from tfpvae.export import SERVED_SCORES, ServingModule, export  # noqa: E402
from tfpvae.runs import RunSettings, train_run  # noqa: E402

# The served sign of each score against `LikelihoodEstimator.scores` (anomaly-score signs: higher = more normal).
SIGNS = {"rate": -1.0, "distortion": -1.0}
MB = 2**20


class PeakRSS:
    """The process's peak resident memory while the `with` block runs, sampled in a thread.

    Attributes (MB, after the block): `before`, the RSS on entry; `peak`, the largest
    sample; `growth`, peak - before.
    """

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.before = self.peak = self.growth = 0.0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss / MB)
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakRSS:
        self.before = self.peak = self._process.memory_info().rss / MB
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss / MB)
        self.growth = self.peak - self.before

    def report(self) -> dict:
        return {
            "rss_before_mb": round(self.before, 1),
            "peak_rss_mb": round(self.peak, 1),
            "growth_mb": round(self.growth, 1),
        }


def make_requests(rng: np.random.Generator, args, pool_size: int) -> list[tuple[np.ndarray, list[str], int]]:
    """(rows of the image pool, ids, seed) per request: sizes uniform in 1..max_images, one of four seeds."""
    seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=4)]
    requests = []
    for r in range(args.requests):
        n = int(rng.integers(1, args.max_images + 1))
        ids = [f"request{r}/{value}" for value in rng.integers(0, 2**31, size=n)]
        requests.append((rng.integers(0, pool_size, size=n), ids, seeds[int(rng.integers(4))]))
    return requests


def send(score, images: np.ndarray, ids: list[str], seed: int) -> tuple[dict[str, np.ndarray], float]:
    """One `score` request: its answer as numpy arrays and its latency in seconds."""
    start = time.perf_counter()
    out = score(images=tf.constant(images), ids=tf.constant(ids), seed=tf.constant(seed, tf.int32))
    answer = {name: value.numpy() for name, value in out.items()}
    return answer, time.perf_counter() - start


def load_test(score, pool: np.ndarray, requests, threads: int) -> tuple[list[dict], dict]:
    """Sends every request from `threads` threads; the answers (in request order) and the timing record."""
    with PeakRSS() as memory, concurrent.futures.ThreadPoolExecutor(threads) as executor:
        start = time.perf_counter()
        results = list(executor.map(lambda req: send(score, pool[req[0]], req[1], req[2]), requests))
        wall = time.perf_counter() - start
    latency_ms = np.array([seconds for _, seconds in results]) * 1000
    images = sum(len(rows) for rows, _, _ in requests)
    record = {
        "requests": len(requests),
        "images": images,
        "threads": threads,
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(requests) / wall, 2),
        "images_per_s": round(images / wall, 1),
        "latency_ms": {f"p{q}": round(float(np.percentile(latency_ms, q)), 1) for q in (50, 90, 99)}
        | {"mean": round(float(latency_ms.mean()), 1), "max": round(float(latency_ms.max()), 1)},
        "memory": memory.report(),
    }
    return [answer for answer, _ in results], record


def largest_differences(model, k: int, pool: np.ndarray, requests, answers) -> dict[str, float]:
    """max |served - in-process| per score over every row of every answer (one library call per seed)."""
    names = tuple(SERVED_SCORES)
    worst = dict.fromkeys(names, 0.0)
    for seed in sorted({seed for _, _, seed in requests}):
        mine = [i for i, (_, _, s) in enumerate(requests) if s == seed]
        rows = np.concatenate([requests[i][0] for i in mine])
        ids = [id_ for i in mine for id_ in requests[i][1]]
        library = model.estimator().scores(pool[rows], names, k, ids=ids, seed=seed)
        served = {name: np.concatenate([answers[i][name] for i in mine]) for name in names}
        for name in names:
            difference = np.abs(served[name] - SIGNS.get(name, 1.0) * library[name])
            worst[name] = max(worst[name], float(np.nan_to_num(difference, nan=np.inf).max()))
    return worst


def single_requests(score, pool: np.ndarray, sizes: tuple[int, ...], seed: int):
    """One request per size (in order, after a warm-up): the memory record, requests and answers of each."""
    records, requests, answers = [], [], []
    for n in sizes:
        rows = np.arange(n) % len(pool)
        ids = [f"single{n}/{i}" for i in range(n)]
        with PeakRSS() as memory:
            answer, seconds = send(score, pool[rows], ids, seed)
        records.append({"images": n, "latency_s": round(seconds, 2), **memory.report()})
        requests.append((rows, ids, seed))
        answers.append(answer)
    return records, requests, answers


def get_model(args, tmp: Path):
    """The model of `--model`, or MNIST's defaults trained here for `--epochs`."""
    if args.model:
        return tfpvae.load(args.model)
    settings = RunSettings(dataset="mnist", data_dir=args.data_dir, epochs=args.epochs, seed=0, limit=args.train_limit)
    return train_run(tmp / "mnist", settings, verbose=0, score_limit=1).model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a run folder written by `tfpvae train` (default: train MNIST's defaults here)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the model trained here (default 3)")
    p.add_argument("--train-limit", type=int, help="train on only the first N MNIST images (default all)")
    p.add_argument("--num-samples", type=int, default=64, help="importance samples k fixed in the export (default 64)")
    p.add_argument("--requests", type=int, default=1000, help="requests in the load test (default 1000)")
    p.add_argument("--max-images", type=int, default=256, help="largest request, in images (default 256)")
    p.add_argument("--threads", type=int, default=4, help="threads sending requests (default 4)")
    p.add_argument("--small", type=int, default=100, help="images of the small single request (default 100)")
    p.add_argument("--huge", type=int, default=10000, help="images of the huge single request (default 10000)")
    p.add_argument("--atol", type=float, default=1e-4, help="largest |served - in-process| allowed (default 1e-4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the request sizes, images, ids and seeds")
    p.add_argument("--data-dir", default=os.environ.get("TFPVAE_DATA_DIR"))
    p.add_argument("--out", help="write the JSON result here")
    args = p.parse_args(argv)
    load_average = os.getloadavg()  # other processes on the machine skew the timings: recorded
    rng = np.random.default_rng(args.seed)
    pool = load_split("mnist", "test", args.data_dir)[0]
    k = args.num_samples
    with tempfile.TemporaryDirectory() as tmp:
        model = get_model(args, Path(tmp))
        module = ServingModule(model, k)  # the export's own settings: its chunk size, for the record
        export(model, Path(tmp) / "served", num_samples=k)
        served = tf.saved_model.load(str(Path(tmp) / "served"))  # kept: its signatures hold its variables
        score = served.signatures["score"]
        warm = 2 * module.chunk_images
        send(score, pool[:warm], [str(i) for i in range(warm)], 0)
        seed = int(rng.integers(2**31))
        singles, single_reqs, single_answers = single_requests(score, pool, (args.small, args.huge), seed)
        print(json.dumps({"single_requests": singles}), flush=True)
        requests = make_requests(rng, args, len(pool))
        answers, load = load_test(score, pool, requests, args.threads)
        print(json.dumps({"load": load}), flush=True)
    worst = largest_differences(model, k, pool, requests + single_reqs, answers + single_answers)
    result = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": {"start": round(load_average[0], 2), "end": round(os.getloadavg()[0], 2)},
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
        "model": args.model or f"mnist defaults, {args.epochs} epochs, seed 0",
        "num_samples": k,
        "max_batch_elements": module.max_batch_elements,
        "chunk_images": module.chunk_images,
        "codes_per_decoder_batch": module.chunk_images * module.plan.samples,
        "codes_at_once_unchunked_huge": args.huge * module.plan.samples,  # what the huge request decoded before
        "single_requests": singles,
        "load": load,
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "largest_difference": {name: float(f"{value:.3g}") for name, value in worst.items()},
        "answers_checked": sum(len(rows) for rows, _, _ in requests + single_reqs),
        "all_answers_match": all(value <= args.atol for value in worst.values()),
        "atol": args.atol,
    }
    print(json.dumps({key: result[key] for key in ("largest_difference", "all_answers_match", "max_rss_mb")}))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["all_answers_match"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
