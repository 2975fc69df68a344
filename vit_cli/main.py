"""`vit SUBCOMMAND ...`: the project's one command-line entry point.

Each subcommand lives in a module with `add_parser(subparsers)`; modules import jax or torch only
when their command runs, so `vit --help` is quick.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Module of each subcommand, in the order `vit --help` lists them.
COMMAND_MODULES = (
    "vit_cli.train",  # vit train
    "vit_cli.eval",  # vit eval
    "vit_cli.recipes",  # vit recipes
    "vit_cli.compare",  # vit compare
    "vit_cli.attention",  # vit attention
    "vit_cli.embeddings",  # vit embeddings
    "vit_cli.plot",  # vit plot
    "vit_cli.predict",  # vit predict
    "vit_cli.features",  # vit features
    "vit_cli.convert",  # vit convert
    "vit_cli.export",  # vit export
    "vit_cli.parity",  # vit parity
    "vit_cli.summary",  # vit summary
    "vit_cli.bench",  # vit bench
    "vit_cli.baseline",  # vit baseline
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vit", description="A Vision Transformer in JAX and PyTorch that agree.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


# The optional dependencies, and the extra (pyproject.toml) that installs each.
OPTIONAL_EXTRAS = {
    "torch": "vit-twins[torch]", "torchvision": "vit-twins[torch]",
    "onnx": "vit-twins[export]", "onnxscript": "vit-twins[export]", "onnxruntime": "vit-twins[export]",
    "tensorflow": "vit-twins[data]",
}


def main(argv: list[str] | None = None) -> int:
    from train.interrupts import Interrupted

    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except Interrupted as e:  # a run stopped by SIGINT or SIGTERM, after saving its checkpoint
        print(e, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:
        package = (e.name or "").split(".")[0]
        if package not in OPTIONAL_EXTRAS:
            raise  # one of our own modules or a required dependency: a broken install, worth its traceback
        print(f"vit {args.command}: error: this needs {package}, which is not installed: "
              f"pip install '{OPTIONAL_EXTRAS[package]}'", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `vit summary B/16 | head`: the reader left; say nothing more (and nothing when Python flushes stdout).
        sys.stdout = open(os.devnull, "w")
        return 0
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        # Our errors name the problem and the fix; a traceback adds nothing for a user.
        print(f"vit {args.command}: error: {e}", file=sys.stderr)
        return 2


def entry() -> int:
    """The `vit` console script: `main` in a process whose large buffers go on huge pages (vit_cli.huge_pages)."""
    from vit_cli import huge_pages

    huge_pages.reexec(sys.argv[1:])
    return main()


if __name__ == "__main__":
    sys.exit(entry())
