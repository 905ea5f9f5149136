"""Roofline: this machine's matrix-product ceilings, and how close tfpvae's scoring and training come.

1. Ceilings: `tf.matmul` of network-sized matrices in float32 and in bfloat16 (the best
   GFLOP/s over a few shapes, after a warm-up), on the threads TensorFlow uses.
2. Achieved: scoring (IWAE, k importance samples, `LikelihoodEstimator.log_prob`) and
   training (`VAE.fit` steps) of the default model, in each precision, as images/s and as
   GFLOP/s, counting only the networks' matrix products (2 * inputs * outputs per Dense
   row, 2 * kh * kw * c_in * c_out per convolution output pixel; training is three times
   the forward pass: forward, input gradient, weight gradient). The fraction of the ceiling
   says how much faster the hardware could go; the rest is elementwise work (activations,
   log-probabilities, sampling), memory traffic and per-step overhead.

3. Reference: float32 scoring with TFP's own methods in the two places where the scoring core
   has a faster equivalent (Bernoulli log p(x|z), and the Gaussian draws: one sliced
   distribution per image), so the fast paths' gain is a ratio within this run.

Everything runs in one process, interleaved over rounds, and is reported as medians with
the CPU model, so ratios are comparable within one run only. The ceilings are measured
again in every round, and each round's rates are divided by that round's ceilings: on a
shared machine whose speed drifts, the fraction compares work done at the same moment.

    python benchmarks/roofline.py --out benchmarks/results/roofline-DATE.json
    python benchmarks/roofline.py --precisions float32 --what score   # scoring in float32 only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time

import numpy as np

import tfpvae
from tfpvae import scoring
from tfpvae._keras import tf, tfkl
from tfpvae.likelihood import LikelihoodEstimator, binarize
from tfpvae.precision import native_bfloat16

SHAPES = ((4096, 512, 784), (4096, 1024, 1024), (2048, 2048, 2048))


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def matmul_gflops(dtype: tf.DType, shape: tuple[int, int, int], reps: int = 20) -> float:
    """GFLOP/s of (m, k) @ (k, n) in `dtype`, the median of `reps` timed calls after two warm-ups."""
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = tf.constant(rng.normal(size=(m, k)), dtype)
    b = tf.constant(rng.normal(size=(k, n)), dtype)
    product = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b)[:1, :1], tf.float32)))
    product(), product()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        product().numpy()
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / statistics.median(times) / 1e9


def layer_flops(network) -> int:
    """Multiply-add FLOPs of one example through `network`'s Dense and convolution layers."""
    total = 0
    for layer in network.layers:
        if hasattr(layer, "layers") and layer is not network:
            total += layer_flops(layer)
        elif isinstance(layer, tfkl.Dense):
            total += 2 * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, tfkl.Conv2DTranspose):  # each input pixel meets the whole kernel
            total += 2 * int(np.prod(layer.kernel.shape)) * layer.input_shape[1] * layer.input_shape[2]
        elif isinstance(layer, tfkl.Conv2D):  # each output pixel meets the whole kernel
            total += 2 * int(np.prod(layer.kernel.shape)) * layer.output_shape[1] * layer.output_shape[2]
    return total


@contextlib.contextmanager
def tfp_methods():
    """The scoring core with TFP's `log_prob` and per-image sliced draws (for graphs traced inside)."""
    saved = scoring._bernoulli_logits, scoring._draw_tril
    scoring._bernoulli_logits, scoring._draw_tril = (lambda px: None), scoring._draw_sliced
    try:
        yield
    finally:
        scoring._bernoulli_logits, scoring._draw_tril = saved


