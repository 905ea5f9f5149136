"""OOD suite: AUROC of every anomaly score, and of combined candidates, against many kinds of shift.

Issue 19, section 1 (measurement first). For a model trained as `tfpvae train --dataset X
--seed 0` trains it (`VAEConfig()` defaults, 10 epochs), on MNIST and on Fashion-MNIST:

* 1,000 held-out normal test images are the fit set (the detector's calibration images,
  the reference of the typical NLL, and the normal data the combined candidates learn);
  1,000 other normal test images are the normal side of every AUROC; each shifted set
  (1,000 images, built in code from local data, seeded) is the anomalous side.
* The suite: the other data set; geometric transforms of normal test images (flips,
  rotations, shifts, shrinking); photometric ones (inversion, contrast, brightness); noise
  (gaussian, uniform, salt-and-pepper at two strengths each); MNIST-C style corruptions
  (blur, scratches, occlusion, edges); synthetic images (constant, noise); images of other
  sources resized to 28x28 grey (scikit-learn's digits and sample photos).
* Scores: the library's (`tfpvae.anomaly.SCORES` with the detector's defaults: k = 100
  importance samples, seed 0, grey images scored as they are; `typicality` takes the mean
  NLL of the whole fit set as its typical NLL) and the candidates:
  - DoSE (Morningstar et al., AISTATS 2021): a density fitted to the standardised vector of
    per-image statistics of the fit set, scored by that density. `dose_kde`: Gaussian KDE
    with Scott's bandwidth on (log_prob, rate, distortion, complexity, posterior entropy);
    `dose_kde_cv`: the bandwidth by 5-fold likelihood CV; `dose_kde_nocx`: without
    complexity; `dose_ocsvm`: a one-class SVM (nu 0.1); `dose_gauss`: a Gaussian density
    (minus the Mahalanobis distance); `dose_kde_grey`: plus the grey entropy H(x) of the
    image (sum of the pixels' binary entropies, 0 for a binary image); `dose_kde_kl`:
    log_prob + H(x) in place of log_prob, which for a grey image is minus the KL between
    the image's pixels and the decoder's, without the image's own greyness.
  - Combined conformal p-values (calibrated on the fit set, two-sided: a statistic can be
    abnormal on either side): Fisher's statistic -2 sum log p and the Bonferroni min-p of
    log_prob and complexity (`fisher2`, `minp2`), of the five DoSE statistics (`fisher5`,
    `minp5`) and of those and H(x) (`fisher6`, `minp6`).
  - `maxz`: the largest robust |z| (median/MAD of the fit set) over the five statistics,
    a continuous min-p that does not saturate at 1/(n+1).
* References, not detectors: `pixel_1nn`, minus the pixel distance to the nearest of
  10,000 training images; `supervised`, the 2-fold cross-validated AUROC of an MLP trained
  on pixels to tell the normal images from the shifted ones: a lower bound on how
  separable a set is. A set it does not separate (AUROC < 0.95) may be partly normal (a
  flipped "0" or T-shirt is still one); the summary also gives each score's worst case
  over the sets it separates. For each set made from normal images, `as_close_as_original`
  is the share of its images at least as close in pixels to one of the 10,000 training
  images as the normal image each was made from: a description, not a bound (dimmed and
  blurred images are close in pixels and still found by the combined score's statistics).
  Statistics are cached beside each model (`--no-cache`).
* The worst case per score over the suite, its mean, and the scoring time of each score
  relative to `log_prob` with the detector's defaults at the same k (1,000 images, the
  fastest of three passes after a warm-up). On grey images `complexity` rescores a fixed
  binarisation (a second pass); with `--binarize-seed 0` every statistic comes from one
  pass over that binarisation.

    python benchmarks/ood_suite.py --out benchmarks/results/ood-suite-DATE.jsonl
    python benchmarks/ood_suite.py --binarize-seed 0 --out ...   # one pass per image
    python benchmarks/ood_suite.py --quick        # smoke run (a few minutes)

Full run: about 10 minutes on one core after training (two models of about 2.5 minutes
each); `--threads 1` with TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 for one core.
Models are cached in --runs (one folder per data set, as `tfpvae train --out` writes it):
a rerun skips training.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np

DATASETS = ("mnist", "fashion_mnist")
STATS = ("log_prob", "rate", "distortion", "complexity", "entropy")  # DoSE's feature vector
PASS = ("log_prob", "elbo", "rate", "distortion", "complexity")  # one scoring pass gives all of them
BASE = ("log_prob", "elbo", "rate", "distortion", "typicality", "complexity")  # tfpvae.anomaly.SCORES
GREY = (*STATS, "grey_entropy")
CANDIDATES = (
    "dose_kde",
    "dose_kde_cv",
    "dose_kde_nocx",
    "dose_ocsvm",
    "dose_gauss",
    "dose_kde_grey",
    "dose_kde_kl",
    "fisher2",
    "minp2",
    "fisher5",
    "minp5",
    "fisher6",
    "minp6",
    "maxz",
)
REFERENCE = ("pixel_1nn", "supervised")
SEPARABLE = 0.95  # supervised AUROC from which a set counts as separable
# The sets not made from the normal base images (the other data set is added by its name):
# they have no original to compare with.
NOT_DERIVED = ("constant", "uniform_noise", "sparse_noise", "smooth_noise", "digits_mnist_style",
               "digits_full_frame", "photos")  # fmt: skip
LIBRARY = ("combined",)  # the AnomalyDetector's default, fitted by the library on the fit set
COLUMNS = (*BASE, *LIBRARY, *CANDIDATES, *REFERENCE)
# The statistics each combined candidate reads ("kl": log_prob + grey_entropy), and so the passes it needs.
USES = {
    "dose_kde": STATS,
    "dose_kde_cv": STATS,
    "dose_kde_nocx": ("log_prob", "rate", "distortion", "entropy"),
    "dose_ocsvm": STATS,
    "dose_gauss": STATS,
    "dose_kde_grey": GREY,
    "dose_kde_kl": ("kl", "rate", "distortion", "complexity", "entropy"),
    "fisher2": ("log_prob", "complexity"),
    "minp2": ("log_prob", "complexity"),
    "fisher5": STATS,
    "minp5": STATS,
    "fisher6": GREY,
    "minp6": GREY,
    "maxz": STATS,
}
SHORT = {  # column headings of the printed tables
    "log_prob": "lp",
    "elbo": "elbo",
    "rate": "rate",
    "distortion": "dist",
    "typicality": "typ",
    "complexity": "cx",
    "dose_kde": "kde",
    "dose_kde_cv": "kdecv",
    "dose_kde_nocx": "kde-cx",
    "dose_ocsvm": "ocsvm",
    "dose_gauss": "gauss",
    "dose_kde_grey": "kde+g",
    "dose_kde_kl": "kde-kl",
    "fisher2": "fish2",
    "minp2": "minp2",
    "fisher5": "fish5",
    "minp5": "minp5",
    "fisher6": "fish6",
    "minp6": "minp6",
    "maxz": "maxz",
    "combined": "comb",
    "pixel_1nn": "1nn",
    "supervised": "sup",
}


# ----------------------------------------------------------------------------- the suite
def _rng(name: str, seed: int) -> np.random.Generator:
    """A generator of its own for each set, so adding a set changes no other."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, h, w) float in [0, 1] -> (n, *size), area-averaged (PIL's box filter)."""
    from PIL import Image

    out = np.empty((len(images), *size), np.float32)
    for i, image in enumerate(images):
        pil = Image.fromarray(np.asarray(image, np.float32), mode="F")
        out[i] = np.asarray(pil.resize(size[::-1], Image.BOX if image.shape[0] > size[0] else Image.BILINEAR))
    return np.clip(out, 0.0, 1.0)


