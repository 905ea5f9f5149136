"""Batch shift tests: power at alpha = 0.05 against batch size and share of shifted images, and the false-positive rate.

For the models of the OOD suite (`tfpvae train --dataset X --seed 0`, the defaults, cached
in --runs by benchmarks/ood_suite.py; trained here if missing), on MNIST and Fashion-MNIST:

* `tfpvae.batch_tests.BatchShiftTest` (k = 100 importance samples, 500 relabellings, seed 0)
  is fitted on 1,000 held-out normal test images, which are all its reference sample.
* Normal batches: 200 batches per size, each of distinct images drawn from a pool of 4,000
  other normal test images. The false-positive rate is the fraction of them with
  p <= alpha, with its binomial standard error sqrt(f (1 - f) / 200).
* Shifted batches: 100 batches per (set, share, size), from the shifted sets of
  benchmarks/ood_suite.py `build_suite` (1,000 images each, built from the remaining normal
  test images): the other data set, hflip, gauss_0.1, blur_2 and dim. A share s of shifted
  images means each image of a batch is, independently, shifted with probability s (a
  batch drawn from the mixture (1 - s) normal + s shifted); s = 1 is a purely shifted
  batch. Power is the fraction of batches with p <= alpha.
* Batch sizes 5, 10, 50, 100; shares 1, 0.5, 0.2, 0.1; tests "typicality", "mmd" and
  "either" (their Bonferroni combination). Every image is scored once; the batches then
  index the scores.

    python benchmarks/batch_tests.py --out benchmarks/results/batch-tests-DATE.jsonl
    python benchmarks/batch_tests.py --quick       # smoke run on tiny models

`plot_results(results_jsonl, out_png)` draws the figure of the documentation from the
JSON lines: power against batch size, one panel per (model, set), and the false-positive
rate of each test beside the level alpha.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

SIZES = (5, 10, 50, 100)
SHARES = (1.0, 0.5, 0.2, 0.1)
SETS = ("other", "hflip", "gauss_0.1", "blur_2", "dim")  # "other": the other data set
DATASETS = ("mnist", "fashion_mnist")
TESTS = ("typicality", "mmd", "either")  # tfpvae.batch_tests.TESTS, without importing TensorFlow here


def mixed_batches(
    rng: np.random.Generator, num_normal: int, num_shifted: int, size: int, share: float, num_batches: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of batches drawn from the mixture (1 - share) normal + share shifted.

    Rows index the concatenation [normal images, shifted images]; images are distinct within
    a batch. Returns (rows (num_batches, size), shifted images per batch (num_batches,)).
    """
    shifted = rng.binomial(size, share, num_batches)
    rows = np.empty((num_batches, size), np.int64)
    for i, k in enumerate(shifted):
        rows[i, : size - k] = rng.choice(num_normal, size - k, replace=False)
        rows[i, size - k :] = num_normal + rng.choice(num_shifted, k, replace=False)
    return rows, shifted


def _rates(p: dict[str, np.ndarray], alpha: float) -> dict[str, float]:
    return {name: round(float(np.mean(p[name] <= alpha)), 4) for name in TESTS}


