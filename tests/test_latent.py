"""Latent walks and generation: path geometry, decoded grids, aggregate-posterior samples, callback."""

import numpy as np
import pytest
from PIL import Image
from scipy.stats import norm

from tfpvae import embedding, evolution, latent
from tfpvae._keras import tfd
from tfpvae.model import VAE
from tfpvae.protocols import ENCODE_CHUNK, LatentModel
from tfpvae.subsets import evenly_spaced


@pytest.fixture(scope="module")
def data(digits):
    (x, y), (xt, yt) = digits
    return x, y, xt, yt


@pytest.fixture(scope="module")
def trained(trained_digits):
    """The session's 2-D latent VAE on the 8x8 digits, trained long enough that classes separate."""
    return trained_digits


@pytest.fixture(scope="module")
def model4():
    return VAE(input_shape=(8, 8, 1), latent_dim=4, architecture="mlp", seed=1)


class _LinearModel:
    """Not a VAE: q(z|x) = N(x_flat W, 0.5^2 I), E[x|z] = sigmoid(z V), p(z) = N(0, I) in 3-D.

    Satisfies `LatentModel` and nothing more; records how many images each encoder call gets.
    """

    image_shape = (2, 2, 1)

    def __init__(self):
        rng = np.random.default_rng(0)
        self.w, self.v = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3, 4))
        self.prior = tfd.MultivariateNormalDiag(loc=np.zeros(3, np.float32), scale_diag=np.ones(3, np.float32))
        self.calls = []

    def codes(self, x):
        return np.asarray(x, np.float32).reshape(len(x), 4) @ self.w

    def encode(self, x):
        self.calls.append(len(x))
        return tfd.MultivariateNormalTriL(
            loc=self.codes(x), scale_tril=np.broadcast_to(0.5 * np.eye(3, dtype=np.float32), (len(x), 3, 3))
        )

    def decode_mean(self, z):
        logits = np.asarray(z, np.float64) @ self.v
        return (1.0 / (1.0 + np.exp(-logits))).reshape(-1, 2, 2, 1).astype(np.float32)


def _mmd2(a, b, bandwidth):
    """Unbiased squared maximum mean discrepancy with an RBF kernel: ~0 iff same distribution."""

    def k(u, v):
        return np.exp(-((u[:, None] - v[None]) ** 2).sum(-1) / (2 * bandwidth**2))

    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    n, m = len(a), len(b)
    return (kaa.sum() - np.trace(kaa)) / (n * (n - 1)) + (kbb.sum() - np.trace(kbb)) / (m * (m - 1)) - 2 * kab.mean()


# ---------------------------------------------------------------------------- path geometry
def test_linear_path_hits_the_codes_in_equal_steps(rng):
    a, b = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    path = latent.latent_path(a, b, 7, "linear")
    assert path.shape == (3, 7, 5)
    np.testing.assert_array_equal(path[:, 0], a)
    np.testing.assert_array_equal(path[:, -1], b)
    steps = np.diff(path, axis=1)
    np.testing.assert_allclose(steps, np.broadcast_to((b - a)[:, None] / 6, steps.shape), atol=1e-12)


def test_slerp_keeps_the_norm_and_turns_at_constant_speed(rng):
    a = rng.normal(size=(4, 16))
    b = rng.normal(size=(4, 16))
    b *= np.linalg.norm(a, axis=1, keepdims=True) / np.linalg.norm(b, axis=1, keepdims=True)
    path = latent.latent_path(a, b, 11, "slerp")
    np.testing.assert_array_equal(path[:, 0], a)
    np.testing.assert_array_equal(path[:, -1], b)
    np.testing.assert_allclose(np.linalg.norm(path, axis=-1), np.linalg.norm(a, axis=1)[:, None].repeat(11, 1))
    # Equal angles between neighbours: a great circle walked at constant speed.
    unit = path / np.linalg.norm(path, axis=-1, keepdims=True)
    angles = np.arccos(np.clip((unit[:, 1:] * unit[:, :-1]).sum(-1), -1, 1))
    total = np.arccos((a * b).sum(1) / np.linalg.norm(a, axis=1) ** 2)
    np.testing.assert_allclose(angles, np.broadcast_to(total[:, None] / 10, angles.shape), atol=1e-6)
    # The linear path, by contrast, sags inside the sphere.
    linear = latent.latent_path(a, b, 11, "linear")
    assert np.all(np.linalg.norm(linear[:, 5], axis=-1) < np.linalg.norm(a, axis=1) - 1e-3)


