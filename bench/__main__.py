"""``python -m bench <command> [options]``: one benchmark (``<command> --help``: its options)."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {  # name: (module, one line)
    "metrics": (".metrics", "every registered metric vs its NumPy baseline and the limit"),
    "hub": (".hub", "score_hub vs a Python loop over the jitted single-model metric"),
    "stream": (".stream", "LogME over 10⁶ rows streamed from a generator"),
    "distributed": (".distributed", "streamed LogME statistics, 1 vs 2 processes"),
    "tta": (".bench_tta", "TTA: fixed-transform bound and tta_optimize steps"),
    "realhub": (".realhub.run", "rank 6 real checkpoints vs transfer accuracies"),
    "realhub-layers": (".realhub.layers", "every tap of the 6 checkpoints: model and layer"),
    "example-hub": (".example_hub", "regenerate transferjax/data's example hub"),
}


def main(argv=None) -> int:
    listing = "\n".join(f"  {name:<15} {line}" for name, (_, line) in COMMANDS.items())
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description="transferjax benchmarks (run from the repository root).",
        epilog=f"commands:\n{listing}\n\n`python -m bench <command> --help` for its options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("command", choices=list(COMMANDS), metavar="command")
    ap.add_argument("options", nargs=argparse.REMAINDER, help="the command's options")
    args = ap.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0], __package__)
    return module.main(args.options) or 0


if __name__ == "__main__":
    sys.exit(main())
