"""The representation measures against known answers (issue 15)."""

import numpy as np
import pytest

from tfprobe.reference.measures import (
    cka_matrix,
    cka_noise_floor,
    effective_rank,
    label_mutual_information,
    linear_cka,
    linear_probe,
    probe_accuracy,
    stable_rank,
)

rng = np.random.default_rng(1234)


def low_rank(n, d, k, seed=0):
    g = np.random.default_rng(seed)
    q_left, _ = np.linalg.qr(g.normal(size=(n, k)))
    q_right, _ = np.linalg.qr(g.normal(size=(d, k)))
    q_left -= q_left.mean(axis=0)  # centred, so the k singular values stay equal after centring
    q_left, _ = np.linalg.qr(q_left)
    return q_left @ q_right.T * 10.0


def test_cka_is_one_under_rotation_scaling_and_offset():
    x = rng.normal(size=(200, 30))
    q, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, -3.5 * x + 7.0) == pytest.approx(1.0, abs=1e-9)
    wide = rng.normal(size=(40, 300))  # D > N: the example-space route
    q, _ = np.linalg.qr(rng.normal(size=(300, 300)))
    assert linear_cka(wide, 2 * wide @ q + 1) == pytest.approx(1.0, abs=1e-9)


def test_cka_of_independent_features_is_the_documented_noise_floor():
    n, d = 2000, 10
    values = [linear_cka(rng.normal(size=(n, d)), rng.normal(size=(n, d))) for _ in range(5)]
    floor = cka_noise_floor(n, d, d)
    assert 0.5 * floor < np.mean(values) < 1.5 * floor < 0.02
    # the bias grows with the width: near 0 is a finite-N statement
    assert linear_cka(rng.normal(size=(100, 200)), rng.normal(size=(100, 200))) > 0.5


def test_cka_routes_agree_and_the_matrix_matches_pairs():
    a, b = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + rng.normal(size=(30, 1))
    wide = np.c_[a, rng.normal(size=(30, 60))]
    m = cka_matrix([a, b, wide])
    assert m.shape == (3, 3) and np.allclose(np.diag(m), 1.0) and np.allclose(m, m.T)
    assert m[0, 1] == pytest.approx(linear_cka(a, b)) and m[0, 2] == pytest.approx(linear_cka(a, wide))
    assert np.isnan(linear_cka(a, np.ones((30, 2))))


@pytest.mark.parametrize("k", [1, 3, 10])
def test_effective_rank_of_a_rank_k_matrix_is_k(k):
    assert effective_rank(low_rank(300, 50, k)) == pytest.approx(k, rel=0.05)
    assert effective_rank(low_rank(20, 500, k)) == pytest.approx(k, rel=0.05)  # D > N


def test_effective_rank_of_isotropic_gaussian_data_is_close_to_full():
    assert effective_rank(rng.normal(size=(5000, 20))) > 0.95 * 20
    assert effective_rank(rng.normal(size=(20, 5000))) > 0.95 * 19  # centring removes one of N directions
    assert effective_rank(np.ones((10, 4))) == 0.0


def test_stable_rank():
    assert stable_rank(np.outer(rng.normal(size=50), rng.normal(size=8))) == pytest.approx(1.0)
    assert stable_rank(low_rank(100, 20, 4)) == pytest.approx(4.0, rel=1e-6)
    assert 1.0 <= stable_rank(rng.normal(size=(100, 6))) <= 6.0


def test_probe_is_perfect_on_separable_data_and_at_chance_on_random_labels():
    y = rng.integers(0, 5, size=600)
    centres = rng.normal(size=(5, 16)) * 10
    separable = centres[y] + rng.normal(size=(600, 16))
    assert probe_accuracy(separable, y) == 1.0
    random_labels = rng.integers(0, 5, size=600)
    assert abs(probe_accuracy(separable, random_labels) - 0.2) < 0.08
    one_hot = np.eye(5)[y]
    assert probe_accuracy(separable, one_hot) == 1.0  # one-hot labels are read as classes


def test_label_information_is_bounded_by_h_y_and_tracks_what_the_features_encode():
    y = rng.integers(0, 8, size=800)
    h_y = linear_probe(rng.normal(size=(800, 4)), y).label_entropy
    assert h_y == pytest.approx(3.0, abs=0.02)
    encoding = np.eye(8)[y] * 5 + 0.1 * rng.normal(size=(800, 8))
    noise = rng.normal(size=(800, 32))
    informative, uninformative = label_mutual_information(encoding, y), label_mutual_information(noise, y)
    assert 0.9 * h_y < informative <= h_y
    assert 0.0 <= uninformative < 0.1
    partial = label_mutual_information(encoding[:, :4] + 0.5 * rng.normal(size=(800, 4)), y)  # half the classes
    assert uninformative < partial < informative


def test_the_probe_split_is_fixed():
    x, y = rng.normal(size=(100, 3)), rng.integers(0, 2, size=100)
    assert linear_probe(x, y) == linear_probe(x, y)
    r = linear_probe(x, y, test_fraction=0.5)
    assert (r.n_train, r.n_test) == (50, 50)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: effective_rank(np.ones(1)), r"N >= 2 .*shape \(1, 1\)"),
        (lambda: stable_rank(np.full((3, 2), np.nan)), "finite"),
        (lambda: linear_cka(np.ones((3, 2)), np.ones((4, 2))), "3 and 4 rows"),
        (lambda: probe_accuracy(np.ones((5, 2)), np.arange(4)), "one class label per example"),
        (lambda: probe_accuracy(np.ones((5, 2)), np.linspace(0, 1, 5)), "class labels"),
    ],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