def run_model(name: str, args: argparse.Namespace, data: dict, emit) -> None:
    """Fits the batch test of one model and emits its rows: normal batches, then each set, share and size."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ood_suite import build_suite, train_or_load

    from tfpvae.batch_tests import BatchShiftTest

    other_name = next(d for d in DATASETS if d != name)
    model, _ = train_or_load(name, Path(args.runs), args.data_dir, args.seed, args.quick)
    (_, _), (x_test, _) = data[name]
    order = np.random.default_rng(args.seed).permutation(len(x_test))
    n_fit, n_pool = args.fit_images, args.pool_images
    fit, pool, base = x_test[order[:n_fit]], x_test[order[n_fit : n_fit + n_pool]], x_test[order[n_fit + n_pool :]]
    suite = build_suite(base, data[other_name][1][0], other_name, args.set_images, args.seed)
    sets = {other_name if s == "other" else s: suite[other_name if s == "other" else s] for s in args.sets}
    t0 = time.perf_counter()
    test = BatchShiftTest(
        model, num_samples=args.num_samples, num_permutations=args.num_permutations, seed=args.seed, progress=False
    ).fit(fit)
    normal = test.image_statistics(pool)
    shifted = {s: test.image_statistics(x) for s, x in sets.items()}
    score_seconds = time.perf_counter() - t0
    rng = np.random.default_rng([args.seed, 1])
    t0 = time.perf_counter()
    common = {"model": name, "alpha": args.alpha}
    for size in args.sizes:
        rows, _ = mixed_batches(rng, len(pool), 1, size, 0.0, args.normal_batches)
        fpr = _rates(test.batch_p_values(normal, rows), args.alpha)
        se = {t: round(math.sqrt(f * (1 - f) / args.normal_batches), 4) for t, f in fpr.items()}
        emit({**common, "set": "normal", "share": 0.0, "batch_size": size, "num_batches": args.normal_batches,
              "fpr": fpr, "fpr_se": se})  # fmt: skip
    for set_name, stats in shifted.items():
        both = {key: np.concatenate([normal[key], stats[key]]) for key in normal}
        for share in args.shares:
            for size in args.sizes:
                rows, k = mixed_batches(rng, len(pool), len(stats["nll"]), size, share, args.shifted_batches)
                power = _rates(test.batch_p_values(both, rows), args.alpha)
                emit({**common, "set": set_name, "share": share, "batch_size": size,
                      "num_batches": args.shifted_batches, "mean_shifted": round(float(k.mean()), 2),
                      "power": power})  # fmt: skip
    emit({**common, "summary": True, "typical_nll": round(test.typical_nll_, 3), "bandwidth": round(test.bandwidth_, 4),
          "num_reference": len(test.reference_nll_), "score_seconds": round(score_seconds, 1),
          "test_seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip


def table(lines: list[dict], model: str) -> str:
    """Power (false-positive rate for normal batches) per set, share and batch size: typicality/mmd/either."""
    rows = [r for r in lines if r.get("model") == model and "batch_size" in r]
    sizes = sorted({r["batch_size"] for r in rows})
    alpha = rows[0]["alpha"]
    out = [f"model {model}: rejection rate at alpha = {alpha} (typicality / mmd / either)"]
    out.append(f"{'set':15}{'share':>6}  " + "".join(f"{'m = ' + str(m):>18}" for m in sizes))
    keys = list(dict.fromkeys((r["set"], r["share"]) for r in rows))
    for set_name, share in keys:
        cells = []
        for m in sizes:
            r = next(r for r in rows if (r["set"], r["share"], r["batch_size"]) == (set_name, share, m))
            rates = r.get("fpr") or r["power"]
            cells.append("/".join(f"{rates[t]:.2f}" for t in TESTS).rjust(18))
        label = "normal (FPR)" if set_name == "normal" else set_name
        out.append(f"{label:15}{share:6.1f}  " + "".join(cells))
    return "\n".join(out)


def plot_results(results_jsonl: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Power against batch size, one panel per (model, set), and each test's false-positive rate.

    Rows are models; the first column shows the false-positive rate on normal batches (with
    2 standard errors) beside the level alpha, the others the power on each shifted set:
    colour = test, line style = share of shifted images in a batch.

    Args:
      results_jsonl: the JSON lines `main --out` writes.
      out_png: the PNG file to write.

    Returns:
      the path written.
    """
    import matplotlib.pyplot as plt

    lines = [json.loads(line) for line in Path(results_jsonl).read_text().splitlines() if line.strip()]
    rows = [r for r in lines if "batch_size" in r]
    models = list(dict.fromkeys(r["model"] for r in rows))
    sets = [list(dict.fromkeys(r["set"] for r in rows if r["model"] == m and r["set"] != "normal")) for m in models]
    ncols = 1 + max(len(s) for s in sets)
    colours = dict(zip(TESTS, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    styles = {1.0: "-", 0.5: "--", 0.2: "-.", 0.1: ":"}
    fig, axes = plt.subplots(len(models), ncols, figsize=(2.6 * ncols, 2.5 * len(models) + 0.6), squeeze=False)
    for i, model in enumerate(models):
        normal = sorted(
            (r for r in rows if r["model"] == model and r["set"] == "normal"), key=lambda r: r["batch_size"]
        )
        ax = axes[i, 0]
        sizes = [r["batch_size"] for r in normal]
        for j, t in enumerate(TESTS):
            offset = np.array(sizes) * (1.0 + 0.06 * (j - 1))  # side by side on the log axis
            ax.errorbar(offset, [r["fpr"][t] for r in normal], yerr=[2 * r["fpr_se"][t] for r in normal],
                        color=colours[t], marker="o", ms=3, lw=1, capsize=2)  # fmt: skip
        ax.axhline(normal[0]["alpha"], color="grey", ls="--", lw=1)
        ax.set_ylim(0, 0.15)
        ax.set_title(f"{model}: normal (FPR)", fontsize=9)
        for j, set_name in enumerate(sets[i]):
            ax = axes[i, j + 1]
            for t in TESTS:
                for share, style in styles.items():
                    pts = sorted(
                        (r["batch_size"], r["power"][t])
                        for r in rows
                        if (r["model"], r["set"], r["share"]) == (model, set_name, share)
                    )
                    if pts:
                        ax.plot(*zip(*pts, strict=True), color=colours[t], ls=style, lw=1.2, marker=".", ms=4)
            ax.axhline(normal[0]["alpha"], color="grey", ls="--", lw=1)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{model}: {set_name}", fontsize=9)
        for j in range(len(sets[i]) + 1, ncols):
            axes[i, j].axis("off")
        for ax in axes[i, : len(sets[i]) + 1]:
            ax.set_xscale("log")
            ax.set_xticks(sizes, [str(m) for m in sizes])
            ax.minorticks_off()
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
        axes[i, 0].set_ylabel("rejection rate", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("batch size", fontsize=9)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, lw=2, label=t) for t, c in colours.items()]
    handles += [
        Line2D([], [], color="black", ls=s, lw=1.2, label=f"{share:.0%} shifted") for share, s in styles.items()
    ]
    handles.append(Line2D([], [], color="grey", ls="--", lw=1, label="alpha"))
    per_row = min(len(handles), 2 * ncols)  # about 1.3 inches a legend entry
    fig.legend(handles=handles, loc="lower center", ncol=per_row, fontsize=8, frameon=False)
    legend_inches = 0.1 + 0.25 * math.ceil(len(handles) / per_row)
    fig.tight_layout(rect=(0, legend_inches / fig.get_figheight(), 1, 1))
    out = Path(out_png)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny models, few images and batches, k=4")
    p.add_argument("--data-dir", default=os.environ.get("TFPVAE_DATA_DIR"))
    p.add_argument("--runs", default="runs/ood-suite", help="folder of the cached models (default runs/ood-suite)")
    p.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--sets", nargs="*", default=list(SETS), help=f"shifted sets (default {' '.join(SETS)})")
    p.add_argument("--sizes", nargs="*", type=int, default=list(SIZES))
    p.add_argument("--shares", nargs="*", type=float, default=list(SHARES))
    p.add_argument("--num-samples", type=int, default=100, help="importance samples k (default 100)")
    p.add_argument("--num-permutations", type=int, default=500, help="relabellings per batch (default 500)")
    p.add_argument("--fit-images", type=int, default=1000)
    p.add_argument("--pool-images", type=int, default=4000, help="normal images the normal batches are drawn from")
    p.add_argument("--set-images", type=int, default=1000, help="images per shifted set")
    p.add_argument("--normal-batches", type=int, default=200)
    p.add_argument("--shifted-batches", type=int, default=100)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the JSON lines here")
    p.add_argument("--plot", help="also draw the figure (plot_results) into this PNG")
    args = p.parse_args(argv)
    if args.plot and not args.out:
        p.error("--plot needs --out (the figure is drawn from the JSON lines)")
    if args.quick:
        args.num_samples, args.num_permutations, args.sizes = 4, 99, [5, 20]
        args.fit_images, args.pool_images, args.set_images = 100, 200, 60
        args.normal_batches, args.shifted_batches, args.sets = 20, 10, ["other", "hflip"]
        if args.runs == p.get_default("runs"):
            args.runs = "runs/ood-suite-quick"

    import tfpvae

    t_start = time.perf_counter()
    lines = [{"settings": {**vars(args), "python": sys.version.split()[0], "tfpvae": tfpvae.__version__}}]
    print(json.dumps(lines[0]), flush=True)

    def emit(line: dict) -> None:
        lines.append(line)
        print(json.dumps(line), flush=True)

    data = {name: tfpvae.datasets.load(name, args.data_dir) for name in DATASETS}
    for name in args.datasets:
        run_model(name, args, data, emit)
    for name in args.datasets:
        print("\n" + table(lines, name))
    print(f"# total {time.perf_counter() - t_start:.0f} s", flush=True)
    if args.out:
        Path(args.out).write_text("".join(json.dumps(x) + "\n" for x in lines))
        if args.plot:
            plot_results(args.out, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
