"""The ``voc-rl`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from voc_rl.quickstart import random_rollout

    report = random_rollout(args.task, args.steps, args.out, seed=args.seed, size=args.size)
    print(report.summary())
    return 0


def _cmd_envs(args: argparse.Namespace) -> int:
    from voc_rl.envs import DMC_TASKS, list_envs

    for full in list_envs():
        task = full.split("/")[1].rsplit("-v", 1)[0]
        origin = "dm_control {}/{}".format(*DMC_TASKS[task]) if task in DMC_TASKS else "numpy test env"
        print(f"{full:32s} {origin}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voc-rl", description="Video occupancy models for pixel-based control on DeepMind Control."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    quick = sub.add_parser("quickstart", help="the README's main job on a built-in default")
    quick.add_argument("--task", default="cheetah-run", help="env name, e.g. cheetah-run (default)")
    quick.add_argument("--steps", type=int, default=500, help="agent steps of a random policy (500)")
    quick.add_argument("--size", type=int, default=64, help="frame size in pixels (64)")
    quick.add_argument("--seed", type=int, default=0)
    quick.add_argument("--out", default="quickstart", help="output folder (quickstart/)")
    quick.set_defaults(func=_cmd_quickstart)

    envs = sub.add_parser("envs", help="list the registered environments")
    envs.set_defaults(func=_cmd_envs)
    return parser


def _version() -> str:
    from voc_rl import __version__

    return f"voc-rl {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from gymnasium.error import Error as GymError

    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, GymError) as exc:
        print(f"voc-rl {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
