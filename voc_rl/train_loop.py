"""The one training loop of voc_rl: tokenizers, the occupancy model and its reward model, the behaviour
prior and the TD critic all train through :func:`train`.

A trainer describes its run as a :class:`Run` (the modules to checkpoint, one optimiser per loss, the
random generators of its batch samplers, a ``step`` function that draws a batch and returns the
losses, and optional hooks) and hands it to :func:`train` with the caller's :class:`Loop` (the run
folder, intervals, progress bar, callback, seed and device: what every trainer takes as ``loop``);
:func:`train` owns everything else:

- the schedule: linear warm-up over ``warmup`` steps, then constant or cosine down to 10% of ``lr``
  at the config's ``steps`` (the ``steps`` asked of one call only say where to stop);
- gradient clipping per optimiser, gradients averaged over processes under ``torchrun`` (every rank
  samples its own batches and takes the same step; see :mod:`voc_rl.distributed`);
- a progress bar and TensorBoard (``out/tb``) with one tag scheme: ``train/<loss or log>``,
  ``train/lr``, ``train/steps_per_s`` every ``log_every`` steps, ``val/<metric>`` every
  ``eval_every`` steps and at the end;
- atomic checkpoints (``out/train_state.pt``: modules, optimisers, step, config, every rank's
  random states and the seconds trained so far, summed over the calls that resumed the run) and the
  trained model's own file (``Run.save``) every ``ckpt_every`` steps, at the end and when a
  callback stops the run;
- resume from ``out/train_state.pt`` with a guard (a run folder of another config is refused) and
  every random state restored, so that a run stopped and resumed is bitwise the run never stopped
  (with as many processes);
- ``callback(step, logs)`` after every step; returning ``False`` stops the run after a checkpoint;
- Ctrl-C (SIGINT) or SIGTERM stops the run after its step with a checkpoint, then raises
  ``KeyboardInterrupt`` (a second one interrupts at once);
- the run folder held by one process at a time (:mod:`voc_rl.run_folder`), and the seed recorded:
  a run folder of another seed is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from voc_rl import distributed
from voc_rl.checkpoint import Callback, CheckpointError, load_checkpoint, save_checkpoint
from voc_rl.paths import check_writable, optional_user_path
from voc_rl.run_folder import locked
from voc_rl.typed import check_fields
from voc_rl.utils import restore_rngs, rng_states

Losses = dict[str, torch.Tensor]  # one loss per optimiser, by the optimiser's name
Logs = dict[str, float]


@dataclass(frozen=True)
class Loop:
    """How a training call runs, apart from what it trains: every trainer (tokenizers' ``fit``,
    ``train_occupancy``, ``train_bc``, ``train_td_critic`` and the ``voc_rl.parts.fit_*`` functions)
    takes one as ``loop``. An interval left ``None`` takes the trainer's default."""

    out: Path | None = None  # the run folder (TensorBoard, checkpoints, resume); None: none of those
    seed: int = 0  # the held-out split of episodes and the batch samplers' streams
    device: str | torch.device = "auto"  # where a trainer puts the model ("auto": a GPU where one exists)
    progress: bool = True  # a progress bar
    callback: Callback | None = None  # (step, logs) after every step; returning False stops the run
    log_every: int | None = None  # steps between ``train/`` scalars
    eval_every: int | None = None  # steps between ``val/`` metrics (and at the end)
    ckpt_every: int | None = None  # steps between checkpoints (and at the end, and when stopped)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", optional_user_path(self.out))
        check_fields(self)
        for name in ("log_every", "eval_every", "ckpt_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"Loop.{name} must be a positive number of steps, got {value}")

    def defaults(self, log_every: int, eval_every: int, ckpt_every: int) -> Loop:
        """This loop with the intervals it leaves ``None`` set to a trainer's defaults."""
        given = {"log_every": log_every, "eval_every": eval_every, "ckpt_every": ckpt_every}
        return dataclasses.replace(self, **{k: v for k, v in given.items() if getattr(self, k) is None})


@dataclass
class TrainReport:
    """What a training call returns: the step reached, its seconds (to its last step, as its last
    checkpoint records them; the final held-out metrics are not counted), the last value of the first
    loss, the held-out metrics at the end, and the seconds of the whole run (this call and the calls
    it resumed; :func:`trained_seconds` reads them from a run folder)."""

    steps: int
    seconds: float
    final_loss: float
    metrics: dict[str, float]
    total_seconds: float = 0.0


@dataclass
class Run:
    """A trainer's run, for :func:`train`.

    ``modules`` are checkpointed under their names; ``modules["model"]`` holds the step counter
    (``.step``). ``optimizers`` are keyed by the name of the loss each minimises; ``step()`` draws a
    batch and returns those losses (and scalar logs). ``config`` (a dataclass) is recorded in the
    checkpoint and must match on resume, as must ``identity`` (e.g. a tokenizer's backend).
    """

    name: str  # for the progress bar and messages
    config: Any  # a dataclass with ``lr`` and ``steps``
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    step: Callable[[], tuple[Losses, Logs]]
    rngs: list[np.random.Generator]  # the batch samplers' generators (torch's is kept too)
    data_seed: int  # this rank's seed (fresh streams where a checkpoint has another world size)
    device: torch.device
    save: Callable[[Path], None]  # writes the trained model's file into the run folder
    schedule: str = "cosine"  # "cosine" or "constant" after the warm-up
    warmup: int = 100
    clip: float = 1.0  # max gradient norm, per optimiser
    identity: dict[str, Any] = field(default_factory=dict)
    after_step: Callable[[], None] | None = None  # EMA targets, codebook restarts
    validate: Callable[[], Logs] | None = None  # held-out metrics (``val/``), every eval_every steps
    final: Callable[[], Logs] | None = None  # the end-of-run metrics (default: ``validate``)
    media: Callable[[Any, int], None] | None = None  # (writer, step): images beside ``val/`` scalars
    units: tuple[str, float] | None = None  # ("tokens", per step per process): train/tokens_per_s
    earlier_seconds: float = 0.0  # the training seconds of the calls this one resumed (set on resume)

    @property
    def model(self) -> nn.Module:
        return self.modules["model"]

    def lr(self, step: int) -> float:
        """The learning rate of ``step`` (0-based): warm-up, then constant or cosine to 10%."""
        c = self.config
        lr = c.lr * min(1.0, (step + 1) / self.warmup)
        if self.schedule == "cosine":
            lr *= 0.55 + 0.45 * math.cos(math.pi * min(step / c.steps, 1.0))
        return lr


def train(run: Run, steps: int, loop: Loop) -> TrainReport:
    """Train ``run`` to ``steps`` (see the module docstring); with ``loop.out`` (a folder) also log,
    checkpoint and resume, holding the folder (:func:`voc_rl.run_folder.locked`) meanwhile."""
    with contextlib.ExitStack() as stack:
        if loop.out is not None:
            stack.enter_context(locked(check_writable(loop.out, "run folder")))
        interrupted = stack.enter_context(_interrupts(run.name))
        report = _train(run, steps, loop, interrupted)
    if interrupted:
        where = f"; saved at step {report.steps} in {loop.out}, run again to resume" if loop.out else ""
        raise KeyboardInterrupt(f"{run.name} interrupted{where}")
    return report


@contextlib.contextmanager
def _interrupts(name: str) -> Iterator[list[int]]:
    """While training (in the main thread): the first SIGINT (Ctrl-C) or SIGTERM is recorded in the
    yielded list, so the loop stops after its step and checkpoints; a second one interrupts at once."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum: int, frame: Any) -> None:
        if got:
            raise KeyboardInterrupt
        got.append(signum)
        print(f"\n{name}: stopping after this step with a checkpoint (again to abort)", file=sys.stderr)

    ignored = signal.SIG_IGN  # (a background job's SIGINT, as a shell leaves it) stays ignored
    old = {
        s: signal.signal(s, handler)
        for s in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(s) != ignored
    }
    try:
        yield got
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def trained_seed(out: Path) -> int | None:
    """The seed of the run whose ``train_state.pt`` is in ``out`` (None: none there, or one written
    before runs recorded their seed)."""
    state = out / "train_state.pt"
    if not state.exists():
        return None
    return load_checkpoint(state, required=("config",))["config"].get("seed")


def trained_seconds(out: Path) -> float:
    """The seconds the run in ``out`` has trained, summed over every call up to its last checkpoint
    (0.0: no checkpoint there, or one written before checkpoints recorded them)."""
    state = out / "train_state.pt"
    return float(load_checkpoint(state).get("seconds", 0.0)) if state.exists() else 0.0


def _train(run: Run, steps: int, loop: Loop, interrupted: list[int]) -> TrainReport:
    from tqdm import tqdm

    run.identity = {**run.identity, "seed": loop.seed}  # a run folder of another seed is refused
    loop = loop.defaults(log_every=50, eval_every=500, ckpt_every=500)
    out, callback = loop.out, loop.callback
    log_every, eval_every, ckpt_every = loop.log_every, loop.eval_every, loop.ckpt_every

    distributed.init()
    main, world = distributed.is_main(), distributed.world_size()
    model = run.model
    trained = [m for m in run.modules.values() if any(p.requires_grad for p in m.parameters())]
    for module in run.modules.values():  # every rank starts from rank 0's weights
        distributed.broadcast_module(module)
    torch.manual_seed(run.data_seed)
    writer = None
    if out is not None:
        _resume(run, out / "train_state.pt", main)
        distributed.check_agree(model.step, "step to start from")
        if main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"))
            writer.add_text("config", json.dumps(_config(run), indent=1, default=str))
    for m in trained:
        m.train()
    params = {
        name: [p for g in opt.param_groups for p in g["params"]] for name, opt in run.optimizers.items()
    }
    start, tic = time.perf_counter(), time.perf_counter()

    def spent() -> float:  # this run's training seconds, with those of the calls it resumed
        return run.earlier_seconds + time.perf_counter() - start

    values: Logs = {}
    saved_at: float | None = None
    bar = tqdm(
        total=steps,
        initial=model.step,
        disable=not (loop.progress and main),
        desc=f"fit {run.name}",
        unit="step",
    )
    while model.step < steps:
        lr = run.lr(model.step)
        for opt in run.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        losses, logs = run.step()
        for name, opt in run.optimizers.items():
            opt.zero_grad(set_to_none=True)
            losses[name].backward()
            distributed.all_reduce_grads(params[name])  # every rank then takes the same step
            torch.nn.utils.clip_grad_norm_(params[name], run.clip, foreach=True)
            opt.step()
        if run.after_step is not None:
            run.after_step()
        model.step += 1
        values = {name: float(loss.detach()) for name, loss in losses.items()}
        bar.update(1)
        stop = callback is not None and callback(model.step, {**logs, **values}) is False
        stop = stop or bool(interrupted)
        stop = distributed.any_rank(stop)  # all ranks stop at the same step
        if model.step % log_every == 0:
            rate = log_every / (time.perf_counter() - tic)
            tic = time.perf_counter()
            scalars = distributed.mean_scalars({**logs, **values})
            bar.set_postfix({k: f"{scalars[k]:.4g}" for k in values})
            if writer is not None:
                extra = {"lr": lr, "steps_per_s": rate}
                if run.units is not None:
                    extra[f"{run.units[0]}_per_s"] = rate * run.units[1] * world
                for k, v in {**scalars, **extra}.items():
                    writer.add_scalar(f"train/{k}", v, model.step)
        if writer is not None and (model.step % eval_every == 0 or model.step == steps):
            if run.validate is not None:
                for k, v in run.validate().items():
                    writer.add_scalar(f"val/{k}", v, model.step)
            if run.media is not None:
                run.media(writer, model.step)
            for m in trained:
                m.train()
        if out is not None and (model.step % ckpt_every == 0 or model.step == steps or stop):
            saved_at = spent()
            _checkpoint(run, out, main, world, saved_at)
        if stop:
            break
    total = spent() if saved_at is None else saved_at  # the last step's, as its checkpoint records
    bar.close()
    for m in run.modules.values():
        m.eval()
    final = run.final or run.validate
    metrics = final() if main and final is not None else {}  # the ranks hold the same weights
    metrics = distributed.broadcast_object(metrics)
    if writer is not None:
        for k, v in metrics.items():
            writer.add_scalar(f"val/{k}", v, model.step)
        writer.close()
    distributed.barrier()  # rank 0's files are written before any rank returns
    loss = next(iter(values.values()), float("nan"))
    return TrainReport(model.step, total - run.earlier_seconds, loss, metrics, total)


def _config(run: Run) -> dict[str, Any]:
    return {**run.identity, **dataclasses.asdict(run.config)}


def _defaults(config: Any) -> dict[str, Any]:
    """The default of each field of the config dataclass that has one: what a run recorded before
    the field existed had, in effect."""
    out = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _resume(run: Run, state_file: Path, main: bool) -> None:
    """Load ``state_file`` into ``run`` where it exists; refuse one of another run."""
    if not state_file.exists():
        return
    state = load_checkpoint(
        state_file, required=("config", *run.modules, "optimizers", "step", "sampler_rng", "torch_rng")
    )
    mine = _config(run)
    state["config"].setdefault("seed", run.identity["seed"])  # (written before runs recorded it)
    for key, want in run.identity.items():
        if state["config"].get(key) != want:
            raise CheckpointError(
                f"{state_file} belongs to a run of {key} {state['config'].get(key)!r}, not {want!r}; "
                "use another output folder"
            )
    recorded = {**_defaults(run.config), **state["config"]}  # a field added since: its default
    if recorded != mine:
        diff = {
            k: recorded.get(k) for k in sorted(set(recorded) | set(mine)) if recorded.get(k) != mine.get(k)
        }
        raise CheckpointError(
            f"{state_file} belongs to a run with another config (differs in {diff}); "
            "use another output folder or the same config"
        )
    if set(state["optimizers"]) != set(run.optimizers):
        raise CheckpointError(
            f"{state_file} holds optimisers {sorted(state['optimizers'])}, not {sorted(run.optimizers)}"
        )
    for key, module in run.modules.items():
        module.load_state_dict(state[key])
    for key, opt in run.optimizers.items():
        opt.load_state_dict(state["optimizers"][key])
    run.model.step = int(state["step"])
    run.earlier_seconds = float(state.get("seconds", 0.0))
    restore_rngs(state, run.rngs, run.data_seed, run.device)
    if main:
        print(f"resumed {run.name} at step {run.model.step} from {state_file}")


def _checkpoint(run: Run, out: Path, main: bool, world: int, seconds: float) -> None:
    distributed.assert_in_sync(**run.modules)
    rngs = distributed.gather_objects(rng_states(run.rngs, run.device))  # [rank 0's, rank 1's, ...]
    if not main:
        return
    save_checkpoint(
        {
            "config": _config(run),
            **{key: module.state_dict() for key, module in run.modules.items()},
            "optimizers": {key: opt.state_dict() for key, opt in run.optimizers.items()},
            "step": run.model.step,
            "seconds": round(seconds, 3),
            **rngs[0],
            **({"rank_rngs": rngs} if world > 1 else {}),
        },
        out / "train_state.pt",
    )
    run.save(out)
