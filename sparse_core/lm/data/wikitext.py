"""WikiText-2 (Merity et al., 2016; CC BY-SA 3.0), word-level tokenized version ("v1").

The three splits are plain text files ``train.txt``, ``valid.txt``, ``test.txt`` in a folder
``wikitext-2/`` of a *data directory*, in the format of the original ``wiki.*.tokens`` files:
one paragraph per line, blank lines as a single space. They are never stored in this repository.

Where the data directory is (first match wins):

1. the ``data_dir`` argument (``--data-dir`` on the command line);
2. the environment variable ``SPARSE_COURSE_DATA``;
3. ``<course checkout>/../shared/data`` when it holds ``wikitext-2/``;
4. ``~/.cache/sparse_course``.

(1) and (2) are used as given; otherwise the first of (3), (4) holding the three files is used,
and downloads go to (4). Every file is checked against the sha256 below before use. Without
the files, :func:`wikitext2_dir` downloads the dataset with Hugging Face ``datasets`` (the
optional extra ``online``), writes the three files and checks them.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["ENV_VAR", "SPLITS", "SHA256", "data_dir_candidates", "find_wikitext2", "wikitext2_dir", "read_split",
           "rows_to_text", "verify"]

ENV_VAR = "SPARSE_COURSE_DATA"
SPLITS = ("train", "valid", "test")
SHA256 = {
    "train": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
    "valid": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
    "test": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
}
HF_DATASET = ("Salesforce/wikitext", "wikitext-2-v1")
HF_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
_verified: dict[tuple, bool] = {}


def _checkout() -> Path:
    return Path(__file__).resolve().parents[3]


def data_dir_candidates(data_dir: str | os.PathLike | None = None, root: Path | None = None) -> list[Path]:
    """Data directories to search, in order (one only when given explicitly or by the variable)."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    if os.environ.get(ENV_VAR):
        return [Path(os.environ[ENV_VAR]).expanduser()]
    root = _checkout() if root is None else Path(root)
    return [(root.parent / "shared" / "data").resolve(), Path.home() / ".cache" / "sparse_course"]


def _complete(folder: Path) -> bool:
    return all((folder / f"{s}.txt").is_file() for s in SPLITS)


def find_wikitext2(data_dir: str | os.PathLike | None = None, root: Path | None = None) -> Path | None:
    """The ``wikitext-2`` folder holding the three splits, or None (nothing is downloaded)."""
    for base in data_dir_candidates(data_dir, root):
        if _complete(base / "wikitext-2"):
            return base / "wikitext-2"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(folder: Path) -> None:
    """Raise ValueError unless every split in ``folder`` has the expected sha256."""
    for split in SPLITS:
        path = folder / f"{split}.txt"
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if _verified.get(key):
            continue
        got = _sha256(path)
        if got != SHA256[split]:
            raise ValueError(f"{path} has sha256 {got}, expected {SHA256[split]} (WikiText-2 v1 {split}); "
                             "the file is damaged or another version: delete it to download it again")
        _verified[key] = True


def rows_to_text(rows) -> str:
    """Hugging Face ``wikitext-2-v1`` rows -> the original file: each row is one line (its
    trailing newline included); blank rows (``""``) are the original's ``" \\n"`` lines."""
    out = []
    for row in rows:
        line = row[:-1] if row.endswith("\n") else row
        out.append((line if line.strip() else " ") + "\n")
    return "".join(out)


def _download(folder: Path) -> None:
    try:
        import datasets
    except ImportError:
        raise ImportError(
            f"WikiText-2 is not in {folder} and Hugging Face `datasets` is not installed to download it. "
            f"Either install the optional extra (pip install 'sparse-attention-course[online]') and run "
            f"again online, or put train.txt, valid.txt, test.txt in <dir>/wikitext-2/ and set {ENV_VAR}=<dir> "
            "(or pass --data-dir <dir>)") from None
    try:
        ds = datasets.load_dataset(*HF_DATASET)
    except Exception as e:
        raise RuntimeError(f"could not download WikiText-2 ({HF_DATASET[0]}, {HF_DATASET[1]}) with datasets: "
                           f"{type(e).__name__}: {e}. Offline, set {ENV_VAR} to a folder holding "
                           "wikitext-2/{train,valid,test}.txt") from e
    folder.mkdir(parents=True, exist_ok=True)
    for split, hf_split in HF_SPLITS.items():
        tmp = folder / f".{split}.txt.tmp"
        tmp.write_text(rows_to_text(ds[hf_split]["text"]), encoding="utf-8")
        os.replace(tmp, folder / f"{split}.txt")
    verify(folder)


def wikitext2_dir(data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The verified ``wikitext-2`` folder; downloads it when missing and ``download`` is True."""
    found = find_wikitext2(data_dir)
    if found is not None:
        verify(found)
        return found
    candidates = data_dir_candidates(data_dir)
    target = candidates[-1] / "wikitext-2"
    if not download:
        where = ", ".join(str(c / "wikitext-2") for c in candidates)
        raise FileNotFoundError(f"WikiText-2 not found (looked in {where}); set {ENV_VAR} or pass --data-dir")
    _download(target)
    return target


def read_split(split: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> str:
    """The text of one split (``train``, ``valid`` or ``test``)."""
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {', '.join(SPLITS)}, got {split!r}")
    return (wikitext2_dir(data_dir, download) / f"{split}.txt").read_text(encoding="utf-8")