def ceilings_now(precisions: tuple[str, ...], reps: int) -> dict[str, dict[str, float]]:
    """GFLOP/s of each of `SHAPES` in each precision, measured now."""
    dtypes = {"float32": tf.float32, "bfloat16": tf.bfloat16}
    return {
        p: {f"{m}x{k}x{n}": round(matmul_gflops(dtypes[p], (m, k, n), reps), 1) for m, k, n in SHAPES}
        for p in precisions
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architecture", default="mlp", help="network of the model measured (default mlp)")
    p.add_argument("--num-samples", type=int, default=64, help="importance samples k (default 64)")
    p.add_argument("--images", type=int, default=1000, help="images scored per round (default 1000)")
    p.add_argument("--train-images", type=int, default=20480, help="images per training round (default 20480)")
    p.add_argument("--batch-size", type=int, default=128, help="training batch (default 128)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["float32", "bfloat16"],
        choices=["float32", "bfloat16"],
        help="precisions measured (default both); float32 always runs, as the reference",
    )
    p.add_argument(
        "--what", nargs="+", default=["score", "train"], choices=["score", "train"], help="work measured (default both)"
    )
    p.add_argument("--out", help="write the JSON result here")
    args = p.parse_args(argv)
    precisions = tuple(dict.fromkeys(["float32", *args.precisions]))  # the reference is float32

    model = tfpvae.VAE(input_shape=(28, 28, 1), architecture=args.architecture, seed=0)
    encoder_flops, decoder_flops = layer_flops(model.encoder), layer_flops(model.decoder)
    k = args.num_samples
    work = {"score": encoder_flops + k * decoder_flops, "train": 3 * (encoder_flops + decoder_flops)}  # per image
    rng = np.random.default_rng(0)
    x = binarize(rng.uniform(size=(args.images, 28, 28, 1)).astype(np.float32) ** 4, seed=0)
    x_train = rng.uniform(size=(args.train_images, 28, 28, 1)).astype(np.float32) ** 4
    models = {}
    for precision in precisions:
        m = tfpvae.VAE(input_shape=(28, 28, 1), architecture=args.architecture, seed=0)
        m.compile(precision=precision)
        m.fit(x_train[: 10 * args.batch_size], epochs=1, batch_size=args.batch_size, verbose=0)
        m.log_prob(x[:64], k, seed=0, precision=precision)
        models[precision] = m
    reference = LikelihoodEstimator.from_model(models["float32"])
    if "score" in args.what:
        with tfp_methods():
            reference.log_prob(x[:64], k, seed=0)  # traced with TFP's methods, kept in the graph

    def score(precision):
        if precision == "float32, TFP methods":
            with tfp_methods():  # a retrace, should one happen, sees the same methods
                reference.log_prob(x, k, seed=0)
        else:
            models[precision].log_prob(x, k, seed=0, precision=precision)
        return args.images

    def train(precision):
        models[precision].fit(x_train, epochs=1, batch_size=args.batch_size, verbose=0)
        return args.train_images

    jobs = [("score", "float32, TFP methods", score)] if "score" in args.what else []
    jobs += [(what, prec, {"score": score, "train": train}[what]) for prec in precisions for what in args.what]
    ceilings = {p: [] for p in precisions}  # per round: {shape: GFLOP/s}
    samples = {(what, prec): [] for what, prec, _ in jobs}  # per round: (images/s, that round's best ceiling)
    for _ in range(args.rounds):
        now = ceilings_now(precisions, reps=10)
        print("matmul GFLOP/s", json.dumps(now), flush=True)
        for prec, values in now.items():
            ceilings[prec].append(values)
        for what, prec, run in jobs:
            start = time.perf_counter()
            images = run(prec)
            ceiling = max(now["bfloat16" if prec == "bfloat16" else "float32"].values())
            samples[what, prec].append((images / (time.perf_counter() - start), ceiling))
    rows = []
    for (what, precision), values in samples.items():
        images_per_s = statistics.median(rate for rate, _ in values)
        rows.append(
            {
                "what": what,
                "precision": precision,
                "images_per_s": round(images_per_s, 1),
                "gflops": round(images_per_s * work[what] / 1e9, 1),
                "ceiling_gflops": round(statistics.median(c for _, c in values), 1),
                "fraction_of_ceiling": round(statistics.median(r * work[what] / 1e9 / c for r, c in values), 3),
                # Each round's (images/s, best ceiling): the fraction is the median of their ratios.
                "per_round": [[round(r, 1), round(c, 1)] for r, c in values],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    median_ceilings = {
        p: {shape: round(statistics.median(r[shape] for r in rounds), 1) for shape in rounds[0]}
        for p, rounds in ceilings.items()
    }
    result = {
        "cpu": cpu_model(),
        "native_bfloat16": native_bfloat16(),
        "threads": tf.config.threading.get_intra_op_parallelism_threads() or "default",
        "architecture": args.architecture,
        "rounds": args.rounds,
        "precisions": list(precisions),
        "what": args.what,
        "num_samples": k,
        "batch_size": args.batch_size,
        "max_batch_elements": reference.max_batch_elements,
        "encoder_mflops_per_image": round(encoder_flops / 1e6, 3),
        "decoder_mflops_per_code": round(decoder_flops / 1e6, 3),
        "ceilings_gflops": median_ceilings,
        "best_ceiling_gflops": {
            p: round(statistics.median(max(r.values()) for r in rounds), 1) for p, rounds in ceilings.items()
        },
        "rows": rows,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps({key: result[key] for key in ("cpu", "best_ceiling_gflops")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