def test_slerp_of_codes_of_other_norms_turns_the_direction_and_moves_the_norm_linearly(rng):
    a, b = rng.normal(size=(5, 16)), 3.0 * rng.normal(size=(5, 16))
    path = latent.latent_path(a, b, 9, "slerp")
    t = np.linspace(0, 1, 9)
    na, nb = np.linalg.norm(a, axis=1, keepdims=True), np.linalg.norm(b, axis=1, keepdims=True)
    np.testing.assert_allclose(np.linalg.norm(path, axis=-1), (1 - t) * na + t * nb)
    # The directions are the equal-norm slerp of the unit codes: one great circle at constant speed.
    np.testing.assert_allclose(
        path / np.linalg.norm(path, axis=-1, keepdims=True), latent.latent_path(a / na, b / nb, 9, "slerp"), atol=1e-12
    )
    # Nearly opposite codes: Shoemake's formula reaches |z| = 20, 2e3 and 2e5 here.
    for eps in (0.1, 1e-3, 1e-5):
        path = latent.latent_path(np.array([[1.0, 0.0]]), np.array([[-2.0, eps]]), 10, "slerp")
        assert np.linalg.norm(path, axis=-1).max() <= np.hypot(2.0, eps) + 1e-12  # the end, |b|


def test_slerp_falls_back_to_linear_for_parallel_antiparallel_and_zero_codes(rng):
    a = rng.normal(size=(1, 3))
    for b in (2.0 * a, -a, np.zeros_like(a), a.copy()):
        path = latent.latent_path(a, b, 5, "slerp")
        assert np.all(np.isfinite(path))
        np.testing.assert_allclose(path, latent.latent_path(a, b, 5, "linear"), atol=1e-12)


# ---------------------------------------------------------------------------- interpolate
def test_interpolate_encodes_images_and_decodes_the_path(trained, data):
    xt = data[2]
    result = latent.interpolate(trained, xt[:3], xt[3:6], num_steps=6, method="slerp")
    assert result.images.shape == (3, 6, 8, 8, 1)
    assert result.log_prior.shape == (3, 6) and result.latents.shape == (3, 6, 2)
    np.testing.assert_allclose(result.latents[:, 0], latent.posterior_means(trained, xt[:3]), rtol=1e-6)
    np.testing.assert_allclose(result.latents[:, -1], latent.posterior_means(trained, xt[3:6]), rtol=1e-6)
    np.testing.assert_allclose(result.images[1], trained.decode_mean(result.latents[1]), rtol=1e-5, atol=1e-6)
    # Standard normal prior: log p(z) = -|z|^2 / 2 - log(2 pi).
    expected = -0.5 * (result.latents.astype(np.float64) ** 2).sum(-1) - np.log(2 * np.pi)
    np.testing.assert_allclose(result.log_prior, expected, rtol=1e-5)
    # First and last images of an image-to-image path are the reconstructions.
    np.testing.assert_allclose(result.images[:, 0], trained.reconstruct(xt[:3]), atol=1e-6)


def test_interpolate_between_codes_and_single_items(trained, data):
    a, b = np.array([-2.0, 0.5]), np.array([1.0, 1.0])
    result = latent.interpolate(trained, a, b, num_steps=4, inputs="latents")
    np.testing.assert_allclose(result.latents[0], latent.latent_path(a[None], b[None], 4)[0], rtol=1e-6)
    one = latent.interpolate(trained, data[2][0], data[2][1], num_steps=3)  # single (H, W, C) images
    assert one.images.shape == (1, 3, 8, 8, 1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_steps=1), "`num_steps`"),
        (dict(method="cubic"), "`method`"),
        (dict(inputs="codes"), "`inputs`"),
        (dict(end=np.zeros((2, 2)), inputs="latents"), "same number"),
        (dict(start=np.zeros((1, 3)), inputs="latents"), r"`start` must have shape \(n, 2\)"),
    ],
)
def test_interpolate_rejects_bad_arguments(trained, kwargs, match):
    args = dict(start=np.zeros((1, 2)), end=np.ones((1, 2)), inputs="latents") | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        latent.interpolate(trained, **args)


