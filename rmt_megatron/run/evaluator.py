"""The run's held-out evaluation at its cadence: before training, every `--eval-interval` steps
and at the end; each report goes to TensorBoard, the console and `<save>/eval/`
(`evaluation.write_eval_report`)."""

from __future__ import annotations

from rmt_megatron.config.sections import RMTConfig
from rmt_megatron.mcore import parallel
from rmt_megatron.run.evaluation import EvalPosition, evaluate, write_eval_report
from rmt_megatron.run.metrics import MetricsWriter


class Evaluator:
    """Evaluates `model` (through `engine`) on the fixed held-out `positions` of `documents`,
    with `budget` (B_T, or None when the budget is off) in the prompt."""

    def __init__(
        self,
        config: RMTConfig,
        model,
        engine,
        tokenizer,
        documents,
        positions: list[EvalPosition],
        budget: int | None,
        writer: MetricsWriter,
    ) -> None:
        self.config, self.model, self.engine, self.tokenizer = config, model, engine, tokenizer
        self.documents, self.positions = documents, positions
        self.budget, self.writer = budget, writer

    def due(self, step: int) -> bool:
        """Whether step `step` (1-based, done) is one the cadence evaluates."""
        interval = self.config.train.eval_interval
        return bool(interval) and step % interval == 0

    def run(self, step: int) -> dict:
        """The report of the model as it is at step `step`, stored and logged."""
        report = evaluate(
            self.model,
            self.engine,
            self.tokenizer,
            self.documents,
            self.positions,
            self.config,
            self.budget,
            self.config.train.seed,
        )
        report["step"] = step
        flat = {
            f"{key}/{split}": value[key]
            for split, value in report["splits"].items()
            for key in ("reasoning_accuracy", "ntp_accuracy")
        }
        flat["mean_reasoning_length"] = report["mean_reasoning_length"]
        self.writer.scalars(step, flat, "eval")
        if self.config.train.save and parallel.is_main_rank():
            write_eval_report(self.config.train.save, step, report)
        average = report["average"]
        parallel.print_main(
            f"eval at step {step}: reasoning accuracy {average['reasoning_accuracy']:.3f}, "
            f"NTP accuracy {average['ntp_accuracy']:.3f}, mean reasoning length "
            f"{report['mean_reasoning_length']:.1f} (B_T {report['budget']})"
        )
        return report
