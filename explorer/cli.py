"""``pruning-explorer``: the engine from the command line, with JSON output.

Every number printed here is what the app shows for the same model, data and plan.
Errors the user can fix print one line on stderr and exit with status 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

from explorer.errors import DataError, ExplorerError, PlanError, short
from explorer.limits import (
    MAX_FINETUNE_EPOCHS,
    MAX_ITERATIVE_STEPS,
    MAX_LATENCY_BATCH,
    MAX_LATENCY_THREADS,
    MAX_LOTTERY_ROUNDS,
)
from explorer.plan import GRANULARITIES, Plan, default_criterion, dense_plan


def _load_bundle(model: str, data_path: str | None, labels: bool = True):
    """Resolve ``--model`` (a zoo name or a file) and ``--data`` into (bundle, data).

    An architecture-only zoo model without ``--data`` gets no data (None): costs only.
    ``labels``: the command measures accuracy, so data without labels (``x`` alone) is
    refused.
    """
    from explorer.data import digits_validation
    from explorer.load.data_file import (
        check_compatible,
        load_data,
        peek_data,
        require_digits_input,
        with_padding,
    )
    from explorer.load.demos import load_demo, load_pretrained
    from explorer.load.memory import check_memory
    from explorer.load.model_file import load_model
    from explorer.load.zoo import PRETRAINED, ZOO

    # From the data file's headers first: the model needs its sample shape, and the memory
    # check needs both before a byte of data is read.
    peeked = peek_data(data_path) if data_path else None
    if model in PRETRAINED:  # a pretrained model brings its own labelled evaluation set
        bundle, own = load_pretrained(model)
        if peeked is None:
            return bundle, own
    elif model in ZOO:
        bundle = load_demo(model)
    elif Path(model).exists():
        bundle = load_model(model, input_shape=peeked.sample_shape if peeked else None)
    else:
        raise ExplorerError(
            f"--model {model!r} is neither a demo model ({', '.join([*ZOO, *PRETRAINED])}) "
            "nor an existing file."
        )
    data = None
    if peeked is not None:
        bundle = with_padding(bundle, peeked)  # the data's padding token, if it names one
        check_memory(bundle, peeked)
        data = load_data(data_path)
    if data is None:
        if model in ZOO and ZOO[model].architecture_only:
            return bundle, None
        require_digits_input(bundle)
        data = digits_validation()
    check_compatible(bundle, data)
    if labels and not data.labelled:
        raise DataError(f"{data.name} has no labels (x alone) and this command measures "
                        "accuracy: save y too. evaluate reports fidelity without labels.")
    return bundle, data


def _calibration(args: argparse.Namespace, bundle):
    """The images to recalibrate BatchNorm on (:func:`explorer.batchnorm.calibration_for`);
    when a BatchNorm model gets none, the note says so on stderr (and in JSON, by the
    command). Returns (calibration set or None, note or None)."""
    from explorer.batchnorm import calibration_for
    from explorer.load.data_file import check_compatible, load_data, peek_data
    from explorer.load.memory import check_memory

    given = None
    if getattr(args, "calibration_data", None):
        check_memory(bundle, peek_data(args.calibration_data))  # headers first, as --data
        given = load_data(args.calibration_data)
        check_compatible(bundle, given)
    calibration, note = calibration_for(bundle, given, validation_is_digits=args.data is None,
                                        enabled=not getattr(args, "no_bn_recalibration", False))
    if note:
        print(f"note: {note}", file=sys.stderr)
    return calibration, note


def _load_plan(path: str | None):
    """The plan in the file at ``path`` (None: the dense plan); its size is checked before
    it is read, and no more than the limit is ever read."""
    from explorer.limits import MAX_PLAN_FILE_BYTES

    if path is None:
        return Plan()
    try:
        size = Path(path).stat().st_size
        if size > MAX_PLAN_FILE_BYTES:
            raise PlanError(f"The plan file {path} is {size:,} bytes; a plan file may be at "
                            f"most {MAX_PLAN_FILE_BYTES:,} bytes.")
        with open(path, "rb") as f:
            data = f.read(MAX_PLAN_FILE_BYTES + 1)
    except OSError as exc:
        raise PlanError(f"Cannot read the plan file {path}: {exc.strerror}.") from None
    return Plan.from_bytes(data)


def cmd_models(args: argparse.Namespace) -> int:
    from explorer.load.transformers import EXTRA_COMMAND, SEQUENCE_LENGTH, extra_installed
    from explorer.load.zoo import PRETRAINED, ZOO

    rows = []
    for e in ZOO.values():
        card = e.card()
        rows.append({"name": e.name, "description": e.description,
                     "validation_accuracy": card.get("validation_accuracy"),
                     "params": card.get("params"), "input_shape": list(e.input_shape),
                     "architecture_only": e.architecture_only})
    for name, description in PRETRAINED.items():  # loaded only when used: no accuracy here
        rows.append({"name": name, "description": description, "validation_accuracy": None,
                     "params": None, "input_shape": [SEQUENCE_LENGTH],
                     "architecture_only": False, "pretrained": True,
                     "installed": extra_installed()})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            if r.get("pretrained"):
                acc = ("pretrained; topic accuracy: evaluate --model " + r["name"]
                       if r["installed"] else f"needs the extra: {EXTRA_COMMAND}")
            elif r["architecture_only"]:
                acc = "n/a: architecture-only (random weights, no data)"
            else:
                acc = (f"val acc {r['validation_accuracy']:.2%}" if r["validation_accuracy"]
                       else "untrained")
            print(f"{r['name']:<16} {r['description']:<44} {acc}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from explorer.data import stratified_subset
    from explorer.evaluator import Evaluator
    from explorer.load.transformers import embedding_fidelity

    plan = _load_plan(args.plan)  # cheap checks first
    bundle, data = _load_bundle(args.model, args.data, labels=False)
    if args.samples is not None:
        if data is None:
            raise DataError(f"{bundle.name} has no validation data, so --samples has nothing "
                            "to choose from; give --data.")
        data = stratified_subset(data, args.samples)
    calibration, note = _calibration(args, bundle)
    # One plan, one pass: nothing to resume from later, so no node values are kept.
    evaluator = Evaluator(bundle, data, memory_budget=0, estimate_samples=0,
                          device=args.device, bn_calibration=calibration)
    metrics = evaluator.evaluate(plan)
    embedded = None if data is None else embedding_fidelity(bundle, evaluator.masks(plan), data)
    if embedded is not None:  # an embedding model: its embeddings' cosine beside its scores'
        metrics = replace(metrics, fidelity={**metrics.fidelity, "embedding_cosine": embedded})
    result = {"model": bundle.name, "samples": metrics.samples, "plan": plan.to_dict(),
              **metrics.to_dict(), "bn_note": note}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if metrics.accuracy is None:
        why = "architecture-only model" if data is None else f"{data.name} has no labels"
        print(f"model {bundle.name}: accuracy: unavailable ({why}), loss: unavailable")
    else:
        lo, hi = metrics.accuracy_ci
        recalibrated = " with BatchNorm recalibrated" if metrics.bn_recalibrated else ""
        print(f"model {bundle.name}: accuracy {metrics.accuracy:.2%} (95% CI {lo:.2%}-{hi:.2%}), "
              f"loss {metrics.loss:.4f}{recalibrated}")
    if metrics.fidelity is not None:
        shown = {"agreement": "top-1 agreement {:.2%}", "kl": "KL {:.4f} nats",
                 "cosine": "cosine {:.4f}", "embedding_cosine": "embedding cosine {:.4f}"}
        print("fidelity to the dense model: " + ", ".join(
            form.format(metrics.fidelity[k]) for k, form in shown.items()
            if metrics.fidelity.get(k) is not None))
    print(f"params {metrics.nonzero_params:,} nonzero of {metrics.params:,} "
          f"(compression {metrics.compression_ratio:.2f}x)")
    print(f"FLOPs/sample {metrics.flops['effective']:,} of {metrics.flops['dense']:,} "
          f"(speed-up {metrics.speedup:.2f}x)")
    print("size bytes " + ", ".join(f"{k} {v:,}" for k, v in metrics.size_bytes.items()))
    return 0


def layer_rows(bundle) -> list[dict]:
    """Each prunable layer with its neuron group, or why its neurons cannot be removed, and
    its units by kind (:meth:`~explorer.bundle.ModelBundle.layer_units`)."""
    rows = []
    for layer in bundle.layers:
        members = list(bundle.linked(layer.name, "neurons")) if layer.group else []
        rows.append({
            "name": layer.name, "kind": layer.kind, "weight_shape": list(layer.weight_shape),
            "flops": layer.flops, "neurons": layer.neurons, "group": layer.group,
            "neuron_group": members or None, "neurons_removable": layer.neuron_prunable,
            "reason": layer.neuron_reason, "units": bundle.layer_units(layer.name),
        })
    return rows


def cmd_layers(args: argparse.Namespace) -> int:
    bundle, _ = _load_bundle(args.model, args.data, labels=False)
    rows = layer_rows(bundle)
    if args.json:
        print(json.dumps({"model": bundle.name, "layers": rows}, indent=2))
        return 0
    for r in rows:
        if not r["neurons_removable"]:
            neurons = f"neurons fixed: {r['reason']}"
        elif len(r["neuron_group"]) > 1:
            neurons = "neurons removable with " + " + ".join(r["neuron_group"]) + " (coupled)"
        else:
            neurons = "neurons removable"
        heads = r["units"].get("heads", {})
        if heads.get("removable"):
            neurons += f"; {heads['count']} heads removable (attention {heads['group']})"
        if r["units"].get("blocks", {}).get("removable"):
            neurons += f"; in block {r['units']['blocks']['group']}"
        group = f"group {r['group']}" if r["group"] else "no group"
        print(f"{r['name']:<24} {r['kind']:<7} {r['flops']:>14,} FLOPs  {group:<26} {neurons}")
    return 0


def _grid_arg(text: str) -> list[float]:
    try:
        return [float(f) for f in text.split(",") if f.strip()]
    except ValueError:
        raise PlanError(
            f"--grid must be comma-separated fractions removed, e.g. 0,0.5,0.9; got {text!r}."
        ) from None


def _split_lines(judge, plan, what: str) -> list[str]:
    """Which images choose and which report, and ``plan``'s accuracy on each part."""
    if judge.split is None:
        return []
    judged = judge.evaluate(plan)
    return [judge.split.describe(),
            f"{what} accuracy: calibration {judged.calibration.accuracy:.2%}, held-out "
            f"{judged.held_out.accuracy:.2%}"]


