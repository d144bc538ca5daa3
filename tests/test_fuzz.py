"""Bad input, fuzzed: every mangled study file is accepted or refused with one StudyError line, and nothing is written.

The files are mutations (seeded, so every run tries the same ones) of the catalogue studies and
of a tiny study, plus hand-written attacks: YAML bombs and tags, deep nesting, binary junk, names
that are paths, models too large for any machine, NaN and infinite numbers.
"""

import copy
import datetime
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from suite.errors import StudyError
from suite.spec.checks import MAX_MODEL_BYTES, MAX_RUNS, NAME_PATTERN, model_size
from suite.spec.study import expand, load_study

from conftest import IN_CI, TINY_STUDY

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = sorted((ROOT / "studies").glob("*.yaml"))
SEEDS = [TINY_STUDY] + [p.read_text() for p in CATALOGUE]

LONG = "x" * 100_000
BAD_VALUES = [
    None, True, False, 0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**30, 1e308, -1e-308, 0.5, -0.0,
    math.nan, math.inf, -math.inf, "", " ", "x", "..", ".", "../x", ".hidden", "a/b", "a\nb", "\u2028", "\x00\x07",
    "ü∂😀 名前", "mnist", "adam", "full", LONG, "a" * 300, [], [[]], [None], {}, {"a": 1}, {"name": "mlp"},
    [1e9], [10**9], [2**62], [-5], [math.nan], list(range(500)), datetime.date(2001, 2, 3), b"\xff\x00", {1, 2},
]
BAD_KEYS = ["seedz", "", " ", "__proto__", "名前", "a" * 300, "a.b", "execution", "data", "name", "<<"]


