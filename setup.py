"""Install rmt_megatron.

The vocabulary kernels are the subpackage `rmt_megatron.kernels`: never a top-level `kernels`,
which is another project's name on PyPI (Hugging Face's, which transformers imports).
"""

from pathlib import Path

from setuptools import find_packages, setup

RMT_PACKAGES = ["rmt_megatron", *(f"rmt_megatron.{name}" for name in find_packages("rmt_megatron"))]

setup(
    name="rmt_megatron",
    version="0.1.0",
    description="Reinforcement Mid-Training (RMT) for megatron-core: dynamic token budget, "
    "curriculum sampling and a dual RL/NTP objective.",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=RMT_PACKAGES,
    install_requires=[
        "torch>=2.6",
        # The two tested stacks (README, "Python 3.12 and the newest megatron-core"): 0.16.x is
        # the newest release that installs on Python 3.11; on 3.12, 0.19.
        "megatron-core>=0.16.1,<0.17; python_version < '3.12'",
        "megatron-core>=0.19.2,<0.20; python_version >= '3.12'",
        "numpy",
        "psutil",  # megatron-core's distributed checkpointing needs it
        "safetensors",
        "sentencepiece",
        "tensorboard",
        "tqdm",
        "triton; platform_system == 'Linux' and platform_machine == 'x86_64'",
    ],
    package_data={
        "rmt_megatron.builtin": [
            "assets/tiny_base/*",
            "assets/tiny_base/checkpoint/*",
            "assets/tiny_base/checkpoint/*/*",
            "assets/tiny_base/checkpoint/*/*/*",
            "assets/tiny_base/checkpoint/*/.metadata",
        ]
    },
    entry_points={
        "console_scripts": [
            "rmt-preprocess=rmt_megatron.model_io.preprocess:main",
            "rmt-warmstart=rmt_megatron.builtin.warmstart:main",
            "rmt-evaluate=rmt_megatron.run.checkpoint_eval:main",
            "rmt-posttrain=rmt_megatron.study.posttrain:main",
            "rmt-replicate=rmt_megatron.study.replication:main",
            "rmt-export-hf=rmt_megatron.model_io.hf_export:main",
        ]
    },
    extras_require={
        # NVIDIA apex is built from its own source tree (the PyPI name "apex" is another
        # project): see CONTRIBUTING.md.
        "gpu": ["transformer-engine[pytorch]"],
        # GGUF (llama.cpp) checkpoints: --gguf-checkpoint, rmt-preprocess on a .gguf vocabulary
        "gguf": ["gguf>=0.19"],
        # transformers builds the reference models the import tests compare against; gguf
        # writes the tiny GGUF files the GGUF tests read; matplotlib draws the replication's
        # plots (python -m rmt_megatron.replicate), whose smoke test runs in the suite
        "dev": [
            "pytest",
            "pytest-benchmark",
            "ruff==0.17.6",
            "mypy==2.4.1",
            "transformers",
            "gguf>=0.19",
            "matplotlib",
        ],
        "bench": ["matplotlib"],
    },
)