def _with_interval(m) -> str:
    lo, hi = m.accuracy_ci
    return f"{m.accuracy:.2%} [{lo:.1%}-{hi:.1%}]"


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from explorer.decide.held_out import SplitEvaluator
    from explorer.decide.sensitivity import DEFAULT_GRID, sensitivity

    cluster = _cluster(args)
    bundle, data = _load_bundle(args.model, args.data)
    plan = _load_plan(args.plan) if args.plan else None
    granularity = args.granularity or (plan.granularity if plan else "weights")
    if args.criterion:
        criterion = args.criterion
    elif plan is not None and plan.granularity == granularity:
        criterion = plan.criterion
    else:
        criterion = default_criterion(granularity)
    grid = _grid_arg(args.grid) if args.grid else DEFAULT_GRID
    calibration, note = _calibration(args, bundle)
    # scanned on the calibration part
    judge = SplitEvaluator(bundle, data, memory_budget=args.memory_budget, device=args.device,
                           bn_calibration=calibration)
    with cluster as executor:
        result = sensitivity(judge.calibration, granularity, criterion, grid, base=plan,
                             screen=not args.exact, executor=executor)
    if args.json:
        print(json.dumps({**result.to_dict(), **judge.report(result.base),
                          "bn_recalibrated": judge.calibration.recalibrates, "bn_note": note},
                         indent=2))
        return 0
    print(f"model {bundle.name}: sensitivity of {granularity} by {criterion}, "
          "each unit pruned alone")
    for line in _split_lines(judge, result.base, "base" if plan else "dense"):
        print(line)
    blocks = granularity == "blocks"
    for unit in result.units:
        print(f"\nblock {unit.unit} ({', '.join(unit.layers)})" if blocks
              else f"\n{' + '.join(unit.layers)}")
        print(f"  {'block' if blocks else 'removed':>8} {'accuracy':>9} {'loss':>9} "
              f"{'FLOPs/sample':>14}")
        for f, acc, loss, flops in zip(unit.fractions, unit.accuracy, unit.loss,
                                       unit.flops_effective, strict=True):
            acc_text = "n/a" if acc is None else f"{acc:.2%}"
            loss_text = "n/a" if loss is None else f"{loss:.4f}"
            removed = ("dropped" if f else "kept") if blocks else f"{f:.0%}"
            print(f"  {removed:>8} {acc_text:>9} {loss_text:>9} {flops:>14,}")
    for name, reason in result.skipped.items():
        print(f"\nskipped {name}: {reason}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from explorer.decide import compare_criteria as compare
    from explorer.evaluator import Evaluator

    cluster = _cluster(args)
    bundle, data = _load_bundle(args.model, args.data)
    grid = _grid_arg(args.grid) if args.grid else None
    calibration, note = _calibration(args, bundle)
    evaluator = Evaluator(bundle, data, memory_budget=args.memory_budget, device=args.device,
                          bn_calibration=calibration)
    screen = not args.exact
    with cluster as executor:
        if args.layer:
            members = compare.swept_layers(evaluator, args.granularity, args.layer)
            curves = compare.layer_curves(evaluator, args.granularity, args.layer, grid,
                                          screen=screen, executor=executor)
        else:
            members = bundle.prunable_layers(args.granularity)
            curves = compare.global_curves(evaluator, args.granularity, grid, screen=screen,
                                           executor=executor)
    dense = evaluator.evaluate(dense_plan(args.granularity))
    if args.json:
        print(json.dumps({
            "model": bundle.name, "granularity": args.granularity,
            "sweep": "layer" if args.layer else "global", "layers": members,
            "samples": dense.samples, "dense_accuracy": dense.accuracy,
            "bn_recalibrated": evaluator.recalibrates, "bn_note": note,
            "criteria": {name: [p.to_dict() for p in points] for name, points in curves.items()},
            "errors": curves.errors,
            "table": {name: {f"{f:g}": acc for f, acc in row.items()}
                      for name, row in compare.accuracy_table(curves).items()},
        }, indent=2))
        return 0
    what = " + ".join(members) if args.layer else "every prunable layer, one global threshold"
    print(f"model {bundle.name}: {args.granularity} removed from {what}; dense accuracy "
          f"{dense.accuracy:.2%} on {dense.samples} images (* an estimate on a subset)")
    for name, points in curves.items():
        print(f"\n{name}")
        print(f"  {'removed':>8} {'accuracy':>10} {'loss':>9} {'images':>7}")
        for p in points:
            mark = " " if p.exact else "*"
            print(f"  {p.fraction:>8.0%} {p.accuracy:>9.2%}{mark} {p.loss:>9.4f} "
                  f"{p.samples:>7}")
    for name, message in curves.errors.items():
        print(f"\n{name}: not evaluated: {message}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from explorer.evaluator import Evaluator
    from explorer.export.outputs import check_export_folder, export_all

    check_export_folder(args.out, args.force)  # before any work
    plan = _load_plan(args.plan)
    bundle, data = _load_bundle(args.model, args.data)
    calibration, _ = _calibration(args, bundle)
    written = export_all(bundle, plan, args.out, Evaluator(bundle, data,
                                                           bn_calibration=calibration),
                         force=args.force)
    for name, path in written.items():
        print(f"wrote {name:<24} {path}")
    return 0


def cmd_broke(args: argparse.Namespace) -> int:
    from explorer.decide.breakage import breakage
    from explorer.evaluator import Evaluator

    bundle, data = _load_bundle(args.model, args.data)
    plan = _load_plan(args.plan)
    calibration, _ = _calibration(args, bundle)
    result = breakage(Evaluator(bundle, data, memory_budget=args.memory_budget,
                                device=args.device, bn_calibration=calibration), plan)
    if args.json:
        print(json.dumps({"model": bundle.name, "plan": plan.to_dict(), **result.to_dict()},
                         indent=2))
        return 0
    print(f"model {bundle.name}: accuracy {result.accuracy_dense:.2%} dense, "
          f"{result.accuracy_plan:.2%} pruned, on {result.samples} images")
    print(f"  {'class':>5} {'images':>6} {'dense':>8} {'pruned':>8} {'change':>8}")
    for row in result.to_dict()["classes"]:
        if row["support"]:
            print(f"  {row['class']:>5} {row['support']:>6} {row['accuracy_dense']:>8.2%} "
                  f"{row['accuracy_plan']:>8.2%} {row['change'] * 100:>+8.2f}")
    for kind, n in result.counts().items():
        indices = ", ".join(str(f.index) for f in result.flipped(kind)[:20])
        print(f"{kind}: {n}" + (f" (indices {indices}{', ...' if n > 20 else ''})" if n else ""))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from explorer.evaluator import Evaluator
    from explorer.export.save import check_format, check_output, check_writable, save_model
    from explorer.finetune.fixed_masks import (
        FinetuneSettings,
        Finetuning,
        check_inputs,
        default_training_data,
    )
    from explorer.finetune.retrain import retrain
    from explorer.load.data_file import load_data

    check_writable(args.out)  # every check before the run, not after it
    check_format(Path(args.out).suffix.lower())
    plan = _load_plan(args.plan)
    bundle, data = _load_bundle(args.model, args.data)
    train = (load_data(args.train_data, bundle.num_classes) if args.train_data
             else default_training_data(bundle) if data is not None else None)
    check_inputs(bundle, train, data)
    settings = FinetuneSettings(args.epochs, args.lr, args.iterative, args.schedule)
    check_output(bundle, args.out)

    def show(done: int, total: int, r) -> None:
        step = f" (step {r.step})" if r.step else ""
        print(f"epoch {done}/{total}{step}: train loss {r.train_loss:.4f}, "
              f"val accuracy {r.val_accuracy:.2%}, val loss {r.val_loss:.4f}", flush=True)

    calibration, _ = _calibration(args, bundle)
    evaluator = Evaluator(bundle, data, bn_calibration=calibration)
    dense, pruned = evaluator.evaluate(_load_plan(None)), evaluator.evaluate(plan)
    statistics = None if settings.iterative else evaluator.bn_statistics(plan)
    run = retrain(Finetuning(bundle, plan, train, data, settings, statistics),
                  progress=None if args.json else show, scores=evaluator.scores)
    save_model(run.bundle, args.out)
    if args.json:
        print(json.dumps({"model": bundle.name, "out": args.out, "dense": dense.to_dict(),
                          "pruned": pruned.to_dict(), **run.to_dict()}, indent=2))
        return 0
    after = run.metrics
    print(f"accuracy: dense {dense.accuracy:.2%}, pruned without fine-tuning "
          f"{pruned.accuracy:.2%}, fine-tuned {after.accuracy:.2%} ({run.result.seconds:.1f} s)")
    print(f"params {after.nonzero_params:,} nonzero of {after.params:,} "
          f"(compression {after.compression_ratio:.2f}x)")
    print(f"wrote {args.out}")
    return 0


def cmd_lottery(args: argparse.Namespace) -> int:
    import time

    from explorer.finetune.lottery import LotterySettings, lottery, lottery_entry

    lottery_entry(args.model)  # refused before anything is printed
    settings = LotterySettings(args.rounds, args.rate, args.epochs)

    def show(done: int, total: int, r) -> None:
        print(f"{r.round:>5} {r.kept:>7.1%} {r.ticket_accuracy:>8.2%} {r.reinit_accuracy:>8.2%} "
              f"{(r.ticket_accuracy - r.reinit_accuracy) * 100:>+8.2f}", flush=True)

    if not args.json:
        print(f"lottery tickets of {args.model}: {settings.rate:.0%} of the kept weights "
              f"removed per round, {settings.epochs} epoch{'s' * (settings.epochs != 1)} per "
              "training, validation accuracy")
        print(f"{'round':>5} {'kept':>7} {'ticket':>8} {'reinit':>8} {'gap (pt)':>8}")
    start = time.monotonic()
    result = lottery(args.model, settings, progress=None if args.json else show)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"ticket: theta_0 (seed {result.seed}) rewound under the masks; reinit: the same "
          f"masks from seed {result.control_seed}; {result.train_size} training and "
          f"{result.validation_size} validation images ({time.monotonic() - start:.1f} s)")
    return 0


def _rate(text: str) -> float:
    """An argparse type: a fraction strictly between 0 and 1, worded as the engine's check."""
    from explorer.finetune.lottery import check_rate

    try:
        value: object = float(text)
    except ValueError:
        value = text
    try:
        return check_rate(value)
    except ExplorerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_suggest(args: argparse.Namespace) -> int:
    from explorer.decide.held_out import SplitEvaluator
    from explorer.decide.sensitivity import DEFAULT_GRID, sensitivity
    from explorer.decide.suggest import suggest
    from explorer.decide.targets import Target
    from explorer.export.save import check_writable

    target = Target.parse(args.target)
    cluster = _cluster(args)
    if args.out:
        check_writable(args.out)  # before the scan, not after it
    bundle, data = _load_bundle(args.model, args.data)
    criterion = args.criterion or default_criterion(args.granularity)
    grid = _grid_arg(args.grid) if args.grid else DEFAULT_GRID
    target, measure = _latency_target(args, bundle, data, target)
    calibration, note = _calibration(args, bundle)
    # chosen on the calibration part, reported on the held-out part
    judge = SplitEvaluator(bundle, data, memory_budget=args.memory_budget, device=args.device,
                           bn_calibration=calibration)
    with cluster as executor:  # the scan, then the plan's and the baselines' verification
        scan = sensitivity(judge.calibration, args.granularity, criterion, grid,
                           screen=not args.exact, executor=executor)
        result = suggest(scan, judge, target, measure=measure, executor=executor)
    if args.out:
        try:
            Path(args.out).write_text(result.plan.to_json())
        except OSError as exc:
            raise ExplorerError(f"Cannot write {args.out}: {exc.strerror}.") from None
    if args.json:
        print(json.dumps({"model": bundle.name, "grid": list(scan.grid), **result.to_dict(),
                          "bn_recalibrated": judge.calibration.recalibrates, "bn_note": note},
                         indent=2))
        return 0
    print(f"model {bundle.name}: {target.describe()}, {args.granularity} by {criterion}")
    for line in _split_lines(judge, Plan(), "dense"):
        print(line)
    print(f"  {'plan':<28} {'chosen on':>9} {'held-out [95% interval]':>24} {'speed-up':>9} "
          f"{'compression':>12}")
    for row in result.rows:
        label = row.name if row.fraction is None else f"{row.name} ({row.fraction:.2%})"
        if row.metrics is None:
            print(f"  {label:<28} {row.error}")
            continue
        chosen, m = row.metrics
        print(f"  {label:<28} {chosen.accuracy:>9.2%} {_with_interval(m):>24} "
              f"{m.speedup:>8.2f}x {m.compression_ratio:>11.2f}x")
    print("suggested fractions removed: " + ", ".join(
        f"{name} {f:.2%}" for name, f in result.plan.sparsity.items()))
    if result.latency is not None:
        print(f"latency: {result.latency.describe()}; baselines measured: " + ", ".join(
            f"{n} {v:.2f}x" for n, v in result.latency.baselines.items()))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _latency_target(args: argparse.Namespace, bundle, data, target):
    """A latency target with its measured table (explorer.export.latency_sensitivity) and
    the timing that verifies the plan; any other target as it is, with no timing."""
    if target.kind != "latency":
        return target, None
    from explorer.decide.suggest import check_latency
    from explorer.decide.targets import LatencyTable
    from explorer.evaluator import Evaluator
    from explorer.export.latency import latency_clock, measure
    from explorer.export.latency_sensitivity import latency_sensitivity

    sens = latency_sensitivity(bundle, args.granularity, batch=args.batch, threads=args.threads)
    target = target.with_table(LatencyTable(sens.dense_ms, sens.saved(), sens.batch,
                                            sens.threads, sens.form))
    evaluator = Evaluator(bundle, data, memory_budget=0, estimate_samples=0)

    def timed(plan: Plan) -> float:
        return measure(bundle, plan, args.batch, args.threads, evaluator=evaluator,
                       layers=False, clock=latency_clock(args.threads)).measured

    check_latency(args.granularity, target, timed)
    return target, timed


def cmd_latency(args: argparse.Namespace) -> int:
    from explorer.evaluator import Evaluator
    from explorer.export.latency import measure

    plan = _load_plan(args.plan)
    bundle, data = _load_bundle(args.model, args.data)
    result = measure(bundle, plan, args.batch, args.threads,
                     evaluator=Evaluator(bundle, data, memory_budget=0, estimate_samples=0))
    if args.json:
        print(json.dumps({"model": bundle.name, "plan": plan.to_dict(), **result.to_dict(),
                          "notes": result.notes}, indent=2))
        return 0
    print(f"model {bundle.name}: batch {result.batch}, {result.threads} thread(s); speed-up "
          f"{result.theoretical:.2f}x theoretical (FLOPs), {result.measured:.2f}x measured "
          f"({result.form})")
    print(f"  {'form':<7} {'p50 ms':>9} {'p95 ms':>9}")
    for form, t in result.latency_ms.items():
        print(f"  {form:<7} {t.p50:>9.3f} {t.p95:>9.3f}" if t else
              f"  {form:<7} {'-':>9} {'-':>9}  {result.notes.get(form, 'not measured')}")
    print(f"  {'layer':<20} {'dense ms':>9} {'pruned ms':>9} {'time':>6} {'FLOPs':>6}")
    for la in result.layers:
        print(f"  {la.name:<20} {la.dense_ms:>9.3f} {la.pruned_ms:>9.3f} "
              f"{la.time_share:>6.1%} {la.flops_share:>6.1%}")
    if "layers" in result.notes:
        print(f"  per-layer times: {result.notes['layers']}")
    return 0


def cmd_train_demos(args: argparse.Namespace) -> int:
    from explorer.load.train_demos import train_demo
    from explorer.load.zoo import ZOO, zoo_entry

    names = args.names or [n for n, e in ZOO.items() if not e.architecture_only]
    for name in names:
        entry = zoo_entry(name)
        if entry.architecture_only:
            raise ExplorerError(f"'{name}' is architecture-only: there is no data to train it "
                                "on here (its weights are random from a fixed seed).")
        card = train_demo(entry, log=lambda m: print(m, file=sys.stderr))
        print(f"{name}: validation accuracy {card['validation_accuracy']:.4f}")
    return 0


def _model_command(sub, name: str, func, help: str, json_output: bool = True):
    """A subcommand that loads ``--model`` (and optional ``--data``), maybe printing JSON."""
    p = sub.add_parser(name, help=help)
    p.add_argument("--model", required=True, help="demo model name or model file")
    p.add_argument("--data", help="validation data (.npz or .pt with x, y); default: digits")
    if json_output:
        p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=func)
    return p


