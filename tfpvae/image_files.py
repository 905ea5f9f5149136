"""Decodes PNG and JPEG images, as files or as bytes: the one image decoder of tfpvae.

Grey images give one channel and colour three, whatever the bit depth, alpha or palette
(see `decode_image`); every reader of `tfpvae.streaming` (and so `tfpvae.datasets.load_images`)
decodes through here, so an image gets the same pixels however it is read. Plain 8-bit
PNGs take a fast path, about three times quicker than Pillow's own, that checks every CRC.
"""

from __future__ import annotations

import io
import math
import re
import struct
import threading
import zlib
from collections.abc import Iterator

import numpy as np

from tfpvae.input_files import open_binary
from tfpvae.records import BadRecordError, Record

__all__ = ["decode_image", "read_image_file"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK_HEAD = struct.Struct(">I4s")
_CRC = struct.Struct(">I")
_IHDR = struct.Struct(">IIBBBBB")
_decode_targets = threading.local()
# Largest image (in pixels) whose decode target is kept for reuse: 1024 x 1024.
_CACHED_PIXELS = 1 << 20


def _decode_plain_png(data: bytes, id: str) -> np.ndarray | None:
    """Decodes an 8-bit grey or RGB, non-interlaced PNG; None for anything else or any oddity.

    Image.open spends ~50 us per small PNG sniffing formats and parsing chunks in Python;
    walking the chunks here and handing the IDAT stream straight to Pillow's zip decoder
    (which undoes the PNG row filters) is about three times faster, which is what makes
    >= 20,000 MNIST-size records/s possible. Every chunk's CRC is checked, which Pillow does
    not do for image data: a flipped bit there would otherwise decode to wrong pixels or
    pass silently. On any other surprise this returns None, and the full Pillow path
    decides, with its own error message.

    Raises:
      BadRecordError: a chunk fails its CRC check.
    """
    from PIL import Image

    if not data.startswith(_PNG_SIGNATURE):
        return None
    pos, size, header, idat = 8, len(data), None, []
    while True:
        if pos + 12 > size:
            return None  # no IEND: truncated
        length, kind = _CHUNK_HEAD.unpack_from(data, pos)
        end = pos + 8 + length
        if end + 4 > size:
            return None
        chunk = data[pos + 8 : end]
        if zlib.crc32(chunk, zlib.crc32(kind)) != _CRC.unpack_from(data, end)[0]:
            name = kind.decode("latin-1")
            raise BadRecordError(id, f"PNG chunk {name!r} fails its CRC check: the data is corrupt.")
        if header is None and kind != b"IHDR":
            return None
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
        pos = end + 4
    if len(header) != 13 or not idat:
        return None
    width, height, depth, colour, compression, filtering, interlace = _IHDR.unpack(header)
    if depth != 8 or colour not in (0, 2) or compression or filtering or interlace:
        return None
    if width * height > (Image.MAX_IMAGE_PIXELS or math.inf) or not width or not height:
        return None  # let Image.open raise its decompression-bomb error
    mode, channels = ("L", 1) if colour == 0 else ("RGB", 3)
    # Decoding into a reused image skips Image.new, a quarter of the decode time at 28x28;
    # one per thread, as Beam and tf.data may decode in several threads at once. Only small
    # images are kept: a header may claim up to MAX_IMAGE_PIXELS (89 million) pixels over a
    # few bytes of data, and eight such targets would hold 2 GB per thread.
    images = _decode_targets.__dict__.setdefault("images", {})
    im = images.get((mode, width, height))
    if im is None:
        if len(images) >= 8:  # images of many sizes: keep the cache small
            images.clear()
        im = Image.new(mode, (width, height))
        if width * height <= _CACHED_PIXELS:
            images[(mode, width, height)] = im
    try:
        im.frombytes(b"".join(idat), "zip", mode)
    except ValueError:  # bad zlib data or too little of it
        return None
    return np.frombuffer(im.tobytes(), dtype=np.uint8).reshape(height, width, channels)


def _pil_to_array(im, grey_alpha: bool = False) -> np.ndarray:
    # The one image decoder of tfpvae (datasets.load_images reads through it too); modes as in decode_image.
    if grey_alpha and im.mode == "RGBA":
        # Pillow opens a 16-bit grey+alpha PNG as 8-bit RGBA, each of R, G and B the grey.
        arr = np.asarray(im)[..., 0]
    elif im.mode in ("I", "I;16", "I;16B", "I;16L"):
        # 16-bit grey: scale 0..65535 to 0..255; convert("L") would clip above 255 to white.
        arr = np.round(np.asarray(im, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
    elif im.mode in ("L", "LA", "La", "1"):
        arr = np.asarray(im.convert("L"))  # grey, the alpha channel dropped
    elif im.mode in ("P", "PA"):
        palette = im.getpalette()  # flat [r, g, b, r, g, b, ...]
        entries = np.asarray(palette if palette else [0, 0, 0]).reshape(-1, 3)
        grey = bool(np.all(entries == entries[:, :1]))
        arr = np.asarray(im.convert("L" if grey else "RGB"))
    else:
        arr = np.asarray(im.convert("RGB"))
    return arr[..., None] if arr.ndim == 2 else arr


def decode_image(data: bytes, id: str) -> np.ndarray:
    """Decodes one PNG or JPEG image.

    Grey images (1-, 8- or 16-bit, with or without alpha) give one channel, 16-bit values
    scaled to 0..255 (divided by 257, rounded); colour gives three channels, alpha dropped;
    a palette image is grey if every palette entry is grey, else RGB.

    Args:
      data: the encoded image (the file's bytes, or a TFRecord `image` feature).
      id: the record's id, used in the error message.

    Returns:
      uint8 array of shape (height, width, channels), channels 1 or 3; it may be read-only.

    Raises:
      BadRecordError: `data` is not a readable PNG or JPEG image, or has more pixels than
        Pillow's `Image.MAX_IMAGE_PIXELS` (89,478,485 unless changed); `.id` is `id`.
    """
    fast = _decode_plain_png(data, id)
    if fast is not None:
        return fast
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as im:
            limit = Image.MAX_IMAGE_PIXELS or math.inf
            if im.width * im.height > limit:
                # Pillow refuses only twice its limit, and merely warns in between: a few bytes of
                # header then make a 100-million-pixel image, and a batch of them tens of GB.
                raise ValueError(f"{im.width} x {im.height} pixels, more than the limit of {limit}")
            im.load()
            # The PNG's own colour type (IHDR byte 25): 4 is grey with alpha.
            return _pil_to_array(im, grey_alpha=data.startswith(_PNG_SIGNATURE) and data[25:26] == b"\x04")
    except Exception as err:
        # Pillow raises many types on corrupt input (OSError, SyntaxError, struct.error,
        # DecompressionBombError, ...); every one means the same here: this record is bad.
        # Pillow's messages name the in-memory file object by address ("<_io.BytesIO object
        # at 0x7f...>"): drop it, so the same bad record gives the same reason in every run.
        detail = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(err)).strip() or type(err).__name__
        raise BadRecordError(id, f"cannot decode as a PNG or JPEG image ({detail}).") from None


def read_image_file(path: str) -> Iterator[Record]:
    """The one record of a PNG or JPEG file: id `path` exactly as given, no label.

    Args:
      path: the file, local or on any file system `tf.io.gfile` has.

    Yields:
      (id, image, None): one record; image is the uint8 array `decode_image` returns, or the
      `BadRecordError` (id `path`) when the file cannot be read or decoded.
    """
    try:
        with open_binary(path) as f:
            data = f.read()
    except Exception as err:  # OSError locally, tf.errors.OpError through gfile
        yield path, BadRecordError(path, f"cannot read the file ({err})."), None
        return
    try:
        yield path, decode_image(data, path), None
    except BadRecordError as err:
        yield path, err, None
