import json
from pathlib import Path

import numpy as np
import pytest

import tfpvae
from tfpvae.serialization import ModelFormatError


@pytest.fixture(scope="module")
def x(digits):
    return digits[0][0][:16]


@pytest.mark.parametrize(
    "prior, model_type",
    # An autoencoder takes only a fixed prior: with no KL term, nothing would train a learned one.
    [("normal", "vae"), ("learned_normal", "vae"), ("mixture", "vae"), ("normal", "ae")],
)
def test_reload_is_bit_for_bit(prior, model_type, x, tmp_path):
    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=3, prior=prior, model_type=model_type, seed=0)
    model.fit(x, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m")
    loaded = tfpvae.load(tmp_path / "m")
    assert loaded.config == model.config
    a = model.decode(model.encode(x).mean()).log_prob(x).numpy()
    b = loaded.decode(loaded.encode(x).mean()).log_prob(x).numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.prior.log_prob(np.ones((2, 3))), loaded.prior.log_prob(np.ones((2, 3))))
    assert loaded.training_history == model.training_history


@pytest.fixture
def saved(tmp_path, x):
    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    model.save(tmp_path / "m")
    return tmp_path / "m"


def test_folder_holds_only_plain_data(saved):
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "metadata.json", "weights.npz"]
    meta = json.loads((saved / "metadata.json").read_text())
    assert meta["format_version"] == 1 and len(meta["weights_sha256"]) == 64


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_get_the_mode_of_a_plain_open(tmp_path, umask):
    # Atomic writes go through a private temporary file; the saved files must not stay 0600.
    import os

    previous = os.umask(umask)
    try:
        model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
        model.save(tmp_path / "m")
        reference = tmp_path / "plain.txt"
        reference.write_text("x")
    finally:
        os.umask(previous)
    for f in (tmp_path / "m").iterdir():
        assert f.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777 == 0o666 & ~umask, f.name


def test_missing_folder_and_files(saved, tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        tfpvae.load(tmp_path / "nope")
    (saved / "config.json").unlink()
    with pytest.raises(ModelFormatError, match="config.json is missing"):
        tfpvae.load(saved)


def test_truncated_or_tampered_weights_fail_the_checksum(saved):
    data = (saved / "weights.npz").read_bytes()
    (saved / "weights.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="checksum"):
        tfpvae.load(saved)


def test_incompatible_version(saved):
    meta = json.loads((saved / "metadata.json").read_text())
    meta["format_version"], meta["tfpvae_version"] = 99, "9.0.0"
    (saved / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match=r"written by tfpvae 9\.0\.0 in format 99, newer .* upgrade tfpvae"):
        tfpvae.load(saved)


def test_an_edited_config_fails_its_checksum_and_weights_that_do_not_fit_it_are_named(saved):
    # Line endings and indentation (a git checkout on Windows, an editor) keep the checksum.
    text = (saved / "config.json").read_text()
    (saved / "config.json").write_bytes(json.dumps(json.loads(text), indent=4).replace("\n", "\r\n").encode())
    tfpvae.load(saved)
    cfg = json.loads((saved / "config.json").read_text())
    cfg["latent_dim"] = 5
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match=r"config.json does not match the checksum in metadata.json"):
        tfpvae.load(saved)
    # A folder from before the config's checksum: the weights' shapes still catch it.
    meta = json.loads((saved / "metadata.json").read_text())
    del meta["config_sha256"]
    (saved / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="do not match its config"):
        tfpvae.load(saved)


@pytest.mark.parametrize("checksummed", [True, False], ids=["with-checksum", "before-checksums"])
def test_a_config_that_is_not_utf8_is_a_model_format_error(saved, checksummed):
    # A damaged first byte: found by the fuzz tests as a UnicodeDecodeError traceback.
    if not checksummed:
        meta = json.loads((saved / "metadata.json").read_text())
        del meta["config_sha256"]
        (saved / "metadata.json").write_text(json.dumps(meta))
    (saved / "config.json").write_bytes(b"\x80" + (saved / "config.json").read_bytes())
    with pytest.raises(ModelFormatError, match=r"config.json is not UTF-8 text"):
        tfpvae.load(saved)
    # Nested too deeply for the JSON parser: refused, not a RecursionError.
    (saved / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelFormatError, match=r"config.json (does not match the checksum|is not a valid config)"):
        tfpvae.load(saved)


def test_planted_pickle_in_weights_is_refused_and_not_executed(saved, tmp_path):
    import hashlib

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    np.savez(saved / "weights.npz", w0000=np.array([Payload()], dtype=object))
    meta = json.loads((saved / "metadata.json").read_text())
    meta["weights_sha256"] = hashlib.sha256((saved / "weights.npz").read_bytes()).hexdigest()  # a careful attacker
    (saved / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="pickled"):
        tfpvae.load(saved)
    assert not marker.exists()


FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("model-format-*"))