def _budget_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--memory-budget", type=_size, metavar="SIZE",
        help="memory kept for resuming evaluations from the unchanged part of the network, "
             "e.g. 256M or 2G (0: none; each evaluation a full pass); default: a sixteenth of "
             "the available memory, at most 512M")


def _exact_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exact", action="store_true",
        help="evaluate every point on all images (default: on a large validation set each "
             "point is screened on a fixed stratified subset and says so in 'samples'; the "
             "points a decision rests on - each unit's tolerance in a scan, the compare "
             "table's 50%% and 80%%, a suggestion's plan - always run on all images)")


def _ray_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray", metavar="ADDRESS",
        help="run the sweep on a Ray cluster: local (start one on this machine), HOST:PORT "
             "or ray://HOST:PORT; sends it the model, the data and the scores (needs the "
             "ray extra: pip install -e '.[ray]'); default: in this process")


def _cluster(args: argparse.Namespace):
    """Where the command's sweep runs, as a context: this process (None) or the Ray
    cluster at ``--ray`` (its address and the ray extra checked now, before any work)."""
    if args.ray is None:
        return nullcontext(None)
    from explorer.decide.cluster import RayCluster

    return RayCluster(args.ray)


def _device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto",
        help="where the model runs: auto (default) is a CUDA GPU where torch has one, else "
             "the CPU; the numbers are the same up to floating-point rounding")


