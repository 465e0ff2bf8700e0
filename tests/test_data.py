"""WikiText-2 loading (data directory order, checksums, the download path), the BPE tokenizer, and
contiguous batching. Tests that need the data skip with a reason when it is absent."""
import sys
import types

import numpy as np
import pytest
import torch

from sparse_core.lm.data import TokenBatches, eval_batches, tokenizer as T, wikitext as W

DATA = W.find_wikitext2()
needs_data = pytest.mark.skipif(DATA is None, reason="WikiText-2 not found (set SPARSE_COURSE_DATA to a folder "
                                                     "holding wikitext-2/{train,valid,test}.txt)")


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(W.ENV_VAR, raising=False)


def test_data_dir_order(tmp_path, monkeypatch, no_env):
    root = tmp_path / "checkout"
    assert W.data_dir_candidates(root=root) == [(tmp_path / "shared" / "data").resolve(),
                                                W.Path.home() / ".cache" / "sparse_course"]
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path / "env"))
    assert W.data_dir_candidates(root=root) == [tmp_path / "env"]
    assert W.data_dir_candidates(tmp_path / "arg", root=root) == [tmp_path / "arg"]
    assert W.find_wikitext2(root=root) is None  # nothing there
    (tmp_path / "env" / "wikitext-2").mkdir(parents=True)
    for s in W.SPLITS[:2]:
        (tmp_path / "env" / "wikitext-2" / f"{s}.txt").write_text("x")
    assert W.find_wikitext2(root=root) is None  # incomplete
    (tmp_path / "env" / "wikitext-2" / "test.txt").write_text("x")
    assert W.find_wikitext2(root=root) == tmp_path / "env" / "wikitext-2"
    with pytest.raises(ValueError, match="sha256"):
        W.wikitext2_dir()


def test_missing_data_offline_errors(tmp_path, monkeypatch):
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="SPARSE_COURSE_DATA"):
        W.wikitext2_dir(download=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the 'online' extra were not installed
    with pytest.raises(ImportError, match=r"online.*SPARSE_COURSE_DATA"):
        W.read_split("valid")
    with pytest.raises(ValueError, match="split"):
        W.read_split("dev")


@needs_data
def test_shared_copy_is_verified_wikitext2():
    W.verify(DATA)
    text = W.read_split("train", DATA.parent)
    assert text.startswith(" \n = Valkyria Chronicles III = \n")
    assert text.count("\n") == 36718
    assert len(W.read_split("valid", DATA.parent).split()) + 3760 == 217646  # README: words + one <eos> per line


@needs_data
def test_download_path_writes_files_with_the_right_checksums(tmp_path, monkeypatch):
    """A stand-in for `datasets` serves rows the way the Hugging Face dataset stores them (one row
    per line, blank lines as empty strings); the writer must rebuild the exact original files."""
    def rows(split):
        return ["" if not line.strip() else line for line in W.read_split(split, DATA.parent).splitlines(True)]

    fake = types.ModuleType("datasets")
    calls = []

    def load_dataset(name, config):
        calls.append((name, config))
        return {"train": {"text": rows("train")}, "validation": {"text": rows("valid")}, "test": {"text": rows("test")}}

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path))
    folder = W.wikitext2_dir()
    assert calls == [W.HF_DATASET] and folder == tmp_path / "wikitext-2"
    for s in W.SPLITS:
        assert W._sha256(folder / f"{s}.txt") == W.SHA256[s]
    corrupt = folder / "valid.txt"
    corrupt.write_bytes(corrupt.read_bytes().replace(b"the", b"teh", 1))
    with pytest.raises(ValueError, match="valid.txt has sha256"):
        W.verify(folder)


# ------------------------------------------------------------------ tokenizer

@needs_data
def test_bpe_is_deterministic_and_lossless():
    lines = W.read_split("train", DATA.parent).splitlines(keepends=True)[:3000]
    a, b = T.train_bpe(lines, 600), T.train_bpe(lines, 600)
    assert a.get_vocab_size() == 600
    assert a.to_str() == b.to_str()
    valid = W.read_split("valid", DATA.parent)[:20000]
    ids = T.encode_lines(a, valid)
    assert ids.dtype == np.int32 and 0 <= ids.min() and ids.max() < 600
    assert a.decode(ids.tolist()) == valid  # byte-level BPE loses nothing, <unk> and non-Latin text included
    assert len(ids) < len(valid.encode("utf-8"))  # merges shorten the stream
    with pytest.raises(ValueError, match="vocab_size"):
        T.train_bpe(lines, 100)


@needs_data
def test_tokenizer_and_encoded_splits_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(T.CACHE_ENV_VAR, str(tmp_path))
    tok = T.load_or_train_tokenizer(1000, DATA.parent)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and "1000" in files[0]
    again = T.load_or_train_tokenizer(1000, DATA.parent)
    assert again.to_str() == tok.to_str()
    ids = T.encode_split(tok, "valid", DATA.parent)
    assert len(list(tmp_path.iterdir())) == 2
    np.testing.assert_array_equal(T.encode_split(tok, "valid", DATA.parent), ids)
    assert tok.decode(ids[:5000].tolist()) == W.read_split("valid", DATA.parent)[:len(tok.decode(ids[:5000].tolist()))]


# ------------------------------------------------------------------ batching

def test_batches_are_shifted_contiguous_and_cover_each_epoch():
    tokens = np.arange(1000, dtype=np.int32)
    b = TokenBatches(tokens, seq_len=16, batch_size=4, seed=3)
    assert b.n_sequences == 62 and b.steps_per_epoch == 15
    seen = []
    for step in range(b.steps_per_epoch):
        x, y = b.batch(step)
        assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
        assert torch.equal(y, x + 1)  # targets are the next tokens
        assert torch.equal(x[:, 0] % 16, torch.zeros(4, dtype=torch.int64))  # sequences start on the grid
        seen += (x[:, 0] // 16).tolist()
    assert len(set(seen)) == len(seen) == 60  # no sequence twice in an epoch
    # a fresh object (a resumed run) gives the same batch for the same step; epochs differ
    again = TokenBatches(tokens, 16, 4, seed=3)
    assert torch.equal(again.batch(7)[0], b.batch(7)[0])
    assert not torch.equal(b.batch(0)[0], b.batch(15)[0])
    assert not torch.equal(TokenBatches(tokens, 16, 4, seed=4).batch(0)[0], b.batch(0)[0])


def test_eval_batches_in_order():
    tokens = np.arange(100, dtype=np.int64)
    batches = list(eval_batches(tokens, 10, 4))
    assert [x.shape[0] for x, _ in batches] == [4, 4, 1]  # (100 - 1) // 10 = 9 sequences
    x = torch.cat([x for x, _ in batches])
    assert torch.equal(x[:, 0], torch.arange(0, 90, 10))
    assert [x.shape[0] for x, _ in eval_batches(tokens, 10, 4, max_batches=1)] == [4]
    with pytest.raises(ValueError, match="seq_len"):
        list(eval_batches(tokens, 0, 4))
    with pytest.raises(ValueError, match="fewer than one batch"):
        TokenBatches(tokens, 30, 4)
    with pytest.raises(ValueError, match="tokens"):
        TokenBatches(np.zeros((2, 50), dtype=np.int64), 5, 1)
