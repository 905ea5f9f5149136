"""Registered networks and priors: the registry's rules, models from user code, save/load, fresh processes."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from references import kl_to_standard_normal

import tfpvae
from tfpvae import registry
from tfpvae._keras import tf, tfd, tfk, tfkl
from tfpvae.model import VAE
from tfpvae.priors import FixedPrior
from tfpvae.registry import UnregisteredNameError

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module", autouse=True)
def user_code():
    """The user's module, imported (again) for this file's tests and unregistered after them,
    so the other test files see only the built-in names."""
    import example_networks

    importlib.reload(example_networks)
    yield example_networks
    registry.networks.unregister("small_resnet")
    registry.priors.unregister("logistic")


@pytest.fixture
def scratch_names():
    """Names registered by a test, removed afterwards so tests do not see each other's."""
    names: list[tuple[registry.Registry, str]] = []
    yield names
    for reg, name in names:
        reg.unregister(name)


def _register(names, reg, name, builder):
    reg.register(name)(builder)
    names.append((reg, name))
    return builder


def _colour_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 3)).astype(np.float32)


# ---------------------------------------------------------------------- the registry's rules
def test_builtin_names_come_first_then_registered_ones_in_order(scratch_names):
    _register(scratch_names, registry.networks, "net_b", lambda c, r: None)
    _register(scratch_names, registry.networks, "net_a", lambda c, r: None)
    assert registry.networks.names() == ("mlp", "conv", "dcgan", "small_resnet", "net_b", "net_a")
    assert registry.priors.names() == ("normal", "learned_normal", "mixture", "vamp", "flow", "logistic")


def test_a_clash_needs_replace_but_the_same_definition_may_register_again(scratch_names):
    def first(config, role):
        return None

    _register(scratch_names, registry.networks, "clash", first)
    registry.register_network("clash")(first)  # a re-run notebook cell: allowed

    def second(config, role):
        return None

    with pytest.raises(ValueError, match="Network 'clash' is already registered by .*first; pass replace=True"):
        registry.register_network("clash")(second)
    registry.register_network("clash", replace=True)(second)
    assert registry.networks.get("clash") is second


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: registry.register_network("mlp"), ValueError, "Network name 'mlp' is built into tfpvae"),
        (lambda: registry.register_prior("vamp"), ValueError, "Prior name 'vamp' is built into tfpvae"),
        (lambda: registry.register_network(""), ValueError, "non-empty string"),
        (lambda: registry.register_network(3), ValueError, "non-empty string"),
        (lambda: registry.register_prior("p")(42), TypeError, "must decorate a function; got int"),
        (lambda: registry.networks.unregister("conv"), ValueError, "cannot be removed"),
    ],
)
def test_misuse_of_the_registry_is_refused(call, error, match):
    with pytest.raises(error, match=match):
        call()
    assert "p" not in registry.priors.names()


def test_an_unregistered_name_says_which_decorator_registers_it():
    with pytest.raises(UnregisteredNameError) as err:
        tfpvae.VAEConfig(prior="nowhere")
    message = str(err.value)
    assert "`prior` 'nowhere' is not a registered prior in this process" in message
    assert "@tfpvae.register_prior('nowhere')" in message and "--import MODULE" in message
    assert "\n" not in message


# ---------------------------------------------------------------------- networks
def test_registered_network_gets_the_heads_tfpvae_owns():
    model = VAE(input_shape=(32, 32, 3), latent_dim=4, architecture="small_resnet", options={"width": 4}, seed=0)
    x = _colour_images(5, 32)
    q, px = model.encode(x), model.decode(np.zeros((5, 4), np.float32))
    assert isinstance(q, tfd.MultivariateNormalTriL) and q.event_shape == (4,) and q.batch_shape == (5,)
    assert isinstance(px.distribution, tfd.Bernoulli) and px.event_shape == (32, 32, 3)
    # The encoder's feature map (n, 8, 8, 8) is flattened before the posterior head.
    assert model.encoder.get_layer("posterior_params").input_shape == (None, 8 * 8 * 8)
    model(x)
    assert len(model.losses) == 1  # the KL regularizer, once, as for the built-in networks


