"""Packaging: what importing costs, where the kernels live, how the install pins torch."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kernels_install_inside_the_package_not_as_a_top_level_module():
    code = (
        "import importlib.util, rmt_megatron.kernels as k; "
        "print(k.__name__, importlib.util.find_spec('kernels') is None)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert result.stdout.split() == ["rmt_megatron.kernels", "True"]


def test_a_checkout_s_package_without_its_install_names_the_fix(tmp_path):
    """The checkout's rmt_megatron/ imported with no editable install behind it (a script run
    from the checkout after a regular `pip install .`): the kernels, which live in the top-level
    kernels/, are missing, and the import says so instead of failing later."""
    import shutil
    import site

    shutil.copytree(ROOT / "rmt_megatron", tmp_path / "rmt_megatron")
    code = f"import sys; sys.path.append({site.getsitepackages()[0]!r}); import rmt_megatron"
    result = subprocess.run(  # -S: no site, so no editable-install finder
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode != 0
    assert "pip install -e ." in result.stderr.splitlines()[-1]


def test_the_install_path_pins_the_cpu_torch_and_setup_keeps_a_range():
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    assert "torch==2.13.0" in constraints
    setup = (ROOT / "setup.py").read_text()
    assert '"torch>=2.6"' in setup and "torch==" not in setup
