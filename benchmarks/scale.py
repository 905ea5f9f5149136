"""Scoring at scale: streaming memory and throughput, and the Beam DirectRunner against `tfpvae score`.

Two measurements, each from fresh processes on the same model, k and score set (the
`tfpvae score` defaults: log_prob with its standard error, elbo, rate, distortion,
complexity) of the fixed binarisation drawn with `--binarize-seed` (default 0), as
binarised-MNIST likelihoods are reported:

* `streaming`: `tfpvae score --input` over TFRecord shards of a small and a large number
  of 28x28 images (PNG-encoded MNIST, cycled with ids `path:record`), against in-memory
  scoring (`compute_scores` on an array) of the small set, timed before and after the
  large run. Reported: images/s of each, the ratio streaming / in-memory, and each
  process's peak resident memory; the goals are a large-run peak within 300 MB of the
  small run's and a throughput of at least 90% of in-memory scoring.
* `beam`: `python -m tfpvae.beam` on the DirectRunner with 2 worker processes
  (multi_processing) against `tfpvae score` on the same shards, in turn, twice each.
  Goal: Beam at least 70% of `tfpvae score`'s images/s on a 2-core machine.

    python benchmarks/scale.py streaming --images 1000000 --small 10000 --num-samples 64
    python benchmarks/scale.py beam --images 20000 --num-samples 64

Results go to stdout as JSON (and to `--out`); the work folder (`--work`, default a
temporary one) holds the shards and the model, and is deleted unless given.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

# Runs one scoring job in a fresh process and reports its wall time and peak memory.
_CHILD = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    kind, args = sys.argv[1], sys.argv[2:]
    if kind == "cli":
        from tfpvae.cli import main
        rc = main(args)
        n = None
    elif kind == "beam":
        from tfpvae.beam import run
        rc = run(args)
        n = None
    else:  # in-memory: model, npy, k, binarize seed
        import numpy as np
        import tfpvae
        from tfpvae.anomaly import compute_scores
        model = tfpvae.load(args[0])
        x = np.load(args[1])
        names = ("log_prob", "elbo", "rate", "distortion", "complexity")
        kw = dict(num_samples=int(args[2]), binarize_seed=int(args[3]), progress=False, stderr=True)
        compute_scores(model.likelihood, x[:256], names, **kw)
        t0 = time.perf_counter()  # after loading and tracing, as a long in-memory job would be
        compute_scores(model.likelihood, x, names, **kw)
        rc, n = 0, len(x)
    seconds = time.perf_counter() - t0
    # VmHWM, this process's own peak: ru_maxrss would also count the parent's resident size,
    # which Linux carries into the child's maximum when it execs.
    status = open("/proc/self/status").read()
    peak_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
    print(json.dumps({"rc": rc, "seconds": seconds, "peak_mb": peak_mb, "images": n}))
    """
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _child(kind: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, kind, *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"{kind} {' '.join(map(str, args))} exited {result['rc']}:\n{proc.stderr[-3000:]}")
    return result


