"""scripts/fetch_vendor.py: pinned npm tarballs, checked by sha512, cached, files copied."""
import importlib.util
import io
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("fetch_vendor", ROOT / "scripts" / "fetch_vendor.py")
fv = importlib.util.module_from_spec(spec)
sys.modules["fetch_vendor"] = fv  # dataclasses look their module up there
spec.loader.exec_module(fv)


def _tgz(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _package(data: bytes, files=("dist/a.js",)):
    return fv.Package("demo", "1.0.0", fv._integrity(data), "demo-1.0.0", files)


def test_download_check_cache_and_copy(tmp_path):
    data = _tgz({"dist/a.js": b"console.log(1)", "dist/b.js": b"x"})
    src = tmp_path / "demo.tgz"
    src.write_bytes(data)
    pkg = _package(data)
    written = fv.install(pkg, tmp_path / "vendor", tmp_path / "cache", url=src.as_uri())
    assert [p.name for p in written] == ["a.js"]
    assert (tmp_path / "vendor" / "demo-1.0.0" / "a.js").read_bytes() == b"console.log(1)"
    assert not (tmp_path / "vendor" / "demo-1.0.0" / "b.js").exists()
    src.unlink()  # second time: from the cache, no download
    fv.install(pkg, tmp_path / "vendor2", tmp_path / "cache", url=src.as_uri())
    assert (tmp_path / "vendor2" / "demo-1.0.0" / "a.js").read_bytes() == b"console.log(1)"


def test_wrong_integrity_is_refused_and_not_cached(tmp_path):
    good, bad = _tgz({"dist/a.js": b"good"}), _tgz({"dist/a.js": b"evil"})
    src = tmp_path / "demo.tgz"
    src.write_bytes(bad)
    with pytest.raises(RuntimeError, match="does not match the pinned sha512"):
        fv.install(_package(good), tmp_path / "vendor", tmp_path / "cache", url=src.as_uri())
    assert not (tmp_path / "cache" / "demo-1.0.0.tgz").exists()


def test_damaged_cache_is_fetched_again(tmp_path):
    data = _tgz({"dist/a.js": b"ok"})
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "demo-1.0.0.tgz").write_bytes(data[:20])
    src = tmp_path / "demo.tgz"
    src.write_bytes(data)
    fv.install(_package(data), tmp_path / "vendor", tmp_path / "cache", url=src.as_uri())
    assert (tmp_path / "cache" / "demo-1.0.0.tgz").read_bytes() == data


def test_unreachable_and_missing_file_errors_name_the_package(tmp_path):
    data = _tgz({"dist/a.js": b"ok"})
    with pytest.raises(RuntimeError, match=r"demo@1\.0\.0: cannot download"):
        fv.install(_package(data), tmp_path / "v", tmp_path / "c", url=(tmp_path / "absent.tgz").as_uri())
    src = tmp_path / "demo.tgz"
    src.write_bytes(data)
    with pytest.raises(RuntimeError, match="no file package/dist/missing.js"):
        fv.install(_package(data, ("dist/missing.js",)), tmp_path / "v", tmp_path / "c", url=src.as_uri())


def test_pins_are_what_the_book_config_loads():
    config = (ROOT / "_config.yml").read_text()
    for pkg in fv.PACKAGES:
        js = [f for f in pkg.files if f.endswith(".js")][0]
        assert f"vendor/{pkg.folder}/{Path(js).name}" in config
