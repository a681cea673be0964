"""The training step in other processes: ``learner.launcher: accelerate``.

The loop's process builds a round's training rows as always (the SFT learner's need the
in-memory model to generate them). Where it would ``fit`` a trainer made by a launchable
builder (``_trainers.launchable``), ``launch`` instead writes a job directory,
``<run_dir>/launch/<trainer name>/``::

    job.json      the builder, its arguments, the model to load, the launch settings
    rows.json     the trainer's rows
    command.txt   the launch command (to rerun by hand, or on the other machines)
    adapter-in/   the model's current LoRA adapter (and tokenizer): where training starts
    launch.log    everything the launcher and its workers printed
    adapter-out/  the trained adapter, written by the main worker
    result.json   the trainer's log and what the workers spent

and runs ``accelerate launch ... -m superalign.learn._launch JOB`` (an argv, no shell).
Each worker loads the base model through the models package as the loop does, applies
``adapter-in``, builds the same trainer through the same builder with the global batch
split over the processes (so a step sees the same rows as in one process), trains under
accelerate (DDP, or DeepSpeed / FSDP from ``accelerate_config``) and the main worker
saves the adapter. The loop's model then loads those weights, so generation, evaluation
and the checkpoint continue unchanged.

If the loop's process dies (even ``kill -9``), the launcher gets SIGKILL from the kernel
(``PR_SET_PDEATHSIG``) and every worker exits when its parent or the loop's process goes
(a watch thread). A stale job directory from a killed attempt is removed before a new one
is written, so ``superalign run --resume`` trains the round again from the start.
"""

from __future__ import annotations

import contextvars
import ctypes
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SuperalignError
from ..models import HFChatModel, training_precision
from . import _trl
from ._trainers import LAUNCHABLE, Recipe
from ._trl import Budget
from .settings import LearnerSection, check_accelerate_config

log = logging.getLogger(__name__)

JOB = "job.json"
ROWS = "rows.json"
RESULT = "result.json"
LOG = "launch.log"
COMMAND = "command.txt"
ADAPTER_IN = "adapter-in"
ADAPTER_OUT = "adapter-out"
PARENT_ENV = "SUPERALIGN_LAUNCH_PARENT"  # the loop's pid, watched by every worker
TAIL_CHARS = 4000
PR_SET_PDEATHSIG = 1

_LAUNCHER: contextvars.ContextVar[LearnerSection | None] = contextvars.ContextVar(
    "superalign_launcher", default=None
)


class LaunchError(SuperalignError):
    """The launched training failed; the message holds the workers' last output, the job
    directory and the command that reruns it by hand."""


@contextmanager
def launching(section: LearnerSection | None) -> Iterator[None]:
    """Within the block, ``fit`` runs launchable trainers as ``section`` says (its
    ``launcher``: in this process, or under accelerate)."""
    active = section if section is not None and section.launcher == "accelerate" else None
    token = _LAUNCHER.set(active)
    try:
        yield
    finally:
        _LAUNCHER.reset(token)


def current_launcher() -> LearnerSection | None:
    """The learner section whose launcher is in force (``launching``), or None."""
    return _LAUNCHER.get()


# -- the loop's side --------------------------------------------------------------------


def job_dir(recipe: Recipe) -> Path:
    """Where ``recipe``'s job is written: ``<run_dir>/launch/<trainer name>``."""
    return Path(recipe.kwargs["run_dir"]) / "launch" / str(recipe.kwargs["name"])


def cpu_count() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def free_port() -> int:
    """A TCP port free on this machine now, for the workers' rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accelerate_argv(
    section: LearnerSection,
    job: Path,
    *,
    port: int | None = None,
    threads: int | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command that launches ``job``: ``accelerate launch`` of this package's worker,
    from this interpreter. With ``accelerate_config`` the file decides the distributed
    kind (DeepSpeed, FSDP, machines, rendezvous); without one, ``num_processes`` >= 2 is
    plain data parallelism (torchrun; on CPU the trainers ask for gloo) on a free ``port``.
    Each process gets ``threads`` CPU threads (default: the cores over the processes)."""
    n = section.num_processes
    argv = [python, "-m", "accelerate.commands.launch", "--num_processes", str(n)]
    if section.mixed_precision is not None or section.accelerate_config is None:
        argv += ["--mixed_precision", section.mixed_precision or "no"]
    if section.accelerate_config is not None:
        config = check_accelerate_config(section.accelerate_config).resolve()
        argv += ["--config_file", str(config)]  # the launcher runs in the job directory
    else:
        argv += ["--num_machines", "1", "--dynamo_backend", "no"]
        argv += ["--multi_gpu"] if n >= 2 else []
        argv += ["--main_process_port", str(port if port is not None else free_port())]
    threads = threads if threads is not None else max(1, cpu_count() // n)
    argv += ["--num_cpu_threads_per_process", str(threads)]
    return [*argv, "-m", "superalign.learn._launch", str(job)]


def launch_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The workers' environment: this process's (offline hub by default), this package
    first on the path (the workers run this very code), and this process's pid to watch."""
    env = dict(os.environ if base is None else base)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    src = str(Path(__file__).resolve().parents[2])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([src, *[p for p in paths if p != src]])
    env[PARENT_ENV] = str(os.getpid())
    return env


def _die_with_parent(parent: int) -> None:
    """In the launcher, between fork and exec: SIGKILL when the loop's process dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the workers' watch thread remains
        return
    if os.getppid() != parent:  # the loop died before the call above
        os._exit(1)


def run_job(argv: Sequence[str], job: Path, env: dict[str, str]) -> None:
    """Run the launcher (no shell), its output into ``job/launch.log``; LaunchError with
    the log's tail, the job directory and the command to rerun when it fails."""
    parent = os.getpid()
    with (job / LOG).open("wb") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(job),
            preexec_fn=(lambda: _die_with_parent(parent)) if os.name == "posix" else None,
        )
        try:
            code = proc.wait()
        except BaseException:  # interrupted: the launcher (which stops its workers) goes too
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    if code != 0 or not (job / RESULT).is_file():
        raise LaunchError(failure_message(argv, job, code))


