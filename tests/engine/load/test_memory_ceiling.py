"""Memory per session and per server (issue 9, class 6): the estimate is checked against what
a real run of a demo model really allocates, data over the session ceiling is refused from
its headers with how many images would fit, and the server's ledger of uploads is exact under
threads and gives bytes back when an upload is dropped.
"""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_files import peak_growth, zeros_npz

from explorer.cli import main
from explorer.data import ValidationSet
from explorer.errors import DataError, ExplorerError
from explorer.evaluator import Evaluator
from explorer.limits import SESSION_MEMORY_BYTES
from explorer.load.data_file import DataShape, peek_data
from explorer.load.memory import (
    MemoryLedger,
    check_memory,
    estimate,
    images_that_fit,
)
from explorer.plan import Plan

DIGITS = (1, 8, 8)


def random_set(samples: int) -> ValidationSet:
    g = torch.Generator().manual_seed(0)
    x = torch.rand((samples, *DIGITS), generator=g)
    return ValidationSet(x, torch.randint(0, 10, (samples,), generator=g), 10, "random")


# ----------------------------------------------------------------- the estimate is real


MEASURE_RUN = """
import sys
import torch
from hostile_files import peak_growth
from explorer.load.memory import node_bytes
from explorer.load.demos import load_demo
cnn = load_demo("digits-cnn")
x = torch.rand(4000, 1, 8, 8)
with peak_growth() as growth:
    cnn.program.run(x, keep=True)
print(node_bytes(cnn)[0], growth.bytes)
"""


def test_per_image_bytes_match_what_a_run_allocates():
    # A fresh process: after hundreds of tests, freed blocks have raised glibc's mmap
    # threshold and fragmented the heap, and the same run's peak there is ~1.3x its size.
    tests = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", MEASURE_RUN], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tests)}, timeout=300)
    per_image, grown = map(int, done.stdout.split()[-2:])
    assert 0.8 * 4000 * per_image < grown < 1.2 * 4000 * per_image + (16 << 20), done.stdout


@pytest.mark.parametrize("samples", [1000, 3000, 6000])  # 6000: too many to keep states
def test_estimate_bounds_a_real_evaluation(cnn, samples):
    data = random_set(samples)
    need = estimate(cnn, DataShape.of(data))
    with peak_growth() as growth:  # scores, the dense state, masked runs, the kept states
        evaluator = Evaluator(cnn, data)
        for fraction in (0.5, 0.6):
            evaluator.evaluate(Plan(sparsity={"features.0": fraction, "classifier.1": 0.5}))
    # at least the states it reports keeping (compact: less than a full run's node values)
    assert evaluator.kept_bytes < growth.bytes <= need.total - need.data, (growth.mib, need)


def test_estimate_grows_with_the_data(mlp, cnn, resnet):
    for bundle in (mlp, cnn, resnet):
        small, large = (estimate(bundle, DataShape(n, DIGITS, "float32")) for n in (100, 200))
        assert small.total < large.total
        assert large.data == 2 * small.data == 2 * 200 * (64 * 4 + 8)  # set + its split


# ----------------------------------------------------------------- one session's ceiling


def test_data_over_the_session_ceiling_is_refused_with_what_fits(cnn):
    shape = DataShape(10_000_000, DIGITS, "float32", "huge.npz")  # a shape: nothing allocated
    with pytest.raises(DataError) as caught:
        check_memory(cnn, shape)
    message = str(caught.value)
    fit = int(re.search(r"at most ([\d,]+) images", message).group(1).replace(",", ""))
    assert estimate(cnn, shape, fit).total <= SESSION_MEMORY_BYTES
    assert estimate(cnn, shape, fit + 1).total > SESSION_MEMORY_BYTES
    assert "huge.npz: 10,000,000 images of (1, 8, 8)" in message
    assert f"x=x[:{fit}]" in message and "\n" not in message


