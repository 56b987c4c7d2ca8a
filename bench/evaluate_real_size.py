"""`evaluate` on a CIFAR-size ResNet-18 TorchScript upload vs a plain batched forward (issue 11).

The model is the zoo's ``resnet18-cifar`` architecture (11.2 M parameters, 3x32x32 inputs,
fixed seed), saved with ``torch.jit.save`` as a user would upload it; the validation data is
random images with random labels in an ``.npz``. For each number of images, side by side:

* ours: ``pruning-explorer evaluate --model r18.pt --data val.npz --json`` (the file goes
  through the guarded loader, the data through the header checks, then the evaluation);
* plain: a script that ``torch.jit.load``s the same file and runs the same images through it
  in batches of 256 under ``no_grad`` (accuracy and cross-entropy, nothing else).

Each runs in its own process under ``/usr/bin/time -v``: wall time and peak RSS (the largest
of the process and the children it waited for). Both must report the same accuracy; the loss
to 1e-4. Run by hand: ``python bench/evaluate_real_size.py [--images 1000 3000 10000]``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from explorer.load.zoo import ZOO

PLAIN = """
import sys, numpy as np, torch, torch.nn.functional as F
torch.set_grad_enabled(False)
model = torch.jit.load(sys.argv[1])
data = np.load(sys.argv[2])
x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
correct, loss = 0, 0.0
for start in range(0, len(y), 256):
    logits = model(x[start:start + 256])
    correct += int((logits.argmax(1) == y[start:start + 256]).sum())
    loss += float(F.cross_entropy(logits, y[start:start + 256], reduction="sum"))
print('{"accuracy": %r, "loss": %r}' % (correct / len(y), loss / len(y)))
"""


def timed(command: list[str]) -> tuple[dict, float, float]:
    """(the JSON the command printed, wall seconds, peak RSS in MiB)."""
    run = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True,
                         check=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", run.stderr)
    hours, minutes, seconds = (float(g or 0) for g in wall.groups())
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))
    start = run.stdout.index("{")
    return json.loads(run.stdout[start:]), hours * 3600 + minutes * 60 + seconds, rss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 3000, 10000])
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-r18-"))
    torch.manual_seed(0)
    model = ZOO["resnet18-cifar"].build().eval()
    torch.jit.save(torch.jit.script(model), folder / "r18.pt")
    cli = [sys.executable, "-m", "explorer.cli", "evaluate", "--model", str(folder / "r18.pt")]
    print(f"{'images':>7} {'ours s':>8} {'plain s':>8} {'time x':>7} {'ours MiB':>9} "
          f"{'plain MiB':>10} {'+MiB':>6}")
    for n in args.images:
        rng = np.random.default_rng(n)
        np.savez(folder / "val.npz", x=rng.standard_normal((n, 3, 32, 32), dtype=np.float32),
                 y=rng.integers(0, 10, n))
        ours, ours_s, ours_mib = timed([*cli, "--data", str(folder / "val.npz"), "--json"])
        plain, plain_s, plain_mib = timed([sys.executable, "-c", PLAIN, str(folder / "r18.pt"),
                                           str(folder / "val.npz")])
        assert ours["accuracy"] == plain["accuracy"], (ours["accuracy"], plain["accuracy"])
        assert abs(ours["loss"] - plain["loss"]) < 1e-4, (ours["loss"], plain["loss"])
        print(f"{n:>7} {ours_s:>8.1f} {plain_s:>8.1f} {ours_s / plain_s:>7.2f} "
              f"{ours_mib:>9.0f} {plain_mib:>10.0f} {ours_mib - plain_mib:>6.0f}", flush=True)


if __name__ == "__main__":
    main()
