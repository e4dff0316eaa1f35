"""Environment speed: voc_rl's pixel envs against shimmy's dm_control wrapper and a bare dm_control loop.

For each task and image size, with uniform random actions, this times (after a warm-up, resetting
whenever an episode ends, so reset cost is included) the steps per second of:

* ``voc_rl-fast``: our env as trained on (action_repeat=2: agent step = 2 control steps + 1 render);
* ``voc_rl-fast-ar1``: the same with action_repeat=1, one render per control step;
* ``voc_rl-standard-ar1``: render_quality="standard" (dm_control's default look), action_repeat=1;
* ``shimmy``: ``gym.make("dm_control/<task>-v0", render_mode="rgb_array")`` wrapped in
  ``AddRenderObservation(render_only=True)``, per control step;
* ``bare-render``: ``suite.load`` then ``env.step(a); env.physics.render(size, size, camera_id=0)``.

Writes ``<out-dir>/env_speed.csv`` (``env,size,path,steps_per_s``) and ``<out-dir>/env_speed.md``.

    python benchmarks/env_speed.py [--tasks cheetah-run] [--sizes 64] [--quick]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy is imported

import csv
import dataclasses
import datetime
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import voc_rl
from voc_rl.args import parse_args
from voc_rl.envs._gl import ensure_gl_backend

GL_BACKEND = ensure_gl_backend()  # must precede the first shimmy / dm_control import

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import shimmy  # noqa: E402, F401  (registers the dm_control/... envs)
from dm_control import suite  # noqa: E402

TASKS = voc_rl.envs.DMC_TASKS  # short name -> (dm_control domain, task)
SLOW_PATHS = ("voc_rl-standard-ar1", "shimmy", "bare-render")  # ~30 steps/s: timed for steps // 10
PATHS = ("voc_rl-fast", "voc_rl-fast-ar1", "voc_rl-standard-ar1", "shimmy", "bare-render")
Stepper = tuple[Callable[[], None], Callable[[], None]]  # (one step, close)
Results = dict[tuple[str, int, str], float]  # (task, size, path) -> steps/s
MIN_RATIO, MIN_FAST_64 = 10.0, 400.0
FAST_NOTE = (
    'render_quality="fast" turns off shadows and reflections and renders without multisampling (no'
    " anti-aliasing); it also shrinks the shadow map and sizes the offscreen buffer to the image, which"
    " change speed, not the look. Frames look flatter, edges are jagged, and they are not pixel-identical"
    " to dm_control's. render_quality=\"standard\" keeps dm_control's default look (shadows, reflections,"
    " multisampling), the look of the published pixel benchmarks: use it to compare against published"
    " numbers or to reuse data rendered that way. Both qualities reuse one camera per env, whereas"
    " shimmy and bare-render go through `physics.render`, which builds a new camera for every frame."
)


@dataclasses.dataclass(frozen=True)
class Args:
    out_dir: Path = Path("results")
    """folder of the tables"""
    tasks: tuple[str, ...] = dataclasses.field(
        default=("cheetah-run", "walker-walk"), metadata={"choices": sorted(TASKS)}
    )
    """tasks"""
    sizes: tuple[int, ...] = (64, 84)
    """image sizes"""
    steps: int = 2000
    """timed steps, a tenth for the slow paths (standard rendering, shimmy, bare-render)"""
    warmup: int = 20
    """untimed steps first"""
    repeats: int = 3
    """timed windows per measurement; the median is kept"""
    quick: bool = False
    """tiny smoke run (50 steps, 5 warm-up)"""

    @property
    def slow_steps(self) -> int:
        """Timed steps of the slow paths."""
        return max(1, self.steps // 10)


QUICK = {"steps": 50, "warmup": 5}


def gym_stepper(env: gym.Env) -> Stepper:
    """Step a gymnasium env with uniform random actions, resetting at the end of each episode."""
    env.reset(seed=0)
    env.action_space.seed(0)

    def step() -> None:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()

    return step, env.close


def bare_stepper(domain: str, task: str, size: int) -> Stepper:
    """A bare dm_control loop: step, then render one frame with ``physics.render``."""
    env = suite.load(domain, task, task_kwargs={"random": 0})
    spec, rng = env.action_spec(), np.random.default_rng(0)
    env.reset()

    def step() -> None:
        ts = env.step(rng.uniform(spec.minimum, spec.maximum))
        env.physics.render(size, size, camera_id=0)
        if ts.last():
            env.reset()

    return step, env.close


def make_stepper(path: str, task: str, size: int) -> Stepper:
    domain, dmc_task = TASKS[task]
    if path == "bare-render":
        return bare_stepper(domain, dmc_task, size)
    if path == "shimmy":
        camera = {"width": size, "height": size, "camera_id": 0}
        env = gym.make(f"dm_control/{domain}-{dmc_task}-v0", render_mode="rgb_array", render_kwargs=camera)
        return gym_stepper(gym.wrappers.AddRenderObservation(env, render_only=True))
    quality = "standard" if "standard" in path else "fast"
    action_repeat = 1 if path.endswith("-ar1") else 2
    return gym_stepper(voc_rl.make_env(task, size=size, action_repeat=action_repeat, render_quality=quality))


def measure(path: str, task: str, size: int, steps: int, warmup: int, repeats: int) -> float:
    """Median steps per second of ``path`` over ``repeats`` windows of ``steps`` timed steps."""
    step, close = make_stepper(path, task, size)
    try:
        for _ in range(warmup):
            step()
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(steps):
                step()
            rates.append(steps / (time.perf_counter() - start))
        return statistics.median(rates)
    finally:
        close()


def machine_lines() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "unknown")
    cores = len(os.sched_getaffinity(0))
    pkgs = ", ".join(f"{p} {version(p)}" for p in ("mujoco", "dm-control", "gymnasium", "shimmy", "numpy"))
    return [f"- CPU: {cpu}, {cores} cores usable", f"- Python {platform.python_version()}; {pkgs}"]


def write_markdown(path: Path, results: Results, args: Args, wall_s: float) -> None:
    keys = sorted({(t, s) for t, s, _ in results}, key=lambda k: (args.tasks.index(k[0]), k[1]))
    ratios = {k: results[(*k, "voc_rl-fast-ar1")] / results[(*k, "shimmy")] for k in keys}
    fast64 = {t: results[(t, 64, "voc_rl-fast")] for t, s in keys if s == 64}
    lines = [
        "# Environment speed: voc_rl vs shimmy vs bare dm_control",
        "",
        f"Command: `{shlex.join(['python', *sys.argv])}`"
        + (" (quick run: figures are not meaningful)" if args.quick else ""),
        "",
        f"- Date (UTC): {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}",
        *machine_lines(),
        f"- MUJOCO_GL={GL_BACKEND}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}",
        f"- {args.warmup} warm-up steps, then the median of {args.repeats} windows of {args.steps} steps"
        f" ({args.slow_steps} for {', '.join(SLOW_PATHS)}); uniform random actions; resets included."
        f" Whole run: {wall_s:.0f} s.",
        "",
        "Steps per second. `voc_rl-fast` counts agent steps (action_repeat=2: 2 control steps + 1 render);"
        " every other column counts control steps with one render each.",
        "",
        "| env | size | " + " | ".join(PATHS) + " | fast-ar1 / shimmy |",
        "|---|---:|" + "---:|" * (len(PATHS) + 1),
    ]
    for t, s in keys:
        cells = " | ".join(f"{results[(t, s, p)]:.0f}" for p in PATHS)
        lines.append(f"| {t} | {s} | {cells} | {ratios[(t, s)]:.1f}x |")
    ok_ratio = all(r >= MIN_RATIO for r in ratios.values())
    ok_fast = bool(fast64) and all(v >= MIN_FAST_64 for v in fast64.values())
    ratio_text = ", ".join(f"{t} {s} px {r:.1f}x" for (t, s), r in ratios.items())
    fast_text = ", ".join(f"{t} {v:.0f}/s" for t, v in fast64.items()) or "no 64 px run"
    lines += [
        "",
        "## Targets",
        "",
        f"- voc_rl-fast-ar1 at least {MIN_RATIO:.0f}x shimmy's pixel path:"
        f" **{'met' if ok_ratio else 'NOT met'}** ({ratio_text}).",
        f"- At least {MIN_FAST_64:.0f} agent steps/s at 64 px (voc_rl-fast) on this machine:"
        f" **{'met' if ok_fast else 'NOT met'}** ({fast_text}).",
        "",
        "## What fast rendering gives up",
        "",
        FAST_NOTE,
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv, quick=QUICK)
    start = time.perf_counter()
    results: Results = {}
    for task in args.tasks:
        for size in args.sizes:
            for path in PATHS:
                steps = args.slow_steps if path in SLOW_PATHS else args.steps
                results[(task, size, path)] = sps = measure(
                    path, task, size, steps, args.warmup, args.repeats
                )
                print(f"{task:>14} {size:>4} px {path:>20}: {sps:8.1f} steps/s", flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with open(args.out_dir / "env_speed.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["env", "size", "path", "steps_per_s"])
        writer.writerows((t, s, p, f"{v:.1f}") for (t, s, p), v in results.items())
    write_markdown(args.out_dir / "env_speed.md", results, args, time.perf_counter() - start)
    print(f"wrote {args.out_dir / 'env_speed.csv'} and {args.out_dir / 'env_speed.md'}")


if __name__ == "__main__":
    main()