def _line_mask(rng: np.random.Generator, size: int = 28, lines: tuple[int, int] = (1, 3)) -> np.ndarray:
    """A mask of 1 to 3 straight 1-pixel scratches from edge to edge, at random angles."""
    mask = np.zeros((size, size), bool)
    for _ in range(rng.integers(lines[0], lines[1] + 1)):
        (y0, x0), (y1, x1) = rng.uniform(0, size - 1, (2, 2))
        if rng.random() < 0.5:  # mostly across the image: stretch to the borders
            x0, x1 = 0.0, size - 1.0
        else:
            y0, y1 = 0.0, size - 1.0
        t = np.linspace(0.0, 1.0, 4 * size)
        mask[np.round(y0 + t * (y1 - y0)).astype(int), np.round(x0 + t * (x1 - x0)).astype(int)] = True
    return mask


def _sklearn_digits(n: int, rng: np.random.Generator, mnist_style: bool) -> np.ndarray:
    """scikit-learn's 8x8 digits (1,797, UCI) resized: to 20x20 in a 28x28 frame as MNIST, or to the full frame."""
    from sklearn.datasets import load_digits

    images = load_digits().images / 16.0
    images = images[rng.choice(len(images), size=n, replace=n > len(images))]
    if not mnist_style:
        return _resize(images, (28, 28))
    out = np.zeros((n, 28, 28), np.float32)
    out[:, 4:24, 4:24] = _resize(images, (20, 20))
    return out