# ---------------------------------------------------------------------------- aggregate posterior
def test_aggregate_posterior_samples_follow_the_codes_not_the_prior(trained, data):
    x, _, xt, _ = data
    gmm = latent.fit_aggregate_posterior(trained, x, num_components=10, seed=0)
    images, z = latent.sample_aggregate_posterior(trained, gmm, 1500, seed=0, return_latents=True)
    assert images.shape == (1500, 8, 8, 1) and z.shape == (1500, 2)
    np.testing.assert_allclose(images, trained.decode_mean(z), atol=1e-6)
    np.testing.assert_array_equal(images[:50], latent.sample_aggregate_posterior(trained, gmm, 1500, seed=0)[:50])

    codes = latent.posterior_means(trained, x)
    np.testing.assert_allclose(z.mean(0), codes.mean(0), atol=0.1)
    np.testing.assert_allclose(np.cov(z.T), np.cov(codes.T), atol=0.12)
    # The codes cluster by digit, which N(0, I) knows nothing of: the mixture's samples
    # match the codes in distribution (MMD ~ 0), the prior's do not.
    _, z_prior = trained.sample(1500, seed=0, return_latents=True)
    mmd_gmm, mmd_prior = _mmd2(z, codes, 0.3), _mmd2(z_prior, codes, 0.3)
    assert mmd_prior > 0.005 and mmd_gmm < 0.2 * mmd_prior, (mmd_gmm, mmd_prior)
    # And the mixture is the better density of held-out codes, by many standard errors.
    held_out = latent.posterior_means(trained, xt)
    gain = gmm.score_samples(held_out) - trained.prior.log_prob(held_out).numpy()
    assert gain.mean() > 4 * gain.std() / np.sqrt(len(gain)), gain.mean()


def test_aggregate_posterior_argument_checks(trained, model4, data):
    x = data[0][:20]
    with pytest.raises(ValueError, match="`num_components` must be <= the number of images"):
        latent.fit_aggregate_posterior(trained, x[:5], num_components=10)
    gmm = latent.fit_aggregate_posterior(trained, x, num_components=2, seed=0)
    with pytest.raises(ValueError, match="dimension 4"):
        latent.sample_aggregate_posterior(model4, gmm, 3)
    with pytest.raises(TypeError, match="fitted sklearn GaussianMixture"):
        latent.sample_aggregate_posterior(trained, object(), 3)


# ---------------------------------------------------------------------------- traversal
def test_traverse_moves_one_dimension_in_prior_std_steps(trained, data):
    x = data[2][0]
    tr = latent.traverse(trained, x, num_steps=5, span=2.0)
    assert tr.images.shape == (2, 5, 8, 8, 1)
    np.testing.assert_allclose(tr.offsets, [-2, -1, 0, 1, 2])
    center = latent.posterior_means(trained, x[None])[0]
    np.testing.assert_allclose(tr.center, center, rtol=1e-6)
    for row, k in enumerate(tr.dims):
        other = [j for j in range(2) if j != k]
        np.testing.assert_allclose(tr.latents[row][:, other], np.broadcast_to(center[other], (5, 1)), rtol=1e-6)
        np.testing.assert_allclose(tr.latents[row][:, k], center[k] + tr.offsets, rtol=1e-5)  # prior std is 1
    # The middle column is the image's own reconstruction.
    np.testing.assert_allclose(tr.images[:, 2], np.repeat(trained.reconstruct(x[None]), 2, 0), atol=1e-6)

    post = latent.traverse(trained, x, dims=[1], num_steps=3, span=1.0, scale="posterior")
    std = trained.encode(x[None]).stddev().numpy()[0]
    np.testing.assert_allclose(post.latents[0, :, 1], center[1] + np.array([-1, 0, 1]) * std[1], rtol=1e-5)
    one = latent.traverse(trained, x, dims=1, num_steps=3, span=1.0, scale="posterior")  # one int: that row
    np.testing.assert_array_equal(one.latents, post.latents)
    with pytest.raises(ValueError, match="`dims`"):
        latent.traverse(trained, x, dims=[2])
    np.testing.assert_array_equal(latent.traverse(trained, x, dims=np.int64(1), num_steps=3).dims, [1])
    for bad in (True, 1.0, "1"):  # one dimension that is not an int: named, not "not iterable"
        with pytest.raises(ValueError, match=r"`dims` must hold latent dimensions in 0\.\.1; got "):
            latent.traverse(trained, x, dims=bad)
    with pytest.raises(ValueError, match="needs an image"):
        latent.traverse(trained, None, scale="posterior")