def test_every_format_written_so_far_has_a_committed_fixture():
    from tfpvae.serialization import FORMAT_VERSION

    assert [p.name for p in FIXTURES] == [f"model-format-{v}" for v in range(1, FORMAT_VERSION + 1)], (
        "a new format needs its fixture: python tests/fixtures/make_model_fixture.py"
    )


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_a_folder_of_every_format_loads_with_the_log_prob_it_was_saved_with(fixture, digits):
    expected = json.loads((fixture / "expected.json").read_text())
    model = tfpvae.load(fixture / "model")
    x = digits[1][0][: len(expected["log_prob"])]
    log_prob = model.log_prob(x, expected["num_samples"], seed=expected["seed"])
    # Equal up to float32 rounding, which differs in the last bits between CPUs.
    np.testing.assert_allclose(log_prob, expected["log_prob"], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- found in review


@pytest.mark.parametrize(
    "key, value",
    [
        ("history", {"note": "my own custom-loop log"}),  # was saved, then load failed
        ("format_version", 2),  # was saved: the folder then claimed a format this tfpvae cannot read
        ("tfpvae_version", "0.0.1"),
        ("weights_sha256", "0" * 64),
    ],
)
def test_extra_metadata_may_not_replace_the_entries_tfpvae_writes(saved, key, value):
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    model = tfpvae.load(saved)
    with pytest.raises(ValueError, match=f"{key}"):
        tfpvae.save(model, saved, extra_metadata={key: value})
    # Refused before anything is written: the earlier model is whole and loads.
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before
    assert tfpvae.load(saved).config == model.config
    tfpvae.save(model, saved, extra_metadata={"my_history": value})  # the user's entry under a key of its own
    assert json.loads((saved / "metadata.json").read_text())["my_history"] == value


def test_write_model_files_refuses_every_reserved_key_of_extra_metadata_naming_it(tmp_path):
    from tfpvae.config import VAEConfig
    from tfpvae.serialization import RESERVED_METADATA_KEYS, check_extra_metadata, read_model_files, write_model_files

    config, weights = VAEConfig(), [np.zeros(2, np.float32)]
    assert "history" in RESERVED_METADATA_KEYS and "registered_by" in RESERVED_METADATA_KEYS
    for key in RESERVED_METADATA_KEYS:
        with pytest.raises(ValueError, match=f"^`extra_metadata` key '{key}' is reserved: tfpvae writes it"):
            write_model_files(tmp_path / "m", config, weights, {"history": {}}, extra_metadata={key: {}})
        assert not (tmp_path / "m").exists()  # nothing written, not even the folder
    with pytest.raises(TypeError, match="`extra_metadata` must be a dict of JSON values; got list"):
        check_extra_metadata([("note", 1)])
    assert check_extra_metadata(None) == {}
    write_model_files(tmp_path / "m", config, weights, {"history": {"loss": [1.5]}}, extra_metadata={"note": "x"})
    files = read_model_files(tmp_path / "m")
    assert files.metadata["note"] == "x" and files.metadata["history"] == {"loss": [1.5]}
    assert files.metadata["format_version"] == 1 and files.config == config