def _photos(n: int, rng: np.random.Generator) -> np.ndarray:
    """Random square crops (28 to 200 pixels) of scikit-learn's two sample photos, grey, resized to 28x28."""
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(p, np.float32).mean(axis=-1) / 255.0 for p in load_sample_images().images]
    crops = []
    for _ in range(n):
        photo = photos[rng.integers(len(photos))]
        s = int(rng.integers(28, 201))
        y, x = rng.integers(0, photo.shape[0] - s + 1), rng.integers(0, photo.shape[1] - s + 1)
        crops.append(photo[y : y + s, x : x + s])
    return np.stack([_resize(c[None], (28, 28))[0] for c in crops])


def build_suite(base: np.ndarray, other: np.ndarray, other_name: str, n: int, seed: int) -> dict[str, np.ndarray]:
    """The shifted sets, name -> float32 (n, 28, 28, 1) in [0, 1].

    Args:
      base: normal test images (>= n) that neither the fit nor the normal evaluation set
        holds; every transformed set transforms the same first n of them.
      other: the other data set's test images (>= n).
      other_name: its name, the first set's name.
      n: images per set.
      seed: the suite's seed; each set draws from a generator of its own.
    """
    from scipy import ndimage

    x = np.asarray(base[:n, ..., 0], np.float32)
    sets: dict[str, np.ndarray] = {}

    def add(name, fn):
        sets[name] = np.clip(np.asarray(fn(_rng(name, seed)), np.float32), 0.0, 1.0)

    pick = _rng("other", seed).choice(len(other), n, replace=False)
    add(other_name, lambda r: other[pick, ..., 0])
    # geometric
    add("hflip", lambda r: x[:, :, ::-1])
    add("vflip", lambda r: x[:, ::-1, :])
    add("rot90", lambda r: np.rot90(x, 1, axes=(1, 2)))
    add("rot180", lambda r: x[:, ::-1, ::-1])

    def rotate45(r):
        angles = r.uniform(30, 60, n) * r.choice([-1, 1], n)
        return [ndimage.rotate(im, a, reshape=False, order=1) for im, a in zip(x, angles, strict=True)]

    def shift(r):
        d = r.integers(4, 8, (n, 2)) * r.choice([-1, 1], (n, 2))
        return [ndimage.shift(im, s, order=0) for im, s in zip(x, d, strict=True)]

    def shrink(r):  # MNIST-C "scale": half size, centred
        out = np.zeros_like(x)
        out[:, 7:21, 7:21] = _resize(x, (14, 14))
        return out

    add("rotate45", rotate45)
    add("shift", shift)
    add("shrink", shrink)
    # photometric
    add("invert", lambda r: 1.0 - x)
    add("contrast_low", lambda r: x.mean(axis=(1, 2), keepdims=True) + 0.4 * (x - x.mean(axis=(1, 2), keepdims=True)))
    add("brighten", lambda r: x + 0.3)
    add("dim", lambda r: 0.5 * x)
    # noise
    for sigma in (0.1, 0.3):
        add(f"gauss_{sigma}", lambda r, s=sigma: x + r.normal(0.0, s, x.shape))
    for a in (0.2, 0.5):
        add(f"uniform_{a}", lambda r, a=a: x + r.uniform(-a, a, x.shape))
    for frac in (0.05, 0.2):

        def salt_pepper(r, frac=frac):
            hit = r.random(x.shape) < frac
            return np.where(hit, r.integers(0, 2, x.shape).astype(np.float32), x)

        add(f"saltpepper_{frac}", salt_pepper)
    # corruptions in the style of MNIST-C
    for sigma in (1.0, 2.0):
        add(f"blur_{sigma:g}", lambda r, s=sigma: [ndimage.gaussian_filter(im, s) for im in x])
    add("scratches", lambda r: np.where(np.stack([_line_mask(r) for _ in range(n)]), 1.0, x))

    def occlude(value, size):
        def fn(r):
            out = x.copy()
            for im, (y0, x0) in zip(out, r.integers(4, 24 - size + 1, (n, 2)), strict=True):
                im[y0 : y0 + size, x0 : x0 + size] = value
            return out

        return fn

    add("occlude_black", occlude(0.0, 10))
    add("occlude_white", occlude(1.0, 8))

    def edges(r):  # MNIST-C "canny edges", here the Sobel gradient magnitude, scaled to [0, 1]
        mag = np.hypot(ndimage.sobel(x, axis=1), ndimage.sobel(x, axis=2))
        return mag / np.maximum(mag.max(axis=(1, 2), keepdims=True), 1e-6)

    add("edges", edges)
    # synthetic
    add("constant", lambda r: np.broadcast_to(r.uniform(0, 1, (n, 1, 1)), x.shape))
    add("uniform_noise", lambda r: r.uniform(0, 1, x.shape))
    add("sparse_noise", lambda r: (r.random(x.shape) < 0.15).astype(np.float32))

    def smooth_noise(r):
        blobs = np.stack([ndimage.gaussian_filter(im, 3.0) for im in r.normal(0, 1, x.shape)])
        lo, hi = blobs.min(axis=(1, 2), keepdims=True), blobs.max(axis=(1, 2), keepdims=True)
        return (blobs - lo) / (hi - lo)

    add("smooth_noise", smooth_noise)
    # other sources, resized to 28x28 grey
    add("digits_mnist_style", lambda r: _sklearn_digits(n, r, mnist_style=True))
    add("digits_full_frame", lambda r: _sklearn_digits(n, r, mnist_style=False))
    add("photos", lambda r: _photos(n, r))
    return {name: images[..., None] for name, images in sets.items()}