def _png_bytes(x: np.ndarray) -> list[bytes]:
    from PIL import Image

    out = []
    for image in x:
        buf = io.BytesIO()
        Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def write_shards(pngs: list[bytes], labels: np.ndarray, folder: Path, n: int, shards: int) -> None:
    """n records over `shards` TFRecord files, cycling through the encoded images."""
    from tfpvae._keras import tf

    folder.mkdir(parents=True, exist_ok=True)
    per = -(-n // shards)
    for s in range(shards):
        with tf.io.TFRecordWriter(str(folder / f"part-{s:05d}.tfrecord")) as writer:
            for i in range(s * per, min(n, (s + 1) * per)):
                j = i % len(pngs)
                feature = {
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[pngs[j]])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[j])])),
                }
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def _prepare(work: Path, sizes: dict[str, int]) -> tuple[Path, np.ndarray]:
    """A briefly trained default model and the TFRecord shards of each size."""
    import tfpvae
    from tfpvae.datasets import load_split

    x, y = load_split("mnist", "train")
    xt, yt = load_split("mnist", "test")
    run = work / "model"
    if not (run / "weights.npz").exists():
        model = tfpvae.VAE(seed=0)
        model.compile()
        model.fit(x[:10000], epochs=1, batch_size=128, verbose=0)
        model.save(run)
    pngs, labels = _png_bytes(np.concatenate([xt, x])), np.concatenate([yt, y])
    for name, n in sizes.items():
        folder = work / name
        if not folder.exists():
            write_shards(pngs, labels, folder, n, shards=max(2, min(100, n // 10000)))
    np.save(work / "inmemory.npy", xt[: min(len(xt), sizes.get("small", 10000))])
    return run, xt


def _score(run: Path, folder: Path, out: Path, k: int, binarize_seed: int) -> dict:
    flags = ("--num-samples", k, "--binarize-seed", binarize_seed, "--quiet")
    result = _child("cli", "score", "--model", run, "--input", folder, "--out", out, *flags)
    rows = json.loads(Path(str(out) + ".json").read_text())["rows"]
    return {**result, "images": rows, "images_per_s": rows / result["seconds"]}


def bench_streaming(args, work: Path) -> dict:
    run, _ = _prepare(work, {"small": args.small, "large": args.images})
    k = args.num_samples
    b = args.binarize_seed
    memory_before = _child("memory", run, work / "inmemory.npy", k, b)
    small = _score(run, work / "small", work / "small.csv", k, b)
    large = _score(run, work / "large", work / "large.csv", k, b)
    memory_after = _child("memory", run, work / "inmemory.npy", k, b)
    in_memory = [m["images"] / m["seconds"] for m in (memory_before, memory_after)]
    reference = float(np.mean(in_memory))
    return {
        "small": small,
        "large": large,
        "in_memory_images_per_s": in_memory,
        "in_memory_peak_mb": [memory_before["peak_mb"], memory_after["peak_mb"]],
        "throughput_ratio": large["images_per_s"] / reference,
        "peak_growth_mb": large["peak_mb"] - small["peak_mb"],
        "goals": {
            "peak_within_300_mb": large["peak_mb"] - small["peak_mb"] <= 300,
            "throughput_at_least_90_percent": large["images_per_s"] >= 0.9 * reference,
        },
    }


def bench_beam(args, work: Path) -> dict:
    run, _ = _prepare(work, {"beam": args.images})
    k = args.num_samples
    rounds = []
    for r in range(args.rounds):
        score = _score(run, work / "beam", work / f"score{r}.csv", k, args.binarize_seed)
        prefix = work / f"beam{r}" / "scores"
        prefix.parent.mkdir(exist_ok=True)
        beam = _child(
            "beam",
            "--model",
            run,
            "--input",
            work / "beam",
            "--output",
            prefix,
            "--num-samples",
            k,
            "--binarize-seed",
            args.binarize_seed,
            "--direct_num_workers",
            "2",
            "--direct_running_mode",
            "multi_processing",
        )
        rounds.append(
            {
                "score_images_per_s": score["images_per_s"],
                "beam_images_per_s": args.images / beam["seconds"],
                "beam_seconds": beam["seconds"],
            }
        )
    score_rate = float(np.mean([r["score_images_per_s"] for r in rounds]))
    beam_rate = float(np.mean([r["beam_images_per_s"] for r in rounds]))
    return {
        "rounds": rounds,
        "score_images_per_s": score_rate,
        "beam_images_per_s": beam_rate,
        "ratio": beam_rate / score_rate,
        "goals": {"beam_at_least_70_percent": beam_rate >= 0.7 * score_rate},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("streaming", "beam"))
    parser.add_argument("--images", type=int, default=1_000_000, help="images of the large (or Beam) set")
    parser.add_argument("--small", type=int, default=10_000, help="images of the small streaming set")
    parser.add_argument("--num-samples", type=int, default=64, help="importance samples k (default 64)")
    parser.add_argument(
        "--binarize-seed",
        type=int,
        default=0,
        help="score the fixed binarisation drawn with this seed, as for binarised-MNIST likelihoods (default 0)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="Beam: rounds of (score, beam) (default 2)")
    parser.add_argument("--work", help="folder for shards and model (kept); default a temporary one")
    parser.add_argument("--out", help="also write the JSON result here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TFPVAE_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        result = (bench_streaming if args.what == "streaming" else bench_beam)(args, work)
    result = {
        "benchmark": args.what,
        "started": started,
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "images": args.images,
        "num_samples": args.num_samples,
        **result,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
