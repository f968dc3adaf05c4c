"""Corpus v2/v3: real recordings from Debian packages, their hold-out and report.

Uses only the small asterisk/fillets packages that scripts/install_apt.sh installs.
"""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from eval.corpus import real_corpus
from eval.minihear import debs, real

EN, MENARDI, NL = "asterisk-core-sounds-en-wav", "asterisk-prompt-it-menardi-wav", "fillets-ng-data-nl"


@pytest.fixture(autouse=True)
def _small_packages_installed() -> None:
    """Tests never download: the packages come from scripts/install_apt.sh."""
    missing = [p for p in (EN, MENARDI, NL) if debs.package_root(p) is None]
    assert not missing, f"{missing} missing: run scripts/install_apt.sh"


def _hashes(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(d.glob("*.wav"))}


@pytest.mark.parametrize("package", sorted(debs.RESERVED))
def test_reserved_packages_are_refused(package: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        debs.fetch(package)


def test_unknown_package_and_mix_are_refused(tmp_path: Path) -> None:
    from eval.corpus.synthetic import build_corpus

    with pytest.raises(ValueError, match="unknown real-audio package"):
        real.list_sources("no-such-package", "/")
    with pytest.raises(ValueError, match="unknown real-audio package"):
        real.sources("ufoai-sound")  # reserved: never listed, never fetched
    with pytest.raises(ValueError, match="mix"):
        build_corpus(tmp_path, 0.01, 0, 1, mix="reals")


def test_decode_downmixes_and_resamples_to_16k() -> None:
    src = next(s for s in real.sources(EN, fetch=False) if s.path.endswith("/digits/7.wav"))
    info = sf.info(str(Path(src.root) / src.path))
    assert info.samplerate == 8000  # the asterisk sets are telephone-band
    x = real.decode(src, trim=False)
    assert x.dtype == np.float32 and x.ndim == 1
    assert x.size == 2 * info.frames
    assert 0.01 < np.abs(x).max() <= 1.01


def test_corpus_plan_holds_out_every_task_test_source() -> None:
    from eval.minihear.realtasks import TASKS

    jobs = real_corpus.plan([EN, MENARDI, NL])
    used = {s.id for j in jobs for s in j["sources"]}
    assert not any(i.startswith(f"real:{MENARDI}/") for i in used)  # the test voice, whole
    nl = [s for s in real.sources(NL, fetch=False) if s.kind == "speech"]
    held = {s.id for s in nl if real.reserved_for_tasks(s)}
    assert 0.15 < len(held) / len(nl) < 0.35 and not held & used
    for task in TASKS:
        if task.heavy:
            continue
        for small in (False, True):
            test = {i for c in task.plan(0, small) if c["split"] == "test" for i in c["sources"]}
            assert test and not test & used, task.name


@pytest.mark.slow
def test_real_corpus_build_report_and_determinism(tmp_path: Path) -> None:
    from eval.corpus.build import main

    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["--out", str(a), "--mix", "real", "--packages", f"{EN},{MENARDI}", "--jobs", "2"]) == 0
    with open(a / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    wavs = sorted(a.glob("*.wav"))
    assert len(rows) == len(wavs) > 100
    assert {r["origin"] for r in rows} == {EN} and {r["kind"] for r in rows} == {"speech"}
    for r in rows[:: max(1, len(rows) // 20)]:
        info = sf.info(str(a / r["file"]))
        assert (info.samplerate, info.channels) == (16000, 1)
        assert real_corpus.MIN_S <= info.duration <= real_corpus.CLIP_S
        assert abs(info.duration - float(r["seconds"])) < 1e-3
        assert r["sources"].startswith(f"real:{EN}/")
    rep = json.loads((a / "report.json").read_text())
    hours = sum(float(r["seconds"]) for r in rows) / 3600
    assert rep["hours_real"] == pytest.approx(hours, abs=2e-3) and rep["hours_synthetic"] == 0
    assert rep["sources"][EN]["licence"].startswith("CC-BY-SA-3.0")
    assert EN in (a / "report.md").read_text()
    # Same bytes with one process and without the (fully reserved) test voice.
    assert main(["--out", str(b), "--mix", "real", "--packages", EN, "--jobs", "1"]) == 0
    assert _hashes(a) == _hashes(b)


V2 = ("0ad-data", "asterisk-core-sounds-en-wav", "asterisk-core-sounds-es-wav", "asterisk-core-sounds-fr-wav",
      "asterisk-core-sounds-it-wav", "asterisk-core-sounds-ru-wav", "asterisk-moh-opsound-wav",
      "asterisk-prompt-it-menardi-wav", "colobot-common-sounds", "fillets-ng-data", "fillets-ng-data-cs",
      "fillets-ng-data-nl", "freedroidrpg-data", "hyperrogue-music", "nexuiz-music", "openclonk-data",
      "supertuxkart-data", "ufoai-music", "warzone2100-music", "wesnoth-1.16-music")


def test_corpus_versions_keep_v2_and_never_take_a_forbidden_package() -> None:
    assert real.CORPUS_VERSIONS["v2"] == V2  # v2 stays reproducible
    v3 = set(real.CORPUS_VERSIONS["v3"])
    assert set(V2) < v3 and len(v3) >= 50 and real.CORPUS_VERSION == "v3"
    for version, packages in real.CORPUS_VERSIONS.items():
        assert not set(packages) & (debs.RESERVED | real.TEST_VOICE_ELSEWHERE), version
        assert not any(p.startswith("ufoai-") and p != "ufoai-music" for p in packages), version
    assert set(real.PACKAGES) >= real.HEAVY and all(real.PACKAGES[p][1] for p in real.PACKAGES)
    with pytest.raises(ValueError, match="unknown corpus version"):
        real_corpus.plan([EN], version="v9")


def test_package_files_are_regular_files_only(tmp_path: Path) -> None:
    """Unpacked trees hold symlinks into other packages that dangle; a link to a
    file of the package would count that file twice."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.ogg").write_bytes(b"x")
    (tmp_path / "a" / "dangling.ogg").symlink_to(tmp_path / "nowhere.ogg")
    (tmp_path / "a" / "again.ogg").symlink_to(tmp_path / "a" / "x.ogg")
    (tmp_path / "a" / "d.ogg").symlink_to(tmp_path / "a", target_is_directory=True)
    assert debs.files("pkg", tmp_path) == ["a/x.ogg"]


def _wav(path: Path, seed: int, seconds: float = 0.5) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).uniform(-0.3, 0.3, int(16000 * seconds)).astype(np.float32)
    sf.write(path, x, 16000)


def test_v3_counts_a_recording_once_and_never_a_copy_of_a_held_out_one(tmp_path: Path, monkeypatch) -> None:
    _wav(tmp_path / "a" / "one.wav", 1)
    _wav(tmp_path / "a" / "held.wav", 2)
    _wav(tmp_path / "b" / "one_again.wav", 1)  # the same bytes, shipped by another package
    _wav(tmp_path / "b" / "held_copy.wav", 2)
    _wav(tmp_path / "b" / "own.wav", 3)
    srcs = {p: tuple(real.RealSource(p, f.name, None, "speech", str(tmp_path / p)) for f in sorted((tmp_path / p).iterdir()))
            for p in ("a", "b")}
    monkeypatch.setattr(real, "sources", lambda package, cache=None, fetch=True: srcs[package])
    monkeypatch.setattr(real, "reserved_for_tasks", lambda s: s.path == "held.wav")
    taken = lambda version: sorted(f"{s.package}/{s.path}" for j in real_corpus.plan(["a", "b"], version=version)  # noqa: E731
                                   for s in j["sources"])
    assert taken("v3") == ["a/one.wav", "b/own.wav"]
    assert taken("v2") == ["a/one.wav", "b/held_copy.wav", "b/one_again.wav", "b/own.wav"]  # as v2 was built


def test_raw_gsm_prompts_decode_and_report_their_hours(tmp_path: Path) -> None:
    x = (0.3 * np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000)).astype(np.float32)
    sf.write(tmp_path / "hello.gsm", x, 8000, format="RAW", subtype="GSM610")
    src = real.RealSource("asterisk-prompt-fr-armelle", "hello.gsm", None, "speech", str(tmp_path))
    y = real.decode(src, trim=False)
    assert abs(y.size - 16000) <= 320 and np.abs(y).max() > 0.1
    assert real.seconds(src) == pytest.approx(1.0, abs=0.02)


def test_header_report_gives_hours_files_and_licence() -> None:
    rep = real_corpus.header_report(real_corpus.plan([EN]))
    d = rep["packages"][EN]
    assert d["files"] > 500 and 0.2 < d["hours"] == rep["hours_total"] < 1.0 and set(d["kinds"]) == {"speech"}
    assert d["licence"] == real.PACKAGES[EN][1]
    md = real_corpus.header_report_md(rep, "v3")
    assert f"| {EN} | {d['kinds']['speech']:.2f} | 0.00 | 0.00 | {d['files']} |" in md


def _decode_all(srcs: list) -> list:
    return [real.decode(s, trim=False) for s in srcs]


N_MEMBERS = 300


@pytest.mark.slow  # ~20 s idle, longer on a busy machine
def test_zip_members_decode_the_same_in_forked_workers(tmp_path: Path) -> None:
    """Audio inside a zip (ufoai-music, nexuiz-music, 0ad-data): workers forked after
    the parent opened the archive must not share its file offset (when they did,
    this test failed: members came back corrupt or unreadable)."""
    import io
    import zipfile
    from multiprocessing import get_context

    rng = np.random.default_rng(0)
    zpath = tmp_path / "usr" / "data.pk3"
    zpath.parent.mkdir(parents=True)
    with zipfile.ZipFile(zpath, "w") as zf:
        for i in range(N_MEMBERS):
            buf = io.BytesIO()
            sf.write(buf, rng.uniform(-0.5, 0.5, (441 * (i + 1), 2)).astype(np.float32), 44100, format="WAV")
            zf.writestr(f"music/t{i:03d}.wav", buf.getvalue())
    srcs = [real.RealSource("pkg", "usr/data.pk3", f"music/t{i:03d}.wav", "music", str(tmp_path))
            for i in range(N_MEMBERS)]
    serial = _decode_all(srcs)  # the parent now holds the archive open
    assert [x.size for x in serial] == [160 * (i + 1) for i in range(N_MEMBERS)]
    with get_context("fork").Pool(2) as pool:
        for part in pool.map(_decode_all, [srcs] * 4):
            for x, y in zip(part, serial):
                np.testing.assert_array_equal(x, y)