# ----------------------------------------------------------------------------- the model
def train_or_load(name: str, runs: Path, data_dir: str | None, seed: int, quick: bool):
    """The model `tfpvae train --dataset name --seed seed --out runs/name` trains, cached in `runs/name`."""
    import tfpvae
    from tfpvae.config import VAEConfig
    from tfpvae.runs import RunSettings, train_run
    from tfpvae.serialization import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE

    run = runs / name
    if all((run / f).exists() for f in (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE)):
        print(f"# {name}: model from {run}", flush=True)
        return tfpvae.load(run), 0.0
    t0 = time.perf_counter()
    settings = RunSettings(
        dataset=name, data_dir=data_dir, seed=seed, **({"limit": 2000, "epochs": 1} if quick else {})
    )
    train_run(run, settings, VAEConfig(seed=seed), verbose=0, note=lambda text: None)
    seconds = time.perf_counter() - t0
    print(f"# {name}: trained into {run} in {seconds:.0f} s", flush=True)
    return tfpvae.load(run), seconds


def statistics(model, x: np.ndarray, k: int, seed: int, binarize_seed: int | None = None) -> dict[str, np.ndarray]:
    """The per-image statistics of `x`: one scoring pass (the detector's defaults: grey images as they
    are), the posterior entropy (one encoder pass) and the grey entropy H(x) of the image itself."""
    from tfpvae.anomaly import compute_scores

    out = compute_scores(
        model.likelihood, x, PASS, num_samples=k, seed=seed, binarize_seed=binarize_seed, progress=False
    )
    out["entropy"] = posterior_entropy(model, x)
    out["grey_entropy"] = grey_entropy(x)  # of the image given, also where the scores binarise it
    return out


def grey_entropy(x: np.ndarray) -> np.ndarray:
    """sum over pixels of the binary entropy h(x_ij), in nats: 0 for a binary image.

    For grey x and Bernoulli pixels p, log p(x) = -(H(x) + KL(Bern(x) || Bern(p))): the
    likelihood of a grey image mixes the model's misfit with how grey the image is.
    """
    v = np.clip(x.reshape(len(x), -1).astype(np.float64), 1e-12, 1 - 1e-12)
    return -(v * np.log(v) + (1 - v) * np.log1p(-v)).sum(axis=1)


def cached_statistics(cache: Path | None, key: str, x, *, model, k, seed, binarize_seed) -> dict[str, np.ndarray]:
    """`statistics`, read from (or written to) `cache/key.npz` when `cache` is given."""
    path = None if cache is None else cache / f"{key}.npz"
    if path is not None and path.exists():
        with np.load(path) as f:
            return {**{name: f[name] for name in f.files}, "grey_entropy": grey_entropy(x)}
    out = statistics(model, x, k, seed, binarize_seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **out)
    return out