def _bn_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--calibration-data", metavar="PATH",
        help="images (.npz or .pt with x, y; never the validation images) to re-estimate "
             "BatchNorm statistics on for each pruned plan; default for the digits data: its "
             "training split; an upload with --data and BatchNorm but without this gets raw "
             "statistics and a note")
    parser.add_argument(
        "--no-bn-recalibration", action="store_true",
        help="judge pruned plans with the dense model's BatchNorm statistics (raw), as "
             "they are before any correction")


def _latency_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=_count("batch", MAX_LATENCY_BATCH), default=1,
                        help=f"inputs per timed forward pass, 1 to {MAX_LATENCY_BATCH} "
                        "(default 1)")
    parser.add_argument("--threads", type=_count("threads", MAX_LATENCY_THREADS), default=1,
                        help=f"torch intra-op threads while timing, 1 to {MAX_LATENCY_THREADS} "
                        "(default 1)")


def _size(text: str) -> int:
    """An argparse type: a number of bytes, with an optional K, M or G (powers of 1024)."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    number, unit = (text[:-1], units[text[-1].upper()]) if text[-1:].upper() in units \
        else (text, 1)
    try:
        value = float(number) * unit
    except ValueError:
        value = -1.0
    if not 0 <= value < 2**50:
        raise argparse.ArgumentTypeError(f"a memory size is a number of bytes with an "
                                         f"optional K, M or G, e.g. 256M; got {short(text)}.")
    return int(value)


def _count(what: str, maximum: int):
    """An argparse type: a whole number in [1, ``maximum``], worded as the engine's check."""

    def parse(text: str) -> int:
        from explorer.finetune.fixed_masks import bounded_count

        try:
            return bounded_count(int(text), what, maximum)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number; got "
                                             f"{short(text)}.") from None
        except ExplorerError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error (the usage is in ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message.rstrip('.')} (see {self.prog} --help).\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pruning-explorer", description="Explore pruning of PyTorch models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list the bundled demo models")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_models)
    p = _model_command(sub, "evaluate", cmd_evaluate,
                       "accuracy, size and FLOPs of a model under a plan")
    p.add_argument("--plan", help="plan JSON file; default: the dense model")
    _device_option(p)
    _bn_options(p)
    p.add_argument("--samples", type=int, metavar="N",
                   help="evaluate a fixed subset of N images, each class in proportion "
                        "(the same N images every run); default: every image")
    _model_command(sub, "layers", cmd_layers,
                   "prunable layers, coupled groups, what cannot be pruned")
    p = _model_command(sub, "sensitivity", cmd_sensitivity,
                       "accuracy of each layer (or group) pruned alone")
    _budget_option(p)
    _device_option(p)
    _bn_options(p)
    _exact_option(p)
    _ray_option(p)
    p.add_argument("--plan", help="plan JSON file for the other layers; default: dense")
    p.add_argument("--granularity", choices=GRANULARITIES,
                   help="default: the plan's, else weights")
    p.add_argument("--criterion", help="default: the plan's, else magnitude (weights) or l1")
    p.add_argument("--grid", help="fractions removed, e.g. 0,0.5,0.9; default 0, 0.05, ..., 0.95")
    p = _model_command(sub, "compare", cmd_compare,
                       "accuracy vs fraction removed under every criterion, for one layer "
                       "(or its coupled group) or one global threshold")
    _budget_option(p)
    _device_option(p)
    _bn_options(p)
    _exact_option(p)
    _ray_option(p)
    p.add_argument("--granularity", choices=GRANULARITIES, default="weights",
                   help="default: weights")
    p.add_argument("--layer", help="sweep this layer (for neurons, its coupled group) with "
                   "the others dense; default: one global fraction across every layer")
    p.add_argument("--grid", help="fractions removed, e.g. 0,0.5,0.9; default 0, 0.1, ..., "
                   "0.9 (and 0.95 for weights)")
    p = _model_command(sub, "export", cmd_export, "write a plan's pruned weights, shrunk "
                       "model, apply_plan.py and Torch-Pruning ratios", json_output=False)
    p.add_argument("--plan", required=True, help="plan JSON file")
    p.add_argument("--out", required=True, help="folder to write into: new or empty "
                   "(created if missing)")
    _bn_options(p)
    p.add_argument("--force", action="store_true", help="replace an earlier export in --out: "
                   "the folder then holds exactly this export's files; a folder holding any "
                   "other file is never emptied")
    p = _model_command(sub, "broke", cmd_broke, "per-class accuracy, confusion change and "
                       "flipped images of a plan against the dense model")
    _budget_option(p)
    _device_option(p)
    _bn_options(p)
    p.add_argument("--plan", help="plan JSON file; default: the dense model")
    p = _model_command(sub, "finetune", cmd_finetune, "fine-tune a plan's pruned model with "
                       "its masks fixed (or prune iteratively); save it")
    p.add_argument("--plan", required=True, help="plan JSON file")
    _bn_options(p)
    p.add_argument("--epochs", type=_count("epochs", MAX_FINETUNE_EPOCHS), required=True,
                   help=f"epochs (per step if iterative), 1 to {MAX_FINETUNE_EPOCHS}")
    p.add_argument("--out", required=True, help="model file to write: .safetensors (a demo "
                   "architecture) or .pt2 (torch.export, any model)")
    p.add_argument("--iterative", type=_count("steps", MAX_ITERATIVE_STEPS), metavar="STEPS",
                   help="reach the plan in STEPS prune / fine-tune rounds (Han et al. 2015), "
                   f"1 to {MAX_ITERATIVE_STEPS}")
    p.add_argument("--schedule", choices=["cubic", "linear"], default="cubic",
                   help="sparsity per step when iterative (cubic: Zhu & Gupta 2017)")
    p.add_argument("--train-data", help="training data (.npz or .pt with x, y); default: the "
                   "digits training split")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p = _model_command(sub, "suggest", cmd_suggest, "per-layer fractions meeting a target, "
                       "from a sensitivity scan, next to the uniform and global baselines")
    _budget_option(p)
    _device_option(p)
    _bn_options(p)
    _exact_option(p)
    _ray_option(p)
    p.add_argument("--target", required=True,
                   help="flops=4 (4x fewer FLOPs), size=8 (compression ratio), latency=2 "
                   "(2x faster, measured at --batch and --threads) or drop=0.01 (largest "
                   "accuracy drop accepted)")
    p.add_argument("--granularity", choices=GRANULARITIES, default="weights",
                   help="default: weights")
    p.add_argument("--criterion", help="default: magnitude (weights) or l1 (neurons, heads)")
    p.add_argument("--grid", help="sensitivity fractions, e.g. 0,0.5,0.9; default 0, 0.05, "
                   "..., 0.95")
    p.add_argument("--out", help="write the suggested plan (JSON) to this file")
    _latency_options(p)
    p = _model_command(sub, "latency", cmd_latency, "measured latency (p50, p95) of a plan's "
                       "dense, masked, sparse and shrunk forms beside its theoretical speed-up")
    p.add_argument("--plan", help="plan JSON file; default: the dense model")
    _latency_options(p)
    p = sub.add_parser("lottery", help="lottery tickets (Frankle & Carbin 2019): prune, "
                       "rewind to the initial weights, retrain; against a random reinit")
    p.add_argument("--model", required=True, help="a digits demo model (trained here from "
                   "its initial weights)")
    p.add_argument("--rounds", type=_count("rounds", MAX_LOTTERY_ROUNDS), required=True,
                   help=f"pruning rounds after the dense round 0, 1 to {MAX_LOTTERY_ROUNDS}")
    p.add_argument("--rate", type=_rate, default=0.2, help="fraction of the kept weights "
                   "each round removes per layer, between 0 and 1 (default 0.2)")
    p.add_argument("--epochs", type=_count("epochs", MAX_FINETUNE_EPOCHS), default=20,
                   help="epochs of every training, 1 to "
                   f"{MAX_FINETUNE_EPOCHS} (default 20: digits-mlp, 5 rounds, in ~15 s)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_lottery)
    p = sub.add_parser("train-demos", help="retrain the demo models into assets/")
    p.add_argument("names", nargs="*", help="which demo models (default: all)")
    p.set_defaults(func=cmd_train_demos)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "device"):  # a device that is not there: refused before any work
            from explorer.evaluator import resolve_device

            args.device = resolve_device(args.device)
        return args.func(args)
    except ExplorerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
