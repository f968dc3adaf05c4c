"""Every command the documentation shows must still run: each distinct entry
point answers `--help`, every option a documented command passes is one that
entry point declares, and every `--set KEY=VALUE` names a TrainConfig key.
Also: the CLI's help teaches (a help string for every command and option,
encoder names from the registry, --version)."""
from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import fenced_blocks

ROOT = Path(__file__).resolve().parent.parent
# every page, the developer pages and the dated records included: a record's command must still run
# (under the current name of its entry point), or the record says how it ran then
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "checkpoints" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
STARTS = ("python ", "python3 ", "hear-abt ", "torchrun ", "hear-validator ")
SKIP = {("module", "venv"), ("exe", "bash"), ("exe", ".")}  # README's setup lines: CI runs them for real
OURS = {"hear-abt", "hear_abt.train"}  # entry points checked in-process; eval.* and tools.* modules are ours too
OUR_PACKAGES = ("eval.", "tools.", "hear_abt.")


def documented_commands() -> list[tuple[str, list[str]]]:
    """(file name, argv) of every command in the docs' bash blocks and inline code."""
    out = []
    for f in DOCS:
        text = f.read_text(encoding="utf-8")
        lines = []
        for block in fenced_blocks(text):
            lines += re.sub(r"\\\n\s*", " ", block).splitlines()
        lines += [c for c in re.findall(r"`([^`\n]+)`", text) if c.startswith(STARTS)]
        for line in lines:
            tokens = shlex.split(line, comments=True)
            if tokens[:1] == ["hear-abt"]:  # "[--opt X | --opt Y]" is usage notation there, not shell
                tokens = [t.strip("[]") for t in tokens if t != "|"]
            cmd: list[str] = []
            for t in [*tokens, "&&"]:
                if t in ("&&", ";"):
                    if cmd:
                        out.append((str(f.relative_to(ROOT)), cmd))
                    cmd = []
                elif t and not (not cmd and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", t)):  # a leading VAR=value sets the environment
                    cmd.append(t)
    return out


def entry_point(argv: list[str]) -> tuple[tuple[str, str], list[str], list[str]]:
    """((kind, name), the entry point's own args, a launcher's args (torchrun's))."""
    launcher: list[str] = []
    if argv[0] == "torchrun" and "-m" in argv:  # prose may name torchrun's own options alone
        i = argv.index("-m")
        launcher, argv = argv[1:i], ["python", *argv[i:]]
    if argv[0] in ("python", "python3"):
        if argv[1] == "-m":
            return ("module", argv[2]), argv[3:], launcher
        return ("script", argv[1]), argv[2:], launcher
    if argv[0] == "hear-abt":
        sub = next((a for a in argv[1:] if not a.startswith("-")), "")
        return ("hear-abt", sub), argv[1:], launcher
    return ("exe", argv[0]), argv[1:], launcher


def flags(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", a)}


def declares(help_text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


COMMANDS = documented_commands()
ENTRY_POINTS: dict[tuple[str, str], list[tuple[str, list[str], list[str]]]] = {}
for _file, _argv in COMMANDS:
    _ep, _args, _launcher = entry_point(_argv)
    if _ep not in SKIP:
        ENTRY_POINTS.setdefault(_ep, []).append((_file, _args, _launcher))


def _subparser(name: str) -> argparse.ArgumentParser:
    from hear_abt.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


def _help_subprocess(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([*argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _check_options(ep, help_text: str) -> None:
    for file, args, _ in ENTRY_POINTS[ep]:
        unknown = sorted(f for f in flags(args) if not declares(help_text, f))
        assert not unknown, f"{file}: `{' '.join(args)}` passes {unknown}, which {ep[1]} --help does not declare"


def test_docs_show_the_entry_points_we_ship():
    """The extraction finds what the docs are about (guards against a parser that finds nothing)."""
    names = {ep[1] for ep in ENTRY_POINTS}
    assert {"init", "info", "embed", "hear_abt.train", "eval.driver.run", "eval.minihear.build", "tools.bench_embed"} <= names, names


def test_hear_abt_commands_in_docs_use_declared_options():
    from hear_abt.cli import build_parser

    top = build_parser().format_help()
    for ep in [ep for ep in ENTRY_POINTS if ep[0] == "hear-abt" and not ep[1].isupper()]:  # not "COMMAND"
        if ep[1] == "":  # `hear-abt --help`, `hear-abt --version`
            _check_options(ep, top)
            continue
        assert ep[1] in ("init", "info", "embed", "export"), f"the docs call an unknown command `hear-abt {ep[1]}`"
        _check_options(ep, top + _subparser(ep[1]).format_help())


def test_train_commands_in_docs_use_declared_options_and_config_keys():
    from hear_abt.train.__main__ import build_parser
    from hear_abt.train.config import TrainConfig, parse_overrides

    ep = ("module", "hear_abt.train")
    _check_options(ep, build_parser().format_help())
    for _file, args, _ in ENTRY_POINTS[ep]:
        sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        TrainConfig().replace(parse_overrides(sets))  # raises on an unknown key or a bad value


def _ours(ep: tuple[str, str]) -> bool:
    """An eval/tools module (or a script path) of this repository, checked by running its --help."""
    kind, name = ep
    return kind == "script" or (kind == "module" and name.startswith(OUR_PACKAGES) and name not in OURS)


def test_eval_and_tools_modules_in_docs_answer_help_and_declare_their_options():
    ours = sorted(ep for ep in ENTRY_POINTS if _ours(ep))
    assert ours
    scripts = [ep for ep in ours if ep[0] == "script"]
    assert not scripts, f"the docs run {[ep[1] for ep in scripts]} as paths; use `python -m` module names"
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda ep: _help_subprocess([sys.executable, "-m", ep[1]]), ours))
    failed = [f"{ep[1]} --help failed:\n{run.stderr[-600:]}" for ep, run in zip(ours, runs) if run.returncode != 0]
    assert not failed, "\n".join(failed)
    for ep, run in zip(ours, runs):
        _check_options(ep, run.stdout)


@pytest.mark.slow
def test_third_party_entry_points_in_docs_answer_help():
    """heareval's runner, hear-validator, pytest and torchrun (tensorflow or torch imports: slow)."""
    others = sorted(ep for ep in ENTRY_POINTS if ep[0] in ("module", "exe") and ep[1] not in OURS and not _ours(ep))
    assert ("exe", "hear-validator") in others and ("module", "heareval.embeddings.runner") in others
    argvs = [[sys.executable, "-m", name] if kind == "module" else [name] for kind, name in others]
    launched = [(file, launcher) for uses in ENTRY_POINTS.values() for file, _, launcher in uses if launcher]
    with ThreadPoolExecutor(3) as pool:
        runs = list(pool.map(_help_subprocess, [*argvs, ["torchrun"]]))
    for ep, run in zip(others, runs):
        assert run.returncode == 0, f"{ep[1]} --help failed:\n{run.stderr[-2000:]}"
        _check_options(ep, run.stdout)
    assert launched and runs[-1].returncode == 0, runs[-1].stderr[-2000:]
    for file, launcher in launched:
        unknown = sorted(f for f in flags(launcher) if not declares(runs[-1].stdout, f))
        assert not unknown, f"{file}: torchrun does not declare {unknown}"


# --- the CLI's own help -----------------------------------------------------------


def _all_actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action._choices_actions
            for sub in action.choices.values():
                yield from _all_actions(sub)
        else:
            yield action


@pytest.mark.parametrize("module", ["hear_abt.cli", "hear_abt.train.__main__"])
def test_every_command_and_option_has_help(module):
    import importlib

    parser = importlib.import_module(module).build_parser()
    missing = [a.dest for a in _all_actions(parser) if not (a.help and a.help.strip())]
    assert not missing, f"{module}: no help string for {missing}"


def test_encoder_choices_come_from_the_registry():
    from hear_abt.encoders import ENCODERS

    action = next(a for a in _subparser("init")._actions if "--encoder" in a.option_strings)
    assert sorted(action.choices) == sorted(ENCODERS)
    assert all(name in _subparser("init").format_help() for name in ENCODERS)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in readme for name in ENCODERS), "README's CLI section lists every encoder"


def test_version_and_train_help_point_the_way(capsys):
    import hear_abt
    from hear_abt.cli import main
    from hear_abt.train.__main__ import build_parser

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"hear-abt {hear_abt.__version__}"
    assert "--print-config" in build_parser().description
