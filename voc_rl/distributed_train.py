"""``voc-rl tokenizer fit`` and ``voc-rl occupancy fit`` on several processes, launched by torchrun:

    torchrun --nproc_per_node=2 -m voc_rl.distributed_train occupancy fit --dataset D --tokenizer T.pt
    torchrun --nproc_per_node=2 -m voc_rl.distributed_train tokenizer fit --backend titok --dataset D

The arguments are exactly those of the ``voc-rl`` command. Gradients are averaged over the
processes and each samples its own batches (see :mod:`voc_rl.distributed`), so the effective batch
is the number of processes times the config's. Rank 0 writes the run folder and prints; the other
ranks' standard output is dropped (their errors still show). For an occupancy model, rank 0 encodes
the dataset's token cache first so that the other ranks read it instead of encoding it again. A run
stopped by a fault resumes when the same command is run again (from the last checkpoint, exactly if
the number of processes is the same). Without torchrun it is a plain single-process ``voc-rl`` run.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

from voc_rl import distributed

COMMANDS = (["tokenizer", "fit"], ["occupancy", "fit"])


def main(argv: Sequence[str] | None = None) -> int:
    from voc_rl.cli import build_parser
    from voc_rl.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] not in COMMANDS:
        print(
            "usage: torchrun --nproc_per_node=N -m voc_rl.distributed_train "
            "{tokenizer fit,occupancy fit} [voc-rl options]",
            file=sys.stderr,
        )
        return 2
    distributed.init()
    try:
        if argv[0] == "occupancy" and distributed.world_size() > 1:
            args = build_parser().parse_args(argv)
            if distributed.is_main():
                from voc_rl.data.dataset import open_dataset
                from voc_rl.tokenizers.cache import token_view

                token_view(open_dataset(args.dataset), args.tokenizer)
            distributed.barrier()
        if distributed.is_main():
            return cli_main(argv)
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            return cli_main(argv)
    finally:
        distributed.destroy()


if __name__ == "__main__":
    sys.exit(main())