def posterior_entropy(model, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """H[q(z|x)] per image, in nats: one encoder pass."""
    return np.concatenate(
        [np.asarray(model.encode(x[i : i + batch]).entropy(), np.float64) for i in range(0, len(x), batch)]
    )


# ----------------------------------------------------------------------------- the candidates
def _features(stats: dict[str, np.ndarray], names) -> np.ndarray:
    """Columns of statistics; "kl" is log_prob + grey_entropy, minus KL(Bern(x) || Bern(p)) for a grey image."""
    return np.stack([stats["log_prob"] + stats["grey_entropy"] if n == "kl" else stats[n] for n in names], axis=1)


class Combined:
    """Every candidate, fitted on the statistics of the fit set; `score` gives higher = more normal."""

    def __init__(self, fit_stats: dict[str, np.ndarray], seed: int = 0):
        from sklearn.covariance import EmpiricalCovariance
        from sklearn.model_selection import GridSearchCV
        from sklearn.neighbors import KernelDensity
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import OneClassSVM

        self.fit_stats = fit_stats
        self.typical_nll = float(-np.mean(fit_stats["log_prob"]))
        self.scalers, self.models, self.fit_seconds = {}, {}, {}
        for name, factory in (
            ("dose_kde", lambda: KernelDensity(bandwidth="scott")),
            (
                "dose_kde_cv",
                lambda: GridSearchCV(KernelDensity(), {"bandwidth": np.logspace(-1.3, 0.3, 12)}, cv=5),
            ),
            ("dose_kde_nocx", lambda: KernelDensity(bandwidth="scott")),
            ("dose_ocsvm", lambda: OneClassSVM(nu=0.1, gamma="scale")),
            ("dose_gauss", lambda: EmpiricalCovariance()),
            ("dose_kde_grey", lambda: KernelDensity(bandwidth="scott")),
            ("dose_kde_kl", lambda: KernelDensity(bandwidth="scott")),
        ):
            t0 = time.perf_counter()
            f = _features(fit_stats, USES[name])
            self.scalers[name] = StandardScaler().fit(f)
            model = factory().fit(self.scalers[name].transform(f))
            self.models[name] = model.best_estimator_ if hasattr(model, "best_estimator_") else model
            self.fit_seconds[name] = time.perf_counter() - t0
            if hasattr(model, "best_params_"):
                self.cv_bandwidth = float(model.best_params_["bandwidth"])
        self.calibration = {name: np.sort(v) for name, v in fit_stats.items()}
        med = {name: np.median(v) for name, v in fit_stats.items()}
        mad = {name: 1.4826 * np.median(np.abs(v - med[name])) for name, v in fit_stats.items()}
        self.robust = {name: (med[name], max(mad[name], 1e-12)) for name in STATS}

    def p_two_sided(self, name: str, s: np.ndarray) -> np.ndarray:
        """Conformal p-value of either tail: min(1, 2 min(p_low, p_high)), p = (1 + #{cal beyond}) / (n + 1)."""
        cal = self.calibration[name]
        n = len(cal)
        low = (1.0 + np.searchsorted(cal, s, side="right")) / (n + 1.0)
        high = (1.0 + n - np.searchsorted(cal, s, side="left")) / (n + 1.0)
        return np.minimum(1.0, 2.0 * np.minimum(low, high))

    def score(self, name: str, stats: dict[str, np.ndarray]) -> np.ndarray:
        if name == "typicality":
            return -np.abs(-stats["log_prob"] - self.typical_nll)
        if name in self.models:
            f = self.scalers[name].transform(_features(stats, USES[name]))
            f = np.nan_to_num(f, nan=0.0, posinf=1e6, neginf=-1e6)
            model = self.models[name]
            if hasattr(model, "score_samples") and not hasattr(model, "mahalanobis"):
                return model.score_samples(f) if name != "dose_ocsvm" else model.decision_function(f)
            return -model.mahalanobis(f)
        if name.startswith(("fisher", "minp")):
            p = np.stack([self.p_two_sided(s, stats[s]) for s in USES[name]], axis=1)
            if name.startswith("fisher"):
                return 2.0 * np.log(p).sum(axis=1)  # minus Fisher's statistic -2 sum log p
            return p.min(axis=1)  # Bonferroni: min(1, m min p) orders the images as min p does
        if name == "maxz":
            z = np.stack([np.abs(stats[s] - self.robust[s][0]) / self.robust[s][1] for s in STATS], axis=1)
            return -np.nan_to_num(z, nan=np.inf).max(axis=1)
        return stats[name]


def supervised_auroc(normal: np.ndarray, shifted: np.ndarray, seed: int) -> float:
    """2-fold cross-validated AUROC of an MLP (256 hidden units) trained on pixels to tell the two sets apart.

    A reference, not a detector: what a classifier that has seen the shift reaches, so a
    lower bound on how separable the set is (a set where it is low is partly normal).
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neural_network import MLPClassifier

    x = np.r_[normal.reshape(len(normal), -1), shifted.reshape(len(shifted), -1)]
    y = np.r_[np.zeros(len(normal)), np.ones(len(shifted))]
    clf = MLPClassifier((256,), max_iter=200, early_stopping=True, random_state=seed)
    folds = StratifiedKFold(2, shuffle=True, random_state=seed)
    return float(roc_auc_score(y, cross_val_predict(clf, x, y, cv=folds, method="predict_proba")[:, 1]))


def pixel_1nn(train: np.ndarray, x: np.ndarray, batch: int = 500) -> np.ndarray:
    """Minus the Euclidean pixel distance of each image to its nearest training image."""
    t = train.reshape(len(train), -1).astype(np.float32)
    t2 = (t**2).sum(axis=1)
    out = []
    for i in range(0, len(x), batch):
        q = x[i : i + batch].reshape(-1, t.shape[1]).astype(np.float32)
        d2 = (q**2).sum(axis=1)[:, None] + t2[None, :] - 2.0 * q @ t.T
        out.append(-np.sqrt(np.maximum(d2.min(axis=1), 0.0)))
    return np.concatenate(out).astype(np.float64)


def as_close(set_name: str, other_name: str, shifted_1nn: np.ndarray, original_1nn: np.ndarray) -> dict:
    """{"as_close_as_original": share}: the share of a set's images that are at least as close
    (in pixels) to one of the reference training images as the normal image each was made
    from, for the sets made from normal images ({} for the others).

    Args:
      set_name: the shifted set's name.
      other_name: the name of the other data set (a set with no originals).
      shifted_1nn: `pixel_1nn` of the set's images, (n,): minus their distances, higher = closer.
      original_1nn: `pixel_1nn` of the normal images they were made from, in the same order, (n,).

    Returns:
      {"as_close_as_original": share in [0, 1], rounded to 3 places}, or {}.

    Such an image is no further from the training data in pixels than a normal one (a
    horizontally flipped T-shirt is close to other T-shirts). It describes a set; it does
    not bound what a detector can reach, since a shift that moves few pixels can still
    change a statistic that no normal image has (a dimmed image's peak).
    """
    if set_name == other_name or set_name in NOT_DERIVED:
        return {}
    return {"as_close_as_original": round(float(np.mean(shifted_1nn >= original_1nn)), 3)}


# ----------------------------------------------------------------------------- timing
def timings(model, x: np.ndarray, k: int, seed: int, combined: Combined, stats: dict, binarize_seed) -> dict:
    """Seconds to score `x` for each column at k, and each one's ratio to `log_prob`'s with the
    detector's defaults (grey images as they are), at the same k.

    Each pass is timed three times after a warm-up call that traces its graph; the fastest
    counts. The library's scores cost the pass that gives them (complexity on grey images
    rescores a fixed binarisation: a second pass); the candidates cost the pass with
    complexity (or without, for `dose_kde_nocx`), the encoder pass for the posterior entropy
    and the numpy one for the grey entropy where they use them, and their own arithmetic.
    Both grey passes and binary ones (`binarize_seed` 0, where complexity reuses the
    likelihood pass) are timed; the run's own `binarize_seed` picks the ones its columns cost.
    """
    from tfpvae.anomaly import compute_scores
    from tfpvae.scoring import ScoringPlan

    # A warm-up on as many images as one call of the timed pass holds: the same traced shape.
    warm = x[: ScoringPlan.make(k, model.likelihood.max_batch_elements, len(x)).images]

    def timed(fn):
        fn(warm)
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            fn(x)
            best = min(best, time.perf_counter() - t0)
        return best

    passes = {}
    for mode, bseed in (("grey", None), ("binary", 0)):
        for key, outputs in (
            ("log_prob", ("log_prob",)),
            ("no_complexity", ("log_prob", "elbo", "rate", "distortion")),
            ("all", PASS),
        ):
            kw = dict(num_samples=k, seed=seed, binarize_seed=bseed, progress=False)
            passes[f"{key}_{mode}"] = timed(lambda xs, o=outputs, kw=kw: compute_scores(model.likelihood, xs, o, **kw))
    passes["entropy"] = timed(lambda xs: posterior_entropy(model, xs))
    passes["grey_entropy"] = timed(grey_entropy)
    mode = "grey" if binarize_seed is None else "binary"
    seconds = {}
    for name in COLUMNS:
        if name in (*REFERENCE, *LIBRARY):  # the library's detector is timed by the caller
            continue
        uses = {v for u in USES.get(name, (name,)) for v in (("log_prob", "grey_entropy") if u == "kl" else (u,))}
        if "complexity" in uses:  # complexity, and every candidate that reads it: the pass with it
            base = passes[f"all_{mode}"]
        elif name in ("log_prob", "typicality"):
            base = passes[f"log_prob_{mode}"]
        else:  # elbo, rate, distortion and dose_kde_nocx
            base = passes[f"no_complexity_{mode}"]
        extra = sum(passes[u] for u in ("entropy", "grey_entropy") if u in uses)
        t0 = time.perf_counter()
        combined.score(name, stats)
        seconds[name] = base + extra + (time.perf_counter() - t0)
    return {
        "mode": mode,
        "passes_seconds": {key: round(v, 3) for key, v in passes.items()},
        "seconds": {key: round(v, 3) for key, v in seconds.items()},
        "ratio_to_log_prob": {name: round(v / passes["log_prob_grey"], 2) for name, v in seconds.items()},
    }


def _best_of_3(fn, x) -> float:
    """The fastest of three calls of fn(x), after one that traces its graphs."""
    fn(x[:100])
    return min(_seconds(fn, x) for _ in range(3))


def _seconds(fn, x) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- report
def _table(title: str, rows: dict[str, dict[str, float]], columns) -> str:
    width = max(len(r) for r in rows) + 1
    lines = [title, " " * width + " ".join(f"{SHORT[c]:>6}" for c in columns)]
    for row, values in rows.items():
        lines.append(f"{row:<{width}}" + " ".join(f"{values[c]:6.3f}" for c in columns))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 epoch on 2,000 images, 100 images a set, k=4")
    p.add_argument("--data-dir", default=os.environ.get("TFPVAE_DATA_DIR"))
    p.add_argument("--runs", default="runs/ood-suite", help="folder of the cached models (default runs/ood-suite)")
    p.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--num-samples", type=int, default=100, help="importance samples k (default 100, the detector's)")
    p.add_argument("--images", type=int, default=1000, help="images per set (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--binarize-seed", type=int, help="score a fixed binarisation of every image (default: grey, as the detector)"
    )
    p.add_argument("--no-cache", action="store_true", help="rescore: ignore the statistics cached in --runs")
    p.add_argument("--threads", type=int, help="limit BLAS/OpenMP threads (threadpoolctl); TF's: its env variables")
    p.add_argument("--no-timing", action="store_true", help="skip the timing passes")
    p.add_argument("--out", help="write the JSON lines here")
    args = p.parse_args(argv)
    if args.quick:
        args.num_samples, args.images = 4, 100
        if args.runs == p.get_default("runs"):
            args.runs = "runs/ood-suite-quick"
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)

    import tfpvae
    from tfpvae.anomaly import AnomalyDetector, detection_metrics

    n, k = args.images, args.num_samples
    t_start = time.perf_counter()
    data = {name: tfpvae.datasets.load(name, args.data_dir) for name in DATASETS}
    lines = [{"settings": {**vars(args), "python": sys.version.split()[0], "tfpvae": tfpvae.__version__}}]
    print(json.dumps(lines[0]), flush=True)
    summaries = {}
    for name in args.datasets:
        other_name = next(d for d in DATASETS if d != name)
        model, train_seconds = train_or_load(name, Path(args.runs), args.data_dir, args.seed, args.quick)
        (x_train, _), (x_test, _) = data[name]
        order = np.random.default_rng(args.seed).permutation(len(x_test))
        fit, normal, base = x_test[order[:n]], x_test[order[n : 2 * n]], x_test[order[2 * n :]]
        t0 = time.perf_counter()
        suite = build_suite(base, data[other_name][1][0], other_name, n, args.seed)
        build_seconds = time.perf_counter() - t0
        print(f"# {name}: {len(suite)} sets of {n} built in {build_seconds:.0f} s", flush=True)
        t0 = time.perf_counter()
        cache = (
            None
            if args.no_cache
            else Path(args.runs) / name / f"ood-stats-k{k}-n{n}-s{args.seed}-b{args.binarize_seed}"
        )
        stats_of = functools.partial(
            cached_statistics, cache, model=model, k=k, seed=args.seed, binarize_seed=args.binarize_seed
        )
        fit_stats = stats_of("fit", fit)
        combined = Combined(fit_stats, args.seed)
        normal_stats = stats_of("normal", normal)
        train_ref = x_train[np.random.default_rng(args.seed).permutation(len(x_train))[:10000]]
        original_1nn = pixel_1nn(train_ref, base[:n])  # of the images the shifted sets were made from
        scored = [c for c in COLUMNS if c not in (*REFERENCE, *LIBRARY)]
        detector = AnomalyDetector(model, num_samples=k, seed=args.seed, progress=False).fit(fit)
        normal_scores = {c: combined.score(c, normal_stats) for c in scored}
        normal_scores["pixel_1nn"] = pixel_1nn(train_ref, normal)
        normal_scores["combined"] = detector.score_samples(normal)
        per_set = {}
        for set_name, images in suite.items():
            t1 = time.perf_counter()
            stats = stats_of(set_name, images)
            scores = {c: combined.score(c, stats) for c in scored}
            scores["pixel_1nn"] = pixel_1nn(train_ref, images)
            scores["combined"] = detector.score_samples(images)
            auroc = {c: round(detection_metrics(normal_scores[c], scores[c])["auroc"], 4) for c in scores}
            auroc["supervised"] = round(supervised_auroc(normal, images, args.seed), 4)
            nonfinite = {s: int((~np.isfinite(v)).sum()) for s, v in stats.items() if (~np.isfinite(v)).any()}
            # Which side each statistic is abnormal on: the median of the set against the normal ones'.
            side = {
                s: round(float(np.mean(stats[s] > np.median(normal_stats[s]))), 3) for s in GREY
            }  # 0.5 = no shift; near 1 = higher than normal, near 0 = lower
            line = {
                "model": name,
                "set": set_name,
                "auroc": auroc,
                **as_close(set_name, other_name, scores["pixel_1nn"], original_1nn),
                "fraction_above_normal_median": side,
                **({"nonfinite": nonfinite} if nonfinite else {}),
                "seconds": round(time.perf_counter() - t1, 1),
            }
            per_set[set_name] = auroc
            lines.append(line)
            print(json.dumps(line), flush=True)
        score_seconds = time.perf_counter() - t0
        worst = {c: min(per_set[s][c] for s in per_set) for c in COLUMNS}
        worst_set = {c: min(per_set, key=lambda s, c=c: per_set[s][c]) for c in COLUMNS}
        mean = {c: round(float(np.mean([per_set[s][c] for s in per_set])), 4) for c in COLUMNS}
        # The sets a classifier that has seen the shift separates (supervised AUROC >= 0.95):
        # elsewhere the set is partly normal and no detector can be expected to reach 0.95.
        separable = [s for s in per_set if per_set[s]["supervised"] >= SEPARABLE]
        worst_separable = {c: min(per_set[s][c] for s in separable) for c in COLUMNS}
        summary = {
            "model": name,
            "summary": True,
            "worst_auroc": worst,
            "worst_set": worst_set,
            "worst_auroc_separable": worst_separable,
            "not_separable": [s for s in per_set if s not in separable],
            "mean_auroc": mean,
            "num_sets": len(per_set),
            "kde_cv_bandwidth": combined.cv_bandwidth,
            "candidate_fit_seconds": {c: round(s, 3) for c, s in combined.fit_seconds.items()},
            "typical_nll": round(combined.typical_nll, 3),
            "normal_mean": {s: round(float(np.mean(normal_stats[s])), 3) for s in STATS},
            "train_seconds": round(train_seconds, 1),
            "score_seconds": round(score_seconds, 1),
        }
        if not args.no_timing:
            summary["timing"] = timings(model, normal, k, args.seed, combined, normal_stats, args.binarize_seed)
            summary["timing"]["seconds"]["combined"] = seconds = _best_of_3(detector.score_samples, normal)
            summary["timing"]["ratio_to_log_prob"]["combined"] = round(seconds / _best_of_3(
                AnomalyDetector(model, score="log_prob", num_samples=k, seed=args.seed, progress=False)
                .fit(fit).score_samples, normal), 2)  # fmt: skip
        summaries[name] = (per_set, summary)
        lines.append(summary)
        print(json.dumps(summary), flush=True)

    for name, (per_set, summary) in summaries.items():
        for cols in (BASE + REFERENCE, CANDIDATES):
            rows = {**per_set, "WORST": summary["worst_auroc"], "MEAN": summary["mean_auroc"]}
            print("\n" + _table(f"AUROC, model {name}, k={k}, {n} normal vs {n} shifted", rows, cols))
        if "timing" in summary:
            ratio = summary["timing"]["ratio_to_log_prob"]
            print("cost / log_prob: " + ", ".join(f"{SHORT[c]} {r:.2f}" for c, r in ratio.items()))
    both = {c: min(s["worst_auroc"][c] for _, s in summaries.values()) for c in COLUMNS}
    print("\nsummary: worst AUROC (its set) and mean over the suite; worst over the sets the supervised reference")
    print(f"separates at >= {SEPARABLE}; cost = scoring time / log_prob's with the detector's defaults, same k")
    head = f"{'score':14}" + "".join(f"{m[:7]:>8} {'worst set':18}{'mean':>6}{'sep.':>6}{'cost':>6}" for m in summaries)
    print(head)
    for c in sorted(COLUMNS, key=lambda c: -both[c]):
        row = f"{c:14}"
        for _, summary in summaries.values():
            cost = summary.get("timing", {}).get("ratio_to_log_prob", {}).get(c)
            row += (
                f"{summary['worst_auroc'][c]:8.3f} {summary['worst_set'][c]:18}{summary['mean_auroc'][c]:6.3f}"
                f"{summary['worst_auroc_separable'][c]:6.3f}" + (f"{cost:6.2f}" if cost is not None else f"{'':6}")
            )
        print(row)
    for name, (_, summary) in summaries.items():
        print(f"{name}: not separable by the supervised reference: {', '.join(summary['not_separable']) or 'none'}")
    print(f"# total {time.perf_counter() - t_start:.0f} s", flush=True)
    if args.out:  # one JSON object per set and per model summary
        Path(args.out).write_text("".join(json.dumps(x) + "\n" for x in lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
