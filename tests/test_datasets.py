import gzip
import hashlib
import io
import os
import pickle
import re

import numpy as np
import pytest

from tfpvae import datasets
from tfpvae.datasets import DatasetNotFoundError, load, load_images, load_split, read_idx

SIZES = {
    "mnist": (60000, 10000, (28, 28, 1)),
    "fashion_mnist": (60000, 10000, (28, 28, 1)),
    "binarized_mnist": (50000, 10000, (28, 28, 1)),
    "digits": (1438, 359, (8, 8, 1)),
    "colour_mnist": (60000, 10000, (32, 32, 3)),
    "colour_fashion_mnist": (60000, 10000, (32, 32, 3)),
}


@pytest.mark.parametrize("name", datasets.NAMES)
def test_every_dataset_loads_with_shapes_dtype_and_range(name, data_dir):
    (x, y), (xt, yt) = load(name, data_dir)
    n_train, n_test, shape = SIZES[name]
    assert x.shape == (n_train, *shape) and xt.shape == (n_test, *shape)
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0 or name.startswith("colour")
    if name == "binarized_mnist":
        assert y is None and set(np.unique(x)) == {0.0, 1.0}
    else:
        assert y.shape == (n_train,) and set(np.unique(y)) == set(range(10))


@pytest.mark.parametrize("size", [32, 64])
def test_colourise_paints_strokes_and_background_and_pads(size, data_dir):
    grey, _ = load_split("mnist", "test", data_dir)
    grey = grey[:50].copy()
    grey[:, 14, 14] = 1.0  # a full-stroke pixel in every image, to read the stroke colour off
    colour = datasets.colourise(grey, size=size, seed=3)
    assert colour.shape == (50, size, size, 3) and colour.dtype == np.float32
    factor, pad = size // 28, (size - 28 * (size // 28)) // 2
    # Every image is g * stroke + (1 - g) * background: the corner is the background, and
    # the grey values come back from any channel, enlarged by pixel repetition.
    background = colour[:, 0, 0]
    brightest = colour.reshape(50, -1, 3)[np.arange(50), colour.sum(-1).reshape(50, -1).argmax(1)]
    assert np.all(background <= 0.35) and np.all(brightest >= 0.55)
    inner = colour[:, pad : pad + 28 * factor : factor, pad : pad + 28 * factor : factor]
    g = (inner - background[:, None, None]) / (brightest - background)[:, None, None]
    np.testing.assert_allclose(g, np.repeat(grey, 3, axis=-1), atol=2e-5)
    np.testing.assert_array_equal(colour, datasets.colourise(grey, size=size, seed=3))
    assert not np.allclose(colour, datasets.colourise(grey, size=size, seed=4))


def test_colour_datasets_are_colourised_grey_splits_with_their_labels(data_dir):
    (x, y), (xt, yt) = load("colour_fashion_mnist", data_dir)
    (g, gy), (gt, gyt) = load("fashion_mnist", data_dir)
    np.testing.assert_array_equal(y, gy)
    np.testing.assert_array_equal(xt[:20], datasets.colourise(gt[:20], 32, seed=datasets._COLOUR_SEEDS["test"]))
    assert not np.allclose(x[:20, 0, 0], xt[:20, 0, 0])  # each split has its own colours


def test_colourise_refuses_what_it_cannot_paint():
    with pytest.raises(ValueError, match="`images` must be square grey images"):
        datasets.colourise(np.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="`size` must be an int >= 28"):
        datasets.colourise(np.zeros((2, 28, 28, 1)), size=16)
    with pytest.raises(ValueError, match="`images` is empty"):
        datasets.colourise(np.zeros((0, 8, 8)))
    with pytest.raises(ValueError, match="`images` images must have a positive height"):
        datasets.colourise(np.zeros((1, 0, 0)))


def test_colourise_and_to_dataset_read_uint8_as_pixel_values():
    grey = np.zeros((2, 8, 8), np.uint8)
    grey[:, 2:6, 2:6] = 255
    np.testing.assert_array_equal(datasets.colourise(grey, 8, seed=1), datasets.colourise(grey / 255.0, 8, seed=1))
    [batch] = list(datasets.to_dataset(grey, batch_size=4, shuffle=False))
    assert batch.dtype.name == "float32" and batch.shape == (2, 8, 8, 1)
    np.testing.assert_array_equal(batch.numpy()[..., 0], grey / np.float32(255))
    with pytest.raises(ValueError, match="`x` is empty"):
        datasets.to_dataset(np.zeros((0, 4, 4, 1), np.float32))


def test_load_images_of_a_list_names_the_list_in_its_errors(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"`path` \['.*empty.npy'\] holds no images"):
        load_images([str(tmp_path / "empty.npy")])


