"""Hungarian assignment: hand cases and scipy's choices among equal-cost assignments."""

import numpy as np

from opensam3.eval.matching import linear_sum_assignment


def test_hand_case_prefers_total_over_greedy():
    # Greedy would take 0.9 then be left with 0.1; the optimum is 0.8 + 0.7.
    ious = np.array([[0.9, 0.8], [0.7, 0.1]])
    rows, cols = linear_sum_assignment(-ious)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]


def test_rectangular_shapes_and_empty():
    rows, cols = linear_sum_assignment(-np.array([[0.1], [0.9], [0.5]]))
    assert rows.tolist() == [1] and cols.tolist() == [0]
    rows, cols = linear_sum_assignment(np.zeros((0, 3)))
    assert rows.size == 0 and cols.size == 0


def test_ties_resolved_like_scipy():
    # Expected values from scipy.optimize.linear_sum_assignment (reference venv, scipy 1.x).
    cases = [
        (np.zeros((2, 2)), ([0, 1], [0, 1])),
        (-np.ones((2, 3)), ([0, 1], [0, 1])),
        (-np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]), ([0, 1], [0, 1])),
        (-np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]), ([0, 1], [0, 1])),
    ]
    for cost, (want_rows, want_cols) in cases:
        rows, cols = linear_sum_assignment(cost)
        assert rows.tolist() == want_rows and cols.tolist() == want_cols


def test_optimal_on_random_matrices_by_brute_force():
    from itertools import permutations

    rng = np.random.default_rng(0)
    for _ in range(50):
        cost = rng.random((4, 4))
        rows, cols = linear_sum_assignment(cost)
        best = min(sum(cost[i, p[i]] for i in range(4)) for p in permutations(range(4)))
        assert abs(cost[rows, cols].sum() - best) < 1e-12
