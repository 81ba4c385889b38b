"""Real scans shipped inside registry packages, fetched once into a cache (see /work/shared/DATA.md).

    from benchmarks.registry_data import pyradiomics_case
    image_path, label_path = pyradiomics_case("lung1")     # chest CT + tumour label, .nrrd

Release files come with `pip download --no-deps` (PyPI's JSON API when pip cannot), are checked
against a pinned SHA-256 before use, and single members are extracted on demand. Nothing is
installed: the scans are read straight out of the archive. Everything lives under the tests'
cache (`.cache/medgan-tests/` in the repository, or `$MEDGAN_TEST_CACHE`), which git ignores.

Run as a script to fetch the pyradiomics cases and print their paths:

    python benchmarks/registry_data.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import uuid
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_ENV = "MEDGAN_TEST_CACHE"  # the same variable tests/external.py reads
PYRADIOMICS = ("pyradiomics", "3.0.1")
# The sdist's SHA-256 as PyPI published it: a changed file is refused.
PYRADIOMICS_SHA256 = "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5"
# The cases of the pyradiomics sdist's data/ folder: name -> (modality, what).
PYRADIOMICS_CASES = {
    "brain1": ("MR", "T1 post-contrast brain MR with a tumour"),
    "brain2": ("MR", "T1 post-contrast brain MR with a tumour"),
    "lung1": ("CT", "chest CT with a lung tumour"),
    "lung2": ("CT", "chest CT with a lung tumour"),
    "breast1": ("MR", "breast MR with a lesion"),
}


def cache_dir() -> Path:
    """`.cache/medgan-tests/pypi` in the repository (or under `$MEDGAN_TEST_CACHE`), created on first use."""
    folder = Path(os.environ.get(CACHE_ENV) or REPO_ROOT / ".cache" / "medgan-tests") / "pypi"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def pypi_file(name: str, version: str, sha256: str | None = None, kind: str = "sdist") -> Path:
    """The release file of `kind` ("sdist" or "bdist_wheel") of name==version, downloaded once.

    `pip download --no-deps` fetches it through the index pip is set up for (so a mirror works);
    when pip cannot (an sdist whose metadata will not build), PyPI's JSON API is asked instead.
    The file is checked against `sha256` when given (a pinned digest), else against the digest
    PyPI lists; a cached file is checked again before it is used."""
    dest = cache_dir()
    found = _cached(dest, name, version, kind)
    if found is None:
        try:
            found = _pip_download(name, version, kind, dest)
        except (RuntimeError, subprocess.SubprocessError) as err:
            print(f"registry_data: {err}; trying PyPI's JSON API", file=sys.stderr)
            found = _json_api_download(name, version, kind, dest)
    if sha256 is not None and _sha256(found) != sha256:
        found.unlink()
        raise RuntimeError(f"{found.name}: SHA-256 differs from the pinned {sha256}; removed, fetch again")
    return found


def _cached(dest: Path, name: str, version: str, kind: str) -> Path | None:
    stems = (f"{name}-{version}", f"{name.replace('-', '_')}-{version}")
    for path in sorted(dest.iterdir()):
        if path.is_file() and path.name.startswith(stems) and _is_archive(path, kind):
            return path
    return None


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def _pip_download(name: str, version: str, kind: str, dest: Path) -> Path:
    """pip download into a private folder, then moved into the cache whole."""
    work = dest / f".pip.{uuid.uuid4().hex[:8]}.partial"
    work.mkdir()
    try:
        only = ["--no-binary", ":all:", "--no-build-isolation"] if kind == "sdist" else ["--only-binary", ":all:"]
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", *only,
                   f"{name}=={version}", "-d", str(work)]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        files = [p for p in work.iterdir() if _is_archive(p, kind)]
        if result.returncode != 0 or not files:
            lines = (result.stderr or result.stdout).strip().splitlines() or ["no file"]
            raise RuntimeError(f"pip download {name}=={version} failed: {lines[-1]}")
        target = dest / files[0].name
        os.replace(files[0], target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _json_api_download(name: str, version: str, kind: str, dest: Path, timeout_s: float = 300.0) -> Path:
    with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/{version}/json", timeout=60) as response:
        info = json.load(response)
    files = [u for u in info["urls"] if u["packagetype"] == kind]
    if not files:
        raise RuntimeError(f"PyPI lists no {kind} for {name} {version}")
    url, digest, filename = files[0]["url"], files[0]["digests"]["sha256"], files[0]["filename"]
    partial = dest / f".{filename}.{uuid.uuid4().hex[:8]}.partial"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(partial, "wb") as fh:
            shutil.copyfileobj(response, fh)
        if _sha256(partial) != digest:
            raise RuntimeError(f"{url}: SHA-256 is not the {digest} PyPI lists")
        os.replace(partial, dest / filename)
    finally:
        partial.unlink(missing_ok=True)
    return dest / filename


def _is_archive(path: Path, kind: str) -> bool:
    return path.name.endswith(".whl") if kind == "bdist_wheel" else path.name.endswith((".tar.gz", ".zip"))


def extract(archive: Path, member: str) -> Path:
    """One member of a wheel/zip or a tar archive, extracted once into `<cache>/<archive stem>/<member>`."""
    stem = archive.name.removesuffix(".tar.gz").removesuffix(".zip").removesuffix(".whl")
    target = archive.parent / stem / member
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(partial, "wb") as fh:
                shutil.copyfileobj(src, fh)
        else:
            with tarfile.open(archive, "r:*") as tf:
                src = tf.extractfile(member)
                if src is None:
                    raise RuntimeError(f"{member} is not a file in {archive.name}")
                with src, open(partial, "wb") as fh:
                    shutil.copyfileobj(src, fh)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def pyradiomics_case(name: str) -> tuple[Path, Path]:
    """(image, label) .nrrd paths of a pyradiomics 3.0.1 test case (see PYRADIOMICS_CASES)."""
    if name not in PYRADIOMICS_CASES:
        raise ValueError(f"unknown pyradiomics case {name!r}; choose one of {sorted(PYRADIOMICS_CASES)}")
    archive = pypi_file(*PYRADIOMICS, sha256=PYRADIOMICS_SHA256)
    root = f"{'-'.join(PYRADIOMICS)}/data"
    return extract(archive, f"{root}/{name}_image.nrrd"), extract(archive, f"{root}/{name}_label.nrrd")


if __name__ == "__main__":
    for case, (modality, what) in PYRADIOMICS_CASES.items():
        image, label = pyradiomics_case(case)
        print(f"{case:8s} {modality}  {image}  {label}  ({what})", file=sys.stdout)
