"""The READMEs' commands, checked against the code so that a false command fails the suite.

Every command line of a fenced block in README.md and recall/README.md is read and checked
offline: ``mindstream …`` lines are parsed by the real argument parser (a wrong subcommand or
option fails), ``make`` targets must exist in the Makefile, ``pip install`` extras in
pyproject.toml, exported variables must be settings, ``curl`` and ``GET``/``POST`` lines must
name a path and query parameters of recall/openapi.json. Inline ``mindstream …`` spans must
name an existing command (its ``--help`` answers). Each command of the README's command table
answers ``--help``, every package runs as ``python -m <package> --help``, and the
"Local services without Docker" block runs as written.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from mindstream.app.cli import build_parser
from mindstream.settings import known_env
from tests.requirements import missing

ROOT = Path(__file__).resolve().parents[2]
READMES = (ROOT / "README.md", ROOT / "recall" / "README.md")
PACKAGES = ("mindstream", "model_export", "stream", "recall", "infra")

# Programs the READMEs show that are not this project's; each gets the check named here.
CHECKED_ELSEWHERE = {
    "python3": "creates the virtualenv",
    "apt-get": "installs redis-server (Debian's package)",
    "redis-cli": "reads a record; the record layout is checked by the stream tests",
}

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"(?<!`)`(mindstream [^`]+)`(?!`)")


def fenced_blocks(text: str) -> Iterator[tuple[str, str]]:
    """(language, body) of every fenced block."""
    for match in FENCE.finditer(text):
        yield match[1], match[2]


def command_lines(text: str) -> Iterator[str]:
    """Shell command lines of the fenced blocks: every line of a ``bash`` block, and the lines
    of other blocks that start with ``mindstream``, ``$ `` (a prompt) or an HTTP method."""
    for language, body in fenced_blocks(text):
        if language not in ("", "bash"):
            continue
        joined = re.sub(r"\\\n\s*", " ", body)  # backslash continuations
        for raw in joined.splitlines():
            line = raw.strip()
            if line.startswith("$ "):
                line = line[2:]
            elif language != "bash" and not re.match(r"(mindstream|GET|POST) ", line):
                continue
            if line and not line.startswith("#"):
                yield line


def _words(line: str) -> list[str]:
    words = shlex.split(line, comments=True)
    if words and words[-1] == "&":
        words = words[:-1]
    if len(words) == 2 and words[0] == "eval":  # eval "$(mindstream services up)"
        inner = re.fullmatch(r"\$\((.*)\)", words[1])
        if inner:
            return _words(inner[1])
    return words


def _parse_mindstream(argv: list[str]) -> str | None:
    """None when the parser accepts ``argv``, else its error message."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return stderr.getvalue().strip().splitlines()[-1]
    return None


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.MULTILINE))


def _extras() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return set(project["optional-dependencies"])


def _check_url(method: str, url: str) -> str | None:
    spec = json.loads((ROOT / "recall" / "openapi.json").read_text(encoding="utf-8"))
    parts = urlsplit(url if "://" in url else f"http://{url}")
    for template, operations in spec["paths"].items():
        pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, parts.path):
            operation = operations.get(method.lower())
            if operation is None:
                return f"{method} is not an operation of {template}"
            known = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            unknown = sorted(set(parse_qs(parts.query)) - known)
            return f"{template} has no query parameter {unknown}" if unknown else None
    return f"{parts.path} is not a path of recall/openapi.json"


