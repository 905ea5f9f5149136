"""Anomaly-detection benchmark: AUROC of every score on dataset shift and one-class MNIST.

1. Fashion-MNIST as normal vs MNIST as anomalous, and the reverse: a VAE is trained on the
   normal training set; held-out normal test images are split in half (one half fits the
   detector's reference, i.e. the typical NLL, the other half is scored) and compared with
   the anomalous test images. Reported anchors for Fashion -> MNIST: WAIC 0.24, a
   permutation-test score 0.78. Goals with the best score: >= 0.95 and >= 0.99.
2. One-class MNIST and Fashion-MNIST: for each class, train on that class only; the other
   nine are anomalous (test split). Goals: mean AUROC >= 0.99 (MNIST) and >= 0.95
   (Fashion-MNIST; Deep SVDD, GOAD and PANDA report about 0.95).

Columns: every score of `compute_scores`, `complexity` with zlib, and `combined`, the
`AnomalyDetector` default, fitted on the same reference half with its other defaults.

All models are tfpvae's default VAE, trained with dynamic binarisation; scoring uses a fixed
binarisation (seed 0) and IWAE with k importance samples.

    python benchmarks/anomaly.py            # full run (about 45 minutes on 2 cores)
    python benchmarks/anomaly.py --models runs/anomaly   # keep the 22 models; a rerun only scores
    python benchmarks/anomaly.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

import tfpvae
from tfpvae.anomaly import SCORES, AnomalyDetector, compressed_bits, compute_scores, detection_metrics
from tfpvae.likelihood import binarize

# The table's columns: every score, plus `complexity` with zlib as its compressor (the
# library's default before 2026-12-01), to show what the compressor is worth.
COLUMNS = (*SCORES, "complexity_zlib", "combined")
ONE_CLASS = ("mnist", "fashion_mnist")


def _train(x: np.ndarray, epochs: int, seed: int, folder: Path | None = None) -> tuple[tfpvae.VAE, str]:
    """The default VAE trained on `x`, and "trained"; with `folder`, the model saved there and
    "loaded" when its recorded settings are these (else an error), or trained and saved there."""
    from tfpvae.serialization import read_metadata

    settings = {
        "epochs": epochs,
        "seed": seed,
        "train_images": len(x),
        "config": tfpvae.VAEConfig(seed=seed).to_dict(),  # the defaults of the tfpvae that trained it
    }
    if folder is not None and folder.is_dir():
        saved = read_metadata(folder).get("benchmark_settings")
        if saved != settings:
            raise SystemExit(
                f"{folder} holds a model trained with other settings ({saved}, not {settings}): "
                "remove it or give another --models folder."
            )
        return tfpvae.load(folder), "loaded"
    model = tfpvae.VAE(seed=seed)
    model.compile()
    model.fit(x, epochs=epochs, batch_size=128, verbose=0)
    if folder is not None:
        tfpvae.save(model, folder, extra_metadata={"benchmark_settings": settings})
    return model, "trained"


def _auroc_table(model, normal: np.ndarray, anomalous: np.ndarray, k: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(normal))
    reference, held_out = normal[order[: len(normal) // 2]], normal[order[len(normal) // 2 :]]
    kw = dict(num_samples=k, seed=seed, binarize_seed=0, progress=False)
    typical = float(-compute_scores(model.likelihood, reference, ("log_prob",), **kw)["log_prob"].mean())
    s_norm = compute_scores(model.likelihood, held_out, SCORES, typical_nll=typical, **kw)
    s_anom = compute_scores(model.likelihood, anomalous, SCORES, typical_nll=typical, **kw)
    for scores, x in ((s_norm, held_out), (s_anom, anomalous)):
        # log2 p(x) of the binary images compute_scores scored (binarize_seed=0), plus zlib's L(x).
        zlib_bits = compressed_bits(binarize(x, 0), compressor="zlib")
        scores["complexity_zlib"] = scores["log_prob"] / math.log(2) + zlib_bits
    detector = AnomalyDetector(model, num_samples=k, seed=seed, progress=False).fit(reference)
    s_norm["combined"], s_anom["combined"] = detector.score_samples(held_out), detector.score_samples(anomalous)
    for name in COLUMNS:  # say so when a model calls images impossible (-inf) or fails (NaN)
        bad = int((~np.isfinite(s_anom[name])).sum() + (~np.isfinite(s_norm[name])).sum())
        if bad:
            print(f"note: {bad} non-finite {name} scores ({int(np.isnan(s_anom[name]).sum())} NaN)", flush=True)
    return {name: round(detection_metrics(s_norm[name], s_anom[name])["auroc"], 4) for name in COLUMNS}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny subsets and 1 epoch (smoke run)")
    p.add_argument("--data-dir", default=os.environ.get("TFPVAE_DATA_DIR", "../shared/data"))
    p.add_argument("--epochs", type=int, default=10, help="epochs for the shift models (default 10)")
    p.add_argument("--one-class-epochs", type=int, default=30, help="epochs per one-class model (default 30)")
    p.add_argument("--num-samples", type=int, default=32, help="importance samples k (default 32)")
    p.add_argument("--test-images", type=int, default=4000, help="test images per set (default 4000)")
    p.add_argument("--digits", type=int, nargs="*", default=list(range(10)), help="classes of the one-class runs")
    p.add_argument("--one-class", nargs="*", default=list(ONE_CLASS), choices=ONE_CLASS, help="their data sets")
    p.add_argument("--no-shift", action="store_true", help="skip the two dataset-shift tasks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the JSON lines here")
    p.add_argument("--models", help="folder to keep the trained models in and load them from on a rerun")
    args = p.parse_args(argv)
    models = None if args.models is None else Path(args.models)

    def folder(task: str) -> Path | None:  # where a task's model is kept (its metadata holds its settings)
        return None if models is None else models / task

    if args.quick:
        args.epochs, args.one_class_epochs, args.num_samples, args.test_images = 1, 1, 4, 200
        args.digits = args.digits[:2]
    n_train = 2000 if args.quick else None
    data = {name: tfpvae.datasets.load(name, args.data_dir) for name in ("mnist", "fashion_mnist")}
    lines = []

    for normal, anomalous in () if args.no_shift else (("fashion_mnist", "mnist"), ("mnist", "fashion_mnist")):
        t0 = time.perf_counter()
        (x_train, _), (x_test, _) = data[normal]
        model, origin = _train(x_train[:n_train], args.epochs, args.seed, folder(f"shift-{normal}"))
        aurocs = _auroc_table(
            model, x_test[: args.test_images], data[anomalous][1][0][: args.test_images], args.num_samples, args.seed
        )
        line = {
            "task": f"{normal} -> {anomalous}",
            "auroc": aurocs,
            "best": max(aurocs, key=aurocs.get),
            "model": origin,  # "loaded": the seconds leave out its training
            "seconds": round(time.perf_counter() - t0, 1),
        }
        lines.append(line)
        print(json.dumps(line), flush=True)

    for name in args.one_class:
        (x_train, y_train), (x_test, y_test) = data[name]
        per_class = {}
        for digit in args.digits:
            t0 = time.perf_counter()
            model, origin = _train(
                x_train[y_train == digit][:n_train],
                args.one_class_epochs,
                args.seed,
                folder(f"one-class-{name}-{digit}"),
            )
            others = x_test[y_test != digit][: args.test_images]
            per_class[digit] = _auroc_table(model, x_test[y_test == digit], others, args.num_samples, args.seed)
            task = {"task": f"one-class {name} {digit}", "auroc": per_class[digit]}
            print(json.dumps({**task, "model": origin, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
        means = {c: round(float(np.mean([per_class[d][c] for d in per_class])), 4) for c in COLUMNS}
        line = {"task": f"one-class {name} mean", "auroc": means, "best": max(means, key=means.get)}
        lines.append({**line, "per_class": per_class})
        print(json.dumps(lines[-1]), flush=True)

    print("\n| task | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for line in lines:
        print(f"| {line['task']} | " + " | ".join(f"{line['auroc'][s]:.3f}" for s in COLUMNS) + " |")
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(json.dumps(x) for x in lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
