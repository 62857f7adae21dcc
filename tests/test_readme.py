"""Every command in the README runs as written (issue #16).

The README's ``sh`` blocks are read in order and each command runs in one temporary working
folder with its own cache, so later commands see what earlier ones wrote (``runs/try1``,
``guards/digits-knn``), as a reader following the README would:

* ``unseen ...`` runs with this interpreter and this checkout's sources;
* ``make TARGET`` runs the Makefile's target with ``BIN`` pointing at a folder whose ``unseen``
  is this interpreter (the set-up stamp is taken as done: the environment exists already);
* commands with ``--data-root`` run against ``$UNSEEN_DATA_ROOT`` (the unpacked bundle; skipped
  without it) with ``--limit LIMIT`` appended, the README's documented reduced flag;
  ``../shared/data/unpack`` re-runs, idempotently, into ``$UNSEEN_DATA_ROOT`` (set
  ``UNSEEN_README_UNPACK=0`` where that folder must not be written);
* ``unseen serve`` starts on 127.0.0.1 (on a free port instead of the README's) and is stopped
  once it answers ``/healthz`` (or, when started with ``&``, after the rest of its block);
  ``curl`` then talks to it, with two generated 8×8 PNGs as the README's ``digit.png`` and
  ``other.png``.

A command whose comment contains ``illustrative`` is skipped, by that mark alone. Every Python
block runs too, unless its first line is such a comment. ``UNSEEN_README`` names another file to
check (a scratch copy, say).
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
#: as in conftest.py: ../shared/data beside the repository, or $UNSEEN_SHARED_DATA
SHARED_DATA = Path(os.environ.get("UNSEEN_SHARED_DATA", REPO.parent / "shared" / "data"))
README = Path(os.environ.get("UNSEEN_README", REPO / "README.md"))
#: samples per split for the --data-root commands (all detectors, both CPU models, in budget)
LIMIT = 200
#: seconds one command may take
TIMEOUT = 1800
MARK = "illustrative"
SHELL = {"sh", "bash", "shell"}
KNOWN = SHELL | {"python", "toml", "json", "text"}

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Command:
    line: int
    block: int
    text: str
    comment: str

    @property
    def id(self) -> str:
        return f"L{self.line}:{self.text[:60]}"


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    body: str


def blocks(text: str) -> list[Block]:
    """The fenced code blocks with the line of their opening fence."""
    out, lang, start, body = [], None, 0, []
    for n, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^```(\S*)\s*$", line)
        if fence and lang is None:
            lang, start, body = fence.group(1), n, []
        elif line.strip() == "```" and lang is not None:
            out.append(Block(start, lang, "\n".join(body)))
            lang = None
        elif lang is not None:
            body.append(line)
    return out


def _split_comment(line: str) -> tuple[str, str]:
    match = re.search(r"(^|\s)#", line)
    return (line, "") if match is None else (line[: match.start()].rstrip(), line[match.end():].strip())


def commands(text: str) -> list[Command]:
    """Every command of the ``sh`` blocks; lines ending in ``\\`` continue on the next one."""
    out = []
    for b_index, block in enumerate(blocks(text)):
        if block.lang not in SHELL:
            continue
        pending: list[str] = []
        first = 0
        for offset, raw in enumerate(block.body.splitlines(), 1):
            code, comment = _split_comment(raw)
            if not pending:
                first = block.line + offset
            if code.endswith("\\"):
                pending.append(code[:-1].strip())
                continue
            pending.append(code.strip())
            joined = " ".join(p for p in pending if p)
            pending = []
            if joined:
                out.append(Command(first, b_index, joined, comment))
    return out


def python_blocks(text: str) -> list[Block]:
    return [b for b in blocks(text) if b.lang == "python"]


TEXT = README.read_text(encoding="utf-8")
COMMANDS = commands(TEXT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Session:
    """The reader's shell: a working folder, an environment, the servers it started."""

    cwd: Path
    env: dict[str, str]
    shim: Path
    ports: dict[str, str] = field(default_factory=dict)
    servers: list[tuple[int, subprocess.Popen]] = field(default_factory=list)

    def stop_servers(self, keep_block: int | None = None) -> None:
        for block, proc in list(self.servers):
            if block != keep_block:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                self.servers.remove((block, proc))


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("readme")
    cwd, shim = root / "work", root / "bin"
    cwd.mkdir()
    shim.mkdir()
    unseen = shim / "unseen"
    unseen.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m unseen "$@"\n')
    unseen.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "UNSEEN_CACHE_DIR": str(root / "cache"),
           "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("UNSEEN_DEBUG", None)
    _write_pngs(cwd)
    s = Session(cwd, env, shim)
    yield s
    s.stop_servers()


