"""Command line: ``python -m lrp_teach.train <name> [--seed N]`` or ``--list``."""

from __future__ import annotations

import argparse

import torch

from . import RECIPES, _discover, recipe


def main() -> None:
    _discover()
    parser = argparse.ArgumentParser(prog="python -m lrp_teach.train", description=__doc__)
    parser.add_argument("name", nargs="?", help="recipe to run: " + ", ".join(sorted(RECIPES)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list", action="store_true", help="list the recipes and exit")
    args = parser.parse_args()
    if args.list or not args.name:
        for name in sorted(RECIPES):
            print(name)
        return
    torch.set_num_threads(1)
    recipe(args.name)(seed=args.seed)


if __name__ == "__main__":
    main()
