"""Regenerates every figure of the documentation site (docs/img) from real training runs.

One job: `python tools/docs_figures.py` trains the models the figures show with tfpvae's own
training (`tfpvae.runs.train_run`, the function behind `tfpvae train`, with its default
settings and seed 0), then draws every picture with tfpvae's own figures (`tfpvae.figures`,
`tfpvae.plots`, `tfpvae.evolution`) and writes them, kept small enough for git, to docs/img.
The documentation pages only reference these files; nothing else writes them.

The runs (about 6-8 minutes on a 2-core CPU; the data are read from $TFPVAE_DATA_DIR):

* "mnist": the default VAE (`VAEConfig()`: mlp networks, 16 latent dimensions, standard
  normal prior) trained for the default 10 epochs on MNIST: samples, reconstructions,
  interpolations, training curves, and the per-pixel maps of digits and clothes.
* "mnist-2d": the same with `latent_dim=2` and the latent evolution recorder: the decoded
  manifold, the latent scatter and the animation of the codes over training.
* "fashion": the default VAE trained on Fashion-MNIST: ROC curves and score histograms
  against MNIST digits as anomalies.

Options:
  --out DIR    where the figures go. Default docs/img.
  --quick      tiny runs on scikit-learn's bundled 8x8 digits (no data files, seconds),
               with inverted digits as the anomalies: the same file names, for the test.
  --runs DIR   keep the run folders in DIR, and reuse the runs already there instead of
               training them again (for redrawing after a change to a figure). Default:
               a temporary folder, removed at the end.

Examples:
  TFPVAE_DATA_DIR=../shared/data MPLBACKEND=Agg python tools/docs_figures.py
  python tools/docs_figures.py --quick --out /tmp/figures
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # the plots of the localisation and batch-test results

from tfpvae import latent, plots  # noqa: E402
from tfpvae.figures import make_figure  # noqa: E402

# Every file the script writes, and what it shows. The docs may reference only these.
FIGURES = {
    "samples.png": "8x8 prior samples of the default MNIST model",
    "samples_home.png": "a compact 4x12 strip of prior samples, for the home page",
    "reconstructions.png": "one test image per class over its reconstruction",
    "interpolation.png": "slerp interpolations between test images, with log p(z) along each path",
    "training_curves.png": "nll, kl and elbo per epoch, training and validation",
    "manifold.png": "the decoded latent plane of the 2-D model",
    "latent_scatter.png": "posterior means of test images in the 2-D model, by class",
    "latent_evolution.gif": "the latent scatter of the 2-D model, epoch by epoch",
    "anomaly_roc.png": "ROC curves of four scores, Fashion-MNIST model, MNIST as anomalies",
    "anomaly_histograms.png": "histograms of log_prob and complexity, normal against anomalous",
    "pixel_likelihood.png": "per-pixel log-likelihood of digits and clothes under the MNIST model",
    "uncertainty.png": "per-pixel predictive uncertainty of the same images",
    "anomaly_map.png": "anomaly maps of defective MNIST digits, the true defects outlined",
    "localisation.png": "PRO and pixel AUROC per defect kind and map method (benchmark results)",
    "batch_tests.png": "power and false-positive rate of the batch shift tests (benchmark results)",
}
# The benchmark results the last two draw, committed beside the scripts that measured them.
RESULTS = ROOT / "benchmarks" / "results"
LOCALISATION_RESULTS = RESULTS / "localisation-2026-12-07.jsonl"
BATCH_TEST_RESULTS = RESULTS / "batch-tests-2026-12-06.jsonl"

SEED = 0


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to train and score: the full figures or the quick ones."""

    dataset: str  # the normal data of the main and 2-D runs
    anomaly_dataset: str | None  # the normal data of the anomaly run (None: the main run's, inverted anomalies)
    foreign_dataset: str | None  # the anomalies of the anomaly run
    epochs: int | None  # None: the default of tfpvae train (10)
    anomaly_images: int  # images per side of the ROC and histograms
    num_samples: int  # importance samples of the scores


FULL = Plan("mnist", "fashion_mnist", "mnist", None, 2000, 32)
QUICK = Plan("digits", None, None, 3, 150, 8)