# ---------------------------------------------------------------------------- manifold grid
def test_manifold_grid_of_a_2d_latent_space(trained):
    grid = latent.manifold_grid(trained, grid_size=5)
    assert grid.images.shape == (5, 5, 8, 8, 1) and grid.coords.shape == (2, 5)
    q = norm.ppf(np.linspace(0.05, 0.95, 5))
    np.testing.assert_allclose(grid.coords[0], q, rtol=1e-6)
    np.testing.assert_allclose(grid.coords[1], q[::-1], rtol=1e-6)  # top row has the largest z_1
    for i, j in [(0, 0), (1, 3), (4, 2)]:
        np.testing.assert_allclose(grid.latents[i, j], [grid.coords[0][j], grid.coords[1][i]], rtol=1e-6)
    np.testing.assert_allclose(grid.images[1, 3], trained.decode_mean(grid.latents[1, 3][None])[0], atol=1e-6)
    wide = latent.manifold_grid(trained, grid_size=7, extent=4.0)
    np.testing.assert_allclose(wide.coords[0], np.linspace(-4, 4, 7), rtol=1e-6)
    assert wide.images.shape[:2] == (7, 7)
    assert not np.allclose(wide.images[0, 0], wide.images[-1, -1], atol=0.05)  # the corners differ


def test_manifold_grid_planes_in_higher_dimensions(model4, data):
    with pytest.raises(ValueError, match="pass `plane`"):
        latent.manifold_grid(model4, 3)
    dims = latent.manifold_grid(model4, 3, extent=1.0, plane=(1, 3))
    np.testing.assert_allclose(dims.latents[..., [0, 2]], 0.0)
    np.testing.assert_allclose(dims.latents[0, :, 1], [-1, 0, 1], atol=1e-6)
    np.testing.assert_allclose(dims.latents[:, 0, 3], [1, 0, -1], atol=1e-6)
    assert dims.axis_labels == ("$z_{1}$", "$z_{3}$")
    as_array = latent.manifold_grid(model4, 3, extent=1.0, plane=np.array([1, 3]))  # the pair as an array
    np.testing.assert_array_equal(as_array.latents, dims.latents)

    origin, basis = np.array([0.5, 0, 0, -0.5]), np.array([[1.0, 1, 0, 0], [0, 0, 1, 1]])
    named = latent.manifold_grid(model4, 4, extent=2.0, plane=(origin, basis))
    u, v = named.coords
    np.testing.assert_allclose(named.latents[2, 1], origin + u[1] * basis[0] + v[2] * basis[1], rtol=1e-6)

    x = data[2][:200]
    pca = latent.manifold_grid(model4, 3, x=x)
    codes = latent.posterior_means(model4, x).astype(np.float64)
    center = pca.latents[1, 1]  # the middle of an odd grid is the origin: the mean code
    np.testing.assert_allclose(center, codes.mean(0), atol=1e-5)
    # Rows move along PC 2, columns along PC 1: orthogonal directions within the codes' span.
    d_col, d_row = pca.latents[1, 2] - center, pca.latents[0, 1] - center
    assert abs(np.dot(d_col, d_row)) < 1e-6 * np.linalg.norm(d_col) * np.linalg.norm(d_row)
    top = np.linalg.svd(codes - codes.mean(0), full_matrices=False)[2][0]
    assert abs(abs(np.dot(d_col / np.linalg.norm(d_col), top)) - 1) < 1e-4
    with pytest.raises(ValueError, match="linearly independent"):
        latent.manifold_grid(model4, 3, plane=(origin, np.ones((2, 4))))
    with pytest.raises(ValueError, match="either `plane` or `x`"):
        latent.manifold_grid(model4, 3, plane=(0, 1), x=x)


# ---------------------------------------------------------------------------- embeddings
def test_embed_latents_direct_pca_and_tsne(trained, model4, data):
    xt = data[2]
    emb = latent.embed_latents(trained, xt, max_points=100, seed=3)
    assert emb.coords.shape == (100, 2) and len(np.unique(emb.indices)) == 100
    assert np.all(np.diff(emb.indices) > 0) and emb.indices.max() < len(xt)
    np.testing.assert_allclose(emb.coords, latent.posterior_means(trained, xt[emb.indices]), rtol=1e-6)
    np.testing.assert_array_equal(emb.indices, latent.embed_latents(trained, xt, max_points=100, seed=3).indices)

    pca = latent.embed_latents(model4, xt[:150])
    np.testing.assert_array_equal(pca.indices, np.arange(150))
    assert pca.axis_labels[0].startswith("PC 1")
    var = pca.coords.var(0)
    assert var[0] >= var[1] and abs(np.corrcoef(pca.coords.T)[0, 1]) < 1e-4  # uncorrelated, ordered

    tsne = latent.embed_latents(model4, xt[:60], method="tsne")
    assert tsne.coords.shape == (60, 2) and np.all(np.isfinite(tsne.coords))
    with pytest.raises(ValueError, match='`method="direct"` needs latent_dim 2'):
        latent.embed_latents(model4, xt, method="direct")


