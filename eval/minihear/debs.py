"""Debian packages as audio sources: find them installed, or fetch them into a cache.

Heavy data packages (0ad-data is 1.4 GB) are never installed: `apt-get download`
puts the .deb in <cache>/debs and `dpkg -x` unpacks it into <cache>/pkgs/<name>.
The cache is ~/.cache/hear-abt unless HEAR_ABT_CACHE says otherwise.

    python -m eval.minihear.debs [--cache DIR] PACKAGE...   # fetch and unpack
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Kept for independent evaluation: no corpus, task or test may use them.
RESERVED = frozenset({"ktuberling-data", "klettres-data", "ufoai-sound"})
_DONE = ".unpacked"


def cache_dir(cache: Path | None = None) -> Path:
    return Path(cache or os.environ.get("HEAR_ABT_CACHE") or Path.home() / ".cache" / "hear-abt").expanduser()


def _check(package: str) -> None:
    if package in RESERVED:
        raise ValueError(f"{package} is reserved for independent evaluation and must not be used")


def installed(package: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


def package_root(package: str, cache: Path | None = None) -> Path | None:
    """Where the package's files lie ('/' if installed, else its unpacked cache copy), or None."""
    _check(package)
    if installed(package):
        return Path("/")
    root = cache_dir(cache) / "pkgs" / package
    return root if (root / _DONE).is_file() else None


def _download(package: str, debs: Path) -> Path:
    def attempt() -> subprocess.CompletedProcess:
        return subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)

    have = sorted(debs.glob(f"{package}_*.deb"))
    if have:
        return have[-1]
    r = attempt()
    if r.returncode != 0:  # a fresh machine has no package lists yet: update once, retry
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True)
        r = attempt()
    have = sorted(debs.glob(f"{package}_*.deb"))
    if r.returncode != 0 or not have:
        raise RuntimeError(f"apt-get download {package} failed: {r.stderr.strip()[-400:]}")
    return have[-1]


def fetch(package: str, cache: Path | None = None) -> Path:
    """package_root, downloading and unpacking the package first if needed."""
    root = package_root(package, cache)
    if root is not None:
        return root
    base = cache_dir(cache)
    (base / "debs").mkdir(parents=True, exist_ok=True)
    (base / "pkgs").mkdir(parents=True, exist_ok=True)
    deb = _download(package, base / "debs")
    dest = base / "pkgs" / package
    # Unpack beside the destination, then rename: an interrupted run leaves no half tree.
    tmp = Path(tempfile.mkdtemp(prefix=f".{package}-", dir=base / "pkgs"))
    try:
        subprocess.run(["dpkg", "-x", str(deb), str(tmp)], check=True, capture_output=True)
        (tmp / _DONE).write_text(deb.name + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def files(package: str, root: Path) -> list[str]:
    """The package's regular files as paths relative to its root, sorted.

    Symbolic links are skipped: a link inside the package names a file listed
    anyway, and one pointing outside it (or nowhere, in an unpacked tree whose
    targets live in other packages) is not this package's audio."""
    def regular(p: str) -> bool:
        return os.path.isfile(p) and not os.path.islink(p)

    if root == Path("/"):
        out = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, check=True).stdout
        return sorted(p.lstrip("/") for p in out.splitlines() if p.startswith("/") and regular(p))
    rel = []
    for d, _, names in os.walk(root):
        rel += [os.path.relpath(os.path.join(d, n), root) for n in names if n != _DONE and regular(os.path.join(d, n))]
    return sorted(rel)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("packages", nargs="+")
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args(argv)
    for p in args.packages:
        print(p, fetch(p, args.cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
