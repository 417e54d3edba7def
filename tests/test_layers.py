"""The dependency rule of the package's layers, checked on the source.

    errors, files, cli   (leaves)
    config               sections, presets, flags
    method               the method's pure math: no megatron, no torch.distributed
    mcore                the only importer of megatron-core
    model_io             tokenizers, HF/GGUF import and export, preprocess
    builtin              the built-in corpus, its datasets, the warm start
    run                  trainer, step builder, difficulty scoring, evaluation, metrics

A module may import its own layer and the layers above it in this list (and `kernels`, which
sits beside them and imports only torch). Entry-point shims at the package top
(`rmt_megatron.dropin`, `rmt_megatron.preprocess`, `rmt_megatron.warmstart`) may import
anything.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rmt_megatron"
ORDER = ["leaves", "config", "method", "mcore", "model_io", "builtin", "run"]
LEAVES = {"errors", "files", "cli", "kernels"}


def _layer(module: str) -> str | None:
    """The layer of `rmt_megatron.<name>...` (None for a top-level entry shim)."""
    parts = module.split(".")
    if parts[0] != "rmt_megatron" or len(parts) < 2:
        return None
    return "leaves" if parts[1] in LEAVES else (parts[1] if parts[1] in ORDER else None)


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("rmt_megatron", *path.relative_to(PACKAGE).with_suffix("").parts))
        yield name.removesuffix(".__init__"), path
    for path in sorted((ROOT / "kernels").glob("*.py")):
        yield f"rmt_megatron.kernels.{path.stem}", path


MODULES = dict(_modules())


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) is not None))
def test_a_module_imports_only_its_own_layer_and_the_ones_below(module):
    layer = _layer(module)
    allowed = set(ORDER[: ORDER.index(layer) + 1])
    for name in _imports(MODULES[module]):
        target = _layer(name)
        assert target is None or target in allowed, f"{module} ({layer}) imports {name}"
        if name == "megatron" or name.startswith("megatron."):
            assert layer == "mcore", f"{module} imports {name}: only rmt_megatron.mcore may"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) in ("config", "method")))
def test_the_pure_layers_import_no_megatron_and_no_torch_distributed(module):
    for name in _imports(MODULES[module]):
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
