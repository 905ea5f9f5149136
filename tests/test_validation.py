"""Public-boundary checks: each bad input gets a ValueError/TypeError naming the argument."""

import numpy as np
import pytest

from tfpvae._validation import check_choice, check_float, check_images, check_int, check_labels


def test_uint8_is_scaled_and_float_passes_through():
    x = np.array([[[0, 128, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(check_images(x)[..., 0], [[[0, 128 / 255, 1]]], rtol=1e-7)
    f = np.random.default_rng(0).random((2, 3, 3, 1)).astype(np.float32)
    np.testing.assert_array_equal(check_images(f), f)


def test_shapes_and_flags_accept_array_like_values():
    from tfpvae._keras import tf
    from tfpvae._validation import check_bool, check_shape

    for shape in ((8, 8, 1), [8, 8, 1], np.array([8, 8, 1]), tf.TensorShape([8, 8, 1])):
        assert check_shape(shape, "image_shape") == (8, 8, 1)
    for bad in ("881", (8, 8), 8):
        with pytest.raises(ValueError, match="`image_shape` must be"):
            check_shape(bad, "image_shape")
    with pytest.raises(TypeError, match=r"`image_shape\[2\]`"):
        check_shape(tf.TensorShape([8, 8, None]), "image_shape")
    assert check_bool(np.bool_(True), "flag") is True and check_bool(None, "flag", allow_none=True) is None
    with pytest.raises(TypeError, match="`flag` must be True or False; got 1"):
        check_bool(1, "flag")


def test_one_image_is_named_as_such():
    with pytest.raises(ValueError, match=r"`x` is one image of shape \(8, 8, 1\); pass a batch .* e.g. x\[None\]"):
        check_images(np.zeros((8, 8, 1)), "x", image_shape=(8, 8, 1))
    # (1, H, W) images are a batch of one (n, H, W) when H = 1 cannot be told apart: left alone.
    assert check_images(np.zeros((1, 8, 8)), "x", image_shape=(8, 8, 1)).shape == (1, 8, 8, 1)


def test_rank_3_gets_a_channel_axis():
    assert check_images(np.zeros((2, 4, 4)), image_shape=(4, 4, 1)).shape == (2, 4, 4, 1)
    # Not for a colour model: the message says how many channels it takes.
    message = r"`x` must have shape \(n, 4, 4, 3\): the model takes 3 channels; got shape \(2, 4, 4\), single-channel"
    with pytest.raises(ValueError, match=message):
        check_images(np.zeros((2, 4, 4)), "x", image_shape=(4, 4, 3))
    with pytest.raises(ValueError, match=r"must have shape \(n, height, width, channels\) or \(n, height, width\)"):
        check_images(np.zeros((28, 28, 3)), "x", image_shape=(32, 32, 3))  # not grey: one image of another size


@pytest.mark.parametrize(
    "x,exc,match",
    [
        (np.zeros((4, 4)), ValueError, r"`x` must have shape \(n, height, width, channels\)"),
        (np.zeros((0, 8, 8, 1)), ValueError, "`x` is empty"),
        (np.full((1, 8, 8, 1), np.nan), ValueError, "NaN or Inf"),
        (np.full((1, 8, 8, 1), np.inf), ValueError, "NaN or Inf"),
        (np.full((1, 8, 8, 1), 3.0), ValueError, r"must lie in \[0, 1\].*got range \[3, 3\]"),
        (np.full((1, 8, 8, 1), -0.1), ValueError, r"must lie in \[0, 1\]"),
        (np.full((1, 8, 8, 1), 200, np.int64), ValueError, r"int64 pixel values must lie in \[0, 1\] \(only uint8"),
        (np.array([["a"]]), TypeError, "numeric dtype"),
        (np.zeros((1, 7, 8, 1)), ValueError, r"must have shape \(8, 8, 1\) to match the model; got \(7, 8, 1\)"),
    ],
)
def test_bad_images(x, exc, match):
    with pytest.raises(exc, match=match):
        check_images(x, "x", image_shape=(8, 8, 1))


def test_scalar_checks():
    with pytest.raises(ValueError, match="`num_samples` must be an int >= 1; got 0"):
        check_int(0, "num_samples")
    with pytest.raises(TypeError, match="`epochs` must be an int"):
        check_int(True, "epochs")
    with pytest.raises(ValueError, match=r"`seed` must be an int in \[0, 9\]; got 10"):
        check_int(10, "seed", minimum=0, maximum=9)
    with pytest.raises(ValueError, match=r"`temperature` must be a finite number > 0.0; got 0.0"):
        check_float(0.0, "temperature", minimum=0.0, min_inclusive=False)
    with pytest.raises(ValueError, match=r"`rate` must be a finite number in \[0.0, 1.0\); got 1.0"):
        check_float(1.0, "rate", minimum=0.0, maximum=1.0, max_inclusive=False)
    with pytest.raises(ValueError, match=r"`shift` must be a finite number <= 2.0; got inf"):
        check_float(float("inf"), "shift", maximum=2.0)
    assert check_float(0.5, "rate", minimum=0.0, maximum=1.0, max_inclusive=False) == 0.5
    with pytest.raises(ValueError, match="`score` must be one of 'a', 'b'; got 'c'"):
        check_choice("c", "score", ["a", "b"])


# --------------------------------------------------------------------------- found by tests/test_fuzz.py


def test_complex_and_duration_pixels_are_not_numeric():
    # numpy counts both as numbers: complex pixels lost their imaginary part (with a ComplexWarning).
    for dtype in (np.complex64, "m8[s]"):
        with pytest.raises(TypeError, match=r"`x` must have a numeric dtype \(bool, int, uint or float\)"):
            check_images(np.zeros((1, 2, 2), dtype=dtype))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_images_without_pixels_are_refused_naming_the_argument(dtype):
    # Float ones raised numpy's "zero-size array to reduction operation", uint8 ones were accepted.
    with pytest.raises(ValueError, match=r"`x` images must have a positive height, width and channels; got shape"):
        check_images(np.zeros((2, 0, 5), dtype=dtype))


def test_float64_beyond_float32_is_out_of_range_not_inf():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cast to float32 overflowed with a RuntimeWarning
        with pytest.raises(ValueError, match=r"`x` float pixel values must lie in \[0, 1\].*got range \[0, 1e\+300\]"):
            check_images(np.array([[[0.0, 1e300]]]))


def test_huge_ints_and_ragged_labels_are_refused_naming_the_argument():
    with pytest.raises(ValueError, match="`beta` must be a finite number >= 0.0; got inf"):
        check_float(10**400, "beta", minimum=0.0)  # was OverflowError
    with pytest.raises(ValueError, match=r"`seed` must be an int in \[0, 9\]; got <an int of 16610 bits>"):
        check_int(10**5000, "seed", minimum=0, maximum=9)  # printing the int raised ValueError
    with pytest.raises(ValueError, match=r"`labels` must be an array of shape \(2,\), one per image; could not"):
        check_labels([[1], [1, 2]], 2)
    with pytest.raises(ValueError, match="`score` must be one of 'a'; got <a list that cannot be shown>"):
        check_choice([10**5000], "score", ["a"])