def test_mnist_bytes_match_the_published_file(data_dir):
    # The first training image is a 5; its pixel sum in the official release is 27525.
    (x, y), _ = load("mnist", data_dir)
    assert y[0] == 5 and round(float(x[0].sum() * 255)) == 27525
    digest = hashlib.md5((data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()).hexdigest()
    assert digest == "ec29112dd5afa0611ce80d1b7f02629c"


def test_binarized_valid_split(data_dir):
    x, y = load_split("binarized_mnist", "valid", data_dir)
    assert x.shape == (10000, 28, 28, 1) and y is None


def test_data_dir_from_environment(data_dir, monkeypatch):
    monkeypatch.setenv("TFPVAE_DATA_DIR", str(data_dir))
    x, _ = load_split("fashion_mnist", "test")
    assert x.shape == (10000, 28, 28, 1)


def test_digits_split_is_deterministic_and_disjoint():
    (a, ya), (b, yb) = load("digits")
    (a2, _), _ = load("digits")
    np.testing.assert_array_equal(a, a2)
    assert len(a) + len(b) == 1797


def test_missing_dataset_lists_every_place_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("TFPVAE_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as err:
        load_split("binarized_mnist", "train", tmp_path / "arg")
    message = str(err.value)
    assert str(tmp_path / "arg") in message and str(tmp_path / "env") in message and "TFPVAE_DATA_DIR" in message


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="`name` must be one of 'digits', 'mnist'"):
        load("cifar")
    with pytest.raises(ValueError, match="`split` must be one of 'train', 'test'"):
        load_split("mnist", "valid")


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_round_trip_and_truncation(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), arr)
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(raw[:-5])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "junk.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="Cannot read IDX file"):
        read_idx(tmp_path / "junk.gz")


def test_corrupt_dataset_folder_is_reported(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (folder / name).write_bytes(gzip.compress(b"\x00\x00\x08\x03\x00\x00"))
    with pytest.raises(ValueError, match="truncated IDX header|truncated or corrupt"):
        load_split("mnist", "train", tmp_path)


def test_npz_with_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    np.savez(tmp_path / "evil.npz", x=np.array([Payload()], dtype=object))
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "evil.npz")) + ".*refusing to unpickle"):
        load_images(tmp_path / "evil.npz")
    assert not marker.exists()
    assert pickle  # the payload above is a real pickle


def test_load_images_from_npy_npz_and_png(tmp_path):
    from PIL import Image

    imgs = (np.random.default_rng(0).random((3, 5, 6)) * 255).astype(np.uint8)
    np.save(tmp_path / "a.npy", imgs)
    np.savez(tmp_path / "b.npz", x=imgs, y=np.array([1, 2, 3]))
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(folder / f"{i:02d}.png")
    for path in (tmp_path / "a.npy", tmp_path / "b.npz", folder):
        x, y = load_images(path)
        np.testing.assert_allclose(x[..., 0], imgs / 255.0, rtol=1e-6)
    assert list(load_images(tmp_path / "b.npz")[1]) == [1, 2, 3]
    Image.fromarray(imgs[0, :, :5]).save(folder / "02b.png")
    with pytest.raises(ValueError, match=re.escape(f"{folder / '02b.png'}: has shape (5, 5, 1); expected (5, 6, 1)")):
        load_images(folder)  # images of unequal size
    (folder / "02b.png").unlink()
    (folder / "03.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=re.escape(str(folder / "03.png")) + ": cannot decode as a PNG"):
        load_images(folder)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nothing.npy")) + ".* does not exist"):
        load_images(tmp_path / "nothing.npy")


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([1, 2]), r"one label per image, shape \(3,\); got shape \(2,\)"),
        (np.array([[1, 2, 3]]), r"shape \(3,\); got shape \(1, 3\)"),
        # Fractions are checked row by row as the labels stream in; the first one names its row.
        (np.array([1.0, 0.5, 2.0]), r"^1: label 0\.5 in .*b\.npz is not a whole number"),
        (np.array(["a", "b", "c"]), r"must be whole numbers; got dtype <U1"),
    ],
)
def test_npz_labels_must_match_the_images(tmp_path, labels, match):
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 4, 4), np.uint8), y=labels)
    with pytest.raises(ValueError, match=match):
        load_images(tmp_path / "b.npz")
    # -1 is a real label here, not the "no label" placeholder of a partly labelled input.
    goods = (np.array([1.0, 2.0, 3.0]), np.array([[1], [2], [3]]), np.array([True, False, True]), np.array([-1, 1, -1]))
    for good in goods:
        np.savez(tmp_path / "ok.npz", x=np.zeros((3, 4, 4), np.uint8), labels=good)
        y = load_images(tmp_path / "ok.npz")[1]
        assert y.dtype == np.int64 and y.tolist() == good.ravel().astype(int).tolist()


