"""tfpvae.streaming: files of real MNIST test images read back as id'd, bounded batches.

Every input is written at test time from the first 50 MNIST test images, so each decoded
value is compared with the array it was written from.
"""

from __future__ import annotations

import io
import pickle
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfpvae import image_files, input_files, records, streaming
from tfpvae._keras import tf
from tfpvae.datasets import load_split
from tfpvae.streaming import BadRecordError, count_records, decode_image, iter_batches, list_files, read_records

N = 50


@pytest.fixture(scope="module")
def mnist(data_dir):
    """(float32 images (50, 28, 28, 1) in [0, 1], the same as uint8 (50, 28, 28), int64 labels (50,))."""
    x, y = load_split("mnist", "test", data_dir)
    x, y = x[:N], y[:N]
    u8 = np.round(x[..., 0] * 255).astype(np.uint8)
    # The reference the reader must reproduce bit for bit: uint8 / 255 in float32, as load_split does.
    np.testing.assert_array_equal(u8[..., None].astype(np.float32) / np.float32(255), x)
    return x, u8, y


def png_bytes(array: np.ndarray, mode: str | None = None, **save) -> bytes:
    buf = io.BytesIO()
    (array if isinstance(array, Image.Image) else Image.fromarray(array, mode)).save(buf, format="PNG", **save)
    return buf.getvalue()


def example(image: bytes | None, label: int | None) -> bytes:
    feature = {}
    if image is not None:
        feature["image"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))
    if label is not None:
        feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecord(path: Path, records: list[bytes]) -> list[int]:
    """Writes serialized records; returns each frame's byte offset (frame: 12-byte header, data, 4-byte CRC)."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    offsets = np.cumsum([0] + [16 + len(r) for r in records])
    assert path.stat().st_size == offsets[-1]
    return [int(o) for o in offsets[:-1]]


def collect(source, **kwargs):
    """Concatenated (images, ids, labels with -1, batch sizes) of iter_batches."""
    batches = list(iter_batches(source, **kwargs))
    images = np.concatenate([b.images for b in batches])
    ids = [i for b in batches for i in b.ids]
    labels = np.concatenate([np.full(len(b), -1) if b.labels is None else b.labels for b in batches])
    return images, ids, labels, [len(b) for b in batches]


# --------------------------------------------------------------------------- decoding


def test_png_files_decode_exactly_with_the_path_as_id(tmp_path, mnist):
    x, u8, _ = mnist
    grey, rgb = tmp_path / "grey", tmp_path / "rgb"
    grey.mkdir(), rgb.mkdir()
    colour = np.stack([u8[:5], u8[5:10], u8[10:15]], axis=-1)  # (5, 28, 28, 3): three digits as channels
    for i in range(5):
        (grey / f"img_{i}.png").write_bytes(png_bytes(u8[i]))
        (rgb / f"img_{i}.png").write_bytes(png_bytes(colour[i], "RGB"))

    path = str(grey / "img_3.png")
    [(rid, image, label)] = list(read_records(path))
    assert (rid, label) == (path, None)
    assert image.dtype == np.uint8 and image.shape == (28, 28, 1)
    np.testing.assert_array_equal(image[..., 0], u8[3])

    images, ids, labels, _ = collect(grey)
    np.testing.assert_array_equal(images, x[:5])  # bit-exact float32, as load_split gives
    assert ids == [str(grey / f"img_{i}.png") for i in range(5)]
    assert (labels == -1).all()

    images, _, _, _ = collect(rgb)
    np.testing.assert_array_equal(images, colour.astype(np.float32) / np.float32(255))


def raw_png(pixels: np.ndarray, depth: int, colour_type: int) -> bytes:
    """A PNG written byte by byte (filter 0 on every row): pixels (H, W, channels) of big-endian values."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = pixels.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    rows = b"".join(b"\0" + row.tobytes() for row in pixels)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_decode_image_modes_grey_alpha_palette_and_16_bit(mnist):
    _, u8, _ = mnist
    digit = u8[0]
    # 16-bit grey: v * 257 spans 0..65535 and must come back as v (divide by 257, round).
    wide = Image.frombytes("I;16", (28, 28), (digit.astype("<u2") * 257).tobytes())
    np.testing.assert_array_equal(decode_image(png_bytes(wide), "w")[..., 0], digit)
    # Grey with alpha: the alpha dropped.
    la = Image.merge("LA", [Image.fromarray(digit), Image.fromarray(255 - digit)])
    assert decode_image(png_bytes(la), "la").shape == (28, 28, 1)
    np.testing.assert_array_equal(decode_image(png_bytes(la), "la")[..., 0], digit)
    # 16-bit grey with alpha (which Pillow cannot write, nor reads as grey): one channel too.
    la16 = np.stack([digit.astype(">u2") * 257, np.full_like(digit, 65535, ">u2")], axis=-1)
    assert decode_image(raw_png(la16, depth=16, colour_type=4), "la16").shape == (28, 28, 1)
    np.testing.assert_array_equal(decode_image(raw_png(la16, depth=16, colour_type=4), "la16")[..., 0], digit)
    # Palette: grey palette -> one channel with the grey values; a colour palette -> RGB.
    grey_palette = Image.fromarray(digit).convert("P")
    grey_palette.putpalette([v for i in range(256) for v in (i, i, i)])
    grey_palette.frombytes(digit.tobytes())
    np.testing.assert_array_equal(decode_image(png_bytes(grey_palette), "p")[..., 0], digit)
    colour_palette = Image.fromarray(digit, "L").convert("P")
    colour_palette.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    colour_palette.frombytes(digit.tobytes())
    expected = np.stack([digit, 255 - digit, np.zeros_like(digit)], axis=-1)
    np.testing.assert_array_equal(decode_image(png_bytes(colour_palette), "c"), expected)
    # RGBA: alpha dropped, colour kept.
    rgba = np.dstack([digit, digit[::-1], digit.T, np.full_like(digit, 7)])
    np.testing.assert_array_equal(decode_image(png_bytes(rgba, "RGBA"), "a"), rgba[..., :3])
    # Interlaced (Adam7) and optimised PNGs take Pillow's own path; same pixels.
    buf = io.BytesIO()
    Image.fromarray(digit).save(buf, format="PNG", optimize=True, compress_level=9)
    np.testing.assert_array_equal(decode_image(buf.getvalue(), "o")[..., 0], digit)


