import numpy as np

from tfpvae._class_labels import class_name, distinct_classes


def test_distinct_classes_are_in_natural_order_with_their_first_rows():
    found, first = distinct_classes(np.array([3, 10, 2, 3, 10]))
    np.testing.assert_array_equal(found, [2, 3, 10])
    np.testing.assert_array_equal(first, [2, 0, 1])
    found, first = distinct_classes(np.array(["10", "9", "x2", "x10", "9", "x", "10"]))
    assert found.tolist() == ["9", "10", "x", "x2", "x10"]
    np.testing.assert_array_equal(first, [1, 0, 5, 2, 3])
    found, _ = distinct_classes(np.array(["b", "B", "a"]))  # no digits: as np.unique sorts them
    assert found.tolist() == ["B", "a", "b"]


def test_natural_order_of_odd_labels():
    # An object array of str (a pandas column) sorts as a str array does.
    found, first = distinct_classes(np.array(["10", "2", "1", "2"], dtype=object))
    assert found.tolist() == ["1", "2", "10"] and first.tolist() == [2, 1, 0]
    # Runs longer than int() takes, leading zeros, and digits that are not decimal ("²").
    long = "9" * 5000
    found, _ = distinct_classes(np.array([long, "1" + long, "007", "10²", "2", "10"]))
    assert found.tolist() == ["2", "007", "10", "10²", long, "1" + long]
    found, _ = distinct_classes(np.array([b"10", b"9"]))  # bytes: natural too
    assert found.tolist() == [b"9", b"10"]


def test_class_name_reads_the_mapping_by_the_label_value():
    assert class_name(np.int64(2), {2: "pullover"}) == "pullover"
    assert class_name(np.int64(3), {2: "pullover"}) == "3"
    assert class_name("7", None) == "7"
