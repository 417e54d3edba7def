"""Packaging: what importing costs, where the kernels live, how the install pins torch."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kernels_live_inside_the_package_and_shadow_no_top_level_module():
    """`kernels` is another project's name on PyPI (Hugging Face's, which transformers imports):
    run from the checkout, where the checkout's folders are importable, a top-level `kernels` is
    never ours."""
    code = (
        "import importlib.util, rmt_megatron.kernels as k; "
        "top = importlib.util.find_spec('kernels'); "
        "print(k.__name__, top and top.origin)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    name, top_level = result.stdout.split()
    assert name == "rmt_megatron.kernels"
    assert top_level == "None" or not top_level.startswith(str(ROOT / "kernels"))


def test_the_install_path_pins_the_cpu_torch_and_setup_keeps_a_range():
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    assert "torch==2.13.0" in constraints
    setup = (ROOT / "setup.py").read_text()
    assert '"torch>=2.6"' in setup and "torch==" not in setup


def test_no_tracked_file_points_at_a_temporary_path():
    """The repository explains itself: no tracked file (the shipped checkpoint's pickled metadata
    included) names a path in the temporary directory of the machine that wrote it."""
    needle = b"/" + b"tmp/"  # spelled in two pieces so that this file does not hold it
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    offenders = [
        name.decode() for name in tracked if name and needle in (ROOT / name.decode()).read_bytes()
    ]
    assert offenders == []
