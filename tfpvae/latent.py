"""Generation and walks through a trained model's latent space.

Every function takes a `LatentModel` (`tfpvae.protocols`; e.g. a trained `tfpvae.VAE`) and
returns numpy arrays: samples from a Gaussian mixture fitted to the aggregate posterior,
interpolations between codes (linear or spherical), one-dimension-at-a-time traversals and
decoded 2-D manifold grids.

Also importable from here: `posterior_means`, `embed_latents` and `Embedding` (2-D
embeddings of posterior means for scatter plots, defined in `tfpvae.embedding`) and the
`LatentEvolution` training callback (defined in `tfpvae.evolution`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from tfpvae._validation import check_choice, check_float, check_images, check_int, check_seed
from tfpvae.embedding import MAX_SKLEARN_SEED
from tfpvae.embedding import Embedding as Embedding
from tfpvae.embedding import embed_latents as embed_latents
from tfpvae.embedding import posterior_means as posterior_means
from tfpvae.evolution import LatentEvolution as LatentEvolution
from tfpvae.protocols import LatentModel, latent_dim

if TYPE_CHECKING:
    from sklearn.mixture import GaussianMixture

# Below this |sin(angle)| two codes count as (anti)parallel and slerp falls back to lerp.
_PARALLEL_EPS = 1e-6
# Grid quantiles used when `manifold_grid` gets no `extent`: the central 90% of p(z).
_GRID_QUANTILES = (0.05, 0.95)


class Interpolation(NamedTuple):
    """Result of `interpolate`.

    Attributes:
      images: decoded means, float32 (n_pairs, num_steps, H, W, C) in [0, 1].
      log_prior: log p(z) of each code on the path, (n_pairs, num_steps).
      latents: the codes on the path, (n_pairs, num_steps, latent_dim); step 0 is the
        start code and the last step the end code.
    """

    images: np.ndarray
    log_prior: np.ndarray
    latents: np.ndarray


class Traversal(NamedTuple):
    """Result of `traverse`.

    Attributes:
      images: decoded means, float32 (n_dims, num_steps, H, W, C).
      latents: the codes, (n_dims, num_steps, latent_dim).
      offsets: the steps in standard-deviation units, (num_steps,), from -span to span.
      dims: the latent dimension varied in each row, (n_dims,).
      center: the code the walk is centred on, (latent_dim,).
    """

    images: np.ndarray
    latents: np.ndarray
    offsets: np.ndarray
    dims: np.ndarray
    center: np.ndarray


class ManifoldGrid(NamedTuple):
    """Result of `manifold_grid`.

    Attributes:
      images: decoded means, float32 (g, g, H, W, C). `images[i, j]` is decoded at plane
        coordinates `(coords[0][j], coords[1][i])`.
      coords: (2, g). coords[0] are the horizontal coordinates, increasing left to right;
        coords[1] the vertical ones, decreasing from the top row down, so the grid reads
        like a plot with its y axis pointing up.
      latents: the codes, (g, g, latent_dim).
      axis_labels: names of the horizontal and vertical coordinates.
    """

    images: np.ndarray
    coords: np.ndarray
    latents: np.ndarray
    axis_labels: tuple[str, str]


# ---------------------------------------------------------------------------- helpers
def _as_batch_of_images(x: Any, model: LatentModel, name: str) -> np.ndarray:
    """Validates images; a single image of exactly the model's shape becomes a batch of one."""
    arr = x.numpy() if hasattr(x, "numpy") and callable(x.numpy) else x
    arr = np.asarray(arr)
    if arr.shape == tuple(model.image_shape):
        arr = arr[None]
    return check_images(arr, name, model.image_shape)


def _as_latents(z: Any, d: int, name: str) -> np.ndarray:
    """Validates codes (n, d) or a single code (d,); returns float64 (n, d)."""
    z = np.asarray(z.numpy() if hasattr(z, "numpy") else z)
    if not np.issubdtype(z.dtype, np.number):
        raise TypeError(f"`{name}` must be numeric latent codes; got dtype {z.dtype}.")
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or z.shape[1] != d or z.shape[0] == 0:
        raise ValueError(f"`{name}` must have shape (n, {d}) or ({d},) with n >= 1; got {z.shape}.")
    if not np.all(np.isfinite(z)):
        raise ValueError(f"`{name}` contains NaN or Inf values.")
    return z.astype(np.float64)