def test_data_under_the_ceiling_passes(cnn, digits):
    need = check_memory(cnn, DataShape.of(digits))
    assert need.samples == 360 and need.total < SESSION_MEMORY_BYTES


def test_memory_check_says_when_samples_do_not_fit_the_model(mlp):
    with pytest.raises(DataError, match=r"the model expects \(1, 8, 8\) per sample, the data "
                                        r"has \(64,\)"):
        check_memory(mlp, DataShape(10, (64,), "float32", "flat.npz"))


def test_images_that_fit(cnn):
    shape = DataShape(10**7, DIGITS, "float32")
    assert images_that_fit(cnn, shape, limit=1) == 0
    assert images_that_fit(cnn, DataShape(5, DIGITS, "float32")) == 5


def test_cli_evaluates_the_fifty_thousand_image_file_in_bounded_memory(tmp_path, capsys, cnn):
    """Issue 9's case (13 MB that took 3.3 GB as one batch, then refused) now streams: it is
    evaluated, within its estimate, in a third of that."""
    path = tmp_path / "big50k.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((50_000, *DIGITS), dtype=np.float32),
             y=rng.integers(0, 10, 50_000))
    need = estimate(cnn, peek_data(path))
    with peak_growth() as growth:
        code = main(["evaluate", "--model", "digits-cnn", "--data", str(path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and err == "" and json.loads(out)["samples"] == 50_000
    assert growth.bytes <= need.total - need.model < 1.2 * 2**30  # was 3.3 GB


def warm_up(capsys) -> None:
    """Load digits-resnet once through the CLI, so that the imports and the model it loads
    are not counted as the refusal's memory when a test runs alone."""
    assert main(["layers", "--model", "digits-resnet"]) == 0
    capsys.readouterr()


def test_cli_refuses_a_crafted_four_million_images_before_reading_them(tmp_path, capsys):
    path = zeros_npz(tmp_path / "zeros.npz", 4_000_000, DIGITS)  # ~1 MB on disk, 1 GB inside
    warm_up(capsys)
    with peak_growth() as growth:
        code = main(["evaluate", "--model", "digits-resnet", "--data", str(path)])
    assert code == 2 and "one session may use" in capsys.readouterr().err
    assert growth.bytes < 100 << 20


def test_cli_refuses_crafted_calibration_images_before_reading_them(tmp_path, capsys):
    """--calibration-data is checked from its headers too, as --data is."""
    path = zeros_npz(tmp_path / "zeros.npz", 4_000_000, DIGITS)
    warm_up(capsys)
    with peak_growth() as growth:
        code = main(["evaluate", "--model", "digits-resnet", "--calibration-data", str(path)])
    assert code == 2 and "one session may use" in capsys.readouterr().err
    assert growth.bytes < 100 << 20


# ----------------------------------------------------------------- the server's ledger


def test_ledger_refuses_past_its_limit_and_takes_back():
    ledger = MemoryLedger(limit=100)
    first = ledger.reserve(60)
    with pytest.raises(ExplorerError, match="server is at its memory limit for uploads"):
        ledger.reserve(50)
    assert ledger.used == 60
    first.release()
    first.release()  # twice is once
    assert ledger.used == 0
    ledger.reserve(100).release()


def test_ledger_gives_bytes_back_when_the_upload_is_collected():
    ledger = MemoryLedger(limit=100)
    upload = {"data": object(), "memory": ledger.reserve(70)}
    upload["self"] = upload  # a cycle, as session state often has: freed by the collector
    assert ledger.used == 70
    del upload
    gc.collect()
    assert ledger.used == 0


def test_ledger_is_exact_under_threads():
    ledger = MemoryLedger(limit=10)
    held, refused, start = [], [], threading.Barrier(32)

    def take() -> None:
        start.wait()
        try:
            held.append(ledger.reserve(1))
        except ExplorerError:
            refused.append(1)

    threads = [threading.Thread(target=take) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(held), len(refused), ledger.used) == (10, 22, 10)
    for r in held:
        r.release()
    assert ledger.used == 0