def test_seeds_beyond_what_sklearn_takes_are_refused_naming_seed(model4, data):
    xt = data[2][:60]
    message = r"`seed` must be an int in \[0, 4294967295\]; got 8589934592\."
    for method in ("pca", "tsne"):
        with pytest.raises(ValueError, match=message):  # sklearn's own message named `random_state`
            latent.embed_latents(model4, xt, method=method, seed=2**33)
    with pytest.raises(ValueError, match=message):
        latent.fit_aggregate_posterior(model4, xt, num_components=2, seed=2**33)
    with pytest.raises(ValueError, match=r"`seed` must be an int in \[0, 4294967295\]; got -1\."):
        latent.embed_latents(model4, xt, seed=-1)
    largest = latent.embed_latents(model4, xt, method="pca", seed=2**32 - 1)  # the bound itself is taken
    assert largest.coords.shape == (60, 2)
    assert latent.fit_aggregate_posterior(model4, xt, num_components=2, seed=2**32 - 1).n_components == 2


# ---------------------------------------------------------------------------- callback
def test_latent_evolution_records_epochs_and_writes_a_gif(data, tmp_path):
    x, y, xt, yt = data
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, architecture="mlp", binarize="none", seed=2)
    evo = latent.LatentEvolution(xt, yt, every=2, num_reconstructions=5, max_points=120)
    model.fit(x[:640], epochs=3, batch_size=64, callbacks=[evo], verbose=0)
    assert evo.epochs == [0, 2, 3]  # before training, every 2nd epoch, and the last
    assert len(evo.latents) == 3 and evo.latents[0].shape == (120, 2)
    np.testing.assert_allclose(evo.latents[-1], latent.posterior_means(model, xt[evo.indices]), atol=1e-6)
    # 5 images spread over the set (not its first 5), so a set sorted by class shows its classes.
    spread = xt[evenly_spaced(len(xt), 5)]
    np.testing.assert_array_equal(evo.x_reconstruct, spread)
    np.testing.assert_allclose(evo.reconstructions[-1], model.reconstruct(spread), atol=1e-6)
    np.testing.assert_array_equal(evo.labels, yt[evo.indices])
    assert not np.allclose(evo.latents[0], evo.latents[-1])

    path = tmp_path / "evolution.gif"
    evo.save_gif(path, fps=4)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3 and gif.info["duration"] == 250 and gif.info["loop"] == 0
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("L"), dtype=np.float32))
    assert all(f.std() > 5 for f in frames)
    assert np.abs(frames[0] - frames[-1]).mean() > 0.5  # the points moved

    model.fit(x[:640], epochs=1, batch_size=64, callbacks=[evo], verbose=0)  # numbering continues
    assert evo.epochs == [0, 2, 3, 4]
    fig = evo.reconstructions_figure()
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
        "input",
        "epoch 0",
        "epoch 2",
        "epoch 3",
        "epoch 4",
    ]
    fig.savefig(tmp_path / "rec.png")
    with Image.open(tmp_path / "rec.png") as im:
        assert np.asarray(im.convert("L")).std() > 10


def test_latent_evolution_keeps_the_epoch_numbers_of_a_resumed_fit(data):
    x, _, xt, yt = data
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, architecture="mlp", binarize="none", seed=2)
    model.fit(x[:256], epochs=3, batch_size=64, verbose=0)  # epochs 1..3, before the callback
    evo = latent.LatentEvolution(xt, yt, every=2, num_reconstructions=3, max_points=50)
    model.fit(x[:256], epochs=6, initial_epoch=3, batch_size=64, callbacks=[evo], verbose=0)  # epochs 4..6
    # Before epoch 4 trains (3 done), after epochs 4 and 6 (multiples of 2; 6 is also the last), not 5.
    assert evo.epochs == [3, 4, 6]
    np.testing.assert_allclose(evo.latents[-1], latent.posterior_means(model, xt[evo.indices]), atol=1e-6)
    labels = [t.get_text() for t in evo.reconstructions_figure().axes[0].get_yticklabels()]
    assert labels == ["input", "epoch 3", "epoch 4", "epoch 6"]
    model.fit(x[:256], epochs=1, batch_size=64, callbacks=[evo], verbose=0)  # from 0 again: the count goes on
    assert evo.epochs == [3, 4, 6, 7]