def _write_pngs(cwd: Path) -> None:
    """The README's digit.png (a digit of the embedded set) and other.png (noise), 8-bit 8×8."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digit = load_digits().images[3] * (255 / 16)
    Image.fromarray(digit.round().astype(np.uint8), mode="L").save(cwd / "digit.png")
    noise = np.random.default_rng(0).integers(0, 256, size=(8, 8), dtype=np.uint8)
    Image.fromarray(noise, mode="L").save(cwd / "other.png")


def data_root() -> Path:
    env = os.environ.get("UNSEEN_DATA_ROOT")
    if not env or not (Path(env) / "benchmark_imglist").is_dir():
        pytest.skip("needs the unpacked data bundle: set UNSEEN_DATA_ROOT (.ci/run does)")
    return Path(env)


def argv_for(cmd: Command, s: Session) -> tuple[list[str], bool]:
    """The argument list to run for a README command, and whether it goes to the background."""
    tokens = shlex.split(cmd.text)
    background = tokens[-1] == "&"
    tokens = [t for t in tokens if t != "&"]
    if tokens[0] == "make":
        return ["make", "-f", str(REPO / "Makefile"), "-o", ".venv/.installed", f"BIN={s.shim}",
                *tokens[1:]], background
    if tokens[0].endswith("shared/data/unpack"):
        if os.environ.get("UNSEEN_README_UNPACK") == "0":
            pytest.skip("UNSEEN_README_UNPACK=0: the data root must not be written here")
        if not (SHARED_DATA / "unpack").is_file():
            pytest.skip(f"the data bundle is not at {SHARED_DATA} (set UNSEEN_SHARED_DATA)")
        return [str(SHARED_DATA / "unpack"), str(data_root())], background
    if "--data-root" in tokens:
        i = tokens.index("--data-root")
        tokens[i + 1] = str(data_root())
        tokens += ["--limit", str(LIMIT)]
    if tokens[0] == "unseen":
        tokens[0] = str(s.shim / "unseen")
    if tokens[1:2] == ["serve"] or tokens[0] == "curl":
        tokens = [_port(t, s) for t in tokens]
    return tokens, background


def _port(token: str, s: Session) -> str:
    """The README's port numbers become free ones (another process may hold 8000)."""
    for readme_port in re.findall(r"(?<=127\.0\.0\.1:)\d+|^\d{4,5}$", token):
        s.ports.setdefault(readme_port, str(free_port()))
        token = token.replace(readme_port, s.ports[readme_port])
    return token


def _wait_healthy(proc: subprocess.Popen, port: str, cmd: Command) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"README line {cmd.line}: `{cmd.text}` exited with {proc.returncode}:\n{out}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"README line {cmd.line}: `{cmd.text}` did not answer /healthz within 300 s")


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.id for c in COMMANDS])
def test_readme_command(cmd: Command, session: Session) -> None:
    session.stop_servers(keep_block=cmd.block)
    if MARK in cmd.comment:
        pytest.skip(f"marked illustrative in the README (line {cmd.line})")
    argv, background = argv_for(cmd, session)
    if argv[1:2] == ["serve"]:
        proc = subprocess.Popen(argv, cwd=session.cwd, env=session.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        session.servers.append((cmd.block, proc))
        port = argv[argv.index("--port") + 1] if "--port" in argv else "8000"
        _wait_healthy(proc, port, cmd)
        if not background:
            session.stop_servers()
        return
    assert not background, f"README line {cmd.line}: only `unseen serve` may run in the background"
    done = subprocess.run(argv, cwd=session.cwd, env=session.env, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    assert done.returncode == 0, (
        f"README line {cmd.line}: `{cmd.text}` exited with {done.returncode}\n"
        f"--- stdout (end)\n{done.stdout[-3000:]}\n--- stderr (end)\n{done.stderr[-3000:]}"
    )
    if argv[0] == "curl":
        assert '"results"' in done.stdout and '"is_ood"' in done.stdout, done.stdout


PY_BLOCKS = python_blocks(TEXT)


@pytest.mark.parametrize("block", PY_BLOCKS, ids=[f"L{b.line}" for b in PY_BLOCKS])
def test_readme_python_block(block: Block, session: Session) -> None:
    first = block.body.lstrip().splitlines()[0] if block.body.strip() else ""
    if first.startswith("#") and MARK in first:
        pytest.skip(f"marked illustrative in the README (line {block.line})")
    done = subprocess.run([sys.executable, "-c", block.body], cwd=session.cwd, env=session.env,
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, f"README python block at line {block.line}:\n{done.stderr[-3000:]}"


def test_every_code_block_names_its_language() -> None:
    # a block without a language would hide its commands from this test
    unnamed = [b.line for b in blocks(TEXT) if b.lang not in KNOWN]
    assert not unnamed, f"README code blocks at lines {unnamed} need a language ({sorted(KNOWN)})"


def test_the_parser_reads_continuations_comments_and_marks() -> None:
    text = ("```sh\nunseen a --x 1 \\\n   --y 2   # note\n# only a comment\n"
            "unseen b &\nunseen c   # illustrative: yours\n```\n```python\nprint(1)\n```\n")
    got = commands(text)
    assert [(c.line, c.text, c.comment) for c in got] == [
        (2, "unseen a --x 1 --y 2", "note"),
        (5, "unseen b &", ""),
        (6, "unseen c", "illustrative: yours"),
    ]
    assert [b.body for b in python_blocks(text)] == ["print(1)"]
