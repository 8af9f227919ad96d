"""The layers of ARCHITECTURE.md, enforced: imports point down only; envs/ and data/ know no
torch; nets/ and planners/ know no environment.

Checked twice: statically, over every ``import`` in the package (lazy ones inside functions
included), and at run time, by importing the torch-free layers in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pixelplan"

# Lower rank = lower layer. A module may import its own package or a lower rank only.
RANK = {"spec": -1, "suites": -1, "video": 0, "config": 0, "envs": 0, "data": 0, "nets": 1, "planners": 2, "agents": 3, "runs": 4,
        "cli": 5, "__main__": 6, "__init__": 6}
NO_TORCH = ("envs", "data", "config", "spec", "suites", "video")
NO_ENV = ("nets", "planners", "spec", "suites")
ENV_LIBRARIES = ("gymnasium", "gym", "dm_control", "mujoco", "ale_py")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts   # ("pixelplan", "envs", "core")
        yield path, parts


def _imports(path: Path, parts: tuple[str, ...]):
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                yield ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.module


def _layer(parts: tuple[str, ...]) -> str:
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_layer_table_knows_every_top_level_part_of_the_package():
    assert {_layer(parts) for _, parts in _modules()} <= set(RANK)


def test_imports_point_down_only():
    upward = []
    for path, parts in _modules():
        here = _layer(parts)
        for name in _imports(path, parts):
            if not name or not name.startswith("pixelplan."):
                continue
            there = name.split(".")[1]
            if there in RANK and there != here and RANK[there] >= RANK[here]:
                upward.append(f"{'.'.join(parts)} imports {name}")
    assert not upward, "imports that do not point down:\n" + "\n".join(upward)


@pytest.mark.parametrize("layer,banned", [(layer, ("torch",)) for layer in NO_TORCH]
                         + [(layer, ENV_LIBRARIES + ("pixelplan.envs",)) for layer in NO_ENV])
def test_layer_does_not_import(layer, banned):
    found = []
    for path, parts in _modules():
        if _layer(parts) != layer:
            continue
        for name in _imports(path, parts):
            if name and any(name == b or name.startswith(b + ".") for b in banned):
                found.append(f"{'.'.join(parts)} imports {name}")
    assert not found, "\n".join(found)


def test_torch_free_layers_load_without_torch():
    code = ("import sys; import pixelplan.envs, pixelplan.data, pixelplan.config, pixelplan.spec, pixelplan.envs.vector; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"importing envs/data/config loaded torch: {proc.stdout.strip()[:300]}"
