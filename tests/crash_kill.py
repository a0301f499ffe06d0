"""Kill a training run with SIGKILL at random moments and resume it (driven by test_crash.py).

Run as a script: ``python crash_kill.py RUN REFERENCE SEED KILLS -- TRAIN ARGS...``. It imports
spn once, then forks every training process from itself (``spn.cli.main(["train", ...])`` in a
fork: no interpreter start-up per round, so 20 kills fit in a few seconds). Steps:

0. a one-step warm-up run in this process (imports and first-call initialisations);
1. the reference: the same command, uninterrupted, into REFERENCE (its wall time ``T``);
2. rounds into RUN: the first without ``--resume``, the others with it; each is killed with
   SIGKILL after a delay drawn uniformly from ``[0, D]`` by ``random.Random(SEED)``, until KILLS
   kills. ``D`` starts at ``1.5 T / KILLS`` (so the KILLS rounds take about three quarters of the
   run on average, and rounds that run faster than the reference did still leave steps); after a kill that found no newer checkpoint than the
   previous kill it grows by half (a loaded machine starts each round more slowly), and it goes
   back to ``1.5 T / KILLS`` once the run has moved on, so the kills spread over the run; after each kill, the newest complete checkpoint must open (with its
   optimizer state); a round that ends by itself must exit 0;
3. a last ``--resume`` to the end, which must exit 0.

Prints one JSON line: ``{"kills", "kills_during_save" (kills that left a checkpoint half-written
in a temporary directory), "rounds", "exit_codes", "steps_after_kill", "reference_s",
"total_s", "errors"}``; ``errors`` lists what went wrong (an exit code other than 0, a checkpoint
that does not open), with the stderr of the failing round.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import sys
import time
from pathlib import Path


def _fork_train(argv: list[str], err_path: Path) -> int:
    pid = os.fork()
    if pid == 0:  # the child: one training process
        code = 1
        try:
            fd = os.open(str(err_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 2)
            os.dup2(fd, 1)
            import torch

            torch.set_num_threads(1)
            from spn.cli import main

            code = main(argv)
        except BaseException:  # noqa: BLE001 - report anything, never return into the parent's code
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _wait(pid: int, timeout: float | None) -> int | None:
    """The exit code (negative: killed by that signal) once the child ends, or None at the timeout."""
    end = None if timeout is None else time.perf_counter() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if end is not None and time.perf_counter() >= end:
            return None
        time.sleep(0.002)


def main() -> int:
    sep = sys.argv.index("--")
    run, ref, seed, kills = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    train_args = sys.argv[sep + 1:]
    import torch

    from spn.cli import main as spn_main

    # warm up once, before forking: imports (the optimizer's first call imports torch._dynamo, which
    # takes seconds) and first-call initialisations, so a forked round starts training at once
    torch.set_num_threads(1)
    warm = run.parent / "crash-warmup"
    with contextlib.redirect_stdout(io.StringIO()):
        rc = spn_main(["train", *train_args, "--steps", "1", "--out", str(warm), "-qq"])
    if rc != 0:
        print(json.dumps({"errors": ["the warm-up run failed"]}))
        return 0
    from spn.models.checkpoint import has_checkpoint, open_checkpoint

    logs = run.parent / "crash-logs"
    logs.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    pid = _fork_train(["train", *train_args, "--out", str(ref)], logs / "reference.err")
    rc = _wait(pid, None)
    t_ref = time.perf_counter() - t_start
    result = {"kills": 0, "kills_during_save": 0, "rounds": 0, "exit_codes": [], "steps_after_kill": [], "reference_s": t_ref,
              "errors": []}
    if rc != 0:
        result["errors"].append(f"reference run exited {rc}: {(logs / 'reference.err').read_text()[-2000:]}")
        print(json.dumps(result))
        return 0
    rng = random.Random(seed)
    base_delay = 1.5 * t_ref / kills
    delay, last_step = base_delay, None
    finished = False
    while result["kills"] < kills:
        n = result["rounds"]
        argv = ["train", *train_args, "--out", str(run)] + (["--resume"] if n else [])
        err = logs / f"round-{n:02d}.err"
        pid = _fork_train(argv, err)
        rc = _wait(pid, rng.uniform(0.0, delay))
        if rc is None:
            os.kill(pid, signal.SIGKILL)
            rc = _wait(pid, None)
            result["kills"] += 1
            try:
                step = open_checkpoint(run, optimizer=True).step if has_checkpoint(run) else None
            except Exception as exc:  # noqa: BLE001 - the test reports it
                result["errors"].append(f"after kill {result['kills']}: the checkpoint does not open: {exc}")
                step = "unusable"
            result["steps_after_kill"].append(step)
            delay = delay * 1.5 if step == last_step else base_delay
            last_step = step
            ckdir = run / "checkpoints"
            if ckdir.is_dir() and any(p.name.startswith(".tmp-") for p in ckdir.iterdir()):
                result["kills_during_save"] += 1  # the kill cut a checkpoint being written
        result["exit_codes"].append(rc)
        result["rounds"] += 1
        if rc not in (0, -signal.SIGKILL):
            result["errors"].append(f"round {n} exited {rc}: {err.read_text()[-2000:]}")
            break
        if rc == 0:
            finished = True
            break
    if not finished and not result["errors"]:
        err = logs / "final.err"
        rc = _wait(_fork_train(["train", *train_args, "--out", str(run), "--resume"], err), None)
        result["exit_codes"].append(rc)
        if rc != 0:
            result["errors"].append(f"the final --resume exited {rc}: {err.read_text()[-2000:]}")
    result["total_s"] = time.perf_counter() - t_start
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