def test_jpeg_decodes_within_tolerance(tmp_path, mnist):
    x, u8, _ = mnist
    for i in range(3):
        Image.fromarray(u8[i]).save(tmp_path / f"d{i}.jpg", quality=95)
    Image.fromarray(np.dstack([u8[3]] * 3)).save(tmp_path / "colour.jpeg", quality=95)
    images, ids, _, _ = collect(str(tmp_path / "*.jpg"))
    assert ids == [str(tmp_path / f"d{i}.jpg") for i in range(3)]
    error = np.abs(images - x[:3])
    assert error.mean() < 0.01 and error.max() < 0.25  # JPEG is lossy: close, not equal
    [(_, colour, _)] = list(read_records(tmp_path / "colour.jpeg"))
    assert colour.shape == (28, 28, 3)
    assert np.abs(colour.astype(float) - u8[3][..., None]).mean() < 3


# --------------------------------------------------------------------------- TFRecord


def test_tfrecord_ids_images_and_labels_round_trip(tmp_path, mnist):
    x, u8, y = mnist
    unlabelled = {3, 7}
    path = tmp_path / "one.tfrecord"
    write_tfrecord(path, [example(png_bytes(u8[i]), None if i in unlabelled else y[i]) for i in range(10)])
    records = list(read_records(str(path)))
    assert [r[0] for r in records] == [f"{path}:{i}" for i in range(10)]
    for i, (_, image, label) in enumerate(records):
        np.testing.assert_array_equal(image[..., 0], u8[i])
        assert label == (None if i in unlabelled else y[i])
    images, ids, labels, sizes = collect(path, batch_size=4)
    np.testing.assert_array_equal(images, x[:10])
    expected_labels = np.where(np.isin(np.arange(10), list(unlabelled)), -1, y[:10])
    np.testing.assert_array_equal(labels, expected_labels)
    assert sizes == [4, 4, 2]


@pytest.mark.parametrize("compression", ["GZIP", "ZLIB"])
def test_a_compressed_tfrecord_is_one_error_that_says_so(tmp_path, mnist, compression):
    _, u8, y = mnist
    path = str(tmp_path / "packed.tfrecord")
    with tf.io.TFRecordWriter(path, options=compression) as writer:
        for i in range(3):
            writer.write(example(png_bytes(u8[i]), y[i]))
    [(rid, error, label)] = list(read_records(path))
    assert rid == f"{path}:0" and label is None
    assert isinstance(error, BadRecordError) and f"the file is {compression}-compressed" in error.reason


