"""Localisation benchmark: how well per-pixel anomaly maps find synthetic defects with known masks.

For the models that `tfpvae train --dataset X --seed 0 --out RUNS/X` trains (`VAEConfig()`
defaults, 10 epochs), on MNIST and on Fashion-MNIST:

* Defects, made in code from `--images` test images from index `--start` (500 from 0 by
  default; each kind draws from a generator of its own, seeded by `--seed`): `scratch` (one
  or two 1-pixel lines from edge to edge, ink on a dark background or dark on a bright
  one), `blob` (one or two round Gaussian spots of
  radius 2 to 4 pixels, of the colour that contrasts with the image there), `occlusion`
  (a square of side 5 to 9 of one random grey level), `pasted` (a square of side 6 to 10
  cut from a test image of the other data set and pasted at a random place).
* Ground truth: the pixels inside the defect whose value changed by at least 0.2 (a
  scratch over a stroke of the same colour changes nothing there, and no map could find
  it); a defect that changes fewer than 3 pixels is drawn again.
* Maps: every method of `tfpvae.anomaly_maps` (k = 16 draws seeded by `--seed`, grey images
  as they are), as it is and healed (`heal=0.1`), each without blur and with a Gaussian blur of
  0.5, 1 and 2 pixels. The baseline is `recon_error` as it is (no healing, no blur): the
  per-pixel reconstruction error |x - E[p(x|z)]|.
* Metrics: the pixel AUROC over every pixel of the defective images, and the PRO
  (per-region overlap, MVTec AD) up to a false-positive rate of 0.3.

    python benchmarks/localisation.py --out benchmarks/results/localisation-DATE.jsonl
    python benchmarks/localisation.py --start 5000 --seed 1   # other images, other defects
    python benchmarks/localisation.py --quick     # smoke run: a 1-epoch model, 40 images a kind

Full run: about 2.5 minutes on two cores with the models in --runs (default runs/ood-suite,
as benchmarks/ood_suite.py leaves them); it does not train them. `plot_results(jsonl, png)`
draws the bar chart of a results file, `plot_examples(model_dir, dataset, png)` the maps of
two images per defect kind with their masks.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np

DATASETS = ("mnist", "fashion_mnist")
DEFECTS = ("scratch", "blob", "occlusion", "pasted")
SMOOTHING = (0.0, 0.5, 1.0, 2.0)
HEAL = (0.0, 0.1)
BASELINE = "recon_error"
MIN_CHANGE = 0.2  # a pixel counts as defective when the defect changed it by this much
MIN_PIXELS = 3  # a defect that changes fewer pixels is drawn again
MAX_FPR = 0.3


# ----------------------------------------------------------------------------- the defects
def _rng(name: str, seed: int) -> np.random.Generator:
    """A generator of its own for each defect kind, so adding a kind changes no other."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _contrast(image: np.ndarray, where: np.ndarray) -> float:
    """The colour that stands out where `where` is: ink (1) on a dark area, black (0) on a bright one."""
    return 1.0 if image[where].mean() < 0.5 else 0.0


def _scratch(image, rng, other):
    size = image.shape[0]
    out, footprint = image.copy(), np.zeros(image.shape, bool)
    for _ in range(rng.integers(1, 3)):
        line = np.zeros(image.shape, bool)
        (y0, x0), (y1, x1) = rng.uniform(0, size - 1, (2, 2))
        if rng.random() < 0.5:  # from edge to edge, across or down
            x0, x1 = 0.0, size - 1.0
        else:
            y0, y1 = 0.0, size - 1.0
        t = np.linspace(0.0, 1.0, 4 * size)
        line[np.round(y0 + t * (y1 - y0)).astype(int), np.round(x0 + t * (x1 - x0)).astype(int)] = True
        out[line] = _contrast(image, line)
        footprint |= line
    return out, footprint


def _blob(image, rng, other):
    size = image.shape[0]
    out, footprint = image.copy(), np.zeros(image.shape, bool)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(rng.integers(1, 3)):
        cy, cx = rng.uniform(4, size - 4, 2)
        radius = rng.uniform(2.0, 4.0)
        weight = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (radius / 2) ** 2))  # 1 at the centre
        spot = weight > 0.15
        out = np.where(spot, out + (_contrast(image, spot) - out) * np.minimum(1.0, 1.5 * weight), out)
        footprint |= spot
    return out, footprint


def _square(rng, size: int, low: int, high: int) -> tuple[slice, slice]:
    side = int(rng.integers(low, high + 1))
    y, x = rng.integers(0, size - side + 1, 2)
    return slice(y, y + side), slice(x, x + side)


def _occlusion(image, rng, other):
    out, footprint = image.copy(), np.zeros(image.shape, bool)
    box = _square(rng, image.shape[0], 5, 9)
    out[box] = rng.uniform(0.0, 1.0)
    footprint[box] = True
    return out, footprint


def _pasted(image, rng, other):
    out, footprint = image.copy(), np.zeros(image.shape, bool)
    box = _square(rng, image.shape[0], 6, 10)
    side = box[0].stop - box[0].start
    source = other[rng.integers(len(other))]
    y, x = rng.integers(0, image.shape[0] - side + 1, 2)
    out[box] = source[y : y + side, x : x + side]
    footprint[box] = True
    return out, footprint


