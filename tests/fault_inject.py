"""Run ``scripts/train.py`` in this process with one fault injected, for tests/test_faults.py.

    ZOO_FAULT='{"kind": "kill", "at": "write", "n": 2, "bytes": 3000}' python tests/fault_inject.py OVERRIDES...

The fault (JSON in ``$ZOO_FAULT``; none: a normal run) is a real ``kill -9`` of this process
(``SIGKILL``, no clean-up of any kind) or a simulated full disk, at one point of the run:

* ``{"kind": "kill", "at": "step", "n": k}`` -- before this process's ``k + 1``-th optimiser step;
* ``{"kind": "kill", "at": "write", "n": i, "bytes": b}`` -- during the ``i``-th checkpoint write, after
  ``b`` bytes of the temporary file (at its end if it is shorter);
* ``{"kind": "kill", "at": "replace", "n": i}`` -- after the ``i``-th write's rename, before the folder fsync;
* ``{"kind": "kill", "at": "prune", "n": i}`` -- in the ``i``-th pruning, after its first deletion;
* ``{"kind": "kill", "at": "eval", "n": i}`` -- at the start of the ``i``-th evaluation;
* ``{"kind": "enospc", "at": "write", "n": i, "bytes": b, "manifest": PATH}`` -- the ``i``-th checkpoint
  write fails with ``ENOSPC`` after ``b`` bytes; ``PATH`` receives the names and SHA-256 of the files
  of the checkpoints folder as they were when that write began.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import runpy
import signal
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def manifest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file in ``folder`` (checkpoints and anything else)."""
    if not folder.is_dir():
        return {}
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


class FaultyWriter:
    """A file object that kills the process (or raises ENOSPC) once ``limit`` bytes were written."""

    def __init__(self, fh: Any, limit: int, kind: str) -> None:
        self.fh, self.limit, self.kind, self.written = fh, limit, kind, 0

    def write(self, data: bytes) -> int:
        room = self.limit - self.written
        if len(data) >= room:
            self.fh.write(bytes(data)[: max(room, 0)])
            self.fh.flush()
            self.fail()
        self.written += len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()

    def fail(self) -> None:
        if self.kind == "kill":
            os.fsync(self.fh.fileno())  # the partial temporary file is really on disk
            die()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def install(fault: dict[str, Any]) -> None:
    import torch

    import zoo.checkpoint as checkpoint
    import zoo.checkpointing as checkpointing
    from zoo.train import Trainer

    kind, at, n = fault["kind"], fault["at"], int(fault.get("n", 1))
    counts = {"step": 0, "write": 0, "fsync": 0, "prune": 0, "eval": 0}

    if at == "step":
        real_step = Trainer.train_step

        def train_step(self: Trainer, batch: Any) -> Any:
            if counts["step"] == n:
                die()
            counts["step"] += 1
            return real_step(self, batch)

        Trainer.train_step = train_step  # type: ignore[method-assign]
    elif at == "write":
        real_save = torch.save

        def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            counts["write"] += 1
            if counts["write"] != n or isinstance(f, (str, os.PathLike)):
                return real_save(obj, f, *args, **kwargs)
            if "manifest" in fault:
                folder = Path(os.readlink(f"/proc/self/fd/{f.fh.fileno()}")).parent
                listing = {k: v for k, v in manifest(folder).items() if not k.endswith(".tmp")}
                Path(fault["manifest"]).write_text(json.dumps(listing))
            # under zoo.checkpoint's recording writer, as a full disk fails the real file's write
            writer = FaultyWriter(f.fh, int(fault.get("bytes", 1 << 40)), kind)
            f.fh = writer
            real_save(obj, f, *args, **kwargs)
            writer.fail()  # the file was shorter than `bytes`: fail at its end, before the rename

        checkpoint.torch.save = save  # type: ignore[assignment]
    elif at == "replace":
        real_fsync_dir = checkpoint._fsync_dir

        def fsync_dir(directory: Path) -> None:
            counts["fsync"] += 1
            if counts["fsync"] == n:
                die()
            real_fsync_dir(directory)

        checkpoint._fsync_dir = fsync_dir  # type: ignore[assignment]
    elif at == "prune":
        real_prune = checkpointing.prune

        def prune(*args: Any, **kwargs: Any) -> Any:
            counts["prune"] += 1
            if counts["prune"] != n:
                return real_prune(*args, **kwargs)
            real_unlink = pathlib.Path.unlink

            def unlink(self: pathlib.Path, missing_ok: bool = False) -> None:
                real_unlink(self, missing_ok=missing_ok)
                die()

            pathlib.Path.unlink = unlink  # type: ignore[method-assign]
            return real_prune(*args, **kwargs)

        checkpointing.prune = prune  # type: ignore[assignment]
    elif at == "eval":
        real_evaluate = Trainer.evaluate

        def evaluate(self: Trainer, *args: Any, **kwargs: Any) -> float:
            counts["eval"] += 1
            if counts["eval"] == n:
                die()
            return real_evaluate(self, *args, **kwargs)

        Trainer.evaluate = evaluate  # type: ignore[method-assign]
    else:
        raise ValueError(f"unknown fault point {at!r}")


def main() -> None:
    spec = os.environ.get("ZOO_FAULT")
    if spec:
        install(json.loads(spec))
    script = REPO / "scripts" / "train.py"
    sys.argv = [str(script), *sys.argv[1:]]
    sys.path.insert(0, str(script.parent))
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()


# ----------------------------------------------------------------------------- bad files for the tests
class Payload:
    """Unpickles into ``exec(code)``: with ``weights_only=False`` it would write ``marker``."""

    def __init__(self, marker: str | os.PathLike) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({self.marker!r}, 'w').write('the payload ran')",))


def write_payload_checkpoint(path: Path, marker: Path, state: dict[str, Any] | None = None) -> Path:
    """A checkpoint-looking file (``state``'s entries, if given) whose weights carry a code payload."""
    import torch

    from zoo.checkpoint import FORMAT_VERSION

    content = dict(state or {"format_version": FORMAT_VERSION, "step": 0})
    content["model"] = {"payload": Payload(marker)}
    torch.save(content, path)
    return path


def write_foreign_checkpoint(path: Path) -> Path:
    """A torchvision-style ResNet state dict (weights only, no format_version): another library's .pt."""
    import torch

    torch.save(
        {
            "conv1.weight": torch.zeros(4, 3, 7, 7),
            "bn1.weight": torch.ones(4),
            "fc.weight": torch.zeros(10, 4),
        },
        path,
    )
    return path
