"""The ``voc-rl`` command line."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import zipfile
from collections.abc import Sequence
from importlib import metadata
from typing import NoReturn

from voc_rl.args import add_config_options, config_values
from voc_rl.paths import check_writable, user_path
from voc_rl.registry import AgentConfig

# Output folders are resolved as they are parsed (``type=user_path``), and so are the defaults
# computed below; inputs (datasets, checkpoints, V-D4RL folders) are resolved by the functions that
# read them, so that their errors name a path as the user typed it.


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from voc_rl.quickstart import main_job, summary

    steps = (
        {}
        if args.steps is None
        else {f"{p}_steps": args.steps for p in ("tokenizer", "prior", "occupancy", "critic")}
    )
    report = main_job(
        args.task,
        args.agent,
        args.episodes,
        args.out,
        args.seed,
        args.retrain,
        args.size,
        args.states,
        **steps,
    )
    print(summary(report, args.task, args.agent))
    return 0


def _cmd_agents(args: argparse.Namespace) -> int:
    from voc_rl.registry import REGISTRY, list_agents

    for name in list_agents(args.pattern):
        spec = REGISTRY[name]
        print(f"{name:17s} {spec.kind:10s} {spec.config.tokenizer:6s} {spec.description}")
    return 0


def _cmd_agent_train(args: argparse.Namespace) -> int:
    from voc_rl.registry import make_agent

    agent = make_agent(args.agent, size=args.size, seed=args.seed, **config_values(args, args.config_fields))
    check_writable(args.out, "agent file")
    agent.learn(args.dataset, steps=args.steps, runs=args.runs, run_dir=args.run_dir)
    print(f"saved {agent.save(args.out)}; TensorBoard: tensorboard --logdir {agent.run_dir}")
    return 0


def _cmd_agent_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from voc_rl.episodes import iqm, mean_interval, play_episode
    from voc_rl.quickstart import save_gif
    from voc_rl.registry import load_agent

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    if args.gif:
        check_writable(args.gif, "GIF")
    agent = load_agent(args.path)
    if args.task:
        agent.set_task(args.task)  # one of the tasks it has a reward head for
    task = agent.acting_task
    frames: list[np.ndarray] | None = [] if args.gif else None
    returns, decisions, spent = [], 0, 0.0
    for i in range(args.episodes):
        total, n, seconds = play_episode(agent, task, args.seed + i, frames if i == 0 else None,
                                         deterministic=not args.stochastic)  # fmt: skip
        returns.append(total)
        decisions, spent = decisions + n, spent + seconds
        print(f"episode {i + 1} (env seed {args.seed + i}): return {total:.1f}", flush=True)
    r = np.array(returns)
    lo, hi = mean_interval(r)
    print(f"{agent.name} on {task}: return {r.mean():.1f} [95% CI {lo:.1f}, {hi:.1f}] (bootstrap of "
          f"the mean over {len(r)} episodes), IQM {iqm(r):.1f}, std {r.std():.1f}; "
          f"{1000 * spent / decisions:.1f} ms per decision")  # fmt: skip
    if frames is not None:
        print(f"wrote {save_gif(frames, args.gif)} (the first episode)")
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from voc_rl.selection import BEHAVIOUR_STEPS, select_policies

    given = args.behaviour_steps
    ranked = select_policies(
        args.policies, args.dataset, runs=args.runs, method=args.method, gamma=args.gamma, seed=args.seed,
        steps=args.steps, fqe_steps=args.fqe_steps, samples=args.samples, device=args.device,
        size=args.size, progress=not args.quiet,
        behaviour_steps=dict.fromkeys(BEHAVIOUR_STEPS, given) if given else None,
    )  # fmt: skip
    print(f"estimated discounted return (gamma {args.gamma}) from the initial states of {args.dataset}, "
          f"by {args.method}; best first:")  # fmt: skip
    width = max(len(e.policy) for e in ranked)
    for i, e in enumerate(ranked, 1):
        print(f"{i:2d}. {e.policy:{width}s}  {e.value:8.2f}  [95% CI {e.low:.2f}, {e.high:.2f}]  "
              f"spread {e.spread:.2f} over {e.n_states} states x {e.samples} samples  "
              f"({e.seconds / 60:.1f} min)")  # fmt: skip
    return 0


def _cmd_agent_imagine(args: argparse.Namespace) -> int:
    from voc_rl.data.dataset import open_dataset
    from voc_rl.imagine import check_imaginable, imagine
    from voc_rl.registry import load_agent

    check_writable(args.out, "image")
    agent = load_agent(args.path)
    check_imaginable(agent)  # before the dataset opens: the cheaper error first
    ds = open_dataset(args.dataset)
    task = ds.task
    if task != agent.task:
        raise ValueError(f"{args.path} was trained on {agent.task!r}; {args.dataset} holds {task!r}")
    print(f"wrote {imagine(agent, ds, args.out, args.states, args.samples, args.seed)}")
    return 0


def _cmd_envs(args: argparse.Namespace) -> int:
    from voc_rl.envs import DMC_TASKS, list_envs

    for full in list_envs():
        task = full.split("/")[1].rsplit("-v", 1)[0]
        origin = "dm_control {}/{}".format(*DMC_TASKS[task]) if task in DMC_TASKS else "numpy test env"
        print(f"{full:32s} {origin}")
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    from voc_rl.data.collect import collect
    from voc_rl.data.dataset import open_dataset

    path = collect(
        args.task,
        args.policy,
        episodes=args.episodes,
        out=args.out,
        seed=args.seed,
        size=args.size,
        policy_file=args.policy_file,
        name=args.name,
        overwrite=args.overwrite,
    )
    print(f"wrote {open_dataset(path)} to {path}")
    return 0


def _cmd_dataset_info(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from voc_rl.data.dataset import open_dataset, reward_manifest

    ds = open_dataset(args.path, verify=args.verify)
    print(ds)
    returns = ds.episode_returns()
    print(
        f"episode return: mean {returns.mean():.1f}, std {returns.std():.1f}, "
        f"min {returns.min():.1f}, max {returns.max():.1f}"
    )
    ids = ds.arrays["policy_id"][ds.ep_start]
    for pid, count in zip(*np.unique(ids, return_counts=True), strict=True):
        desc = ds.meta.get("policies", {}).get(str(pid), {})
        print(
            f"  policy {pid} ({desc.get('level', '?')}): {count} episodes, "
            f"mean return {returns[ids == pid].mean():.1f}"
        )
    manifest = reward_manifest(ds)
    relabelled = sorted(manifest["tasks"])
    if relabelled:
        error = manifest.get("own_task_max_error")
        check = "" if error is None else f" (its own task replayed to within {error:.2g} of the recorded)"
        print(f"relabelled rewards: {', '.join(relabelled)}{check}")
    if args.verify:
        print("checksum OK")
    if args.json:
        print(json.dumps(ds.meta, indent=2))
    return 0


def _cmd_dataset_relabel(args: argparse.Namespace) -> int:
    from voc_rl.data.dataset import open_dataset
    from voc_rl.task_rewards import TASKS, other_tasks, relabel

    ds = open_dataset(args.path)
    tasks = args.tasks or other_tasks(ds)
    folder = relabel(ds, tasks)
    for task in tasks:
        r = ds.task_reward(task)
        note = "" if TASKS[task].on_support else " (off the data's support)"
        print(f"{task}: reward mean {r.mean():.4f}, std {r.std():.4f}{note}")
    print(f"wrote {folder}")
    return 0


def _cmd_import_vd4rl(args: argparse.Namespace) -> int:
    from voc_rl.data.dataset import open_dataset
    from voc_rl.data.vd4rl import import_vd4rl

    path = import_vd4rl(args.path, args.out, task=args.task, name=args.name, overwrite=args.overwrite)
    print(f"wrote {open_dataset(path)} to {path}")
    return 0


def _cmd_behavior_train(args: argparse.Namespace) -> int:
    from voc_rl.behavior import train_behavior

    run_dir = args.run_dir or user_path(f"runs/behavior/{args.task}")
    train_behavior(args.task, run_dir, total_steps=args.steps, seed=args.seed, eval_every=args.eval_every)
    return 0


def _cmd_behavior_ship(args: argparse.Namespace) -> int:
    from voc_rl.behavior import POLICY_DIR, ship_levels

    for level, path in ship_levels(args.task, args.run_dir, args.out or POLICY_DIR).items():
        print(f"{args.task} {level}: {path}")
    return 0


def _cmd_behavior_eval(args: argparse.Namespace) -> int:
    from voc_rl.behavior import BehaviorPolicy, evaluate, load_policy

    policy = BehaviorPolicy.load(args.policy_file) if args.policy_file else load_policy(args.task, args.level)
    returns = evaluate(policy, args.task, args.episodes, seed=args.seed, deterministic=args.deterministic)
    print(
        f"{args.task} {policy.name}: return {returns.mean():.1f} +- {returns.std():.1f} "
        f"over {len(returns)} episodes"
    )
    return 0


def _cmd_tokenizer_fit(args: argparse.Namespace) -> int:
    from voc_rl.data.dataset import open_dataset
    from voc_rl.tokenizers import make_tokenizer
    from voc_rl.tokenizers.train import fit
    from voc_rl.train_loop import Loop

    ds = open_dataset(args.dataset)
    # the run length is part of the config: schedules (DINO's teacher momentum) follow it
    tok = make_tokenizer(args.backend, args.size, ds, **({"steps": args.steps} if args.steps else {}))
    out = args.out or user_path(f"runs/tokenizers/{ds.meta['name']}__{args.backend}__{args.size}")
    report = fit(tok, ds, loop=Loop(out=out, seed=args.seed))
    print(
        f"{tok} trained {report.steps} steps in {report.seconds / 60:.1f} min; checkpoint {out}/tokenizer.pt"
    )
    for key, value in report.metrics.items():
        print(f"  {key}: {value:.4g}")
    return 0


def _cmd_tokenizer_encode(args: argparse.Namespace) -> int:
    from voc_rl.data.dataset import open_dataset
    from voc_rl.tokenizers.cache import cache_dir, token_view

    ds = open_dataset(args.dataset)
    view = token_view(ds, args.checkpoint)
    print(
        f"{view.frames.shape[0]} frames x {view.frames.shape[1]} tokens in {cache_dir(ds, args.checkpoint)}"
    )
    return 0


def _cmd_occupancy_fit(args: argparse.Namespace) -> int:
    from voc_rl.data.dataset import open_dataset
    from voc_rl.occupancy import OccupancyConfig, OccupancyModel
    from voc_rl.occupancy_train import train_occupancy
    from voc_rl.tokenizers import Tokenizer
    from voc_rl.tokenizers.cache import token_view
    from voc_rl.train_loop import Loop

    ds = open_dataset(args.dataset)
    view = token_view(ds, args.tokenizer)
    fields = {"gamma": args.gamma, "variant": args.variant, "n_step": args.n_step}
    if args.steps:  # the run length is part of the config: the learning-rate schedule follows it
        fields["steps"] = args.steps
    config = OccupancyConfig.for_dataset(view, args.size, **fields)
    out = args.out or user_path(
        f"runs/occupancy/{ds.meta['name']}__{config.tokenizer}__g{args.gamma}__{args.size}"
    )
    model = OccupancyModel(config)
    print(model)
    loop = Loop(out=out, seed=args.seed, device=args.device)
    report, _ = train_occupancy(model, view, loop=loop, tokenizer=Tokenizer.load(args.tokenizer))
    print(f"trained {report.steps} steps in {report.seconds / 60:.1f} min; checkpoint {out}/occupancy.pt")
    for key, value in report.metrics.items():
        print(f"  {key}: {value:.4g}")
    return 0


def bench_tables() -> dict[str, metadata.EntryPoint]:
    """The benchmark tables ``voc-rl bench NAME`` runs: the ``voc_rl.bench`` entry points (the
    package's own, ``voc_rl.benchmarks.*:main``, declared in pyproject.toml; a plugin may add its
    own). The core imports none of them until one is asked for."""
    return {ep.name: ep for ep in metadata.entry_points(group="voc_rl.bench")}


def _cmd_bench(args: argparse.Namespace) -> int:
    table = bench_tables()[args.table].load()
    table(args.args, prog=f"voc-rl bench {args.table}")
    return 0


def _n_step(text: str) -> int | None:
    if text.lower() in ("mc", "none"):
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected mc or an integer >= 1, got {text!r}")
    return int(text)


class _Parser(argparse.ArgumentParser):
    """``voc-rl``'s parser: an unknown option gets the nearest one of any subcommand suggested."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            known = {o for p in _parsers(self) for a in p._actions for o in a.option_strings}
            unknown = [w.split("=")[0] for w in message.split(":", 1)[1].split() if w.startswith("--")]
            near = [m for w in unknown for m in difflib.get_close_matches(w, known, n=1)]
            if near:
                message += f" (did you mean {', '.join(near)}?)"
        super().error(message)


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every subcommand's parser under it."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [parser] + [q for a in subs for p in a.choices.values() for q in _parsers(p)]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="voc-rl", description="Video occupancy models for pixel-based control on DeepMind Control."
    )
    parser.add_argument("--version", action="version", version=_version())
    debug = "show the traceback of an error (also: VOC_RL_DEBUG=1); before the command"
    parser.add_argument("--debug", action="store_true", help=debug)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    quick = sub.add_parser("quickstart", help="the README's main job on a built-in default")
    quick.add_argument("--task", default="cheetah-run", help="env name, e.g. cheetah-run (default)")
    quick.add_argument(
        "--agent",
        default="voc-vqvae-select",
        help="registered agent (voc-vqvae-select: the VOC's selection agent, whose token prior and occupancy "
        "model train in minutes; see `voc-rl agents`)",
    )
    quick.add_argument(
        "--episodes", type=int, default=15, help="episodes of the mixed dataset collected (15)"
    )
    quick.add_argument("--steps", type=int, help="training steps of every part (default: short, per part)")
    quick.add_argument("--retrain", action="store_true", help="train again even if OUT/agent.zip exists")
    quick.add_argument("--size", default="small", help="size preset of the agent (small; tiny for tests)")
    quick.add_argument(
        "--states", type=int, default=32, help="held-out states in the return-error table (32)"
    )
    quick.add_argument("--seed", type=int, default=0)
    quick.add_argument("--out", type=user_path, default="quickstart", help="output folder (quickstart/)")
    quick.set_defaults(func=_cmd_quickstart)

    agents = sub.add_parser("agents", help="list the registered agents")
    agents.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'voc-*'")
    agents.set_defaults(func=_cmd_agents)

    envs = sub.add_parser("envs", help="list the registered environments")
    envs.set_defaults(func=_cmd_envs)

    col = sub.add_parser("collect", help="collect a pixel dataset with a behaviour policy")
    col.add_argument("--task", default="cheetah-run")
    col.add_argument("--policy", default="medium", help="random, medium, expert or mixed (default medium)")
    col.add_argument("--policy-file", help="a behaviour-policy checkpoint to use instead of a shipped level")
    col.add_argument(
        "--episodes", type=int, default=200, help="episodes of 500 steps (200 = 100k transitions)"
    )
    col.add_argument("--out", type=user_path, default="datasets", help="datasets root (default datasets/)")
    col.add_argument("--name", help="dataset name (default TASK-POLICY)")
    col.add_argument("--size", type=int, default=64)
    col.add_argument("--seed", type=int, default=0)
    col.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that name")
    col.set_defaults(func=_cmd_collect)

    ds = sub.add_parser("dataset", help="inspect datasets")
    ds_sub = ds.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    info = ds_sub.add_parser("info", help="summary of a dataset folder")
    info.add_argument("path")
    info.add_argument("--verify", action="store_true", help="re-hash the HDF5 against its metadata")
    info.add_argument("--json", action="store_true", help="print the full metadata")
    info.set_defaults(func=_cmd_dataset_info)
    relabel = ds_sub.add_parser(
        "relabel", help="add other tasks' rewards of the dataset's domain, recomputed from its physics"
    )
    relabel.add_argument("path")
    relabel.add_argument(
        "--tasks", nargs="+", help="e.g. walker-stand walker-run (default: every task of the domain)"
    )
    relabel.set_defaults(func=_cmd_dataset_relabel)

    imp = sub.add_parser("import-vd4rl", help="convert V-D4RL files (64px npz or 84px hdf5) to a dataset")
    imp.add_argument("path", help="folder of V-D4RL .npz episodes or .hdf5 shards")
    imp.add_argument("--out", type=user_path, default="datasets", help="datasets root (default datasets/)")
    imp.add_argument("--task", help="e.g. walker-walk (inferred from the path when omitted)")
    imp.add_argument("--name")
    imp.add_argument("--overwrite", action="store_true")
    imp.set_defaults(func=_cmd_import_vd4rl)

    beh = sub.add_parser("behavior", help="train, pick and evaluate behaviour policies (SAC on states)")
    beh_sub = beh.add_subparsers(dest="behavior_command", metavar="ACTION", required=True)
    train = beh_sub.add_parser("train", help="train SAC on state observations (resumes if interrupted)")
    train.add_argument("--task", default="cheetah-run")
    train.add_argument("--steps", type=int, default=300_000, help="agent steps (default 300k)")
    train.add_argument("--run-dir", type=user_path, help="default runs/behavior/TASK")
    train.add_argument("--eval-every", type=int, default=10_000)
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=_cmd_behavior_train)
    ship = beh_sub.add_parser("ship", help="pick medium and expert snapshots of a run and save them")
    ship.add_argument("--task", required=True)
    ship.add_argument("--run-dir", required=True)
    ship.add_argument("--out", type=user_path, help="default: the package's policies/ folder")
    ship.set_defaults(func=_cmd_behavior_ship)
    ev = beh_sub.add_parser("eval", help="average return of a behaviour policy")
    ev.add_argument("--task", default="cheetah-run")
    ev.add_argument("--level", default="medium")
    ev.add_argument("--policy-file")
    ev.add_argument("--episodes", type=int, default=10)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--deterministic", action="store_true")
    ev.set_defaults(func=_cmd_behavior_eval)

    tk = sub.add_parser("tokenizer", help="train tokenizers and encode datasets to tokens")
    tk_sub = tk.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    tfit = tk_sub.add_parser("fit", help="train a tokenizer on a dataset's training episodes")
    tfit.add_argument("--backend", default="vqvae", help="vqvae, dino, musik or titok")
    tfit.add_argument("--dataset", required=True, help="dataset folder (datasets/voc_rl/NAME-v0)")
    tfit.add_argument("--size", default="small", help="tiny, small (default) or base")
    tfit.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    tfit.add_argument(
        "--out", type=user_path, help="run folder (default runs/tokenizers/DATASET__BACKEND__SIZE)"
    )
    tfit.add_argument("--seed", type=int, default=0)
    tfit.set_defaults(func=_cmd_tokenizer_fit)
    tenc = tk_sub.add_parser("encode", help="encode a dataset to its token cache")
    tenc.add_argument("--dataset", required=True)
    tenc.add_argument("--checkpoint", required=True, help="a tokenizer.pt")
    tenc.set_defaults(func=_cmd_tokenizer_encode)

    occ = sub.add_parser("occupancy", help="train occupancy models (generative TD) on a dataset's tokens")
    occ_sub = occ.add_subparsers(dest="occupancy_command", metavar="ACTION", required=True)
    ofit = occ_sub.add_parser("fit", help="train an occupancy model and its reward model (resumes)")
    ofit.add_argument("--dataset", required=True, help="dataset folder (datasets/voc_rl/NAME-v0)")
    ofit.add_argument("--tokenizer", required=True, help="a tokenizer.pt (the dataset is encoded once)")
    ofit.add_argument("--gamma", type=float, default=0.9)
    ofit.add_argument(
        "--n-step",
        type=_n_step,
        default=None,
        metavar="N|mc",
        help="horizon of the objective: mc (default: the dataset's futures, bootstrapped only past an "
        "episode's end) or N >= 1 (1 is the published one-step generative TD)",
    )
    ofit.add_argument("--variant", default="distill", help="bootstrapped rows: distill (default) or sample")
    ofit.add_argument("--size", default="small", help="tiny, small (default) or base")
    ofit.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    ofit.add_argument(
        "--out", type=user_path, help="run folder (default runs/occupancy/DATASET__TOKENIZER__gGAMMA__SIZE)"
    )
    ofit.add_argument("--device", default="auto", help="auto (a GPU where there is one), cpu, cuda")
    ofit.add_argument("--seed", type=int, default=0)
    ofit.set_defaults(func=_cmd_occupancy_fit)

    ag = sub.add_parser("agent", help="train an agent, evaluate it, picture the futures it imagines")
    ag_sub = ag.add_subparsers(dest="agent_command", metavar="ACTION", required=True)
    atr = ag_sub.add_parser("train", help="train a registered agent on a dataset and save it as a .zip")
    atr.add_argument("--agent", required=True, help="a registered agent (voc-rl agents lists them)")
    atr.add_argument("--dataset", required=True, help="a dataset folder (voc-rl collect makes one)")
    atr.add_argument("--steps", type=int, help="training steps of every part (default: the config's)")
    atr.add_argument("--size", default="small", help="size preset: tiny, small, base")
    atr.add_argument("--seed", type=int, default=0)
    atr.add_argument("--runs", type=user_path, default="runs", help="folder of the TensorBoard run (runs/)")
    atr.add_argument("--run-dir", type=user_path, help="this run's folder; the same one again resumes")
    atr.add_argument("--out", type=user_path, default="agent.zip", help="the saved agent (agent.zip)")
    config = atr.add_argument_group(
        "agent config", "fields of voc_rl.AgentConfig over the registered agent's (voc-rl agents lists them)"
    )
    atr.set_defaults(
        func=_cmd_agent_train, config_fields=add_config_options(config, AgentConfig, ("size", "seed"))
    )
    aev = ag_sub.add_parser("eval", help="deterministic episodes of a saved agent: returns with an interval")
    aev.add_argument("path", help="an agent .zip")
    aev.add_argument("--episodes", type=int, default=10)
    aev.add_argument("--seed", type=int, default=1000, help="env seed of the first episode (then +1 each)")
    aev.add_argument("--stochastic", action="store_true", help="predict(deterministic=False)")
    aev.add_argument("--task", help="act for another task it has a reward head for (config tasks)")
    aev.add_argument("--gif", type=user_path, nargs="?", const="episode.gif", metavar="PATH",
                     help="write the first episode as seen by the agent (episode.gif)")  # fmt: skip
    aev.set_defaults(func=_cmd_agent_eval)
    aim = ag_sub.add_parser("imagine", help="held-out states, true futures and sampled futures in a PNG")
    aim.add_argument("path", help="an agent .zip with an occupancy model and a decoding tokenizer")
    aim.add_argument("--dataset", required=True, help="the dataset of its task (held-out states are used)")
    aim.add_argument("--out", type=user_path, default="futures.png")
    aim.add_argument("--states", type=int, default=4)
    aim.add_argument("--samples", type=int, default=4, help="sampled futures per state")
    aim.add_argument("--seed", type=int, default=0)
    aim.set_defaults(func=_cmd_agent_imagine)

    sel = sub.add_parser(
        "select", help="rank policies by their estimated return from a dataset alone (off-policy evaluation)"
    )
    sel.add_argument("policies", nargs="+", metavar="POLICY",
                     help="a behaviour level of the dataset's task (expert, medium, random; LEVEL-det: "
                          "its mean action; LEVEL~EPS: mixed with uniform actions), a behaviour .pt or "
                          "an agent .zip")  # fmt: skip
    sel.add_argument("--dataset", required=True, help="the dataset folder")
    sel.add_argument("--method", default="voc", choices=("voc", "fqe", "behaviour-q"),
                     help="the policy's occupancy model (voc), fitted Q evaluation (fqe) or the behaviour's "
                          "occupancy model at the policy's first action (behaviour-q)")  # fmt: skip
    sel.add_argument("--runs", type=user_path, default="runs/select",
                     help="folder of the trained models, reused by later calls")  # fmt: skip
    sel.add_argument("--gamma", type=float, default=0.99)
    sel.add_argument("--steps", type=int, default=600, help="generative TD steps per policy (voc)")
    sel.add_argument("--fqe-steps", type=int, default=10_000, help="TD steps per policy (fqe)")
    sel.add_argument("--samples", type=int, default=32, help="occupancy samples per initial state")
    sel.add_argument("--size", default="small", help="size preset of the tokenizer and the models")
    sel.add_argument("--behaviour-steps", type=int, metavar="N",
                     help="training steps of each of the behaviour's models (tokenizer, occupancy model, "
                          "critic; default 1000, 2000, 2000)")  # fmt: skip
    sel.add_argument("--seed", type=int, default=0)
    sel.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    sel.add_argument("--quiet", action="store_true", help="no progress bars")
    sel.set_defaults(func=_cmd_select)

    bench = sub.add_parser("bench", help="benchmark tables (results/*.md, .csv)")
    bench_sub = bench.add_subparsers(dest="table", metavar="TABLE", required=True)
    for name, entry in sorted(bench_tables().items()):
        table = bench_sub.add_parser(
            name, help=f"the {name} table ({entry.module}; --help for its options)", add_help=False
        )
        table.add_argument("args", nargs=argparse.REMAINDER, help="options of the table, e.g. --quick")
        table.set_defaults(func=_cmd_bench)
    return parser


def _version() -> str:
    from voc_rl import __version__

    return f"voc-rl {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """``voc-rl``: every expected error (bad input, a missing or corrupt file, a refused run folder,
    an unwritable output) is one line on stderr and exit status 2, Ctrl-C is exit status 130; with
    ``--debug`` or ``VOC_RL_DEBUG=1`` they raise with their traceback."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("VOC_RL_DEBUG", "") not in ("", "0")
    if argv[:1] == ["--debug"]:
        argv, debug = argv[1:], True
    if argv[:1] == ["bench"] and argv[1:2] and argv[1] in bench_tables():  # the table's own options follow
        args = argparse.Namespace(command="bench", func=_cmd_bench, table=argv[1], args=argv[2:])
    else:
        args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from gymnasium.error import Error as GymError

    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        if debug:
            raise
        said = str(exc) or "training checkpoints at the interrupt: run the same command again to resume"
        print(f"voc-rl {args.command}: interrupted ({said})", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, GymError, zipfile.BadZipFile) as exc:
        if debug:
            raise
        print(f"voc-rl {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