def main(argv: list[str] | None = None) -> int:
    """Trains the runs (or reuses them) and writes every file of `FIGURES`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="output folder (docs/img)")
    parser.add_argument("--quick", action="store_true", help="tiny runs on the bundled digits, for the test")
    parser.add_argument("--runs", type=Path, default=None, help="keep (and reuse) the run folders here")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    keep = args.runs is not None
    runs = args.runs or Path(tempfile.mkdtemp(prefix="tfpvae-docs-figures-"))
    try:
        draw_default_model(plan, runs, args.out)
        draw_2d_model(plan, runs, args.out)
        draw_anomaly_scores(plan, runs, args.out)
        draw_anomaly_maps(plan, runs, args.out)
    finally:
        if not keep:
            shutil.rmtree(runs, ignore_errors=True)
    print(f"\n{'file':<24} {'bytes':>8}  size")
    total = 0
    for name in FIGURES:
        path = args.out / name
        with Image.open(path) as image:
            size = f"{image.width}x{image.height}" + (f", {image.n_frames} frames" if name.endswith(".gif") else "")
        total += path.stat().st_size
        print(f"{name:<24} {path.stat().st_size:>8}  {size}")
    print(f"{'total':<24} {total:>8}\nwrote {len(FIGURES)} files to {args.out} in {time.perf_counter() - start:.0f} s")
    return 0


def train(runs: Path, name: str, plan: Plan, dataset: str, evolution: bool = False, score_limit: int = 200, **config):
    """(model, run folder) of run `name`: trained by `train_run` (tfpvae train's defaults, seed 0), or reused."""
    import tfpvae
    from tfpvae.config import VAEConfig
    from tfpvae.runs import RunSettings, train_run

    run_dir = runs / name
    if (run_dir / "weights.npz").is_file():
        print(f"reusing the run in {run_dir}")
        return tfpvae.load(run_dir), run_dir
    print(f"training {name}: {dataset}, {config or 'default config'}")
    settings = RunSettings(dataset=dataset, seed=SEED)
    if plan.epochs is not None:
        settings = dataclasses.replace(settings, epochs=plan.epochs)
    result = train_run(
        run_dir, settings, VAEConfig(**config), evolution=evolution, score_limit=score_limit, verbose=2, note=print
    )
    return result.model, run_dir


def draw_default_model(plan: Plan, runs: Path, out: Path) -> None:
    """The default model: samples, reconstructions, interpolations, curves, pixel maps."""
    import tfpvae

    (_, _), (x_test, y_test) = tfpvae.datasets.load(plan.dataset)
    model, run_dir = train(runs, "mnist", plan, plan.dataset, score_limit=1000)
    samples = make_figure("samples", model, num_images=8, seed=SEED)
    save(fit_width(samples, 5.6, min_height=0.0), out / "samples.png", dpi=100)
    strip = model.sample(48, seed=SEED + 1)
    save(plots.image_rows(strip.reshape(4, 12, *strip.shape[1:]), cell_size=0.55), out / "samples_home.png", dpi=180)
    save(fit_width(make_figure("reconstructions", model, x_test, y_test)), out / "reconstructions.png", dpi=120)
    # Pairs of different digits (the first test image of each class), so every path changes class.
    first = {int(c): int(np.flatnonzero(y_test == c)[0]) for c in range(10)}
    pairs = [(0, 6), (1, 7), (3, 8), (4, 9)]
    start, end = (x_test[[first[p[k]] for p in pairs]] for k in (0, 1))
    path = latent.interpolate(model, start, end, num_steps=10, method="slerp")
    labels = [f"{a} to {b}" for a, b in pairs]
    interpolation = plots.interpolation_strips(path.images, path.log_prior, labels, title="slerp interpolations")
    save(interpolation, out / "interpolation.png", dpi=110)
    # The loss is -elbo when beta = 1 (the default): the other three panels say it all.
    history = {k: v for k, v in model.training_history.items() if k.removeprefix("val_") != "loss"}
    curves = fit_width(plots.training_curves(history, title="training curves"))
    for ax in curves.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
    save(curves, out / "training_curves.png", dpi=120)
    if plan.anomaly_dataset:  # the anomaly run's normal data: clothes beside the digits
        (_, _), (x_other, _) = tfpvae.datasets.load(plan.anomaly_dataset)
        mixed = np.concatenate([x_test[:2], x_other[:2]])  # two digits, two clothes
    else:
        mixed = np.concatenate([x_test[:2], 1.0 - x_test[2:4]])
    kw = dict(num_samples=64, seed=SEED)
    save(make_figure("pixel-likelihood", model, mixed, **kw), out / "pixel_likelihood.png", dpi=90)
    save(make_figure("uncertainty", model, mixed, **kw), out / "uncertainty.png", dpi=90)
    print_evaluation(run_dir)


def draw_2d_model(plan: Plan, runs: Path, out: Path) -> None:
    """The model with two latent dimensions: the manifold, the scatter and the evolution of the codes."""
    import tfpvae

    (_, _), (x_test, y_test) = tfpvae.datasets.load(plan.dataset)
    model2d, run2d = train(runs, "mnist-2d", plan, plan.dataset, evolution=True, latent_dim=2)
    save(make_figure("manifold", model2d, grid_size=20), out / "manifold.png", dpi=90)
    save(make_figure("scatter", model2d, x_test, y_test, max_points=2000, seed=SEED), out / "latent_scatter.png")
    save_gif(run2d / "evolution.gif", out / "latent_evolution.gif")


def draw_anomaly_scores(plan: Plan, runs: Path, out: Path) -> None:
    """ROC curves and histograms: Fashion-MNIST normal, MNIST digits anomalous (quick: inverted digits)."""
    import tfpvae
    from tfpvae.anomaly import AnomalyDetector, compute_scores, detection_metrics

    if plan.anomaly_dataset:
        anomaly_model, _ = train(runs, "fashion", plan, plan.anomaly_dataset)
        (_, _), (x_normal, _) = tfpvae.datasets.load(plan.anomaly_dataset)
        (_, _), (x_foreign, _) = tfpvae.datasets.load(plan.foreign_dataset)
        groups = ("Fashion-MNIST, normal", "MNIST, anomalous")
    else:  # the default run's model, already trained
        anomaly_model, _ = train(runs, "mnist", plan, plan.dataset)
        (_, _), (x_normal, _) = tfpvae.datasets.load(plan.dataset)
        x_foreign = 1.0 - x_normal
        groups = ("digits, normal", "inverted digits, anomalous")
    n = plan.anomaly_images
    names = ("log_prob", "elbo", "complexity")
    kw = dict(num_samples=plan.num_samples, seed=SEED, binarize_seed=SEED)
    normal = compute_scores(anomaly_model.likelihood, x_normal[:n], names, progress=False, **kw)
    foreign = compute_scores(anomaly_model.likelihood, x_foreign[:n], names, progress=False, **kw)
    # The detector's default, fitted on the next n normal images.
    detector = AnomalyDetector(anomaly_model, num_samples=plan.num_samples, progress=False).fit(x_normal[n : 2 * n])
    normal["combined"] = detector.score_samples(x_normal[:n])
    foreign["combined"] = detector.score_samples(x_foreign[:n])
    names += ("combined",)
    for name in names:
        print(f"AUROC {name}: {detection_metrics(normal[name], foreign[name])['auroc']:.3f}")
    title = f"{groups[0].split(',')[0]} model: {n} normal vs {n} anomalous images"
    roc = plots.roc_curves(normal, foreign, higher_is_anomalous=False, title=title)
    save(roc, out / "anomaly_roc.png", dpi=100)
    # elbo looks like log_prob: the histograms show the failing score and the one that works.
    hist = {name: {groups[0]: normal[name], groups[1]: foreign[name]} for name in ("log_prob", "complexity")}
    fig = fit_width(plots.score_histograms(hist, title="anomaly scores (higher = more normal)"))
    for ax in fig.axes:  # headroom for the legend above the bars
        ax.set_ylim(0, 1.4 * ax.get_ylim()[1])
    save(fig, out / "anomaly_histograms.png", dpi=120)


def draw_anomaly_maps(plan: Plan, runs: Path, out: Path) -> None:
    """The default model's anomaly maps of defective test images, and the localisation and
    batch-test benchmark results (read from benchmarks/results)."""
    import batch_tests
    import localisation

    import tfpvae
    from tfpvae.anomaly_maps import anomaly_map

    model, _ = train(runs, "mnist", plan, plan.dataset)
    (_, _), (base, _) = tfpvae.datasets.load(plan.dataset)
    other = tfpvae.datasets.load(plan.anomaly_dataset)[1][0] if plan.anomaly_dataset else base[::-1, :, ::-1]
    images, masks, labels = [], [], []
    for kind in localisation.DEFECTS:
        try:
            x, mask = localisation.make_defects(kind, base[:2], other, SEED)
        except ValueError:  # a defect larger than the quick run's 8x8 digits
            continue
        images, masks, labels = [*images, x], [*masks, mask], [*labels, kind, kind]
    images, masks = np.concatenate(images), np.concatenate(masks)
    maps = anomaly_map(model, images, seed=SEED)
    title = "anomaly maps of the MNIST model (defects outlined)"
    save(plots.anomaly_overlay(images, maps, masks, labels, title=title), out / "anomaly_map.png", dpi=90)
    localisation.plot_results(LOCALISATION_RESULTS, out / "localisation.png")
    batch_tests.plot_results(BATCH_TEST_RESULTS, out / "batch_tests.png")
    for name in ("localisation.png", "batch_tests.png"):
        compress(out / name)


def print_evaluation(run_dir: Path) -> None:
    """Prints the test NLL that train_run wrote to the run's evaluation.json."""
    import json

    path = run_dir / "evaluation.json"
    if path.is_file():
        summary = json.loads(path.read_text())
        print(f"test NLL of {run_dir.name}: {summary['iwae_nll']:.2f} nats ({summary['num_images']} images)")


def fit_width(fig, inches: float = 7.2, min_height: float = 0.8):
    """Shrinks a figure wider than `inches` to that width; its fonts keep their size, so they read
    as larger in the docs' text column (about 7 inches at 100 dpi). For constrained-layout figures.

    The height shrinks in proportion, but to no less than `min_height` of itself (1: keep it).
    """
    width, height = fig.get_size_inches()
    if width > inches:
        fig.set_size_inches(inches, height * max(inches / width, min_height))
    return fig


def _palette(image: Image.Image, colors: int) -> Image.Image:
    """`image` quantised to `colors` colours, near-white entries snapped to pure white."""
    rgb = image.convert("RGB")
    small = rgb.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette = np.array(small.getpalette()[: 3 * colors]).reshape(-1, 3)
    palette[(palette >= 245).all(axis=1)] = 255
    palette = np.unique(palette, axis=0)  # one white entry, so the background is one index
    reference = Image.new("P", (1, 1))
    reference.putpalette(np.concatenate([palette, np.repeat(palette[-1:], 256 - len(palette), 0)]).ravel().tolist())
    return rgb.quantize(palette=reference, dither=Image.Dither.NONE)


def save(fig, path: Path, dpi: int = 100) -> None:
    """Saves `fig` with `plots.save_figure`, then `compress`es it."""
    plots.save_figure(fig, path, dpi=dpi)
    compress(path)


def compress(path: Path) -> None:
    """Re-encodes the PNG at `path` as a palette PNG when that is smaller."""
    with Image.open(path) as image:
        small = _palette(image, 256)
    tmp = path.with_suffix(".tmp.png")
    small.save(tmp, optimize=True)
    if tmp.stat().st_size < path.stat().st_size:
        tmp.replace(path)
    else:
        tmp.unlink()
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def save_gif(source: Path, path: Path) -> None:
    """Copies the run's evolution.gif (written by `LatentEvolution.save_gif`), with one shared 32-colour palette."""
    with Image.open(source) as gif:
        durations, frames = [], []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info.get("duration", 500))
            frames.append(gif.convert("RGB"))
    palette = _palette(frames[-1], 32)
    small = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    durations[-1] = max(durations[-1], 2000)  # rest on the trained state before looping
    small[0].save(path, save_all=True, append_images=small[1:], duration=durations, loop=0, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB, {len(small)} frames)")


if __name__ == "__main__":
    sys.exit(main())
