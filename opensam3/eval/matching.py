"""Minimum-cost one-to-one assignment (the Hungarian problem) without scipy.

The official evaluators call scipy.optimize.linear_sum_assignment. When several assignments
have the same total cost, which one is returned changes TP counts at an IoU threshold, so this
module follows the same algorithm as scipy (shortest augmenting paths with dual variables,
Crouse 2016 / Jonker-Volgenant), including its order of visiting columns and its preference
for an unassigned column when path costs tie. Agreement is checked against scipy in
tests/test_eval_matching.py on random and tie-heavy matrices.

Matrices here are small (instances of one image-phrase pair), so plain Python floats are used:
they are IEEE doubles, and the operations are applied in the same order as scipy's C++ code,
so every intermediate value is identical.
"""

from __future__ import annotations

import math

import numpy as np


def linear_sum_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a minimum-cost assignment of a 2-D cost matrix.

    Returns (row_indices, col_indices) sorted by row, of length min(rows, cols), exactly like
    scipy.optimize.linear_sum_assignment(cost).
    """
    matrix = np.asarray(cost, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"cost matrix must be 2-D, got shape {matrix.shape}")
    if np.isnan(matrix).any() or np.isneginf(matrix).any():
        raise ValueError("cost matrix contains NaN or -inf")
    num_rows, num_cols = matrix.shape
    if num_rows == 0 or num_cols == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    transposed = num_cols < num_rows
    if transposed:
        matrix = matrix.T
        num_rows, num_cols = num_cols, num_rows
    costs = matrix.tolist()
    col_for_row = _solve(costs, num_rows, num_cols)
    if transposed:
        # Rows of the original are the columns here; report them in increasing order.
        order = sorted(range(num_rows), key=lambda r: col_for_row[r])
        rows = np.array([col_for_row[r] for r in order], dtype=np.int64)
        cols = np.array(order, dtype=np.int64)
        return rows, cols
    return np.arange(num_rows, dtype=np.int64), np.array(col_for_row, dtype=np.int64)


def _solve(costs: list[list[float]], num_rows: int, num_cols: int) -> list[int]:
    """Assign every row (num_rows <= num_cols) to a distinct column; returns col per row."""
    inf = math.inf
    row_potential = [0.0] * num_rows
    col_potential = [0.0] * num_cols
    col_for_row = [-1] * num_rows
    row_for_col = [-1] * num_cols
    for current_row in range(num_rows):
        path = [-1] * num_cols
        path_cost = [inf] * num_cols
        visited_rows = [False] * num_rows
        visited_cols = [False] * num_cols
        # Columns are scanned from the highest index down, and a scanned column is replaced by
        # the last unscanned one; this order is what decides among equal-cost paths.
        remaining = list(range(num_cols - 1, -1, -1))
        num_remaining = num_cols
        min_value = 0.0
        row = current_row
        sink = -1
        while sink == -1:
            best_pos = -1
            lowest = inf
            visited_rows[row] = True
            row_costs = costs[row]
            u_row = row_potential[row]
            for pos in range(num_remaining):
                col = remaining[pos]
                reduced = min_value + row_costs[col] - u_row - col_potential[col]
                if reduced < path_cost[col]:
                    path[col] = row
                    path_cost[col] = reduced
                candidate = path_cost[col]
                if candidate < lowest or (candidate == lowest and row_for_col[col] == -1):
                    lowest = candidate
                    best_pos = pos
            min_value = lowest
            if min_value == inf:
                raise ValueError("cost matrix is infeasible")
            col = remaining[best_pos]
            if row_for_col[col] == -1:
                sink = col
            else:
                row = row_for_col[col]
            visited_cols[col] = True
            num_remaining -= 1
            remaining[best_pos] = remaining[num_remaining]
        # Update the dual variables so that reduced costs stay non-negative.
        row_potential[current_row] += min_value
        for r in range(num_rows):
            if visited_rows[r] and r != current_row:
                row_potential[r] += min_value - path_cost[col_for_row[r]]
        for c in range(num_cols):
            if visited_cols[c]:
                col_potential[c] -= min_value - path_cost[c]
        # Flip the augmenting path.
        col = sink
        while True:
            r = path[col]
            row_for_col[col] = r
            col_for_row[r], col = col, col_for_row[r]
            if r == current_row:
                break
    return col_for_row