# Prior draws for the moments of a prior without closed-form ones (a flow): the standard
# error of the mean is then under 1% of a standard deviation.
_MOMENT_SAMPLES = 20_000


def _prior_moments(model: LatentModel) -> tuple[np.ndarray, np.ndarray]:
    """Mean and per-dimension standard deviation of the prior, each (latent_dim,).

    Closed form where the distribution has one; otherwise (a flow prior) estimated from
    `_MOMENT_SAMPLES` draws with a fixed seed, so the same model gives the same walks.
    """
    prior = model.prior
    try:
        return prior.mean().numpy().astype(np.float64), prior.stddev().numpy().astype(np.float64)
    except NotImplementedError:
        z = prior.sample(_MOMENT_SAMPLES, seed=(0, 0)).numpy().astype(np.float64)
        return z.mean(axis=0), z.std(axis=0)


def _decode(model: LatentModel, z: np.ndarray) -> np.ndarray:
    """Decoded means for codes of shape (..., d), reshaped to (..., H, W, C)."""
    lead = z.shape[:-1]
    images = model.decode_mean(z.reshape(-1, z.shape[-1]).astype(np.float32))
    return images.reshape(*lead, *images.shape[1:])


def _log_prior(model: LatentModel, z: np.ndarray) -> np.ndarray:
    lead = z.shape[:-1]
    flat = z.reshape(-1, z.shape[-1]).astype(np.float32)
    return model.prior.log_prob(flat).numpy().reshape(lead)


# ---------------------------------------------------------------------------- aggregate posterior
def fit_aggregate_posterior(
    model: LatentModel, x: Any, num_components: int = 10, seed: int | None = None
) -> GaussianMixture:
    """Fits a Gaussian mixture to the posterior means of `x`: an estimate of q(z) = E_x q(z|x).

    Sampling from it ("ex-post density estimation", Ghosh et al. 2020) avoids the
    regions of the prior that no training image encodes to, so the images are usually
    sharper than prior samples; it also works for a plain autoencoder.

    Args:
      model: a `LatentModel` (e.g. a trained `tfpvae.VAE`).
      x: training images (n, H, W, C), n >= num_components.
      num_components: mixture components, >= 1. 10: one per MNIST class.
      seed: seed of the mixture's initialisation, int in [0, 2^32 - 1]. None: a fresh one.

    Returns:
      A fitted `sklearn.mixture.GaussianMixture` with full covariances over
      (latent_dim,) codes; pass it to `sample_aggregate_posterior`. Nothing is stored on
      the model.

    Examples:
      >>> gmm = fit_aggregate_posterior(model, x_train, seed=0)
      >>> images = sample_aggregate_posterior(model, gmm, 16, seed=0)  # (16, H, W, C)
    """
    from sklearn.mixture import GaussianMixture

    num_components = check_int(num_components, "num_components")
    seed = check_seed(seed, "seed", maximum=MAX_SKLEARN_SEED)  # sklearn's bound, checked here to name `seed`
    z = posterior_means(model, x)
    if num_components > len(z):
        raise ValueError(f"`num_components` must be <= the number of images ({len(z)}); got {num_components}.")
    gmm = GaussianMixture(n_components=num_components, covariance_type="full", random_state=seed)
    return gmm.fit(z.astype(np.float64))


def _full_covariances(gmm: GaussianMixture) -> np.ndarray:
    """The mixture's covariances as (k, d, d) whatever its `covariance_type`."""
    k, d = gmm.means_.shape
    cov = np.asarray(gmm.covariances_, dtype=np.float64)
    kind = gmm.covariance_type
    if kind == "full":
        return cov
    if kind == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if kind == "diag":
        return cov[:, :, None] * np.eye(d)
    return cov[:, None, None] * np.eye(d)  # spherical