def test_options_reach_the_builder():
    small = VAE(input_shape=(32, 32, 3), latent_dim=2, architecture="small_resnet", options={"width": 4})
    wide = VAE(input_shape=(32, 32, 3), latent_dim=2, architecture="small_resnet", options={"width": 8, "blocks": 2})

    def convs(model):
        return sorted(layer.filters for layer in model.encoder.submodules if isinstance(layer, tfkl.Conv2D))

    # Stem, two convolutions per residual block, and the second stage's stride-2 convolution.
    assert convs(small) == [4, 4, 4, 8] and convs(wide) == [8, 8, 8, 8, 8, 16]


@pytest.mark.parametrize(
    "encoder_out, decoder_out, error, match",
    [
        ("none", "flat", TypeError, "The encoder builder of network 'bad' must return a tf_keras layer or model"),
        (
            "flat",
            "short",
            ValueError,
            r"The decoder of network 'bad' maps inputs \(n, 2\) to outputs \(n, 10\); "
            r"expected \(n, 4, 4, 1\) logits",
        ),
    ],
)
def test_a_builder_that_breaks_the_contract_is_named(scratch_names, encoder_out, decoder_out, error, match):
    def bad(config, role):
        out = encoder_out if role == "encoder" else decoder_out
        if out == "none":
            return None
        return tfk.Sequential([tfkl.Flatten(), tfkl.Dense(16 if out == "flat" else 10)])

    _register(scratch_names, registry.networks, "bad", bad)
    with pytest.raises(error, match=match):
        VAE(input_shape=(4, 4, 1), latent_dim=2, architecture="bad")


# ---------------------------------------------------------------------- priors
def test_a_registered_gaussian_prior_gets_the_exact_kl(scratch_names, digits):
    def wide(config):
        d = config.latent_dim
        return FixedPrior(tfd.MultivariateNormalDiag(tf.zeros(d), 2.0 * tf.ones(d)))

    _register(scratch_names, registry.priors, "wide", wide)
    (x, _), _ = digits
    model = VAE(input_shape=(8, 8, 1), latent_dim=3, prior="wide", seed=0)
    assert model.prior_layer.exact_kl
    model(x[:16])
    q = model.encode(x[:16])
    # KL(q || N(0, 4 I)) = KL(q / 2 || N(0, I)): the same closed form with loc and scale halved.
    expected = kl_to_standard_normal(q.loc.numpy() / 2, q.scale_tril.numpy() / 2).mean()
    np.testing.assert_allclose(model.losses[0].numpy(), expected, rtol=1e-5)


def test_a_prior_without_closed_form_kl_gets_a_monte_carlo_kl_counted_once(digits):
    (x, _), _ = digits
    x = x[:32]
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, prior="logistic", seed=2)
    assert not model.prior_layer.exact_kl
    q = model.encode(x)
    z = q.sample(4000, seed=5)
    kl_ref = (q.log_prob(z) - model.prior.log_prob(z)).numpy().mean()
    kls = [model(x) is not None and float(model.losses[0]) for _ in range(40)]
    assert len(model.losses) == 1
    assert abs(np.mean(kls) - kl_ref) < 5 * np.std(kls) / np.sqrt(len(kls)) + 0.01


@pytest.mark.parametrize(
    "builder, error, match",
    [
        (
            lambda c: "normal",
            TypeError,
            "The builder of prior 'odd' must return a tf_keras layer with a `distribution`",
        ),
        (
            lambda c: FixedPrior(tfd.MultivariateNormalDiag(tf.zeros(c.latent_dim + 1), tf.ones(c.latent_dim + 1))),
            ValueError,
            r"Prior 'odd' must have batch shape \(\) and event shape \(2,\) \(latent_dim\); got batch shape \(\) "
            r"and event shape \(3,\)",
        ),
    ],
)
def test_a_prior_builder_that_breaks_the_contract_is_named(scratch_names, builder, error, match):
    _register(scratch_names, registry.priors, "odd", builder)
    with pytest.raises(error, match=match):
        VAE(input_shape=(4, 4, 1), latent_dim=2, prior="odd")


