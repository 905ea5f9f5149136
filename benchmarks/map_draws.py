"""Per-pixel draws: the cost of keying each image's draws by its index, against one draw per chunk.

`tfpvae.uncertainty.decoded_draws` (behind `predictive_uncertainty` and the anomaly maps)
draws each image's codes from its own stateless seed, so an image's map does not depend on
the rest of the call. The reference is what it replaced: one `q.sample` per chunk of images
with one seed, then the same decoding. Both run in one process, interleaved over rounds, on
the default MNIST model after one epoch (the draws' cost does not depend on training), and
the median times and their ratio are printed with the CPU model.

    python benchmarks/map_draws.py --images 1000 --num-samples 16 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from roofline import cpu_model  # noqa: E402

import tfpvae  # noqa: E402
from tfpvae._keras import tf  # noqa: E402
from tfpvae.protocols import encode_in_chunks  # noqa: E402
from tfpvae.uncertainty import decoded_draws  # noqa: E402


def per_chunk_means(model, x, num_samples: int, seed: int, budget: int = 8192) -> list:
    """The reference: one seeded `q.sample` per chunk of images, decoded as `decoded_draws` decodes."""
    chunk = max(1, budget // num_samples)
    out = []
    for c, q in enumerate(encode_in_chunks(model, x, chunk=chunk)):
        z = q.sample(num_samples, seed=tf.constant([seed, c], tf.int32)).numpy()
        n = z.shape[1]
        out.append(model.decode_mean(z.reshape(num_samples * n, -1)).reshape(num_samples, n, -1).mean(0))
    return out


def per_image_means(model, x, num_samples: int, seed: int) -> list:
    return [p.mean(0) for _, p in decoded_draws(model, x, num_samples, seed)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    (x, _), (xt, _) = tfpvae.datasets.load("mnist")
    model = tfpvae.VAE(seed=0)
    model.compile()
    model.fit(x[:2048], epochs=1, batch_size=128, verbose=0)
    images = xt[: args.images]
    ways = {"per chunk (reference)": per_chunk_means, "per image": per_image_means}
    for way in ways.values():  # trace and warm up
        way(model, images[:64], args.num_samples, 0)
    times = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, way in ways.items():
            start = time.perf_counter()
            way(model, images, args.num_samples, 0)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    ratio = median["per image"] / median["per chunk (reference)"]
    print(json.dumps({"cpu": cpu_model(), "images": args.images, "num_samples": args.num_samples,
                      "median_s": {k: round(v, 3) for k, v in median.items()}, "ratio": round(ratio, 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
