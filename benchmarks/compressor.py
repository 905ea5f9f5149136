"""Which context model makes the best generic compressor for the `complexity` score.

For each template of causal neighbours and each pseudo-count of the adaptive estimator,
prints the mean code length in bits (lower = better compressor) of the first N test images
of MNIST and Fashion-MNIST, binarised with seed 0 as the anomaly benchmark scores them, and
zlib's length for comparison. `tfpvae.anomaly.CONTEXT_TEMPLATE` is the template that codes
both sets shortest. No model is involved: this chooses the compressor on compression
alone, never on detection results.

    python benchmarks/compressor.py              # 2,000 images per set, about 1 minute
"""

from __future__ import annotations

import argparse
import os

import tfpvae
from tfpvae.anomaly import CONTEXT_TEMPLATE, compressed_bits, context_code_length
from tfpvae.likelihood import binarize

W, NW, N, NE = (0, -1), (-1, -1), (-1, 0), (-1, 1)
TEMPLATES = {
    "W": (W,),
    "W N": (W, N),
    "W NW N": (W, NW, N),
    "W NW N NE (default)": CONTEXT_TEMPLATE,
    "W WW NW N NE": (W, (0, -2), NW, N, NE),
    "W WW NW N NE NN": (W, (0, -2), NW, N, NE, (-2, 0)),
    "W WW NWW NW N NE NEE NN": (W, (0, -2), (-1, -2), NW, N, NE, (-1, 2), (-2, 0)),
    "JBIG 10-pixel": (W, (0, -2), (0, -3), (0, -4), (-1, -2), NW, N, NE, (-1, 2), (-2, -1)),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("TFPVAE_DATA_DIR", "../shared/data"))
    p.add_argument("--images", type=int, default=2000, help="test images per dataset (default 2000)")
    p.add_argument("--pseudo-counts", dest="alphas", type=float, nargs="+", default=[0.5, 0.25, 0.0625])
    args = p.parse_args(argv)
    sets = {}
    for name in ("mnist", "fashion_mnist"):
        x_test = tfpvae.datasets.load(name, args.data_dir)[1][0][: args.images]
        sets[name] = binarize(x_test, 0)
    rows = [{"compressor": "zlib", **{k: float(compressed_bits(x, compressor="zlib").mean()) for k, x in sets.items()}}]
    for alpha in args.alphas:
        for label, template in TEMPLATES.items():
            bits = {k: float(context_code_length(x, template, alpha).mean()) for k, x in sets.items()}
            rows.append({"compressor": f"context {label}, pseudo-count {alpha:g}", **bits})
    print("| compressor | MNIST bits | Fashion-MNIST bits |\n|---|---:|---:|")
    for row in rows:
        print(f"| {row['compressor']} | {row['mnist']:.1f} | {row['fashion_mnist']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