MAKERS = {"scratch": _scratch, "blob": _blob, "occlusion": _occlusion, "pasted": _pasted}


def make_defects(kind: str, base: np.ndarray, other: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Defective copies of `base` and their masks.

    Args:
      kind: one of `DEFECTS`.
      base: clean images, float (n, H, W, 1) in [0, 1].
      other: images of another data set, (m, H, W, 1), the source of the "pasted" patches.
      seed: the seed; each kind draws from a generator of its own.

    Returns:
      (images, masks): float32 (n, H, W, 1) and bool (n, H, W), the mask marking the pixels
      inside the defect that it changed by at least `MIN_CHANGE`.
    """
    rng = _rng(kind, seed)
    clean, other = np.asarray(base, np.float32)[..., 0], np.asarray(other, np.float32)[..., 0]
    images, masks = np.empty_like(clean), np.zeros(clean.shape, bool)
    for i, image in enumerate(clean):
        for _ in range(50):  # draw again while the defect changes (almost) nothing
            out, footprint = MAKERS[kind](image, rng, other)
            out = np.clip(out, 0.0, 1.0)
            mask = footprint & (np.abs(out - image) >= MIN_CHANGE)
            if mask.sum() >= MIN_PIXELS:
                break
        images[i], masks[i] = out, mask
    return images[..., None], masks


# ----------------------------------------------------------------------------- the measurement
def evaluate(model, images: np.ndarray, masks: np.ndarray, num_samples: int, seed: int) -> list[dict]:
    """Pixel AUROC and PRO of every method and smoothing on one defect set, one dict each."""
    from scipy import ndimage

    from tfpvae.anomaly_maps import METHODS, anomaly_map, pixel_auroc, pro_score

    rows = []
    for method, heal in itertools.product(METHODS, HEAL):
        raw = anomaly_map(model, images, method, heal=heal, smoothing=0.0, num_samples=num_samples, seed=seed)
        for sigma in SMOOTHING:
            # anomaly_map(..., smoothing=sigma) blurs the same raw map the same way.
            maps = ndimage.gaussian_filter(raw, (0.0, sigma, sigma), mode="nearest") if sigma else raw
            rows.append(
                {
                    "method": method,
                    "heal": heal,
                    "smoothing": sigma,
                    "pixel_auroc": round(pixel_auroc(maps, masks), 4),
                    "pro": round(pro_score(maps, masks, max_fpr=MAX_FPR), 4),
                }
            )
    return rows


def _load_model(name: str, runs: Path, data_dir: str | None, quick: bool):
    """The model in runs/name; with `quick` and no model there, a 1-epoch model on 2,000 images (not saved)."""
    import tfpvae
    from tfpvae.datasets import load

    run = runs / name
    if (run / "config.json").exists():
        return tfpvae.load(run)
    if not quick:
        raise SystemExit(f"no model in {run}: train it with `tfpvae train --dataset {name} --seed 0 --out {run}`")
    (x, _), _ = load(name, data_dir)
    model = tfpvae.VAE(input_shape=x.shape[1:], latent_dim=8, hidden_units=128, seed=0)
    model.fit(x[:2000], epochs=1, batch_size=128, verbose=0)
    return model


def _variant(row: dict) -> tuple[str, float, float]:
    return row["method"], row["heal"], row["smoothing"]


def _label(variant: tuple[str, float, float]) -> str:
    method, heal, sigma = variant
    return method + (f", heal {heal:g}" if heal else "") + (f", blur {sigma:g}" if sigma else "")


def _table(name: str, rows: list[dict]) -> str:
    """A text table: one row per method, healing and smoothing; PRO and pixel AUROC per defect kind."""
    kinds = list(dict.fromkeys(r["defect"] for r in rows))
    head = f"{'method':12}{'heal':>5}{'blur':>5}" + "".join(f"{k[:9]:>10}{'':>7}" for k in [*kinds, "mean"])
    sub = f"{'':22}" + "".join(f"{'PRO':>10}{'AUROC':>7}" for _ in [*kinds, "mean"])
    lines = [f"model {name}: PRO (FPR <= {MAX_FPR}) and pixel AUROC", head, sub]
    for method, heal, sigma in dict.fromkeys(map(_variant, rows)):
        sel = [r for r in rows if _variant(r) == (method, heal, sigma)]
        cells = "".join(f"{r['pro']:10.3f}{r['pixel_auroc']:7.3f}" for r in sel)
        mean = f"{np.mean([r['pro'] for r in sel]):10.3f}{np.mean([r['pixel_auroc'] for r in sel]):7.3f}"
        lines.append(f"{method:12}{heal:5.2f}{sigma:5.1f}{cells}{mean}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 40 images a kind, k=4; trains a model if none")
    p.add_argument("--data-dir", default=os.environ.get("TFPVAE_DATA_DIR"))
    p.add_argument("--runs", default="runs/ood-suite", help="folder of the models, one per data set")
    p.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--images", type=int, default=500, help="defective images per kind (default 500)")
    p.add_argument("--start", type=int, default=0, help="the first test image made defective (default 0)")
    p.add_argument("--num-samples", type=int, default=16, help="draws of z per image (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the JSON lines here")
    args = p.parse_args(argv)
    from tfpvae.datasets import load_split

    n, k = (40, 4) if args.quick else (args.images, args.num_samples)
    t_start = time.perf_counter()
    lines = []
    for name in args.datasets:
        model = _load_model(name, Path(args.runs), args.data_dir, args.quick)
        base, _ = load_split(name, "test", args.data_dir)
        other, _ = load_split(next(d for d in DATASETS if d != name), "test", args.data_dir)
        rows = []
        for kind in DEFECTS:
            images, masks = make_defects(kind, base[args.start : args.start + n], other, args.seed)
            for row in evaluate(model, images, masks, k, args.seed):
                rows.append({"dataset": name, "defect": kind, "images": n, "num_samples": k, **row})
        lines += rows
        print(_table(name, rows), flush=True)
    print(f"# total {time.perf_counter() - t_start:.0f} s", flush=True)
    if args.out:
        Path(args.out).write_text("".join(json.dumps(x) + "\n" for x in lines))
    return 0


def plot_results(results_jsonl: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """Bar charts of a results file: PRO and pixel AUROC per defect kind and method, one row per data set.

    Shown: the baseline (reconstruction error as it is), the pixel NLL as it is, and each
    method with the healing and blur that give it the best mean PRO over the whole file.
    """
    import matplotlib.pyplot as plt

    from tfpvae.plots import save_figure

    rows = [json.loads(line) for line in Path(results_jsonl).read_text().splitlines() if line.strip()]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    kinds = list(dict.fromkeys(r["defect"] for r in rows))
    shown = _shown_variants(rows)
    width = 0.8 / len(shown)
    fig, axes = plt.subplots(
        len(datasets), 2, figsize=(11, 2.9 * len(datasets) + 0.8), squeeze=False, layout="constrained"
    )
    for d, name in enumerate(datasets):
        sel = {(_variant(r), r["defect"]): r for r in rows if r["dataset"] == name}
        for j, metric in enumerate(("pro", "pixel_auroc")):
            ax = axes[d, j]
            for m, variant in enumerate(shown):
                values = [sel[variant, kind][metric] for kind in kinds]
                ax.bar(np.arange(len(kinds)) + (m - (len(shown) - 1) / 2) * width, values, width, label=_label(variant))
            ax.set_xticks(np.arange(len(kinds)), kinds)
            ax.set_ylim(0.5 if metric == "pixel_auroc" else 0.4, 1.0)
            ax.set_title(f"{name}: {'PRO (FPR <= 0.3)' if metric == 'pro' else 'pixel AUROC'}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
    save_figure(fig, out_png)


def plot_examples(
    model_dir: str | os.PathLike, dataset: str, out_png: str | os.PathLike, data_dir: str | None = None, seed: int = 0
) -> None:
    """The default anomaly maps of two test images per defect kind, the true masks outlined in magenta.

    Args:
      model_dir: a model folder trained on `dataset` (e.g. runs/ood-suite/mnist).
      dataset: "mnist" or "fashion_mnist"; the other one gives the pasted patches.
      out_png: the PNG to write.
      data_dir: where the data sets are (default: $TFPVAE_DATA_DIR).
      seed: seed of the defects and the draws.
    """
    import tfpvae
    from tfpvae.anomaly_maps import DEFAULT_HEAL, DEFAULT_METHOD, DEFAULT_SMOOTHING, anomaly_map
    from tfpvae.datasets import load_split
    from tfpvae.plots import anomaly_overlay, save_figure

    model = tfpvae.load(model_dir)
    base, _ = load_split(dataset, "test", data_dir)
    other, _ = load_split(next(d for d in DATASETS if d != dataset), "test", data_dir)
    images, masks = zip(*(make_defects(kind, base[:2], other, seed) for kind in DEFECTS), strict=True)
    images, masks = np.concatenate(images), np.concatenate(masks)
    maps = anomaly_map(model, images, seed=seed)
    labels = [kind for kind in DEFECTS for _ in range(2)]
    method = f"{DEFAULT_METHOD}, heal {DEFAULT_HEAL:g}, blur {DEFAULT_SMOOTHING:g}"
    save_figure(anomaly_overlay(images, maps, masks, labels, title=f"{dataset}: anomaly maps ({method})"), out_png)


def _shown_variants(rows: list[dict]) -> list[tuple[str, float, float]]:
    """The (method, heal, smoothing) variants to draw: the baseline and pixel_nll as they are, and
    every method at its best mean PRO."""
    shown = [(BASELINE, 0.0, 0.0), ("pixel_nll", 0.0, 0.0)]
    for method in dict.fromkeys(r["method"] for r in rows):
        variants = {_variant(r) for r in rows if r["method"] == method}
        best = max(sorted(variants), key=lambda v: np.mean([r["pro"] for r in rows if _variant(r) == v]))
        if best not in shown:
            shown.append(best)
    return shown


if __name__ == "__main__":
    sys.exit(main())