def failure_message(argv: Sequence[str], job: Path, code: int) -> str:
    """What a failed launch says: the exit status, the workers' last output, the job
    directory and the command that reruns it by hand."""
    text = (job / LOG).read_text(errors="replace") if (job / LOG).is_file() else ""
    tail = text[-TAIL_CHARS:].strip() or "(no output)"
    why = f"exit status {code}" if code != 0 else f"no {RESULT} written"
    first = first_error(text)
    return (
        f"the launched training failed ({why}); the job is in {job}.\n"
        + (f"First error: {first}\n" if first else "")
        + f"--- last output of the launcher and its workers ({job / LOG}) ---\n{tail}\n---\n"
        f"Rerun it by hand (from {job}, with HF_HUB_OFFLINE=1 and this package importable):\n"
        f"  {shlex.join(argv)}"
    )


ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit))(: .*)?$")


def first_error(text: str) -> str | None:
    """The first exception a worker raised, as Python prints it under its traceback
    (the launcher's own report of a failed child comes later and says less)."""
    for line in text.splitlines():
        line = line.strip()
        if ERROR_LINE.match(line) and "ChildFailedError" not in line:
            return line
    return None


def launch(recipe: Recipe, section: LearnerSection, budget: Budget | None = None) -> dict[str, Any]:
    """Train ``recipe`` under ``accelerate launch`` as ``section`` says, load the trained
    adapter into the recipe's model, and summarise the workers' log as ``fit`` does."""
    model = recipe.chat_model
    n = section.num_processes
    batch = int(recipe.kwargs["batch_size"])
    if batch % n:
        raise ConfigError(
            f"learner.num_processes {n} must divide the batch size {batch} of {recipe.builder} "
            f"(each process takes batch_size / num_processes rows a step, so the global "
            "batch and the steps are those of one process): change either"
        )
    if section.accelerate_config is not None:
        check_accelerate_config(section.accelerate_config)
    network = model.model
    if not hasattr(network, "peft_config"):
        raise ConfigError(
            "learner.launcher accelerate trains a LoRA adapter; this model has none "
            "(learner.lora.enabled is false?)"
        )
    job = job_dir(recipe).resolve()  # the launcher runs in it: no path relative to here
    if job.exists():  # a killed earlier attempt: start again
        shutil.rmtree(job)
    job.mkdir(parents=True)
    network.save_pretrained(job / ADAPTER_IN)
    model.tokenizer.save_pretrained(job / ADAPTER_IN)
    remaining = None
    if budget is not None and budget.seconds is not None:
        remaining = max(0.0, budget.seconds - budget.spent())
    spec = {
        "builder": recipe.builder,
        "kwargs": {**recipe.kwargs, "run_dir": str(job)},
        "global_batch_size": batch,
        "model": model_settings(model, job / ADAPTER_IN),
        "budget_seconds": remaining,
        "num_processes": n,
    }
    (job / ROWS).write_text(json.dumps(recipe.rows))
    (job / JOB).write_text(json.dumps(spec, indent=2))
    argv = accelerate_argv(section, job)
    # the command as run here; the other machines of a multi-machine config run it too
    (job / COMMAND).write_text(shlex.join(argv) + "\n")
    start = time.perf_counter()
    run_job(argv, job, launch_env())
    wall = time.perf_counter() - start
    result = json.loads((job / RESULT).read_text())
    load_adapter(model, job / ADAPTER_OUT)
    summary = _trl.log_summary(result["log_history"])
    summary["launch"] = {
        "launcher": "accelerate",
        "num_processes": result["world_size"],
        "job": str(job),
        "wall_seconds": round(wall, 3),
        "worker_compute_seconds": result["compute_seconds"],
        "worker_peak_rss_mb": result.get("peak_rss_mb"),
    }
    for name in (ADAPTER_IN, ADAPTER_OUT):  # the checkpoint keeps the weights
        shutil.rmtree(job / name, ignore_errors=True)
    return summary


