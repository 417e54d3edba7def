"""The dependency rule of the package's layers, checked on the source.

    errors, files, cli   (leaves)
    config               sections, presets, flags
    method               the method's pure math: no megatron, no torch.distributed
    mcore                the only importer of megatron-core
    model_io             tokenizers, HF/GGUF import and export, preprocess
    builtin              the built-in corpus, its datasets, the warm start
    run                  the training run: trainer, step builder, difficulty, evaluation
    study                the science tooling: replication, its reports, post-training

A module may import its own layer and the layers above it in this list (and `kernels`, the
leaf folder of the vocabulary kernels, which imports only torch); relative imports are resolved
and held to the same rule. Entry-point shims at the package top (`rmt_megatron.evaluate`, ...)
may import anything. A folder of the package that the list does not name is an error, and so is
a module that imports `megatron.core.parallel_state` anywhere but `mcore/parallel.py`. The table
in docs/architecture.md names the same folders.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rmt_megatron"
ORDER = ["leaves", "config", "method", "mcore", "model_io", "builtin", "run", "study"]
LEAVES = {"errors", "files", "cli", "kernels"}
PARALLEL_STATE_HOME = "rmt_megatron.mcore.parallel"
FOLDERS = {name for name in ORDER if name != "leaves"} | {"kernels"}
"""The package's sub-folders: one a layer, and the kernels' leaf folder."""


def _layer(module: str) -> str | None:
    """The layer of `rmt_megatron.<name>...` (None for a top-level entry shim or outside the
    package; "unknown" for a sub-folder that is not a layer)."""
    parts = module.split(".")
    if parts[0] != "rmt_megatron" or len(parts) < 2:
        return None
    if parts[1] in LEAVES:
        return "leaves"
    if parts[1] in FOLDERS:
        return parts[1]
    return None if len(parts) == 2 else "unknown"


def _imports(module: str, source: str, is_package: bool = False) -> list[str]:
    """Every module name `source` (the text of `module`) imports, relative ones resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """What `module` (its source text) breaks of the rule; empty when it keeps it."""
    layer = _layer(module)
    if layer is None:
        return []
    if layer == "unknown":
        return [f"{module} lives in a folder the layer table does not name: {sorted(FOLDERS)}"]
    allowed = set(ORDER[: ORDER.index(layer) + 1])
    found = []
    for name in _imports(module, source, is_package):
        target = _layer(name)
        if target is not None and target not in allowed:
            found.append(f"{module} ({layer}) imports {name} ({target})")
        if (name == "megatron" or name.startswith("megatron.")) and layer != "mcore":
            found.append(f"{module} imports {name}: only rmt_megatron.mcore may")
        if "parallel_state" in name.split(".") and module != PARALLEL_STATE_HOME:
            found.append(f"{module} imports {name}: only {PARALLEL_STATE_HOME} may")
    return found


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("rmt_megatron", *path.relative_to(PACKAGE).with_suffix("").parts))
        yield name.removesuffix(".__init__"), path


MODULES = dict(_modules())


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_its_own_layer_and_the_ones_below(module):
    path = MODULES[module]
    assert violations(module, path.read_text(), path.name == "__init__.py") == []


def test_every_folder_of_the_package_is_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == FOLDERS


def test_architecture_md_names_the_layer_folders():
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"^\| `rmt_megatron/(\w+)/`", text, flags=re.MULTILINE))
    assert named == FOLDERS


# ---- the rule's own tests: each kind of break is caught ----------------------------------------


@pytest.mark.parametrize(
    ("module", "source", "caught"),
    [
        ("rmt_megatron.method.x", "from rmt_megatron.run import trainer", "imports"),
        ("rmt_megatron.mcore.x", "import rmt_megatron.model_io.tokenizers", "imports"),
        ("rmt_megatron.run.x", "from rmt_megatron.study.replication import ARMS", "imports"),
        ("rmt_megatron.method.x", "from ..run.trainer import Run", "imports"),
        ("rmt_megatron.method.x", "from ..run import trainer", "imports"),
        ("rmt_megatron.run.x", "from megatron.core import tensor_parallel", "only"),
        ("rmt_megatron.mcore.gpt", "from megatron.core import parallel_state", "only"),
        ("rmt_megatron.mcore.gpt", "import megatron.core.parallel_state as ps", "only"),
        ("rmt_megatron.scratch.x", "import os", "folder"),
    ],
)
def test_the_rule_catches(module, source, caught):
    found = violations(module, source)
    assert found and caught in found[0]


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("rmt_megatron.run.x", "from rmt_megatron.method.budget import budget_at"),
        ("rmt_megatron.run.x", "from . import sharding"),
        ("rmt_megatron.study.x", "from ..run.trainer import Run"),
        ("rmt_megatron.mcore.parallel", "from megatron.core import parallel_state"),
        ("rmt_megatron.replicate", "from rmt_megatron.study.replication import ARMS"),
    ],
)
def test_the_rule_lets_through(module, source):
    assert violations(module, source) == []


def test_a_relative_import_in_a_package_init_resolves_from_the_package():
    assert violations("rmt_megatron.method", "from .budget import budget_at", True) == []
    assert violations("rmt_megatron.method", "from ..run import trainer", True)


def test_the_pure_layers_import_no_megatron_and_no_torch_distributed():
    for module, path in MODULES.items():
        if _layer(module) in ("config", "method"):
            for name in _imports(module, path.read_text(), path.name == "__init__.py"):
                assert not name.startswith(("megatron", "torch.distributed")), f"{module}: {name}"


def test_importing_the_pure_layers_loads_no_megatron():
    pure = [
        m
        for m in MODULES
        if _layer(m) in ("config", "method") or m.endswith(("kernels", "errors", "cli"))
    ]
    code = (
        f"import sys; import {', '.join(pure)}; "
        "print([m for m in ('megatron', 'transformer_engine', 'apex') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert result.stdout.strip() == "[]"