def sample_aggregate_posterior(
    model: LatentModel,
    gmm: GaussianMixture,
    num_samples: int,
    seed: int | None = None,
    return_latents: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Draws images by sampling codes from a fitted aggregate-posterior mixture.

    Args:
      model: a `LatentModel` (e.g. a trained `tfpvae.VAE`).
      gmm: the mixture returned by `fit_aggregate_posterior` (any fitted sklearn
        `GaussianMixture` over (latent_dim,) codes).
      num_samples: number of images, >= 1.
      seed: int for reproducible samples. (Drawn here with numpy rather
        than `gmm.sample`, which ignores seeds and returns the codes sorted by component.)
      return_latents: also return the codes.

    Returns:
      images, float32 (num_samples, H, W, C) in [0, 1]; with `return_latents`, the pair
      (images, codes float32 (num_samples, latent_dim)).
    """
    num_samples = check_int(num_samples, "num_samples")
    seed = check_seed(seed)
    if not hasattr(gmm, "means_") or not hasattr(gmm, "covariances_"):
        raise TypeError(f"`gmm` must be a fitted sklearn GaussianMixture; got {type(gmm).__name__}.")
    d = latent_dim(model)
    if gmm.means_.shape[1] != d:
        raise ValueError(f"`gmm` must model codes of dimension {d}; got dimension {gmm.means_.shape[1]}.")
    rng = np.random.default_rng(seed)
    weights = np.asarray(gmm.weights_, dtype=np.float64)
    component = rng.choice(len(weights), size=num_samples, p=weights / weights.sum())
    chol = np.linalg.cholesky(_full_covariances(gmm))
    eps = rng.standard_normal((num_samples, d))
    z = gmm.means_[component] + np.einsum("nij,nj->ni", chol[component], eps)
    z = z.astype(np.float32)
    images = model.decode_mean(z)
    return (images, z) if return_latents else images


# ---------------------------------------------------------------------------- interpolation
def latent_path(start: np.ndarray, end: np.ndarray, num_steps: int, method: str = "linear") -> np.ndarray:
    """Codes on the path from each start code to the matching end code.

    Linear: z(t) = (1 - t) a + t b. Slerp (spherical linear interpolation, Shoemake 1985;
    White 2016 for generative models) turns the direction along the great circle and
    changes the norm linearly: z(t) = ((1-t) |a| + t |b|) [sin((1-t) w) a/|a| + sin(t w)
    b/|b|] / sin(w), with w the angle between a and b. The path stays in the shell where
    a high-dimensional Gaussian's mass lies, while the linear path cuts through the
    low-norm interior. When |a| = |b| this is Shoemake's formula, [sin((1-t) w) a +
    sin(t w) b] / sin(w); for codes of other norms that formula bulges out by up to
    1 / cos(w / 2), without bound for nearly opposite codes. Pairs at an angle of
    (nearly) 0 or 180 degrees, or with a zero code, have no unique great circle and use
    the linear path.

    Args:
      start: codes (n, d).
      end: codes (n, d).
      num_steps: points per path including both ends, >= 2.
      method: "linear" or "slerp".

    Returns:
      float64 array (n, num_steps, d); [:, 0] equals `start` and [:, -1] equals `end`.
    """
    num_steps = check_int(num_steps, "num_steps", minimum=2)
    method = check_choice(method, "method", ("linear", "slerp"))
    a, b = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"`start` and `end` must both have shape (n, d); got {a.shape} and {b.shape}.")
    t = np.linspace(0.0, 1.0, num_steps)[None, :, None]  # (1, s, 1)
    w_a, w_b = 1.0 - t, t
    if method == "slerp":
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        nonzero = (na > 0) & (nb > 0)
        omega = np.arccos(np.clip((a * b).sum(1) / np.where(nonzero, na * nb, 1.0), -1.0, 1.0))
        sin_omega = np.sin(omega)
        spherical = nonzero & (np.abs(sin_omega) > _PARALLEL_EPS)
        # The unit vectors' slerp weights, times the norm at t over each code's own norm
        # (denominators of 1 where the linear path is used).
        norm_t = (1.0 - t) * na[:, None, None] + t * nb[:, None, None]  # (n, s, 1)
        sin_a, sin_b = (np.where(spherical, sin_omega * n, 1.0)[:, None, None] for n in (na, nb))
        om, use = omega[:, None, None], spherical[:, None, None]
        w_a = np.where(use, norm_t * np.sin((1.0 - t) * om) / sin_a, w_a)
        w_b = np.where(use, norm_t * np.sin(t * om) / sin_b, w_b)
    path = w_a * a[:, None, :] + w_b * b[:, None, :]
    # Pin the ends exactly: sin() round-off must not move the given codes.
    path[:, 0], path[:, -1] = a, b
    return path


def interpolate(
    model: LatentModel,
    start: Any,
    end: Any,
    num_steps: int = 10,
    method: str = "linear",
    inputs: str = "images",
) -> Interpolation:
    """Decodes codes on the path between pairs of images or pairs of codes.

    Args:
      model: a `LatentModel` (e.g. a trained `tfpvae.VAE`).
      start: with inputs="images", images (n_pairs, H, W, C) (or one image (H, W, C)),
        encoded to their posterior means; with inputs="latents", codes (n_pairs,
        latent_dim) or one code (latent_dim,).
      end: the same kind and shape as `start`.
      num_steps: points per path, both ends included, >= 2.
      method: "linear" or "slerp" (see `latent_path`).
      inputs: "images" or "latents": what `start` and `end` are.

    Returns:
      An `Interpolation` (images, log_prior, latents) with shapes (n_pairs, num_steps,
      H, W, C), (n_pairs, num_steps) and (n_pairs, num_steps, latent_dim).

    Examples:
      >>> start, end = x_test[:3], x_test[3:6]
      >>> path = interpolate(model, start, end, num_steps=8, method="slerp")
      >>> path.images.shape   # for 8x8 images
      (3, 8, 8, 8, 1)
    """
    num_steps = check_int(num_steps, "num_steps", minimum=2)
    method = check_choice(method, "method", ("linear", "slerp"))
    inputs = check_choice(inputs, "inputs", ("images", "latents"))
    d = latent_dim(model)
    if inputs == "images":
        za = posterior_means(model, _as_batch_of_images(start, model, "start")).astype(np.float64)
        zb = posterior_means(model, _as_batch_of_images(end, model, "end")).astype(np.float64)
    else:
        za, zb = _as_latents(start, d, "start"), _as_latents(end, d, "end")
    if za.shape != zb.shape:
        raise ValueError(f"`start` and `end` must hold the same number of items; got {len(za)} and {len(zb)}.")
    path = latent_path(za, zb, num_steps, method)
    return Interpolation(_decode(model, path), _log_prior(model, path), path.astype(np.float32))


# ---------------------------------------------------------------------------- traversal
def traverse(
    model: LatentModel,
    x: Any = None,
    dims: Sequence[int] | None = None,
    num_steps: int = 9,
    span: float = 3.0,
    scale: str = "prior",
) -> Traversal:
    """Varies one latent dimension at a time around an image's code, keeping the others fixed.

    Row k moves dimension dims[k] from center - span * s to center + span * s in
    `num_steps` equal steps, where `center` is the posterior mean of `x` (the prior mean
    when `x` is None) and s is that dimension's standard deviation:

    - scale="prior" (default): the prior's marginal std (1 for the standard normal), so
      span=3 walks across nearly all of the prior's mass. For a plain autoencoder the
      prior is untrained and this is simply latent units.
    - scale="posterior": the std of q(z|x) for that dimension, i.e. how far the encoder
      itself is unsure; a walk of a few posterior stds shows what the code pins down.

    Args:
      model: a `LatentModel` (e.g. a trained `tfpvae.VAE`).
      x: one image (H, W, C) or (1, H, W, C); None centres on the prior mean.
      dims: latent dimensions to vary (0-based), a sequence or one int. None: all.
      num_steps: codes per row, >= 2. 9: odd, so the centre code is shown.
      span: half-width of the walk in std units, > 0.
      scale: "prior" or "posterior" (needs `x`, and a posterior with spread: a VAE, not a
        plain autoencoder).

    Returns:
      A `Traversal` (images (n_dims, num_steps, H, W, C), latents (n_dims, num_steps,
      latent_dim), offsets (num_steps,), dims (n_dims,), center (latent_dim,)).

    Examples:
      >>> walk = traverse(model, x_test[0], dims=[0, 1, 2], num_steps=7)
      >>> walk.images.shape[:2]
      (3, 7)
    """
    num_steps = check_int(num_steps, "num_steps", minimum=2)
    span = check_float(span, "span", minimum=0.0, min_inclusive=False)
    scale = check_choice(scale, "scale", ("prior", "posterior"))
    d = latent_dim(model)
    if dims is not None and np.ndim(dims) == 0:  # one dimension (or a bool, float, ...: refused by name below)
        dims = [dims]
    dims = np.arange(d) if dims is None else np.asarray([_check_dim(k, d, "dims") for k in dims], dtype=np.int64)
    if len(dims) == 0:
        raise ValueError("`dims` must name at least one latent dimension; got an empty sequence.")
    prior_mean, prior_std = _prior_moments(model)
    if x is None:
        if scale == "posterior":
            raise ValueError('`scale="posterior"` needs an image `x` whose posterior sets the step size.')
        center, std = prior_mean, prior_std
    else:
        x = _as_batch_of_images(x, model, "x")
        if len(x) != 1:
            raise ValueError(f"`x` must be one image (H, W, C) or (1, H, W, C); got {len(x)} images.")
        q = model.encode(x)
        center = q.mean().numpy()[0].astype(np.float64)
        std = q.stddev().numpy()[0].astype(np.float64) if scale == "posterior" else prior_std
        if scale == "posterior" and not np.all(std > 0):
            raise ValueError('`scale="posterior"` needs a VAE; this model\'s code has zero posterior spread.')
    offsets = np.linspace(-span, span, num_steps)
    latents = np.broadcast_to(center, (len(dims), num_steps, d)).copy()
    for row, k in enumerate(dims):
        latents[row, :, k] = center[k] + offsets * std[k]
    return Traversal(_decode(model, latents), latents.astype(np.float32), offsets, dims, center.astype(np.float32))


def _check_dim(k: Any, d: int, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < d:
        raise ValueError(f"`{name}` must hold latent dimensions in 0..{d - 1}; got {k!r}.")
    return int(k)


# ---------------------------------------------------------------------------- manifold grid
def _normal_quantiles(grid_size: int) -> np.ndarray:
    from scipy.stats import norm

    return norm.ppf(np.linspace(*_GRID_QUANTILES, grid_size))


def manifold_grid(
    model: LatentModel,
    grid_size: int = 15,
    extent: float | None = None,
    plane: Any = None,
    x: Any = None,
) -> ManifoldGrid:
    """Decodes a g x g grid of codes on a plane of the latent space.

    The plane z(u, v) = origin + u * basis[0] + v * basis[1] is chosen by:

    - latent_dim == 2 and no `plane` or `x`: the latent space itself; (u, v) = (z_0, z_1).
    - plane=(i, j), two ints: dimensions i and j, the others held at the prior mean;
      (u, v) = (z_i, z_j).
    - plane=(origin, basis): origin (latent_dim,) and basis (2, latent_dim).
    - x, images: the top two principal directions of the posterior means of `x`, through
      their mean; (u, v) are the projections on them. Needed when latent_dim > 2 and no
      `plane` is given.

    Args:
      model: a `LatentModel` (e.g. a trained `tfpvae.VAE`).
      grid_size: points per side, >= 2.
      extent: if given (> 0), u and v run evenly over [-extent, extent] (latent units
        for the axis planes, for a normal prior e.g. 4.0 covers +-4 std). None:
        the points sit at Gaussian quantiles 5%..95% (evenly spaced in probability, so
        denser where the mass is) of the prior's marginal on the axis planes, of N(0, 1)
        on a given (origin, basis) plane, and of the projected posterior means for PCA.
      plane: see above.
      x: images (n, H, W, C), n >= 3, for the PCA plane.

    Returns:
      A `ManifoldGrid` (images (g, g, H, W, C), coords (2, g), latents (g, g, latent_dim),
      axis_labels).

    Examples:
      >>> # a plane through the codes of x_test
      >>> grid = manifold_grid(model, grid_size=10, x=x_test)
      >>> grid.images.shape[:2]
      (10, 10)
    """
    g = check_int(grid_size, "grid_size", minimum=2)
    if extent is not None:
        extent = check_float(extent, "extent", minimum=0.0, min_inclusive=False)
    if plane is not None and x is not None:
        raise ValueError("Pass either `plane` or `x` (for the PCA plane), not both.")
    d = latent_dim(model)
    prior_mean, prior_std = _prior_moments(model)
    quant = _normal_quantiles(g)
    even = None if extent is None else np.linspace(-extent, extent, g)

    if x is not None:
        from sklearn.decomposition import PCA

        z = posterior_means(model, x).astype(np.float64)
        if len(z) < 3 or d < 2:
            raise ValueError(f"The PCA plane needs >= 3 images and latent_dim >= 2; got {len(z)} images, d={d}.")
        pca = PCA(n_components=2).fit(z)
        origin, basis = pca.mean_, pca.components_
        sd = np.sqrt(pca.explained_variance_)
        u, v = (even, even) if even is not None else (quant * sd[0], quant * sd[1])
        ratio = pca.explained_variance_ratio_
        labels = (f"PC 1 ({ratio[0]:.0%} of variance)", f"PC 2 ({ratio[1]:.0%})")
    elif plane is None or _is_dim_pair(plane):
        if plane is None and d != 2:
            raise ValueError(
                f"latent_dim is {d}: pass `plane` ((i, j) dimensions or (origin, basis)) or images `x` "
                "for the PCA plane; only a 2-D latent space is its own plane."
            )
        i, j = (0, 1) if plane is None else (_check_dim(plane[0], d, "plane"), _check_dim(plane[1], d, "plane"))
        if i == j:
            raise ValueError(f"`plane` must name two different dimensions; got ({i}, {j}).")
        origin = prior_mean.copy()
        origin[[i, j]] = 0.0
        basis = np.zeros((2, d))
        basis[0, i] = basis[1, j] = 1.0
        if even is not None:
            u, v = even, even
        else:
            u, v = prior_mean[i] + prior_std[i] * quant, prior_mean[j] + prior_std[j] * quant
        labels = (f"$z_{{{i}}}$", f"$z_{{{j}}}$")
    else:
        origin, basis = _check_plane(plane, d)
        u = v = even if even is not None else quant
        labels = ("u", "v")

    v_desc = v[::-1]  # row 0 is the top of the picture: the largest v
    latents = origin + u[None, :, None] * basis[0] + v_desc[:, None, None] * basis[1]
    coords = np.stack([u, v_desc]).astype(np.float32)
    return ManifoldGrid(_decode(model, latents), coords, latents.astype(np.float32), labels)


def _is_dim_pair(plane: Any) -> bool:
    return (
        isinstance(plane, (tuple, list, np.ndarray))
        and len(plane) == 2
        and all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in plane)
    )


def _check_plane(plane: Any, d: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        origin, basis = plane
        origin, basis = np.asarray(origin, dtype=np.float64), np.asarray(basis, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"`plane` must be (i, j) dimensions or (origin ({d},), basis (2, {d})); got {plane!r}."
        ) from None
    if origin.shape != (d,) or basis.shape != (2, d):
        raise ValueError(
            f"`plane` must be (origin of shape ({d},), basis of shape (2, {d})); got {origin.shape} and {basis.shape}."
        )
    if not (np.all(np.isfinite(origin)) and np.all(np.isfinite(basis))):
        raise ValueError("`plane` contains NaN or Inf values.")
    if np.linalg.matrix_rank(basis) < 2:
        raise ValueError("`plane` basis vectors must be linearly independent; got a rank-deficient basis.")
    return origin, basis