def test_batches_over_a_glob_of_shards_equal_the_array_in_memory(tmp_path, mnist):
    x, u8, y = mnist
    cuts = [0, 17, 17, 37, N]  # the second shard is empty: a valid file with no records
    shards = []
    for s, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        shards.append(tmp_path / f"shard-{s:02d}.tfrecord")
        write_tfrecord(shards[-1], [example(png_bytes(u8[i]), y[i]) for i in range(a, b)])
    (tmp_path / "notes.txt").write_text("not matched by the glob")

    batches = list(iter_batches(str(tmp_path / "shard-*.tfrecord"), batch_size=8))
    assert [len(b) for b in batches] == [8] * 6 + [2]  # full batches across file boundaries
    assert all(b.images.dtype == np.float32 and b.labels.dtype == np.int64 for b in batches)
    np.testing.assert_array_equal(np.concatenate([b.images for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), y)
    expected_ids = [f"{shards[s]}:{j}" for s in range(4) for j in range(cuts[s + 1] - cuts[s])]
    assert [i for b in batches for i in b.ids] == expected_ids
    assert count_records(str(tmp_path / "shard-*.tfrecord")) == N

    # One worker's shard keeps the ids of a full read.
    part = list(iter_batches(str(tmp_path / "shard-*.tfrecord"), files=[str(shards[2])], batch_size=100))
    assert part[0].ids == expected_ids[17:37]


def test_unlabelled_batches_have_labels_none(tmp_path, mnist):
    _, u8, y = mnist
    path = tmp_path / "mixed.tfrecord"
    write_tfrecord(path, [example(png_bytes(u8[i]), y[i] if i >= 4 else None) for i in range(6)])
    first, second = iter_batches(path, batch_size=4)
    assert first.labels is None  # no record of this batch has a label
    np.testing.assert_array_equal(second.labels, y[4:6])
    assert first.labelled is None and second.labelled is None  # none, then all, of the records have one
    _, mixed = iter_batches(path, batch_size=3)  # records 3 (unlabelled), 4 and 5 (labelled)
    np.testing.assert_array_equal(mixed.labels, [-1, y[4], y[5]])
    assert mixed.labelled.tolist() == [False, True, True]  # tells "no label" from a real label -1


# --------------------------------------------------------------------------- bad records


@pytest.fixture
def damaged(tmp_path, mnist):
    """A folder of damaged inputs; returns (folder, expected good ids, expected bad ids, reference images by id)."""
    _, u8, y = mnist
    good, bad, reference = [], [], {}

    # bad.tfrecord: 0 good, 1 no image, 2 truncated PNG, 3 good, 4 wrong shape, 5 not an Example, 6 good.
    path = tmp_path / "bad.tfrecord"
    wrong = png_bytes(np.zeros((32, 32, 3), np.uint8), "RGB")
    records = [
        example(png_bytes(u8[0]), y[0]),
        example(None, y[1]),
        example(png_bytes(u8[2])[:60], y[2]),
        example(png_bytes(u8[3]), y[3]),
        example(wrong, y[4]),
        b"\xff\xfe not a protocol buffer",
        example(png_bytes(u8[6]), None),
    ]
    write_tfrecord(path, records)
    for i in (0, 3, 6):
        good.append(f"{path}:{i}")
        reference[f"{path}:{i}"] = u8[i]
    bad += [f"{path}:{i}" for i in (1, 2, 4, 5)]

    # broken.png: cut in half; flipped.png: one bit of its image data flipped (a CRC failure).
    data = png_bytes(u8[7])
    (tmp_path / "broken.png").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[data.index(b"IDAT") + 10] ^= 0x01
    (tmp_path / "flipped.png").write_bytes(bytes(flipped))
    bad += [str(tmp_path / "broken.png"), str(tmp_path / "flipped.png")]

    # crc.tfrecord: a byte of record 2's data flipped; trunc.tfrecord: cut inside record 3.
    for name, damage in (("crc", 2), ("trunc", 3)):
        path = tmp_path / f"{name}.tfrecord"
        offsets = write_tfrecord(path, [example(png_bytes(u8[10 + i]), y[10 + i]) for i in range(5)])
        raw = bytearray(path.read_bytes())
        if name == "crc":
            raw[offsets[damage] + 12 + 20] ^= 0xFF
        else:
            raw = raw[: offsets[damage] + 30]
        path.write_bytes(bytes(raw))
        for i in range(damage):
            good.append(f"{path}:{i}")
            reference[f"{path}:{i}"] = u8[10 + i]
        bad.append(f"{path}:{damage}")  # this record and the rest of the file are lost: one error
    return tmp_path, good, bad, reference


def test_bad_records_raise_naming_the_id(damaged):
    folder, _, _, _ = damaged
    with pytest.raises(BadRecordError) as err:
        list(iter_batches(folder))
    assert err.value.id == f"{folder / 'bad.tfrecord'}:1"
    assert str(err.value).startswith(f"{folder / 'bad.tfrecord'}:1: ") and "'image'" in str(err.value)


def test_bad_records_are_reported_and_good_ones_all_come_through(damaged):
    folder, good, bad, reference = damaged
    errors: list[BadRecordError] = []
    images, ids, _, _ = collect(folder, batch_size=3, on_error=errors.append)
    assert sorted(ids) == sorted(good) and ids == [i for i in ids if i in good]
    for image, rid in zip(images, ids):
        np.testing.assert_array_equal(np.round(image[..., 0] * 255), reference[rid])
    assert sorted(e.id for e in errors) == sorted(bad)
    reasons = {e.id: e.reason for e in errors}
    assert "has shape (32, 32, 3); expected (28, 28, 1)" in reasons[f"{folder / 'bad.tfrecord'}:4"]
    assert "not a tf.train.Example" in reasons[f"{folder / 'bad.tfrecord'}:5"]
    assert "CRC" in reasons[str(folder / "flipped.png")]
    for name in ("crc", "trunc"):
        assert "rest of the file" in next(r for i, r in reasons.items() if i.startswith(str(folder / name)))
    # The frame count includes the damaged frames it can see (crc keeps its framing).
    assert count_records(folder) == 7 + 2 + 5 + 4


def test_wrong_values_and_unreadable_files_are_bad_records(tmp_path, mnist):
    x, _, _ = mnist
    values = x[:4].copy()
    values[1, 0, 0, 0] = 1.5
    values[2, 5, 5, 0] = np.nan
    np.save(tmp_path / "a.npy", values)
    (tmp_path / "b.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(tmp_path / "c.npy", np.zeros((3, 28, 28), dtype=object), allow_pickle=True)
    errors = []
    images, ids, _, _ = collect(tmp_path, on_error=errors.append)
    a = str(tmp_path / "a.npy")
    assert ids == [f"{a}:0", f"{a}:3"]
    np.testing.assert_array_equal(images, x[[0, 3]])
    reasons = {e.id: e.reason for e in errors}
    assert sorted(reasons) == sorted([f"{a}:1", f"{a}:2", str(tmp_path / "b.npy"), str(tmp_path / "c.npy")])
    assert "[0, 1]" in reasons[f"{a}:1"] and "NaN" in reasons[f"{a}:2"]
    assert "objects" in reasons[str(tmp_path / "c.npy")]


def test_image_shape_argument_makes_every_other_shape_bad(tmp_path, mnist):
    x, _, _ = mnist
    np.save(tmp_path / "x.npy", x[:3])
    errors = []
    assert list(iter_batches(tmp_path, image_shape=(32, 32, 3), on_error=errors.append)) == []
    assert [e.id for e in errors] == ["0", "1", "2"]
    assert errors[0].reason == "has shape (28, 28, 1); expected (32, 32, 3)."


def test_bad_record_error_pickles_with_id_and_reason():
    err = pickle.loads(pickle.dumps(BadRecordError("a.tfrecord:3", "corrupt.")))
    assert (err.id, err.reason, str(err)) == ("a.tfrecord:3", "corrupt.", "a.tfrecord:3: corrupt.")
    assert isinstance(err, ValueError)


# --------------------------------------------------------------------------- list_files


def test_list_files_folder_glob_list_and_errors(tmp_path, mnist):
    _, u8, _ = mnist
    names = ["b.png", "a.PNG", "c.jpeg", "d.tfrecord", "e.npy", "f.npz"]
    for name in names:
        (tmp_path / name).write_bytes(png_bytes(u8[0]))
    (tmp_path / "README.txt").write_text("ignored in a folder")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "g.png").write_bytes(png_bytes(u8[0]))

    assert list_files(tmp_path) == sorted(str(tmp_path / n) for n in names)  # non-recursive, .txt ignored
    assert list_files(str(tmp_path / "[ab].*")) == [str(tmp_path / "a.PNG"), str(tmp_path / "b.png")]
    both = list_files([tmp_path / "sub" / "g.png", str(tmp_path / "[bc].*"), str(tmp_path / "b.png")])
    assert both == [str(tmp_path / "b.png"), str(tmp_path / "c.jpeg"), str(tmp_path / "sub" / "g.png")]

    pattern = str(tmp_path / "*.tfrecords")
    with pytest.raises(FileNotFoundError, match=r"pattern .*\*\.tfrecords.* matches no file"):
        list_files(pattern)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        list_files(tmp_path / "missing.png")
    with pytest.raises(ValueError, match=r"README\.txt.*\.png"):
        list_files(str(tmp_path / "*.txt"))
    with pytest.raises(ValueError, match=r"README\.txt"):
        list_files(tmp_path / "README.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        list_files(tmp_path / "empty")
    with pytest.raises(ValueError, match="empty list"):
        list_files([])
    with pytest.raises(TypeError, match="source"):
        list_files(3)
    with pytest.raises(ValueError, match="suffix|README"):
        read_records(tmp_path / "README.txt")  # raised at the call, not on first next()


def test_list_files_reads_one_file_once_and_never_a_folder(tmp_path, mnist, monkeypatch):
    """A file spelt two ways is one file; a folder named like an image is not one."""
    _, u8, _ = mnist
    monkeypatch.chdir(tmp_path)
    Path("png/looks.png").mkdir(parents=True)  # a folder with an image suffix
    for name in ["png/a.png", "png/b.png"]:
        Path(name).write_bytes(png_bytes(u8[0]))
    assert list_files(["png", "./png", "png//", "png/./a.png"]) == ["png/a.png", "png/b.png"]
    assert list_files("./png/*.png") == ["png/a.png", "png/b.png"]  # the glob skips png/looks.png
    with pytest.raises(FileNotFoundError, match="looks"):
        list_files("png/looks*")
    assert input_files.spelling("gs://bucket//x/./a.png") == "gs://bucket//x/./a.png"  # remote: as written
    # ".." stays: behind a symbolic link "link/.." is not the folder "link" is in.
    assert input_files.spelling("./link/../a.png") == "link/../a.png"
    assert input_files.spelling("//abs/./b//a.png") == "/abs/b/a.png"
    # A match of an object store's glob is an object, never a folder: no call to ask.
    assert not input_files._is_folder("gs://bucket/looks.png")


def test_entry_kind_and_single_array_decide_as_list_files(tmp_path, mnist):
    _, u8, _ = mnist
    (tmp_path / "odd[1].png").write_bytes(png_bytes(u8[0]))
    assert input_files.entry_kind(str(tmp_path)) == "folder"
    assert input_files.entry_kind(str(tmp_path / "odd[1].png")) == "file"  # a real file before a glob
    assert input_files.entry_kind(str(tmp_path / "*.png")) == "glob"
    assert input_files.entry_kind(str(tmp_path / "missing.png")) is None
    assert input_files.is_single_array(["a.NPZ"]) and not input_files.is_single_array(["a.npy", "b.npy"])
    assert not input_files.is_single_array(["a.tfrecord"])


def test_the_parts_names_are_the_ones_streaming_exports():
    """Code and docs import these names from tfpvae.streaming; each is its part's own object."""
    assert streaming.BadRecordError is records.BadRecordError and streaming.Record is records.Record
    assert streaming.list_files is input_files.list_files and streaming.SUFFIXES is input_files.SUFFIXES
    assert streaming.decode_image is image_files.decode_image
    assert all(hasattr(streaming, name) for name in streaming.__all__)


# --------------------------------------------------------------------------- arrays


def test_npy_is_memory_mapped_and_read_in_chunks(tmp_path, mnist, monkeypatch):
    x, _, _ = mnist
    big = np.tile(x, (100, 1, 1, 1))  # 5,000 float32 rows: 15.7 MB
    path = tmp_path / "big.npy"
    np.save(path, big)
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    tracemalloc.start()  # `big` exists already: only what the reader (and this loop) allocates counts
    try:
        total = 0
        for batch in iter_batches(path, batch_size=256):
            assert batch.ids == [str(i) for i in range(total, total + len(batch))]  # one .npy: bare row ids
            assert np.array_equal(batch.images, big[total : total + len(batch)])
            total += len(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 5000 and calls == [{"mmap_mode": "r", "allow_pickle": False}]
    # Two batches of 256 (the one being filled, the one this loop holds) are 1.6 MB, a chunk 0.26 MB.
    assert peak < 3_000_000 < big.nbytes
    assert count_records(path) == 5000


def test_npz_streams_compressed_members_and_labels(tmp_path, mnist):
    x, _, y = mnist
    big = np.tile(x[..., 0], (100, 1, 1))  # (5000, 28, 28) float32, no channel axis: 15.7 MB
    labels = np.tile(y, 100).astype(np.float64)[:, None]  # (n, 1) whole floats are accepted
    path = tmp_path / "big.npz"
    np.savez_compressed(path, images=big, labels=labels)
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("images.npy").compress_type == zipfile.ZIP_DEFLATED
    expected, expected_labels = np.tile(x, (100, 1, 1, 1)), np.tile(y, 100)
    tracemalloc.start()
    try:
        n = 0
        for batch in iter_batches(path, batch_size=256):
            assert np.array_equal(batch.images, expected[n : n + len(batch)])
            assert np.array_equal(batch.labels, expected_labels[n : n + len(batch)])
            assert batch.ids == [str(i) for i in range(n, n + len(batch))]
            n += len(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 5000
    assert peak < 4_000_000 < big.nbytes  # as for .npy, plus zipfile's decompression buffers
    assert count_records(path) == 5000


def test_several_array_files_get_path_row_ids(tmp_path, mnist):
    x, u8, y = mnist
    np.savez(tmp_path / "a.npz", x=u8[:3], y=y[:3])
    np.save(tmp_path / "b.npy", x[3:5])
    images, ids, labels, _ = collect(tmp_path)
    a, b = tmp_path / "a.npz", tmp_path / "b.npy"
    assert ids == [f"{a}:0", f"{a}:1", f"{a}:2", f"{b}:0", f"{b}:1"]
    np.testing.assert_array_equal(images, x[:5])
    np.testing.assert_array_equal(labels, [*y[:3], -1, -1])


def test_files_argument_reads_one_shard_with_the_ids_of_the_whole_input(tmp_path, mnist):
    x, _, _ = mnist
    np.save(tmp_path / "only.npy", x[:6])
    batches = list(iter_batches(tmp_path, files=[tmp_path / "only.npy"]))
    assert batches[0].ids == [str(i) for i in range(6)]  # the source is one array: bare row ids
    assert list(iter_batches(tmp_path, files=[])) == []  # more workers than files: an empty shard
    with pytest.raises(TypeError, match="`files`"):
        iter_batches(tmp_path, files=str(tmp_path / "only.npy"))
    with pytest.raises(ValueError, match="`files` holds"):
        iter_batches(files=[tmp_path / "notes.txt"])
    with pytest.raises(ValueError, match="`batch_size`"):
        iter_batches(tmp_path, batch_size=0)
    with pytest.raises(TypeError, match="`on_error`"):
        iter_batches(tmp_path, on_error="skip")


def test_remote_file_systems_go_through_gfile(mnist):
    """ram:// is TensorFlow's in-memory file system: no local path, no memory map, as on gs://."""
    x, u8, y = mnist
    gfile, root = tf.io.gfile, f"ram://streaming-{id(mnist)}"
    gfile.makedirs(root)

    def put(name: str, data: bytes) -> str:
        with gfile.GFile(f"{root}/{name}", "wb") as f:
            f.write(data)
        return f"{root}/{name}"

    try:
        buf = io.BytesIO()
        np.save(buf, u8[:3])
        a = put("a.npy", buf.getvalue())
        buf = io.BytesIO()
        np.savez_compressed(buf, x=x[3:5], y=y[3:5])
        b = put("b.npz", buf.getvalue())
        c = put("c.png", png_bytes(u8[5]))
        with tf.io.TFRecordWriter(f"{root}/d.tfrecord") as writer:
            writer.write(example(png_bytes(u8[6]), y[6]))
        # A folder named like an image, on a file system that is not an object store: listed
        # by neither the folder's listing nor a glob (gfile.isdir tells them apart).
        gfile.makedirs(f"{root}/e.png")
        put("e.png/inner.png", png_bytes(u8[7]))
        assert "e.png" in gfile.listdir(root) and f"{root}/e.png" in gfile.glob(f"{root}/*.png")
        assert list_files(f"{root}/*.png") == [c]
        assert list_files(f"{root}/*.np?") == [a, b]
        images, ids, labels, _ = collect(root)
        assert ids == [f"{a}:0", f"{a}:1", f"{a}:2", f"{b}:0", f"{b}:1", c, f"{root}/d.tfrecord:0"]
        np.testing.assert_array_equal(images, x[:7])
        np.testing.assert_array_equal(labels, [-1, -1, -1, y[3], y[4], -1, y[6]])
        assert count_records(root) == 7
    finally:
        gfile.rmtree(root)


# --------------------------------------------------------------------------- tf.data


def test_stream_elements_match_iter_batches(tmp_path, mnist):
    _, u8, y = mnist
    write_tfrecord(tmp_path / "a.tfrecord", [example(png_bytes(u8[i]), y[i] if i % 3 else None) for i in range(30)])
    np.save(tmp_path / "b.npy", u8[30:N])
    images, ids, labels, _ = collect(tmp_path)

    ds = streaming.stream(tmp_path, with_labels=True)
    assert ds.element_spec["image"].shape == (28, 28, 1)  # peeked from the first record
    elements = list(ds.as_numpy_iterator())
    assert len(elements) == N
    np.testing.assert_array_equal(np.stack([e["image"] for e in elements]), images)
    assert [e["id"].decode() for e in elements] == ids
    np.testing.assert_array_equal([e["label"] for e in elements], labels)

    plain = streaming.stream(tmp_path, image_shape=(28, 28, 1))
    assert set(plain.element_spec) == {"image", "id"}
    batch = next(iter(plain.batch(N)))  # a dataset can be iterated again and batched like any other
    np.testing.assert_array_equal(batch["image"].numpy(), images)


def test_stream_reports_bad_records_to_on_error(damaged):
    folder, good, bad, _ = damaged
    errors = []
    ids = [e["id"].decode() for e in streaming.stream(folder, on_error=errors.append).as_numpy_iterator()]
    assert sorted(ids) == sorted(good) and sorted(e.id for e in errors) == sorted(bad)
    with pytest.raises(tf.errors.OpError, match=r"bad\.tfrecord:1"):
        list(streaming.stream(folder))


# --------------------------------------------------------------------------- found by tests/test_fuzz.py


def test_a_tfrecord_frame_length_past_the_end_is_a_bad_record_not_a_crash(tmp_path):
    # TensorFlow allocates a frame's stated length before reading it: 2**40 (its own CRC valid)
    # killed the process with a segfault. Run in a child process, so that a regression fails
    # this test instead of ending the whole test run.
    import subprocess
    import sys
    import textwrap

    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    path = tmp_path / "crafted.tfrecord"
    payload = example(png_bytes(np.zeros((2, 2), np.uint8)), 1)
    good = len(payload).to_bytes(8, "little")
    lie = (2**40).to_bytes(8, "little")
    frames = [head + masked_crc32c(head).to_bytes(4, "little") + payload for head in (good, lie)]
    path.write_bytes(frames[0] + masked_crc32c(payload).to_bytes(4, "little") + frames[1])
    code = textwrap.dedent(f"""
        from tfpvae.streaming import read_records
        records = list(read_records({str(path)!r}))
        print(len(records), records[1][1])
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"2 {path}:1: corrupt TFRecord data (frame length 1099511627776 at byte {len(frames[0]) + 4}" in run.stdout
    assert "runs past the end of the file" in run.stdout


def test_empty_images_and_float64_beyond_float32_are_bad_records(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((2, 0, 0), np.uint8))  # batched as (0, 0, 1) images before
    np.save(tmp_path / "huge.npy", np.full((1, 2, 2), 1e300))  # reported as Inf, with a RuntimeWarning
    errors = []
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(iter_batches(tmp_path, on_error=errors.append)) == []
    reasons = {e.id: e.reason for e in errors}
    empty, huge = str(tmp_path / "empty.npy"), str(tmp_path / "huge.npy")
    assert reasons[empty].endswith("it has shape (2, 0, 0); images need a positive height, width and channels.")
    assert "must lie in [0, 1]" in reasons[f"{huge}:0"] and "NaN" not in reasons[f"{huge}:0"]


def test_an_array_file_of_no_rows_that_cannot_be_read_counts_its_one_error(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((0, 2, 2), dtype=object), allow_pickle=True)  # counted 0 before
    assert len(list(read_records(tmp_path / "a.npy"))) == count_records(tmp_path / "a.npy") == 1


def test_array_files_refused_whole_count_their_one_error(tmp_path):
    # The count read the row count from the header while reading refused the file as a whole.
    np.save(tmp_path / "text.npy", np.full((2, 4, 4), "a"))
    np.savez(tmp_path / "short.npz", x=np.zeros((5, 2, 2), np.uint8), y=np.arange(4))
    np.savez(tmp_path / "words.npz", x=np.zeros((3, 2, 2), np.uint8), y=np.array(["a", "b", "c"]))
    for name in ("text.npy", "short.npz", "words.npz"):
        records = list(read_records(tmp_path / name))
        assert len(records) == count_records(tmp_path / name) == 1 and isinstance(records[0][1], BadRecordError)


def test_a_damaged_npz_member_is_one_error_before_any_row(tmp_path):
    """The zip's CRC is checked at a member's end: the rows before it were yielded with wrong pixels."""
    path = tmp_path / "a.npz"
    np.savez(path, x=np.zeros((2000, 28, 28), np.uint8))  # stored, not compressed: bytes at known places
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("x.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + int.from_bytes(data[info.header_offset + 28 :][:2], "little")
    data[start + 128 + 5] = 200  # row 0, pixel 5 (after the 128-byte .npy header)
    path.write_bytes(bytes(data))
    [(rid, error, _)] = list(read_records(path))
    assert rid == str(path) and isinstance(error, BadRecordError) and "CRC" in error.reason


def test_a_huge_png_header_leaves_no_huge_decode_target_behind():
    # A 12-byte IDAT claiming 4000 x 4000 pixels: the 16 MB target of the failed decode was kept for reuse.
    import zlib

    data = bytearray(png_bytes(np.zeros((2, 2), np.uint8)))
    data[16:24] = (4000).to_bytes(4, "big") * 2
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    with pytest.raises(BadRecordError):
        decode_image(bytes(data), "big")
    assert all(w * h <= image_files._CACHED_PIXELS for _, w, h in image_files._decode_targets.images)


def test_npy_format_3_is_read_and_counted_alike(tmp_path):
    # np.load (the local .npy reader) reads format 3.0, but the header reader of counts and streams
    # refused it: count_records said 1 of a file that read_records gave 2 rows of.
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 1, 1)}"
    header += " " * (-(len(header) + 13) % 64) + "\n"
    data = b"\x93NUMPY\x03\x00" + len(header).to_bytes(4, "little") + header.encode() + b"\x07\x09"
    for name in ("a.npy", "b.npz"):
        path = tmp_path / name
        if name.endswith(".npy"):
            path.write_bytes(data)
        else:
            with zipfile.ZipFile(path, "w") as zf:
                zf.writestr("x.npy", data)
        records = list(read_records(path))
        assert [r[1].ravel().tolist() for r in records] == [[7], [9]] and count_records(path) == 2


def test_labels_beyond_int64_and_rows_without_pixels_are_bad_records(tmp_path):
    # Labels of 1e300 or 2**64 - 1 passed as whole numbers, then Batch.labels raised OverflowError.
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 2, 2), np.uint8), y=np.array([1.0, 1e300, 2.0]))
    np.savez(tmp_path / "b.npz", x=np.zeros((2, 2, 2), np.uint8), y=np.array([2**64 - 1, 3], np.uint64))
    # 8 million rows of no pixels in a 128-byte file: 8 million bad records, about half a minute.
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (8388609, 0, 1)}"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    (tmp_path / "c.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
    errors = []
    labels = [b.labels.tolist() for b in iter_batches(tmp_path, on_error=errors.append)]
    assert labels == [[1, 2, 3]]
    reasons = {e.id: e.reason for e in errors}
    assert reasons[f"{tmp_path / 'a.npz'}:1"] == f"label 1e+300 in {tmp_path / 'a.npz'} is outside the int64 range."
    assert "is outside the int64 range" in reasons[f"{tmp_path / 'b.npz'}:0"]
    assert "images need a positive height, width and channels" in reasons[str(tmp_path / "c.npy")]
    assert len(errors) == 3 and count_records(tmp_path / "c.npy") == 1


def test_images_beyond_the_pixel_limit_are_bad_records():
    # Pillow only warns between 1x and 2x its limit: this 8 x 16,777,224 PNG of a few bytes decoded to
    # 134 million pixels, and load_images' first buffer of 64 of them asked for 32 GiB (MemoryError).
    import zlib

    data = bytearray(png_bytes(np.zeros((2, 8), np.uint8)))
    data[16:24] = (8).to_bytes(4, "big") + (16_777_224).to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(BadRecordError, match="more than the limit"):
        decode_image(bytes(data), "bomb")


def test_the_first_batch_of_large_images_starts_small(tmp_path):
    # The first buffer held 64 images whatever their size: 2.3 GB for three 3000 x 3000 images here
    # (and 22 GB for 89-million-pixel PNGs, within Pillow's limit). Now it starts at 64 MiB and doubles.
    np.save(tmp_path / "big.npy", np.zeros((3, 3000, 3000), np.uint8))
    tracemalloc.start()
    try:
        batches = list(iter_batches(tmp_path / "big.npy"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [len(b) for b in batches] == [3]
    assert peak < 400e6, peak  # 4 images of 36 MB in the last doubling, plus chunks and copies
