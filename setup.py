import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
# One place for the version: hear_abt/version.py (read, not imported: importing needs torch).
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "hear_abt" / "version.py").read_text(), re.M).group(1)
README = HERE / "README.md"

setup(
    name="hear-abt",
    version=VERSION,
    description="Audio Barlow Twins (arXiv 2209.14345) packaged for the HEAR 2021 benchmark",
    long_description=README.read_text(encoding="utf-8") if README.exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",  # the only version CI runs
        "Operating System :: POSIX :: Linux",
        "Intended Audience :: Science/Research",
        "Topic :: Multimedia :: Sound/Audio :: Analysis",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    # 3.11 is what install.sh and CI test; older versions are not tried.
    python_requires=">=3.11",
    packages=find_packages(include=["hear_abt", "hear_abt.*"]) + ["hear_abt.checkpoints"],
    # The top-level checkpoints/ folder ships inside the wheel as hear_abt/checkpoints/.
    package_dir={"hear_abt.checkpoints": "checkpoints"},
    package_data={"hear_abt": ["examples/*.wav", "examples/*.md"], "hear_abt.checkpoints": ["*.pt", "*.md"]},
    install_requires=[
        # A range, not a pin: torchaudio pins one exact torch, and users have
        # their own CUDA builds. requirements/torch.txt pins the tested pair.
        "torch>=2.1",
        "torchaudio>=2.1",
        "numpy>=1.21",
        "soundfile>=0.12",
        "tqdm>=4.60",
    ],
    extras_require={
        "train": ["matplotlib>=3.5", "pyyaml>=6"],
        "eval": ["scikit-learn>=1.0", "matplotlib>=3.5"],
        # `hear-abt export --format onnx`, and running the exported graph without torch.
        "export": ["onnx>=1.15", "onnxruntime>=1.17"],
    },
    entry_points={"console_scripts": ["hear-abt=hear_abt.cli:main"]},
)
