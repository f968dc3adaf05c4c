"""Benchmark participants `pip install` the package: the default checkpoint and
the example clip must travel inside the wheel and be found from site-packages."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _build_wheel(src: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True,
    )
    (wheel,) = out.glob("hear_abt-*.whl")
    return wheel


@pytest.mark.slow
def test_installed_wheel_loads_its_default_checkpoint(tmp_path):
    """Build from a copy of the tracked tree, install it outside the
    repository, and load_model("") from there."""
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    assert (src / "checkpoints" / "default.pt").is_file(), "checkpoints/default.pt is not tracked"
    wheel = _build_wheel(src, tmp_path / "dist")
    whl = zipfile.ZipFile(wheel)
    names = whl.namelist()
    assert "hear_abt/checkpoints/default.pt" in names
    assert "hear_abt/examples/speech_and_bell.wav" in names
    # The licence travels with the wheel and its metadata names it.
    (licence,) = [n for n in names if ".dist-info/" in n and n.rsplit("/", 1)[-1] == "LICENSE"]
    assert whl.read(licence) == (ROOT / "LICENSE").read_bytes()
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = whl.read(metadata).decode()
    assert "License: MIT" in meta or "License-Expression: MIT" in meta
    assert "Classifier: License :: OSI Approved :: MIT License" in meta and "Requires-Python: >=3.11" in meta
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True)
    code = (
        "import hear_abt, torch; m = hear_abt.load_model();"
        "from hear_abt.hear_api import default_checkpoint_path as d;"
        "print(hear_abt.__file__); print(d());"
        "print(hear_abt.get_scene_embeddings(torch.zeros(1, 16000), m).shape)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr
    module_file, ckpt, shape = run.stdout.strip().splitlines()[-3:]
    assert module_file.startswith(str(site)) and ckpt.startswith(str(site))
    assert shape == "torch.Size([1, 3072])"
