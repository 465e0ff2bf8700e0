"""The counting baselines of Chapter 9 (sparse_core.lm.ngram) against brute-force probabilities."""
import math

import numpy as np
import pytest

from sparse_core.lm.ngram import bigram_loss, ngram_baselines, unigram_loss


def _kn_table(train, V, D):
    """p(w | v) for every (v, w) by the textbook formula, with Python loops."""
    pairs = list(zip(train[:-1], train[1:]))
    distinct = set(pairs)
    p_cont = [(len({a for a, b in distinct if b == w}) + 1) / (len(distinct) + V) for w in range(V)]
    table = np.zeros((V, V))
    for v in range(V):
        c_v = sum(1 for a, _ in pairs if a == v)
        n_follow = len({b for a, b in distinct if a == v})
        for w in range(V):
            if c_v == 0:
                table[v, w] = p_cont[w]
            else:
                c_vw = sum(1 for p in pairs if p == (v, w))
                table[v, w] = max(c_vw - D, 0) / c_v + D * n_follow / c_v * p_cont[w]
    return table


def test_unigram_is_add_one_smoothed_counts():
    train = np.array([0, 0, 1, 2, 0, 1])
    valid = np.array([3, 0, 1, 3])
    V = 5
    p = [(np.sum(train == w) + 1) / (train.size + V) for w in range(V)]
    expected = -np.mean([math.log(p[w]) for w in valid[1:]])
    assert unigram_loss(train, valid, V) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("D", [0.5, 0.75])
def test_bigram_is_interpolated_kneser_ney_and_a_distribution(D):
    rng = np.random.default_rng(0)
    V = 7
    train = rng.integers(0, V - 1, 60)  # token V-1 never appears: an unseen context and an unseen word
    table = _kn_table(list(train), V, D)
    np.testing.assert_allclose(table.sum(1), 1.0, atol=1e-12)  # every context: a probability distribution
    valid = np.array([V - 1, 2, 3, V - 1, 0, 1, 1, 4])
    expected = -np.mean([math.log(table[v, w]) for v, w in zip(valid[:-1], valid[1:])])
    assert bigram_loss(train, valid, V, discount=D) == pytest.approx(expected, rel=1e-12)


def test_bigram_beats_unigram_on_text_with_structure_and_baselines_report_both():
    rng = np.random.default_rng(1)
    V = 50
    # a Markov chain where each token has 3 likely successors
    succ = rng.integers(0, V, (V, 3))
    seq = [0]
    for _ in range(20000):
        seq.append(int(succ[seq[-1], rng.integers(0, 3)]))
    seq = np.array(seq)
    out = ngram_baselines(seq[:15000], seq[15000:], V)
    assert out["tokens"] == seq[15000:].size - 1
    assert out["bigram"]["ppl"] < 4.0 < out["unigram"]["ppl"]  # about 3 successors against ~V
    assert out["unigram"]["ppl"] == pytest.approx(math.exp(out["unigram"]["loss"]))


@pytest.mark.parametrize("bad, match", [
    (dict(train=np.array([0.5, 1.0])), "`train` must be a 1-D integer array"),
    (dict(valid=np.array([1])), "`valid` must be a 1-D integer array of at least 2 tokens"),
    (dict(valid=np.array([0, 9])), r"`valid` must hold token ids in \[0, 5\)"),
    (dict(discount=1.0), "`discount` must be in"),
])
def test_bad_inputs_name_the_argument(bad, match):
    args = {**dict(train=np.array([0, 1, 2, 1]), valid=np.array([1, 2, 0]), vocab_size=5), **bad}
    with pytest.raises(ValueError, match=match):
        bigram_loss(**args)