def _example(image: np.ndarray, label: int | None) -> bytes:
    from PIL import Image

    from tfpvae._keras import tf

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[buf.getvalue()]))}
    if label is not None:
        feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_load_images_reads_tfrecord_shards_and_globs(tmp_path):
    from tfpvae._keras import tf

    imgs = (np.random.default_rng(1).random((7, 5, 6)) * 255).astype(np.uint8)
    cuts = [0, 3, 7]
    for s in range(2):
        with tf.io.TFRecordWriter(str(tmp_path / f"shard-{s}.tfrecord")) as writer:
            for i in range(cuts[s], cuts[s + 1]):
                writer.write(_example(imgs[i], 10 + i))
    x, y = load_images(tmp_path / "shard-0.tfrecord")
    np.testing.assert_array_equal(x[..., 0], imgs[:3].astype(np.float32) / np.float32(255))
    assert y.dtype == np.int64 and y.tolist() == [10, 11, 12]
    x, y = load_images(str(tmp_path / "shard-*.tfrecord"))  # a glob: the shards in name order
    np.testing.assert_array_equal(x[..., 0], imgs.astype(np.float32) / np.float32(255))
    assert y.tolist() == list(range(10, 17))

    # Labels on only some records: refused, naming the first record without one.
    with tf.io.TFRecordWriter(str(tmp_path / "shard-2.tfrecord")) as writer:
        writer.write(_example(imgs[0], 5))
        writer.write(_example(imgs[1], None))
    with pytest.raises(ValueError, match=re.escape(f"the first without one is '{tmp_path / 'shard-2.tfrecord'}:1'")):
        load_images(str(tmp_path / "shard-*.tfrecord"))
    # A whole batch (1024 images) without labels before the labelled records.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    np.save(mixed / "a.npy", np.zeros((1030, 5, 6), np.uint8))
    (mixed / "b.tfrecord").write_bytes((tmp_path / "shard-0.tfrecord").read_bytes())
    with pytest.raises(ValueError, match=re.escape(f"the first without one is '{mixed / 'a.npy'}:0'")):
        load_images(mixed)


def test_png_bit_depths_and_alpha_keep_their_scale(tmp_path):
    from PIL import Image

    grey = np.array([[0, 64, 128, 255]], np.uint8)
    cases = {
        "16bit": Image.fromarray(grey.astype(np.uint16) * 257),  # 0..65535, opened as "I;16"/"I"
        "alpha": Image.fromarray(np.stack([grey, np.full_like(grey, 200)], -1), mode="LA"),
    }
    for name, image in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        image.save(folder / "0.png")
        x, _ = load_images(folder)
        assert x.shape == (1, 1, 4, 1), name  # grey, one channel: the alpha is dropped
        np.testing.assert_allclose(x[0, 0, :, 0], grey[0] / 255.0, rtol=1e-6, err_msg=name)


def test_to_dataset_batches(digits):
    (x, _), _ = digits
    batches = list(datasets.to_dataset(x[:100], batch_size=32, seed=0))
    assert [len(b) for b in batches] == [32, 32, 32, 4]
    assert os.environ.get("TFPVAE_DATA_DIR")


# --------------------------------------------------------------------------- found by tests/test_fuzz.py


def test_corrupt_or_impossible_idx_files_raise_value_error_naming_them(tmp_path):
    data = bytearray(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]), mtime=0))
    data[10] = 0xFF  # the first deflate block of the reserved type 3: zlib.error before
    (tmp_path / "a.gz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape(f"Cannot read IDX file {tmp_path / 'a.gz'}")):
        read_idx(tmp_path / "a.gz")
    dims = b"".join((2**31).to_bytes(4, "big") for _ in range(3)) + bytes(4)  # 0 bytes of data, but no such array
    (tmp_path / "b").write_bytes(bytes([0, 0, 8, 4]) + dims)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'b'} has an IDX shape")):
        read_idx(tmp_path / "b")


def test_mnist_npz_and_binarized_npz_arrays_are_checked(tmp_path):
    u8 = np.zeros((3, 4, 4), np.uint8)
    bad_files = {
        "x-float.npz": dict(x_train=u8 * 300.0, y_train=np.arange(3)),  # gave pixels of 300 / 255
        "x-text.npz": dict(x_train=u8.astype("U1"), y_train=np.arange(3)),  # numpy's "could not convert"
        "y-short.npz": dict(x_train=u8, y_train=np.arange(2)),  # 3 images, 2 labels
    }
    for name, arrays in bad_files.items():
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "mnist.npz", **arrays)
        with pytest.raises(ValueError, match=re.escape(str(tmp_path / name / "mnist.npz"))):
            load_split("mnist", "train", tmp_path / name)
    np.savez(tmp_path / "binarized_mnist.npz", train=np.full((2, 784), 2, np.uint8))
    with pytest.raises(ValueError, match=r"\['train'\] must hold binary pixels 0 or 1"):
        load_split("binarized_mnist", "train", tmp_path)


def test_load_images_names_the_file_of_a_bad_row(tmp_path):
    np.save(tmp_path / "x.npy", np.full((2, 3, 3), 2.0))
    with pytest.raises(ValueError, match=re.escape(f"0: in {tmp_path / 'x.npy'}: pixel values")):
        load_images(tmp_path)  # the message was "0: pixel values ...", naming no file