def check_command(line: str) -> str | None:
    """None when ``line`` is a true command, else what is wrong with it."""
    words = _words(line)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):  # VAR=value command
        words = words[1:]
    if not words:
        return None
    program, args = words[0], words[1:]
    if program.startswith(".venv/bin/"):  # the project's virtualenv: the same programs
        program = program.removeprefix(".venv/bin/")
    elif "/" in program:  # a script of the repository
        return None if (ROOT / program).is_file() else f"no file {program} in the repository"
    if program == "mindstream":
        return _parse_mindstream(args)
    if program == "nice":
        return check_command(shlex.join(args[2:] if args[:1] == ["-n"] else args))
    if program in ("GET", "POST"):  # an API listing: one or more "METHOD /path" per line
        pairs = [(w, words[i + 1]) for i, w in enumerate(words[:-1]) if w in ("GET", "POST")]
        problems = [p for method, path in pairs if (p := _check_url(method, path))]
        return "; ".join(problems) or None
    if program == "curl":
        urls = [a for a in args if not a.startswith("-")]
        method = args[args.index("-X") + 1] if "-X" in args else "GET"
        return _check_url(method, urls[0]) if urls else "curl without a URL"
    if program in ("python", "python3") and args[:1] == ["-m"] and len(args) > 1:
        if args[1] == "mindstream":
            return _parse_mindstream(args[2:])
        return None if importlib.util.find_spec(args[1]) else f"no module {args[1]}"
    if program == "pytest":
        paths = [a.split("::")[0] for i, a in enumerate(args) if _is_pytest_path(args, i)]
        missing = sorted(p for p in paths if not (ROOT / p).exists())
        return f"no test file {missing}" if missing else None
    if program == "make":
        missing = sorted(set(args) - _makefile_targets())
        return f"the Makefile has no target {missing}" if missing else None
    if program == "export":
        names = [a.split("=", 1)[0] for a in args]
        unknown = sorted(set(names) - known_env())
        return f"{unknown} are not settings (mindstream/settings.py)" if unknown else None
    if program.endswith("pip") and args[:1] == ["install"]:
        for arg in args[1:]:
            extras = re.fullmatch(r"-e|\.?\[(.*)\]|\S+\[(.*)\]", arg)
            if extras and (extras[1] or extras[2]):
                unknown = sorted(set((extras[1] or extras[2]).split(",")) - _extras())
                if unknown:
                    return f"pyproject.toml has no extra {unknown}"
            pin = re.fullmatch(r"torch==(.+)", arg)
            if pin and f"torch=={pin[1]}" not in (ROOT / "Makefile").read_text():
                return f"the Makefile does not install torch=={pin[1]}"
        return None
    if program == "docker" and args[:1] == ["compose"]:
        return None if (ROOT / "docker-compose.yml").is_file() else "no docker-compose.yml"
    if program in CHECKED_ELSEWHERE:
        return None
    return f"unknown program {program!r}: teach tests/unit/test_readme_commands.py to check it"


def _is_pytest_path(args: list[str], i: int) -> bool:
    """Whether ``args[i]`` of a pytest command line names a test file or folder."""
    after_option = i > 0 and args[i - 1] in ("-k", "-m", "-p", "--durations", "-n")
    return not args[i].startswith("-") and not after_option


def readme_problems(text: str) -> list[str]:
    """What is wrong with the commands of one README's text (empty when all are true)."""
    problems = []
    for line in command_lines(text):
        problem = check_command(line)
        if problem:
            problems.append(f"{line!r}: {problem}")
    for span in INLINE.findall(text):
        for command in _expand(span):
            if _parse_mindstream([*_command_path(command), "--help"]) is not None:
                problems.append(f"`{span}`: no such command")
            elif any(w.startswith("-") for w in command):
                problem = _parse_mindstream(command)
                if problem:
                    problems.append(f"`{span}`: {problem}")
    return problems


def _expand(span: str) -> list[list[str]]:
    """The commands an inline span stands for: ``a\\|b`` alternatives, ``[--x]`` optional;
    a placeholder (COMMAND, <package>) stands for nothing to check."""
    words = span.replace("\\|", "|").split()[1:]
    commands: list[list[str]] = [[]]
    for word in words:
        if re.fullmatch(r"[A-Z]+|<\w+>|…", word):
            continue
        optional = re.fullmatch(r"\[(.*)\]", word)
        if optional:
            commands += [[*c, optional[1]] for c in commands]
        else:
            commands = [[*c, alt] for c in commands for alt in word.split("|")]
    return commands


