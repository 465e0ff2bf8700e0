"""Put the browser scripts the built book serves itself into ``_static/vendor/`` (not committed).

The book works offline because every script a page loads comes from the site itself (see
``_static/vendor/README.md``). Two of them are published npm packages; this script downloads their
pinned tarballs from the npm registry once, checks each against the registry's sha512 integrity,
keeps it in ``~/.cache/sparse-course/vendor/`` (``$SPARSE_COURSE_CACHE/vendor`` if set) and copies
the files the book needs. ``scripts/book.sh`` runs it before every build; with the tarballs cached,
it needs no network.

    .venv/bin/python scripts/fetch_vendor.py
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Package:
    name: str              # npm package name
    version: str
    integrity: str         # the registry's "sha512-<base64>" of the tarball
    folder: str            # under _static/vendor/
    files: tuple[str, ...]  # paths inside the tarball (below package/), copied flat into folder

    @property
    def url(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name.split('/')[-1]}-{self.version}.tgz"


PACKAGES = (
    Package("requirejs", "2.3.8",
            "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
            "requirejs-2.3.8", ("require.js",)),
    Package("@jupyter-widgets/html-manager", "1.0.15",
            "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
            "html-manager-1.0.15",
            ("dist/embed-amd.js", "dist/embed.js.LICENSE.txt",
             # the icon fonts the embedder's CSS names (woff2 first, woff as the fallback)
             "dist/1551f4f60c37af51121f.woff2", "dist/7a3337626410ca2f4071.woff2", "dist/d878b0a6a1144760244f.woff2",
             "dist/2285773e6b4b172f07d9.woff", "dist/bb58e57c48a3e911f15f.woff", "dist/eeccf4f66002c6f2ba24.woff")),
)


def cache_dir() -> Path:
    base = os.environ.get("SPARSE_COURSE_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "sparse-course") / "vendor"


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def tarball(pkg: Package, cache: Path, url: str | None = None) -> bytes:
    """The package's tarball, from the cache or downloaded; its sha512 always checked."""
    path = cache / f"{pkg.folder}.tgz"
    if path.is_file():
        data = path.read_bytes()
        if _integrity(data) == pkg.integrity:
            return data
        path.unlink()  # a damaged or partial file: fetch it again
    url = url or pkg.url
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except OSError as e:
        raise RuntimeError(f"{pkg.name}@{pkg.version}: cannot download {url} ({e}); the book build needs it once, "
                           f"then it is kept in {cache}") from None
    if _integrity(data) != pkg.integrity:
        raise RuntimeError(f"{pkg.name}@{pkg.version}: {url} does not match the pinned sha512 integrity")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data


def install(pkg: Package, vendor: Path, cache: Path, url: str | None = None) -> list[Path]:
    """Copy ``pkg.files`` from its tarball into ``vendor/pkg.folder``; returns the written paths."""
    data = tarball(pkg, cache, url)
    out = vendor / pkg.folder
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for name in pkg.files:
            try:
                member = tar.extractfile(f"package/{name}")
            except KeyError:
                member = None
            if member is None:
                raise RuntimeError(f"{pkg.name}@{pkg.version}: the tarball has no file package/{name}")
            target = out / Path(name).name
            content = member.read()
            if not target.is_file() or target.read_bytes() != content:
                target.write_bytes(content)
            written.append(target)
    return written


def main() -> int:
    vendor, cache = ROOT / "_static" / "vendor", cache_dir()
    try:
        for pkg in PACKAGES:
            install(pkg, vendor, cache)
    except RuntimeError as e:
        print(f"fetch_vendor: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