def model_settings(model: HFChatModel, adapter: Path) -> dict[str, Any]:
    """The settings that load ``model`` again in a worker: its base weights (where they
    were read from), ``adapter`` on top, trainable, no fast generation path, and the
    training precision decided here (an ``auto`` probe in each worker, on a share of the
    cores, could choose differently from one worker to the next)."""
    network = model.model
    base = network.get_base_model() if hasattr(network, "get_base_model") else network
    source = getattr(base.config, "_name_or_path", "") or model.settings.model
    update = {
        "model": source,
        "adapter": str(adapter),
        "trainable": True,
        "fast": False,
        "train_precision": training_precision(model),
    }
    return model.settings.model_copy(update=update).model_dump(mode="json")


def load_adapter(model: HFChatModel, path: Path) -> None:
    """Copy the LoRA weights saved at ``path`` into ``model``'s active adapter; every
    tensor must find its place, and every LoRA weight of the adapter must be given."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    file = path / "adapter_model.safetensors"
    if not file.is_file():
        raise LaunchError(f"the launched training wrote no adapter: {file} is missing")
    state = load_file(str(file))
    expected = set(get_peft_model_state_dict(model.model))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise LaunchError(
            f"the adapter at {path} does not match the model's: missing {missing[:3]}, "
            f"unexpected {extra[:3]} ({len(missing)} and {len(extra)} in all)"
        )
    result = set_peft_model_state_dict(model.model, state)
    if getattr(result, "unexpected_keys", None):
        raise LaunchError(f"the adapter at {path} has weights the model lacks")


# -- the worker's side ------------------------------------------------------------------


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, in MiB (None where unknown)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def watch_parents(interval: float = 0.5) -> threading.Thread:
    """A daemon thread that ends this process as soon as its parent (the launcher) or the
    loop's process (``SUPERALIGN_LAUNCH_PARENT``) is gone."""
    parent = os.getppid()
    loop = int(os.environ.get(PARENT_ENV, "0") or 0)

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def watch() -> None:
        while True:
            if os.getppid() != parent or (loop and not alive(loop)):
                os._exit(1)
            time.sleep(interval)

    thread = threading.Thread(target=watch, name="superalign-parent-watch", daemon=True)
    thread.start()
    return thread


def _budget_callback(budget: Budget) -> Any:
    """Stop every worker at the end of the step where any worker spent the budget (they
    must stop together, or the others wait for it forever)."""
    from transformers import TrainerCallback

    class StopAtBudget(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> Any:
            import torch

            flag = torch.tensor([1.0 if budget.exhausted() else 0.0])
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                if torch.distributed.get_backend() == "nccl":
                    flag = flag.cuda()
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            if float(flag.item()) > 0:
                control.should_training_stop = True
            return control

    return StopAtBudget()


def worker(job: Path) -> None:
    """One process of a launched job: load the model with the loop's adapter, build the
    trainer through the same builder (the global batch over the processes), train, and
    (main process) save the adapter and the log."""
    import torch

    from ..malloc import keep_freed_memory
    from ..models import HFSettings

    keep_freed_memory()
    watch_parents()
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    spec = json.loads((job / JOB).read_text())
    rows = json.loads((job / ROWS).read_text())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    settings = HFSettings.model_validate(spec["model"])
    local = os.environ.get("LOCAL_RANK")
    if local is not None and settings.device in ("auto", "cuda") and torch.cuda.is_available():
        settings = settings.model_copy(update={"device": f"cuda:{local}"})
    chat_model = HFChatModel(settings)
    for name, p in chat_model.model.named_parameters():
        p.requires_grad_("lora_" in name)
    chat_model.model.train()
    kwargs = dict(spec["kwargs"])
    kwargs["batch_size"] = int(spec["global_batch_size"]) // world
    builder = LAUNCHABLE[spec["builder"]]
    trainer = builder(chat_model, rows, **kwargs)
    budget = Budget(spec.get("budget_seconds"))
    if budget.seconds is not None:
        trainer.add_callback(_budget_callback(budget))
    _trl.run(trainer)
    trainer.save_model(str(job / ADAPTER_OUT))  # every process: DeepSpeed / FSDP gather
    if trainer.accelerator.is_main_process:
        result = {
            "log_history": trainer.state.log_history,
            "world_size": world,
            "compute_seconds": round(budget.spent(), 3),
            "peak_rss_mb": peak_rss_mb(),
        }
        (job / RESULT).write_text(json.dumps(result, default=str))
    trainer.accelerator.wait_for_everyone()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: accelerate launch -m superalign.learn._launch JOB_DIR", file=sys.stderr)
        return 2
    worker(Path(args[0]).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