def test_latent_evolution_pca_frames_keep_their_orientation(model4, data):
    xt, yt = data[2], data[3]
    evo = latent.LatentEvolution(xt[:100], max_points=100)
    evo.set_model(model4)
    base = latent.posterior_means(model4, xt[:100])
    evo.epochs, evo.latents = [0, 1], [base, -base]  # the same codes, every axis flipped
    frames, labels = evo.coordinates()
    np.testing.assert_allclose(frames[1], frames[0], atol=1e-5)
    assert labels == ("PC 1", "PC 2")
    with pytest.raises(ValueError, match="`y` must have shape"):
        latent.LatentEvolution(xt, yt[:5])


# ---------------------------------------------------------------------------- any LatentModel
def test_latent_tools_take_any_latent_model_and_encode_in_chunks(rng):
    model = _LinearModel()
    assert isinstance(model, LatentModel) and not isinstance(model, VAE)
    x = rng.random((2 * ENCODE_CHUNK + 5, 2, 2, 1)).astype(np.float32)
    means = latent.posterior_means(model, x)
    assert model.calls == [ENCODE_CHUNK, ENCODE_CHUNK, 5]  # bounded memory: chunks of ENCODE_CHUNK
    np.testing.assert_allclose(means, model.codes(x), rtol=1e-6)

    path = latent.interpolate(model, x[:2], x[2:4], num_steps=3)
    np.testing.assert_allclose(path.latents[:, 0], model.codes(x[:2]), rtol=1e-6)
    np.testing.assert_allclose(path.images, model.decode_mean(path.latents.reshape(-1, 3)).reshape(2, 3, 2, 2, 1))
    walk = latent.traverse(model, x[0], num_steps=3, scale="posterior")
    np.testing.assert_allclose(walk.latents[1, :, 1], model.codes(x[:1])[0, 1] + np.array([-1.5, 0, 1.5]), rtol=1e-5)
    grid = latent.manifold_grid(model, 3, extent=1.0, plane=(0, 2))
    np.testing.assert_allclose(grid.latents[0, :, 0], [-1, 0, 1], atol=1e-6)
    emb = latent.embed_latents(model, x[:50], method="pca")
    assert emb.coords.shape == (50, 2)
    gmm = latent.fit_aggregate_posterior(model, x[:200], num_components=2, seed=0)
    images, z = latent.sample_aggregate_posterior(model, gmm, 5, seed=0, return_latents=True)
    np.testing.assert_allclose(images, model.decode_mean(z), atol=1e-6)


def test_moved_names_stay_importable_from_latent():
    assert latent.LatentEvolution is evolution.LatentEvolution
    assert latent.posterior_means is embedding.posterior_means
    assert latent.embed_latents is embedding.embed_latents
    assert latent.Embedding is embedding.Embedding


def test_walks_of_a_flow_prior_use_its_monte_carlo_moments():
    from tfpvae.model import VAE

    model = VAE(input_shape=(8, 8, 1), latent_dim=2, prior="flow", seed=0)
    tr = latent.traverse(model, None, num_steps=3, span=1.0)
    # A flow has no closed-form mean or std: they come from fixed-seed draws, and agree with
    # an independent set of draws within a few standard errors.
    z = model.prior.sample(20_000, seed=(7, 7)).numpy()
    se = z.std(0) / np.sqrt(len(z))
    assert np.all(np.abs(tr.center - z.mean(0)) < 6 * se)
    np.testing.assert_allclose(
        tr.latents[0][:, 0] - tr.center[0], np.array([-1, 0, 1]) * z.std(0)[0], atol=0.05 * z.std(0)[0]
    )
    again = latent.traverse(model, None, num_steps=3, span=1.0)
    np.testing.assert_array_equal(again.latents, tr.latents)
    assert latent.manifold_grid(model, grid_size=3).images.shape == (3, 3, 8, 8, 1)