# ---------------------------------------------------------------------- save and load
def test_registered_network_and_prior_round_trip_with_identical_log_prob(tmp_path):
    x = _colour_images(24, 32)
    model = VAE(
        input_shape=(32, 32, 3),
        latent_dim=4,
        architecture="small_resnet",
        prior="logistic",
        options={"width": 4},
        binarize="none",
        seed=0,
    )
    model.fit(x, epochs=1, batch_size=8, verbose=0)
    before = model.log_prob(x[:6], num_samples=8, seed=1)
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["architecture"] == "small_resnet" and saved["options"] == {"width": 4}
    metadata = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert metadata["registered_by"] == {"architecture": "example_networks", "prior": "example_networks"}
    assert not [p for p in (tmp_path / "m").iterdir() if p.suffix in (".pkl", ".pickle", ".keras", ".h5")]
    again = tfpvae.load(tmp_path / "m")
    np.testing.assert_array_equal(again.log_prob(x[:6], num_samples=8, seed=1), before)
    np.testing.assert_array_equal(again.prior_layer.loc.numpy(), model.prior_layer.loc.numpy())


def _fresh(code: str, cwd: Path, pythonpath: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": pythonpath, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # fresh interpreters, each importing TensorFlow
def test_a_fresh_process_without_the_module_gets_one_line_naming_it(tmp_path):
    model = VAE(input_shape=(32, 32, 3), latent_dim=2, architecture="small_resnet", options={"width": 4}, seed=0)
    model.save(tmp_path / "m")
    x = _colour_images(3, 32)
    np.save(tmp_path / "x.npy", x)
    expected = model.log_prob(x, num_samples=4, seed=0)

    missing = _fresh(f"import tfpvae; tfpvae.load({str(tmp_path / 'm')!r})", cwd=tmp_path)
    last = missing.stderr.strip().splitlines()[-1]
    assert missing.returncode == 1
    assert last.startswith("tfpvae.registry.UnregisteredNameError: `architecture` 'small_resnet' is not a registered")
    assert last.endswith("When saved, it was registered by module 'example_networks': `import example_networks`.")

    cli = [sys.executable, "-m", "tfpvae", "sample", "--model", str(tmp_path / "m"), "-n", "2", "--out", "s.npy"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    run = subprocess.run(cli, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stdout == ""
    assert [line for line in run.stderr.splitlines() if line.startswith("tfpvae:")] == [
        "tfpvae: error: " + last.split(": ", 1)[1]
    ]
    for module in ("example_networks", str(TESTS / "example_networks.py")):
        run = subprocess.run(
            [*cli, "--import", module],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(TESTS)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        assert np.load(tmp_path / "s.npy").shape == (2, 32, 32, 3)

    code = (
        "import numpy as np, example_networks, tfpvae; "
        f"m = tfpvae.load({str(tmp_path / 'm')!r}); "
        f"print(repr(m.log_prob(np.load({str(tmp_path / 'x.npy')!r}), num_samples=4, seed=0).tolist()))"
    )
    loaded = _fresh(code, cwd=tmp_path, pythonpath=str(TESTS))
    assert loaded.returncode == 0, loaded.stderr
    np.testing.assert_array_equal(eval(loaded.stdout.strip().splitlines()[-1]), expected)


def test_the_module_of_a_registered_name_is_known(user_code):
    assert registry.networks.module_of("small_resnet") == user_code.__name__ == "example_networks"
    assert registry.networks.module_of("mlp") is None and registry.priors.module_of("nowhere") is None


# ---------------------------------------------------------------------- colour and size
@pytest.mark.slow  # eight small trainings
@pytest.mark.parametrize("architecture", ["mlp", "conv", "dcgan", "small_resnet"])
@pytest.mark.parametrize("size", [32, 64])
def test_every_architecture_trains_scores_saves_and_loads_colour_images(architecture, size, data_dir, tmp_path):
    from tfpvae.datasets import colourise, load_split

    grey, _ = load_split("mnist", "test", data_dir)
    x = colourise(grey[:48], size=size, seed=0)
    model = VAE(
        input_shape=(size, size, 3),
        latent_dim=4,
        architecture=architecture,
        filters=4,
        hidden_units=32,
        options={"width": 4},
        binarize="none",
        seed=0,
    )
    first = model.fit(x, epochs=2, batch_size=16, verbose=0).history["loss"]
    assert first[1] < first[0]  # it learns
    scores = model.log_prob(x[:4], num_samples=8, seed=2)
    # log p(x) <= 0 for a Bernoulli likelihood of grey targets, and above the worst case of
    # an untrained model (every pixel's cross-entropy far below 50 nats).
    assert np.all(scores < 0) and np.all(scores > -50 * size * size * 3)
    model.save(tmp_path / "m")
    again = tfpvae.load(tmp_path / "m")
    np.testing.assert_array_equal(again.log_prob(x[:4], num_samples=8, seed=2), scores)
    assert again.sample(2, seed=0).shape == (2, size, size, 3)


# ---------------------------------------------------------------------- every feature, from the command line
@pytest.mark.slow  # trains, resumes, scores, detects, plots and exports one model
def test_every_command_works_on_a_model_from_user_code(tmp_path, capsys, data_dir):
    from tfpvae.cli import main
    from tfpvae.datasets import load_split

    run, user = tmp_path / "run", "--import example_networks"
    model_flags = "--architecture small_resnet --option width=4 --prior logistic --latent-dim 4 --binarize none"
    data = f"--dataset colour_mnist --data-dir {data_dir} --limit 120"
    train = f"train {user} {model_flags} {data} --epochs 1 --seed 0 --no-progress --out {run}"
    assert main(train.split()) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["architecture"], config["prior"], config["options"]) == ("small_resnet", "logistic", {"width": 4})

    # Resume to two epochs from the checkpoint; without the import it is one line and status 2.
    capsys.readouterr()
    registry.networks.unregister("small_resnet")
    try:
        assert main(f"train --resume {run} --epochs 2 --no-progress".split()) == 2
        assert "`architecture` 'small_resnet' is not a registered network" in capsys.readouterr().err
    finally:
        importlib.reload(sys.modules["example_networks"])
    assert main(f"train {user} --resume {run} --epochs 2 --no-progress".split()) == 0
    history = json.loads((run / "metadata.json").read_text())["history"]
    assert len(history["loss"]) == 2

    scores = tmp_path / "scores.csv"
    assert main(f"score {user} --model {run} {data} --num-samples 4 --out {scores} --quiet".split()) == 0
    x = load_split("colour_mnist", "test", data_dir)[0][:120]
    rows = scores.read_text().splitlines()[1:]
    assert len(rows) == 120
    logged = [float(r.split(",")[2]) for r in rows]
    np.testing.assert_allclose(logged, tfpvae.load(run).log_prob(x, 4, seed=0), rtol=1e-5)

    capsys.readouterr()
    detect = f"detect {user} --model {run} --normal colour_mnist --anomalous colour_fashion_mnist"
    assert main(f"{detect} --data-dir {data_dir} --limit 60 --num-samples 4 --quiet".split()) == 0
    report = json.loads(capsys.readouterr().out)["scores"]
    assert all(0.0 <= r["auroc"] <= 1.0 for r in report.values()) and "log_prob" in report

    for kind in ("samples", "reconstructions", "manifold"):
        out = tmp_path / f"{kind}.png"
        assert main(f"plot {kind} {user} --model {run} {data} --out {out}".split()) == 0
        assert out.stat().st_size > 5000

    served = tmp_path / "served"
    assert main(f"export {user} --model {run} --out {served} --num-samples 16".split()) == 0
    module = tf.saved_model.load(str(served))
    got = module.signatures["log_prob"](images=tf.constant(x[:5]), seed=tf.constant(3))["log_prob"].numpy()
    # The library's estimator with the same ids (row indices) and seed makes the same draws.
    np.testing.assert_allclose(got, tfpvae.load(run).log_prob(x[:5], 16, seed=3), atol=1e-4)


def test_a_registered_functional_network_multiplies_in_bfloat16():
    from tfpvae.precision import count_products, low_precision

    model = VAE(input_shape=(8, 8, 1), latent_dim=2, architecture="small_resnet", options={"width": 4}, seed=0)
    # encoder: 4 convolutions (stem, two in the residual block, the strided one); the head stays float32.
    assert count_products(low_precision(model.encoder, keep=("posterior_params",))) == 4
    x = np.random.default_rng(0).uniform(size=(6, 8, 8, 1)).astype(np.float32)
    f32 = model.log_prob(x, 8, seed=0)
    bf16 = model.log_prob(x, 8, seed=0, precision="bfloat16")
    assert 0 < np.abs(bf16 - f32).max() < 0.5
