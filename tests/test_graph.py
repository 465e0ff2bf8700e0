"""sparse_core.patterns.graph: distances, diameter, degrees and connectivity of attention graphs."""
import math
from collections import deque

import numpy as np
import pytest

from sparse_core.patterns import bigbird, causal, longformer, sliding_window
from sparse_core.patterns import graph
from sparse_core.patterns.plots import hops


def _bfs_distances(m):
    """Textbook BFS from every position (independent of the bit-parallel implementation)."""
    n = m.shape[0]
    out = np.full((n, n), -1)
    for s in range(n):
        out[s, s] = 0
        queue = deque([s])
        while queue:
            u = queue.popleft()
            for v in np.flatnonzero(m[u]):
                if out[s, v] < 0:
                    out[s, v] = out[s, u] + 1
                    queue.append(v)
    return out


@pytest.mark.parametrize("seed,n,density", [(0, 1, 0.5), (1, 7, 0.2), (2, 40, 0.05), (3, 130, 0.02), (4, 70, 0.3)])
def test_distances_match_textbook_bfs(seed, n, density):
    m = np.random.default_rng(seed).random((n, n)) < density
    assert np.array_equal(graph.distances(m), _bfs_distances(m))


@pytest.mark.parametrize("pattern", [sliding_window(2), longformer(3, [0, 17]), causal(),
                                     bigbird(96, 4, num_random_blocks=2, seed=3)])
def test_distances_equal_hops_of_the_pattern(pattern):
    n = 96
    assert np.array_equal(graph.distances(pattern.to_dense(n, n)[0]), hops(pattern, n))


@pytest.mark.parametrize("n,w", [(1, 0), (2, 1), (10, 1), (33, 4), (100, 7)])
def test_window_diameter_closed_form(n, w):
    m = sliding_window(w).to_dense(n, n)[0]
    assert graph.diameter(m) == (math.ceil((n - 1) / w) if w else 0)
    assert graph.is_connected(m)


def test_global_token_gives_diameter_two_and_causal_is_disconnected():
    n = 50
    assert graph.diameter(longformer(1, [25]).to_dense(n, n)[0]) == 2
    m = causal().to_dense(n, n)[0]
    assert graph.diameter(m) == -1 and not graph.is_connected(m)
    assert graph.diameter(np.zeros((1, 1), dtype=bool)) == 0  # one position: distance 0 to itself


def test_degrees():
    n = 20
    m = longformer(2, [0]).to_dense(n, n)[0]
    out_deg, in_deg = graph.degrees(m)
    assert out_deg[0] == n and in_deg[0] == n
    assert out_deg[10] == 5 + 1 and in_deg[10] == 5 + 1
    assert out_deg.dtype == np.int64 and np.array_equal(out_deg, in_deg)  # symmetric mask


def test_bad_masks_are_rejected():
    with pytest.raises(ValueError, match="square"):
        graph.diameter(np.ones((3, 4), dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        graph.distances(np.ones((3, 3)))
    assert graph.diameter(np.ones((1, 5, 5), dtype=bool)) == 1  # a one-head pattern mask is accepted
