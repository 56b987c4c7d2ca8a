"""Commands that write check where they write before they work, and jobs are bounded
(issue 9, class 4): ``finetune`` with an unwritable ``--out`` stops before the first epoch,
``--epochs`` / ``--iterative`` have an upper bound (the engine's too, for the app), and
``export`` never overwrites the user's files nor leaves an earlier export's beside the new."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from explorer.cli import main
from explorer.data import digits_train
from explorer.errors import ExplorerError
from explorer.export.outputs import EXPORT_FILES, export_all
from explorer.finetune.fixed_masks import FinetuneSettings, Finetuning, check_inputs, finetune
from explorer.limits import MAX_FINETUNE_EPOCHS, MAX_ITERATIVE_STEPS
from explorer.plan import Plan

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = Plan(sparsity={"classifier.1": 0.5, "classifier.3": 0.5})
NEURONS = Plan(granularity="neurons", criterion="l1", sparsity={"classifier.1": 0.5})


@pytest.fixture
def plan_file(tmp_path):
    def write(plan: Plan, name: str = "plan.json") -> str:
        path = tmp_path / name
        path.write_text(plan.to_json())
        return str(path)

    return write


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    assert "epoch" not in captured.out, "training started"
    return captured.err


@pytest.mark.parametrize("where", ["a folder", "under a file", "no known extension"])
def test_finetune_checks_out_before_the_first_epoch(tmp_path, plan_file, capsys, where):
    (tmp_path / "a_file").write_text("not a folder")
    out = {"a folder": tmp_path, "under a file": tmp_path / "a_file" / "tuned.safetensors",
           "no known extension": tmp_path / "tuned.bin"}[where]
    start = time.perf_counter()
    code = main(["finetune", "--model", "digits-cnn", "--plan", plan_file(WEIGHTS),
                 "--epochs", str(MAX_FINETUNE_EPOCHS), "--out", str(out)])
    seconds = time.perf_counter() - start
    err = one_line_error(capsys)
    assert code == 2 and ("Cannot write" in err or "Cannot save a model as '.bin'" in err)
    assert seconds < 10, f"{seconds:.1f} s: {MAX_FINETUNE_EPOCHS} epochs would take minutes"
    assert not (tmp_path / "tuned.bin").exists()


def test_suggest_checks_out_before_the_scan(tmp_path, capsys):
    start = time.perf_counter()
    code = main(["suggest", "--model", "digits-cnn", "--target", "flops=2", "--out",
                 str(tmp_path)])
    assert code == 2 and "it is a folder" in one_line_error(capsys)
    assert time.perf_counter() - start < 5  # no model loaded, no scan run


@pytest.mark.parametrize(("flag", "value", "what", "maximum"), [
    ("--epochs", MAX_FINETUNE_EPOCHS + 1, "epochs", MAX_FINETUNE_EPOCHS),
    ("--epochs", 0, "epochs", MAX_FINETUNE_EPOCHS),
    ("--iterative", MAX_ITERATIVE_STEPS + 1, "steps", MAX_ITERATIVE_STEPS),
])
def test_job_sizes_are_bounded_at_the_command_line(tmp_path, plan_file, capsys, flag, value,
                                                   what, maximum):
    args = ["finetune", "--model", "digits-cnn", "--plan", plan_file(WEIGHTS),
            "--out", str(tmp_path / "tuned.safetensors"), "--epochs", "3", flag, str(value)]
    with pytest.raises(SystemExit) as info:
        main(args)
    err = one_line_error(capsys)
    assert info.value.code == 2
    assert f"{what} must be a whole number from 1 to {maximum}" in err and f"got {value}" in err


def test_the_engine_bounds_the_same_job_sizes_for_the_app(cnn, digits):
    train = digits_train()
    with pytest.raises(ExplorerError, match=f"epochs must be a whole number from 1 to "
                                            f"{MAX_FINETUNE_EPOCHS}"):
        finetune(Finetuning(cnn, WEIGHTS, train, digits, FinetuneSettings(MAX_FINETUNE_EPOCHS + 1)))
    with pytest.raises(ExplorerError, match=f"steps must be a whole number from 1 to "
                                            f"{MAX_ITERATIVE_STEPS}"):
        FinetuneSettings(1, 1e-3, MAX_ITERATIVE_STEPS + 1)
    FinetuneSettings(MAX_FINETUNE_EPOCHS, 1e-3, MAX_ITERATIVE_STEPS)
    check_inputs(cnn, train, digits)


def export_args(plan: str, out: Path, *more: str) -> list[str]:
    return ["export", "--model", "digits-cnn", "--plan", plan, "--out", str(out), *more]


def test_export_refuses_a_folder_with_the_users_files(tmp_path, plan_file, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "plan.json").write_text("my own plan.json")
    for more in ([], ["--force"]):  # --force replaces an earlier export, never other files
        code = main(export_args(plan_file(WEIGHTS), out, *more))
        err = one_line_error(capsys)
        assert code == 2 and "notes.txt" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "plan.json"]
    assert (out / "plan.json").read_text() == "my own plan.json"
    with pytest.raises(ExplorerError, match="not empty"):  # notebooks get the same check
        export_all(load_cnn(), WEIGHTS, out)


def load_cnn():
    from explorer.load.demos import load_demo

    return load_demo("digits-cnn")


def test_export_force_leaves_exactly_the_new_export(tmp_path, plan_file, capsys):
    out = tmp_path / "export"
    assert main(export_args(plan_file(NEURONS), out)) == 0
    first = {p.name for p in out.iterdir()}
    assert {"shrunk.pt2", "masks.safetensors"} <= first
    capsys.readouterr()
    assert main(export_args(plan_file(WEIGHTS, "weights.json"), out)) == 2  # no --force
    assert "not empty" in one_line_error(capsys)
    assert {p.name for p in out.iterdir()} == first
    assert main(export_args(plan_file(WEIGHTS, "weights.json"), out, "--force")) == 0
    now = {p.name for p in out.iterdir()}
    assert now == {"plan.json", "pruned.safetensors", "apply_plan.py", "pruning_ratio_dict.json"}
    assert now <= set(EXPORT_FILES)
    assert Plan.from_bytes((out / "plan.json").read_bytes()) == WEIGHTS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "plan.json",
                                                         "weights.json"]


def test_a_plan_that_does_not_fit_keeps_the_earlier_export(tmp_path, plan_file, capsys):
    out = tmp_path / "export"
    assert main(export_args(plan_file(NEURONS), out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    bad = plan_file(Plan(sparsity={"no.such.layer": 0.5}), "bad.json")
    assert main(export_args(bad, out, "--force")) == 2
    assert "no.such.layer" in one_line_error(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def _small_files_only() -> None:
    """In the child: a write past 16 kB fails with EFBIG instead of killing the process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16_384, 16_384))


def test_a_write_that_fails_midway_keeps_the_earlier_export(tmp_path, plan_file, capsys):
    out = tmp_path / "export"
    assert main(export_args(plan_file(NEURONS), out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert max(len(b) for b in before.values()) > 16_384  # the limit bites on a real file
    run = subprocess.run([sys.executable, "-m", "explorer.cli",
                          *export_args(plan_file(WEIGHTS, "weights.json"), out, "--force")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         preexec_fn=_small_files_only,
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert run.returncode == 2 and "Cannot write the export" in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "plan.json",
                                                         "weights.json"]  # nothing left over