def _paths(tree):
    """Every (container, key) position of a parsed YAML tree."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        yield tree, key
        yield from _paths(value)


def _nested(depth: int):
    tree: object = 1
    for _ in range(depth):
        tree = {"a": [tree]}
    return tree


def mutate(text: str, rng: random.Random) -> str | bytes:
    """One seeded mutation of a valid study file: of its parsed tree (then dumped again), or of its text."""
    tree = yaml.safe_load(text)
    kind = rng.randrange(12)
    if kind < 7:
        for _ in range(rng.choice([1, 1, 2, 3])):
            parent, key = rng.choice(list(_paths(tree)))
            if kind in (0, 1, 2):
                parent[key] = copy.deepcopy(rng.choice(BAD_VALUES))
            elif kind == 3 and isinstance(parent, dict):
                parent[rng.choice(BAD_KEYS) + rng.choice(["", "2"])] = copy.deepcopy(rng.choice(BAD_VALUES))
            elif kind == 3 or kind == 4:
                del parent[key]
            elif kind == 5:
                parent[key] = [parent[key]] if rng.random() < 0.5 else {"x": parent[key]}
            else:
                parent[key] = _nested(rng.choice([5, 20, 40]))
        return yaml.safe_dump(tree, allow_unicode=rng.random() < 0.5, sort_keys=rng.random() < 0.5)
    lines = text.splitlines(keepends=True)
    i = rng.randrange(len(lines))
    if kind == 7:
        return text[: rng.randrange(len(text) + 1)]  # truncated
    if kind == 8:
        junk = "".join(rng.choice(":{}[]&*!|>-#%@`'\"\t\n ,?~=ü\x00\x1b\u2028") for _ in range(rng.randint(1, 6)))
        at = rng.randrange(len(text) + 1)
        return text[:at] + junk + text[at:]
    if kind == 9:
        lines[i] = rng.choice(["", " " + lines[i], lines[i] * 2, lines[i].replace(":", "", 1), "!foo " + lines[i]])
        return "".join(lines)
    if kind == 10:
        blob = bytearray(text.encode())
        for _ in range(rng.randint(1, 4)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        return bytes(blob)
    return text.replace("\n", rng.choice(["\r\n", "\r", "\n\n", "\t\n"]))


def _study(name="t", extra: str = "", base: str = "model: {name: mlp, hidden: [8]}") -> str:
    return f"name: {name}\nquestion: q?\nbase:\n  {base}\n  optimizer: {{name: adam, lr: 0.01}}\nvariants:\n  a: {{}}\n  b: {{train: {{epochs: 2}}}}\n{extra}"


BOMB = "".join(f"{c}: &{c} [{', '.join([f'*{p}' if p else '1'] * 9)}]\n"
               for c, p in zip("abcdefghi", [None, *"abcdefgh"]))
# (label, file content, what the error must say; None: either accepted or refused)
ATTACKS = [
    ("empty", "", "a study file is a mapping"),
    ("comment only", "# nothing\n", "a study file is a mapping"),
    ("document marker", "---\n", "a study file is a mapping"),
    ("a list", "[1, 2]\n", "a study file is a mapping"),
    ("a number", "42\n", "a study file is a mapping"),
    ("empty mapping", "{}\n", "name: Field required"),
    ("binary junk", random.Random(1).randbytes(4096), "not a UTF-8 text YAML file"),
    ("utf-16", _study().encode("utf-16"), "not a UTF-8 text YAML file"),
    ("latin-1", _study(extra="description: caf\xe9\n").encode("latin-1"), "not a UTF-8 text YAML file"),
    ("NUL byte", _study() + "\x00\n", "not valid YAML"),
    ("escape byte", "name: \x1b[31mred\n", "not valid YAML"),
    ("BOM", "\ufeff" + _study(), None),
    ("huge file", _study() + "# " + "x" * 1_100_000 + "\n", "larger than"),
    ("python object tag", "!!python/object/apply:os.system ['echo pwned > pwned.txt']\n", "not valid YAML"),
    ("python object in a value", _study(extra="description: !!python/object:os.system {}\n"), "not valid YAML"),
    ("python name tag", _study(extra="description: !!python/name:os.system ''\n"), "not valid YAML"),
    ("custom tag", _study(extra="description: !foo bar\n"), "not valid YAML"),
    ("bad !!int", _study(extra="seeds: !!int abc\n"), "not valid YAML"),
    ("bad !!float", _study(extra="seeds: !!float abc\n"), "not valid YAML"),
    ("bad !!binary", _study(extra="description: !!binary '%%%'\n"), "a bytes"),
    ("30 February", _study(extra="description: 2001-02-30\n"), "not valid YAML"),
    ("a date", _study(extra="description: 2001-02-03\n"), "a date (from a YAML tag or an unquoted date)"),
    ("!!set", _study(extra="claims: !!set {a > b: null}\n"), "a set"),
    ("!!omap", _study(extra="grid: !!omap [{model.dropout: [0.1]}]\n"), "a tuple"),
    ("!!binary value", _study(extra="description: !!binary aGVsbG8=\n"), "a bytes"),
    ("5000-digit int", _study(extra=f"seeds: {'9' * 5000}\n"), "not valid YAML"),
    ("unhashable key", "? [a, b]\n: c\n", "not valid YAML"),
    ("number key", _study(extra="1: x\n"), "key 1 is not text"),
    ("null key", _study(extra="~: x\n"), "key None is not text"),
    ("boolean variant name", _study().replace("  a: {}", "  off: {}"), "key False is not text"),
    ("merge keys", _study(extra="smoke: &s {seeds: 1}\ntune_: {<<: *s}\n"), "unknown key 'tune_'"),
    ("billion laughs", BOMB + _study(), "values once YAML aliases are expanded"),
    ("billion laughs in a grid", _study(extra="grid:\n  model.hidden: &a [[1, 1, 1, 1, 1, 1, 1, 1]]\n" + "".join(
        f"  x{i}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for i, (c, p) in enumerate(zip("bcdefgh", "abcdefg")))),
     "values once YAML aliases are expanded"),
    ("recursive list", _study(extra="claims: &c [*c]\n"), "nested more than"),
    ("recursive mapping", _study(base="model: &m {name: mlp, x: *m}"), "nested more than"),
    ("deep flow nesting", _study(extra="description: " + "[" * 50_000 + "]" * 50_000 + "\n"), "not valid YAML"),
    ("deep block nesting", _study(extra="description:\n" + "".join("  " * i + "- \n" for i in range(1, 200))), "nested"),
    ("nested 40 deep", _study(extra="description: " + "[" * 40 + "]" * 40 + "\n"), "nested more than 30 levels"),
    ("name ..", _study(name="'..'"), "name: a study name may only use"),
    ("name .", _study(name="'.'"), "may not start with a dot"),
    ("name ../x", _study(name="../x"), "may not start with a dot"),
    ("name .hidden", _study(name=".hidden"), "may not start with a dot"),
    ("name a/b", _study(name="a/b"), "may only use ASCII letters (a-z, A-Z)"),
    ("name with newline", _study(name='"ok\\n"'), "may only use ASCII letters (a-z, A-Z)"),
    ("name with NUL", _study(name='"ok\\0x"'), "may only use ASCII letters (a-z, A-Z)"),
    ("long name", _study(name="a" * 300), "at most 100 characters"),
    ("unicode name", _study(name="名前"), "may only use ASCII letters (a-z, A-Z)"),
    ("variant ..", _study().replace("  a: {}", "  '..': {}"), "variants: variant name '..' may only use"),
    ("variant with newline", _study().replace("  a: {}", '  "a\\n": {}'), "variant name"),
    ("variant with a slash", _study().replace("  a: {}", "  a/b: {}"), "variant name 'a/b'"),
    ("a valid grid", _study(extra="grid: {model.hidden: [[8], [9]]}\n"), None),
    ("dataset with a newline", _study(extra='datasets: ["mnist\\n"]\n'), "unknown dataset 'mnist\\n'"),
    ("claim with line separator", _study(extra='claims: ["a >\\u2028b"]\n'), None),
    ("claim with many blanks", _study(extra=f"claims: ['a > b{' ' * 200_000}x']\n"), "claims: cannot read"),
    ("long claim", _study(extra=f"claims: ['{'a ' * 100_000}']\n"), "claims: cannot read"),
    ("huge MLP", _study(base="model: {name: mlp, hidden: [1000000000]}"), "GiB (795,000,000,010 parameters"),
    ("huge MLP grid", _study(extra="grid: {model.hidden: [[8], [100000000]]}\n"), "variant 'a,hidden=100000000' on mnist"),
    ("wide and deep MLP", _study(base="model: {name: mlp, hidden: [" + ", ".join(["20000"] * 30) + "]}"), "parameters"),
    ("huge CNN channels", _study(base="model: {name: cnn, channels: [10000000], pool: 26}"), "activations per example"),
    ("huge CNN padding", _study(base="model: {name: cnn, channels: [8], padding: 1000000}"), "GiB"),
    ("CNN kernel larger than the image", _study(base="model: {name: cnn, kernel_size: 100}"), "shrinks a 28x28 input to nothing"),
    ("CNN pooling everything away", _study(base="model: {name: cnn, channels: [4, 4, 4, 4], pool: 2}"), "to nothing"),
    ("huge search corner", _study(base="model: {name: cnn}", extra="search:\n  space:\n    model.kernel_size: {type: int, low: 1, high: 1000}\n"),
     "search.space.model.kernel_size = 1000"),
    ("full batch of a big MLP", _study(base="model: {name: mlp, hidden: [100000, 100000]}", extra="grid: {train.batch_size: [full]}\n"),
     "GiB"),
    ("lr NaN", _study().replace("lr: 0.01", "lr: .nan"), "base.optimizer.lr: nan is not a number"),
    ("lr inf", _study().replace("lr: 0.01", "lr: .inf"), "base.optimizer.lr: inf is not a number"),
    ("lr -inf", _study().replace("lr: 0.01", "lr: -.inf"), "-inf"),
    ("lr 1e400", _study().replace("lr: 0.01", "lr: 1e400"), "base.optimizer.lr: inf is not a number"),
    ("lr 1.0e+400", _study().replace("lr: 0.01", "lr: 1.0e+400"), "base.optimizer.lr: inf is not a number"),
    ("lr 'nan'", _study().replace("lr: 0.01", "lr: 'nan'"), "base.optimizer.lr: Input should be greater than 0 (got 'nan')"),
    ("weight decay 'inf'", _study().replace("lr: 0.01", "lr: 0.01, weight_decay: 'inf'"), "base.optimizer.weight_decay: inf is not"),
    ("lr 'infinity' in a grid", _study(extra="grid: {optimizer.lr: [0.1, infinity]}\n"), "grid.optimizer.lr: inf is not a number"),
    ("search bound '-inf'", _study(extra="search:\n  space:\n    optimizer.lr: {type: float, low: '-inf', high: 1}\n"),
     "search.space.optimizer.lr.low: -inf"),
    ("seed as a huge string", _study(extra="seeds: ['99999999999999999999']\n"), "seeds.0: 99999999999999999999 is not"),
    ("epochs inf", _study().replace("epochs: 2", "epochs: .inf"), "variants.b.train.epochs: inf"),
    ("epochs 1e300", _study().replace("epochs: 2", "epochs: 1.0e+300"), "1e+300 is not a number"),
    ("epochs beyond 64 bits", _study().replace("epochs: 2", "epochs: 99999999999999999999999"), "below 2**63"),
    ("weight decay inf", _study(extra="grid: {optimizer.weight_decay: [0, .inf]}\n"), "grid.optimizer.weight_decay.1: inf"),
    ("search bound inf", _study(extra="search:\n  space:\n    optimizer.lr: {type: float, low: 0.001, high: .inf}\n"), "high: inf"),
    ("seeds NaN", _study(extra="seeds: [.nan]\n"), "seeds.0: nan"),
    ("a billion seeds", _study(extra="seeds: 1000000000\n"), "at most 100,000"),
    ("a billion smoke seeds", _study(extra="smoke: {seeds: 1000000000}\n"), "smoke.seeds"),
    ("huge seed", _study(extra="seeds: [18446744073709551616]\n"), "below 2**63"),
    ("grid explosion", _study(extra="grid: {" + ", ".join(f"x{i}: [{', '.join(map(str, range(10)))}]" for i in range(8)) + "}\n"),
     "runs (datasets x variants x grid points x seeds)"),
    ("negative sizes", _study(base="data: {val_size: -1, train_size: -5}"), "base.data.val_size: Input should be greater than or equal to 1"),
    ("rotation NaN", _study(base="data: {augment: {rotation: .nan}}"), "nan is not a number"),
    ("wrong types everywhere", "name: [1]\nquestion: {a: b}\nseeds: yes\ndatasets: 5\n", "name: Input should be a valid string"),
    ("execution set", _study(extra="grid: {execution.threads: [1, 2]}\n"), "how runs are computed"),
]


def _write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def _one_line_refusal(err: StudyError, path: Path) -> str | None:
    """What is wrong with an error, or None."""
    message = str(err)
    if err.exit_code != 2:
        return f"exit code {err.exit_code}"
    if len(message.splitlines()) != 1 or "\n" in message or "\r" in message:
        return f"not one line: {message[:300]!r}"
    if not message.startswith(str(path)):
        return f"does not name the file: {message[:300]!r}"
    return None


def _check(path: Path, studies: Path, expected: str | None) -> tuple[str | None, bool]:
    """Load `path`: (what went wrong, or None; whether it was accepted)."""
    try:
        study = load_study(str(path), studies)
    except StudyError as err:
        problem = _one_line_refusal(err, path)
        if problem is None and expected is not None and expected not in str(err):
            problem = f"expected {expected!r} in {str(err)[:300]!r}"
        return problem, False
    except BaseException as err:  # noqa: BLE001 - any other exception is the bug this test looks for
        return f"{type(err).__name__}: {str(err)[:300]}", False
    if expected is not None:
        return f"accepted, expected a refusal with {expected!r}", True
    assert re.fullmatch(NAME_PATTERN, study.name) and len(study.name) <= 100
    if study.run_count <= 1000:
        assert len(expand(study)) == study.run_count
    return None, True


def _snapshot(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _repo_status() -> str | None:
    try:
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None  # not a git checkout


def fuzz_cases() -> list[tuple[str, str | bytes, str | None]]:
    """Seeded mutations of every seed file, then the hand-written attacks."""
    rng = random.Random(0)
    cases = [(f"seed {i} mutation {j}", mutate(text, rng), None) for i, text in enumerate(SEEDS) for j in range(14)]
    return cases + ATTACKS


def test_fuzzed_files_are_accepted_or_refused_in_one_line(tmp_path, monkeypatch):
    cases = fuzz_cases()
    assert len(cases) >= 300
    studies, cwd = tmp_path / "studies", tmp_path / "cwd"
    studies.mkdir()
    cwd.mkdir()
    paths = [_write(studies, f"f{i:04d}.yaml", content) for i, (_, content, _) in enumerate(cases)]
    (studies / "dir.yaml").mkdir()
    before, status = _snapshot(tmp_path), _repo_status()
    monkeypatch.chdir(cwd)  # anything written relative to the working directory would land here
    problems, accepted = [], 0
    for (label, _, expected), path in zip(cases, paths):
        problem, ok = _check(path, studies, expected)
        accepted += ok
        if problem:
            problems.append(f"{label} ({path.name}): {problem}")
    for name in ["..", ".", "../x", "", "a\nb", "\x00", "x" * 5000, "dir", str(studies / "dir.yaml"), "no/such.yaml"]:
        try:
            load_study(name, studies)
            problems.append(f"lookup {name[:20]!r}: accepted")
        except StudyError as err:
            if len(str(err).splitlines()) != 1 or "\n" in str(err):
                problems.append(f"lookup {name[:20]!r}: not one line")
    assert not problems, f"{len(problems)} of {len(cases)} files:\n" + "\n".join(problems)
    assert 0 < accepted < len(cases)  # the mutations reach valid files too, not only parse errors
    assert _snapshot(tmp_path) == before and not list(cwd.iterdir()), "validation wrote files"
    assert status is None or _repo_status() == status, "validation changed the repository"


@pytest.mark.parametrize("label, how", [("binary junk", "script"), ("name ..", "script"), ("huge MLP", "script"),
                                        ("billion laughs", "module"), ("deep flow nesting", "module")])
def test_cli_validate_refuses_in_one_line(tmp_path, label, how):
    """`suite validate FILE` (the installed script, or `python -m suite`): exit 2, one `error:` line, no traceback."""
    script = Path(sys.executable).parent / "suite"
    if how == "script" and not script.is_file() and not IN_CI:
        pytest.skip("the suite script is not installed")
    path = _write(tmp_path, "bad.yaml", next(c for name, c, _ in ATTACKS if name == label))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    command = [str(script)] if how == "script" else [sys.executable, "-m", "suite"]
    out = subprocess.run([*command, "validate", str(path)], capture_output=True, text=True, cwd=cwd, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert str(path) in out.stderr and not list(cwd.iterdir())


def test_catalogue_and_tiny_study_still_validate_far_below_the_caps(tmp_path):
    for text in SEEDS:
        study = load_study(str(_write(tmp_path, "s.yaml", text)), tmp_path)
        assert 0 < 100 * study.run_count <= MAX_RUNS
        assert all(100 * model_size(c)[0] < MAX_MODEL_BYTES for c in study.configs.values())


def test_arithmetic_model_size_is_what_torch_builds():
    """checks.model_size (no torch) counts the parameters models.py builds, on the catalogue and on random models."""
    from suite import components
    from suite.spec import config
    from suite.components import models
    rng = random.Random(0)
    configs = [c for p in CATALOGUE for c in load_study(str(p)).configs.values()]
    for _ in range(40):
        name = rng.choice(["mnist", "cifar10", "quadratic"])
        if name != "quadratic" and rng.random() < 0.6:
            model = {"name": "cnn", "channels": [rng.randint(1, 9) for _ in range(rng.randint(1, 3))], "kernel_size": rng.randint(1, 5),
                     "padding": rng.randint(0, 2), "pool": rng.choice([0, 2]), "hidden": [rng.randint(1, 30)] * rng.randint(0, 2)}
        else:
            model = {"name": "mlp", "hidden": [rng.randint(1, 50) for _ in range(rng.randint(0, 3))]}
        configs.append(config.RunConfig(data={"name": name}, model=model))
    for cfg in configs:
        shape, outputs = components.get("dataset", cfg.data.name).inputs
        try:
            expected = models.parameter_count(cfg.model, shape, outputs)
        except ValueError:
            with pytest.raises(ValueError):
                model_size(cfg)
            continue
        assert model_size(cfg)[0] == expected, cfg.model