def _command_path(words: list[str]) -> list[str]:
    """The subcommand words of a command (up to its first option or argument)."""
    path: list[str] = []
    for word in words:
        if word.startswith("-") or "/" in word or "." in word:
            break
        path.append(word)
    return path


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_readme_commands_are_true(readme: Path) -> None:
    text = readme.read_text(encoding="utf-8")
    assert len(list(command_lines(text))) >= 6
    assert readme_problems(text) == []


def test_a_false_command_is_reported() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    worker = "mindstream stream worker   # the worker"
    assert worker in text
    wrong = text.replace(worker, "mindstream stream          # the worker")
    problems = readme_problems(wrong)
    assert len(problems) == 1 and "'mindstream stream " in problems[0], problems
    assert "required: ACTION" in problems[0]
    for false, why in [
        ("mindstream publish x --speed 10", "unrecognized arguments: --speed"),
        ("make deploy", "no target ['deploy']"),
        ("export MINDSTREAM_BATCHSIZE=5", "['MINDSTREAM_BATCHSIZE'] are not settings"),
        (".venv/bin/pip install -e '.[cpu,tpu]'", "no extra ['tpu']"),
        ("curl -s 'localhost:8080/v1/user/u1/candidates'", "is not a path"),
        ("curl -s 'localhost:8080/v1/users/u1/candidates?count=3'", "no query parameter"),
        ("kubectl apply -f x.yaml", "unknown program 'kubectl'"),
        ("GET  /healthz   GET /health", "/health is not a path"),
        (".venv/bin/pytest tests/unit/test_nothing.py -k x", "no test file"),
        ("python -m model_export.nothing run", "no module model_export.nothing"),
        ("python -m mindstream stream", "required: ACTION"),
        (".ci/nothing", "no file .ci/nothing"),
    ]:
        assert why in (check_command(false) or ""), false
    assert readme_problems("Run `mindstream stream worker` or `mindstream streams`.") == [
        "`mindstream streams`: no such command"
    ]


def _table_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## The command line\n", 1)[1].split("\n### ", 1)[0]
    spans = re.findall(r"^\| `(mindstream [^`]+)` \|", section, re.MULTILINE)
    assert len(spans) >= 8, spans
    return [_command_path(c) for span in spans for c in _expand(span)]


@pytest.mark.parametrize("command", _table_commands(), ids=" ".join)
def test_each_command_of_the_table_answers_help(command: list[str]) -> None:
    assert _parse_mindstream([*command, "--help"]) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_runs_as_python_m_help(package: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", package, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:")


def _section_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n{heading}\n", 1)[1].split("\n#", 1)[0]
    blocks = [body for language, body in fenced_blocks(section) if language == "bash"]
    assert blocks, f"{heading} should hold a bash block"
    return blocks[0]  # the section's first block: the dependency-free Tansu services


@pytest.mark.integration
def test_local_services_block_runs_as_written(tmp_path: Path) -> None:
    from infra.broker import find_tansu
    from infra.exceptions import BinaryNotFoundError
    from infra.redis_server import find_redis_server

    try:
        find_tansu()
        find_redis_server()
    except BinaryNotFoundError as exc:
        missing(str(exc))
    block = _section_block("### Local services without Docker")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "mindstream"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m mindstream "$@"\n')
    shim.chmod(0o755)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in known_env() and not k.startswith("MINDSTREAM_")
    }
    env.update(PATH=f"{bin_dir}:{env.get('PATH', '')}", MINDSTREAM_DATA_DIR=str(tmp_path / "var"))
    script = f'set -eu\n{block}\necho "BROKER=$KAFKA_BOOTSTRAP_SERVERS REDIS=$REDIS_URL"\n'
    try:
        out = subprocess.run(
            ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=180
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert re.search(r"BROKER=127\.0\.0\.1:\d+ REDIS=redis://127\.0\.0\.1:\d+/0", out.stdout)
        # `down` left nothing running: status says so with its exit status.
        status = subprocess.run(
            ["mindstream", "services", "status"], env=env, capture_output=True, timeout=60
        )
        assert status.returncode == 3, status
    finally:
        subprocess.run(["mindstream", "services", "down"], env=env, capture_output=True, timeout=60)
