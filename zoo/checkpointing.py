"""The checkpoint policy of a run folder: which file a run resumes from, when ``best.pt`` is replaced,
which step files are deleted. The file format and I/O are :mod:`zoo.checkpoint`; the trainer
(:class:`zoo.train.Trainer`) asks a :class:`CheckpointPolicy` at each of these moments.

The rule behind it: **a run never writes over a checkpoint it could not improve on.**

* ``trainer.resume=auto`` continues from the readable complete training state with the highest step:
  the newest readable ``step_N.pt``, or ``best.pt`` (a complete state too, written at the step it
  was the best) when that is newer or when every step file is unreadable. Unreadable files are
  skipped with one warning each and left in place for inspection. If the folder holds checkpoints
  but none can be read, the run refuses to start, naming each file and what is wrong with it,
  instead of starting from step 0 and replacing a good ``best.pt``.
* A new run (``trainer.resume=null``) refuses to start in a run folder that already holds
  checkpoints: it would prune and replace them.
* ``best.pt`` is compared on the same validation examples every time (:class:`Selection`): the first
  ``trainer.eval_examples`` sequences of the val split (all of them when null), at each periodic
  evaluation and once more at the end (the final number on the whole split is reported, not used
  for the choice). Every checkpoint stores the selection its ``best_val`` was measured on; a run
  resumed with another selection (say, another ``eval_examples``) scores the stored ``best.pt``
  on its own examples first, so the comparison stays like with like.
* Unreadable step files take no ``trainer.keep_last`` slot: only readable ones are counted (and
  deleted) by :func:`zoo.checkpoint.prune`.
* A failed write (a full disk) raises :class:`~zoo.checkpoint.CheckpointWriteError` and leaves every
  earlier file as it was: nothing is pruned, no temporary file is left.

Under DDP rank 0 decides (and alone reads the folder and writes) and broadcasts each decision, so
that every rank resumes from the same file or raises the same error.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import (
    BEST_FILE,
    CheckpointError,
    CheckpointWriteError,
    check_compatible,
    check_format,
    load_checkpoint,
    prune,
    save_atomic,
    step_checkpoints,
)
from .distributed import DistEnv, broadcast_object
from .ema import eval_weights

log = logging.getLogger(__name__)

#: the temporary file of an interrupted write (zoo.checkpoint._write_atomic), never renamed into place
TEMPORARY_FILE = re.compile(r"^\.(step_\d+|best)\.pt\..+\.tmp$")


@dataclass(frozen=True)
class Selection:
    """The validation examples ``best.pt`` is chosen on: the first ``examples`` sequences of ``split``."""

    split: str  # "val"
    examples: int  # the first N sequences of the split
    data: str  # data set name
    seq_len: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return f"the first {self.examples:,} {self.split} sequences of {self.data} (seq_len {self.seq_len})"


def _describe(selection: Mapping[str, Any] | None) -> str:
    """A stored selection record in words (``None``: a checkpoint of an older version, which kept none)."""
    if not isinstance(selection, Mapping):
        return "examples it does not record (an older checkpoint)"
    try:
        return Selection(**selection).describe()
    except TypeError:
        return str(dict(selection))


@dataclass
class Candidate:
    """One checkpoint file looked at when resuming: its step, or why it cannot be used."""

    path: Path
    step: int | None = None
    val_bpd: float | None = None  # best.pt only
    problem: str | None = None


def inspect(path: Path, expect_step: int | None = None) -> Candidate:
    """Open ``path`` (tensors memory-mapped, nothing executed) and check it is a whole training state."""
    try:
        state = load_checkpoint(path, mmap=True)
        check_format(state, path)
    except CheckpointError as err:
        return Candidate(path, problem=str(err))
    step = int(state["step"])
    if expect_step is not None and step != expect_step:
        return Candidate(
            path, problem=f"checkpoint {path} holds step {step}, not the {expect_step} of its name"
        )
    val = state.get("val_bpd")
    return Candidate(path, step=step, val_bpd=float(val) if val is not None else None)


def remove_temporary_files(directory: Path) -> list[Path]:
    """Delete the temporary files that writes killed before their rename left in ``directory``."""
    removed = [p for p in directory.iterdir() if TEMPORARY_FILE.match(p.name)] if directory.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        log.info(
            "removed %d temporary file(s) of interrupted checkpoint writes in %s", len(removed), directory
        )
    return removed


def existing_checkpoints(directory: Path) -> list[Path]:
    """The ``step_N.pt`` files and ``best.pt`` of ``directory``."""
    files = [p for _, p in step_checkpoints(directory)]
    if (directory / BEST_FILE).is_file():
        files.append(directory / BEST_FILE)
    return files


@dataclass
class ResumePlan:
    """What ``resume=auto`` found: the file to resume from (``None``: fresh start) and the unusable files."""

    path: Path | None
    step: int | None = None
    unreadable: tuple[Candidate, ...] = ()
    from_best: bool = False
    reason: str = ""  # why best.pt was chosen over the step files


def plan_resume(directory: Path) -> ResumePlan:
    """Choose the file ``resume=auto`` continues from (rules in the module docstring).

    Raises :class:`CheckpointError` listing every file when the folder holds checkpoints and none of
    them is readable. Step files older than the newest readable one are not opened.
    """
    unreadable: list[Candidate] = []
    newest: Candidate | None = None
    for step, path in reversed(step_checkpoints(directory)):
        candidate = inspect(path, step)
        if candidate.problem is None:
            newest = candidate
            break
        unreadable.append(candidate)
    best: Candidate | None = None
    if (directory / BEST_FILE).is_file():
        best = inspect(directory / BEST_FILE)
        if best.problem is not None:
            unreadable.append(best)
            best = None
    chosen, from_best, reason = newest, False, ""
    if best is not None and (newest is None or best.step > newest.step):  # type: ignore[operator]
        chosen, from_best = best, True
        if newest is not None:
            reason = f"it is newer than the newest readable step checkpoint ({newest.path.name})"
        elif unreadable:
            reason = "every step checkpoint is unreadable"
        else:
            reason = "there is no step checkpoint"
    if chosen is None:
        if unreadable:
            listing = "\n  ".join(f"{c.path.name}: {c.problem}" for c in unreadable)
            raise CheckpointError(
                f"trainer.resume=auto: none of the checkpoints in {directory} can be read:\n  {listing}\n"
                "Starting from step 0 would overwrite them. Move them out of the run folder to start over, "
                "or resume from a file you trust with trainer.resume=PATH."
            )
        return ResumePlan(None)
    return ResumePlan(chosen.path, chosen.step, tuple(unreadable), from_best, reason)


class CheckpointPolicy:
    """The checkpoint decisions of one run (``run_dir/checkpoints``); see the module docstring.

    Args:
        run_dir: the run folder (``None``: no checkpoints are written, ``resume=auto`` is refused).
        keep_last: step checkpoints kept (``trainer.keep_last``).
        enabled: whether this run writes checkpoints (``trainer.checkpoint``).
        env: the distributed environment (rank 0 reads and writes the folder).
    """

    def __init__(self, run_dir: Path | None, keep_last: int, enabled: bool, env: DistEnv) -> None:
        self.directory = run_dir / "checkpoints" if run_dir is not None else None
        self.run_dir = run_dir
        self.keep_last = keep_last
        self.enabled = enabled and run_dir is not None
        self.env = env
        self.unreadable: set[Path] = set()  # skipped when resuming: no keep_last slot, never deleted
        self.best_step: int | None = None  # step of the best.pt this run knows of

    @property
    def best_path(self) -> Path:
        if self.directory is None:
            raise ValueError("this run has no run folder to write best.pt to")
        return self.directory / BEST_FILE

    # ----------------------------------------------------------------------------- resuming
    def resume_target(self, resume: str | None) -> Path | None:
        """The file to resume from for ``trainer.resume`` (``None``: a fresh start). Collective under DDP.

        ``auto``: :func:`plan_resume`; a path: that file; ``None``: a fresh start, refused when the
        run folder already holds checkpoints this run would replace.
        """
        if resume not in (None, "none", "auto"):
            return Path(str(resume))
        if resume == "auto" and self.run_dir is None:
            raise ValueError("trainer.resume=auto needs a run folder (run_dir) to look for checkpoints in")
        decision: dict[str, Any] = {}
        if self.env.is_main:
            decision = self._decide(resume == "auto")
        decision = broadcast_object(decision, self.env)
        if "error" in decision:
            raise CheckpointError(decision["error"])
        self.unreadable = {Path(p) for p in decision.get("unreadable", [])}
        return Path(decision["path"]) if decision.get("path") else None

    def _decide(self, auto: bool) -> dict[str, Any]:
        if self.directory is None:
            return {}
        if not auto:
            existing = existing_checkpoints(self.directory) if self.enabled else []
            if existing:
                names = ", ".join(p.name for p in existing[-4:])
                return {
                    "error": f"the run folder {self.run_dir} already holds checkpoints ({names}) from an earlier "
                    "run, which a new run would replace. Continue that run with trainer.resume=auto, or start "
                    "over in another folder (hydra.run.dir=...) or after moving "
                    f"{self.directory} away."
                }
            return {}
        remove_temporary_files(self.directory)
        try:
            plan = plan_resume(self.directory)
        except CheckpointError as err:
            return {"error": str(err)}
        for c in plan.unreadable:
            log.warning("skipping checkpoint %s: %s", c.path, c.problem)
        if plan.path is None:
            log.info("resume=auto: no checkpoint in %s; starting from step 0", self.directory)
        elif plan.from_best:
            log.warning(
                "resume=auto: resuming from %s (step %d), a complete training state: %s",
                plan.path,
                plan.step,
                plan.reason,
            )
        return {
            "path": str(plan.path) if plan.path else None,
            "unreadable": [str(c.path) for c in plan.unreadable],
        }

    def open(
        self,
        path: Path,
        model: nn.Module,
        model_config: Mapping[str, Any] | None,
        data: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Load ``path`` and check that it is a training state of this model and data set (raises naming both)."""
        state = load_checkpoint(path, map_location="cpu")
        check_format(state, path)
        check_compatible(state, path, model, model_config, data)
        return state

    # ----------------------------------------------------------------------------- best.pt
    def settle_best(
        self,
        selection: Selection,
        state_best: float,
        state_selection: Mapping[str, Any] | None,
        score: Callable[[Mapping[str, Any]], float],
    ) -> float:
        """The validation bits/dim a new ``best.pt`` must beat, on ``selection``. Collective under DDP.

        ``state_best`` is the ``best_val`` of the state this run resumed from (``inf`` for a fresh
        run), measured on ``state_selection``. The ``best.pt`` already in the run folder counts too:
        its recorded value if it was chosen on the same examples, else ``score(its weights)``.
        """
        same = state_selection == selection.as_dict()
        bar = state_best if same else math.inf
        if not self.enabled:
            return bar
        record: dict[str, Any] = {}
        if self.env.is_main and self.best_path.is_file() and self.best_path not in self.unreadable:
            try:
                best = load_checkpoint(self.best_path, mmap=True)
                check_format(best, self.best_path)
                record = {
                    "val_bpd": best.get("val_bpd"),
                    "selection": best.get("best_selection"),
                    "step": int(best["step"]),
                }
            except CheckpointError as err:
                log.warning(
                    "%s is unreadable and will be replaced by this run's best: %s", self.best_path, err
                )
        record = broadcast_object(record, self.env)
        if not record or record.get("val_bpd") is None:
            if not same and not math.isinf(state_best):
                log.warning(
                    "the resumed state's best val bits/dim %.4f was measured on %s, not on this run's %s: "
                    "the next evaluation sets a new bar",
                    state_best,
                    _describe(state_selection),
                    selection.describe(),
                )
            return bar
        self.best_step = record["step"]
        if record["selection"] == selection.as_dict():
            return min(bar, float(record["val_bpd"]))
        log.warning(
            "%s (val bits/dim %.4f at step %d) was chosen on other validation examples (%s); scoring it on %s "
            "so that it is compared like with like",
            self.best_path,
            float(record["val_bpd"]),
            record["step"],
            _describe(record["selection"]),
            selection.describe(),
        )
        # the weights best.pt was chosen by: its average of the weights when it keeps one (zoo.ema)
        weights = eval_weights(load_checkpoint(self.best_path))  # every rank: the evaluation is collective
        rescored = float(score(weights))
        log.info("%s scores %.4f bits/dim on %s", self.best_path, rescored, selection.describe())
        return min(bar, rescored)

    # ----------------------------------------------------------------------------- writing
    def write(self, state: Mapping[str, Any], target: Path, step_file: bool) -> None:
        """Write ``state`` to ``target`` (rank 0), then prune old step files if it is one. Collective under DDP.

        A failed write raises :class:`CheckpointWriteError` on every rank and changes no file.
        """
        error = None
        if self.env.is_main:
            try:
                save_atomic(state, target)
            except OSError as err:
                error = (
                    f"could not write the checkpoint {target} ({err}); every earlier checkpoint in "
                    f"{target.parent} is intact and nothing was pruned. Free some space and rerun with "
                    "trainer.resume=auto to continue from the newest one."
                )
            else:
                log.info("checkpoint written to %s", target)
                self.unreadable.discard(target)
                if step_file:
                    prune(target.parent, self.keep_last, protect=target, skip=self.unreadable)
                else:
                    self.best_step = int(state["step"])
        if self.env.enabled:
            error = broadcast_object(error, self.env)
        if error is not None:
            raise CheckpointWriteError(error)

    def summary(self, best_val: float, selection: Selection) -> dict[str, Any]:
        """``metrics.json`` entries: the best val bits/dim, its step and the examples it was measured on."""
        if self.best_step is None or math.isinf(best_val):
            return {}
        return {
            "best_val_bpd": best_val,
            "best_step": self.best_step,
            "best_val_sequences": selection.examples,
        }
