"""What the tests that train in subprocesses share: the runner's opening (join the run, build the tiny data)
and collecting the results of several processes that must all finish."""

from __future__ import annotations

import subprocess
from typing import Callable, TypeVar

T = TypeVar("T")

# The start of a runner script (python -c, JSON arguments in sys.argv[1]): join a multi-process run where the
# arguments name a coordinator, then `dataset`: learnable noise, each class tinting its 32x32 images with its own
# colour, args["n_train"] (default 256) training and 64 test images, the same in every process.
TINY_DATA_PROLOGUE = r'''
import json, sys
import numpy as np
args = json.loads(sys.argv[1])
from train.jax_loop import sharding
sharding.initialize_distributed(args.get("coordinator"), args.get("num_processes"), args.get("process_id"))
import jax
from train.data import Dataset, Split

rng = np.random.default_rng(0)
tint = rng.integers(0, 128, (10, 1, 1, 3))
def split(n):
    labels = rng.integers(0, 10, n).astype(np.int32)
    return Split((rng.integers(0, 128, (n, 32, 32, 3)) + tint[labels]).astype(np.uint8), labels)
dataset = Dataset("tiny", 10, split(args.get("n_train", 256)), split(64))
'''


def collect_all(procs: list[subprocess.Popen], result: Callable[[subprocess.Popen], T]) -> list[T]:
    """result(p) of every process, in order; any still running when one fails is killed."""
    try:
        return [result(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
