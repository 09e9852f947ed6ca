import pytest
import torch

from mnv2core.companion.separation import (
    center_separation_index,
    greedy_feature_selection,
    layers_to_keep,
    separation_index,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _two_clusters(n_per_class=50, d=8, seed=0):
    g = _gen(seed)
    a = torch.randn(n_per_class, d, generator=g)
    b = torch.randn(n_per_class, d, generator=g) + 20.0
    labels = torch.cat([torch.zeros(n_per_class), torch.ones(n_per_class)]).long()
    return torch.cat([a, b]), labels


def test_well_separated_clusters_have_si_one():
    x, y = _two_clusters()
    assert separation_index(x, y) == 1.0
    assert center_separation_index(x, y) == 1.0


def test_alternating_labels_on_a_line_have_si_zero():
    n = 20
    i = torch.arange(n, dtype=torch.float64)
    positions = (i + 0.01 * i**2)[:, None]  # growing gaps: every nearest neighbour is unique
    labels = torch.arange(n) % 2
    assert separation_index(positions, labels) == 0.0


def test_hand_computed_example():
    # A(0,0) and B(1,0) are each other's neighbours (class 0, same); C(10,0) class 1 and
    # D(11,0) class 0 are each other's neighbours (different) -> SI = 2/4.
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0]])
    y = torch.tensor([0, 0, 1, 0])
    assert separation_index(x, y) == 0.5
    # Centres: class 0 at (4,0), class 1 at (10,0); only D (11,0) is closer to the wrong centre.
    assert center_separation_index(x, y) == 0.75


def test_chunk_size_does_not_change_the_result_and_matches_a_brute_force_reference():
    g = _gen(1)
    x = torch.randn(53, 5, generator=g)
    y = torch.randint(0, 3, (53,), generator=g)
    dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1).double()
    dist.fill_diagonal_(float("inf"))
    expected = (y[dist.argmin(dim=1)] == y).double().mean().item()
    assert separation_index(x, y, chunk=1) == separation_index(x, y, chunk=3) == expected
    assert separation_index(x, y, chunk=1024) == expected
    assert 0.0 < expected < 1.0


def test_features_of_any_shape_are_flattened():
    g = _gen(2)
    x = torch.randn(30, 2, 3, generator=g)
    y = torch.randint(0, 2, (30,), generator=g)
    assert separation_index(x, y) == separation_index(x.reshape(30, 6), y)
    assert center_separation_index(x, y) == center_separation_index(x.reshape(30, 6), y)


def _one_good_column(good=3, c=6, n=60, seed=3):
    g = _gen(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, c, generator=g)
    x[:, good] = 10.0 * y + 0.1 * torch.randn(n, generator=g)
    return x, y


def test_greedy_selection_finds_the_separating_column_and_stops_without_gain():
    x, y = _one_good_column()
    assert greedy_feature_selection(x, y, max_features=6, min_gain=0.01) == [(3, 1.0)]


def test_greedy_selection_respects_max_features_and_reports_the_true_si():
    x, y = _one_good_column()
    picked = greedy_feature_selection(x, y, max_features=4, min_gain=-1.0, candidate_chunk=2)
    assert len(picked) == 4 and picked[0] == (3, 1.0)
    assert len({j for j, _ in picked}) == 4
    for k in range(1, len(picked) + 1):
        columns = [j for j, _ in picked[:k]]
        assert picked[k - 1][1] == separation_index(x[:, columns], y)
    # Asking for more features than columns selects every column once.
    assert sorted(j for j, _ in greedy_feature_selection(x, y, max_features=10, min_gain=-1.0)) == list(range(6))


def test_greedy_selection_candidate_chunk_does_not_change_the_result():
    g = _gen(4)
    x = torch.randn(40, 7, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    assert (greedy_feature_selection(x, y, 3, min_gain=-1.0, candidate_chunk=1)
            == greedy_feature_selection(x, y, 3, min_gain=-1.0, candidate_chunk=32))


def test_greedy_selection_breaks_ties_by_lowest_index():
    x, y = _one_good_column(good=4)
    x[:, 1] = x[:, 4]  # two identical perfect columns
    assert greedy_feature_selection(x, y, max_features=1)[0] == (1, 1.0)


def test_layers_to_keep():
    assert layers_to_keep([0.3, 0.5, 0.8, 0.805, 0.79], min_gain=0.01) == 3
    assert layers_to_keep([0.3, 0.5], min_gain=0.0) == 2
    assert layers_to_keep([0.1, 0.3, 0.6, 0.9], min_gain=0.05) == 4
    assert layers_to_keep([0.9, 0.5, 0.2], min_gain=0.0) == 1
    with pytest.raises(ValueError):
        layers_to_keep([], min_gain=0.0)


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="at least 2"):
        separation_index(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        separation_index(torch.zeros(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        center_separation_index(torch.zeros(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError):
        greedy_feature_selection(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), max_features=2)
