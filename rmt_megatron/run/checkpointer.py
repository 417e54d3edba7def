"""The run's checkpoints at their cadence: every `--save-interval` steps and at the end, and what
becomes of them when a step turns out non-finite."""

from __future__ import annotations

from rmt_megatron.errors import TrainingError
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.checkpoint import save_checkpoint, set_latest, step_dir


class Checkpointer:
    """Writes the run's checkpoints under `save` (nothing without one) and remembers which steps
    it wrote, oldest first."""

    def __init__(self, save: str | None, interval: int | None) -> None:
        self.save, self.interval = save, interval
        self.saved_steps: list[int] = []

    def due(self, step: int) -> bool:
        """Whether step `step` (1-based, done) is one the cadence saves."""
        return bool(self.interval) and step % self.interval == 0

    def write(self, step: int, model, optimizer, state: dict) -> None:
        """Save `model`, `optimizer` and the JSON-able `state` as step `step` (collective)."""
        if not self.save:
            return
        self.saved_steps.append(step)
        save_checkpoint(self.save, step, model, optimizer, state)

    def refuse_nonfinite(self, step: int, metrics: dict[str, float]) -> None:
        """Stop when step `step` (1-based) had non-finite losses or gradients. The step was not
        applied; but the weights that produced it are those of step - 1, so a checkpoint of step
        - 1 is no good either: the tracker is moved back to the checkpoint before it (or removed
        when there is none), so that --load resumes from weights that trained finitely."""
        if metrics["finite"]:
            return
        message = (
            f"the loss or the gradients are not finite at step {step} (L_RL "
            f"{metrics['loss_rl']}, L_NTP {metrics['loss_ntp']}); the step was not applied. "
            "Lower --lr or check the data."
        )
        if self.save and self.saved_steps:
            good = [s for s in self.saved_steps if s < step - 1]
            if self.saved_steps[-1] == step - 1:
                if parallel.is_main_rank():
                    set_latest(self.save, good[-1] if good else None)
                message += (
                    f" {step_dir(self.save, step - 1)} holds the weights that gave these values "
                    "and is no longer the latest checkpoint."
                )
            message += (
                f" The last checkpoint that trained finitely is {step_dir(self.save, good[-1])}"
                if good
                else " No checkpoint of this run trained finitely."
            )
        raise TrainingError(message)
