"""Kept states hold only what a resumed run reads (issue 11, item 1: which node values to
keep): a compact state resumes every layer's change exactly as a full run computes it, and
a cost model picks how far into the network states reach for the images the budget holds."""

from __future__ import annotations

import torch

from explorer.activations import horizon_bytes
from explorer.evaluator import Evaluator, choose_horizon
from explorer.load.demos import load_demo
from explorer.plan import Plan


def test_a_compact_state_resumes_every_layer_change_exactly(any_demo, digits):
    program = any_demo.program
    x = digits.x[:50]
    _, full = program.run(x, keep=True)
    _, compact = program.run(x, keep=True, horizon=0)
    assert compact.nbytes <= full.nbytes
    params = any_demo.params()
    resumed = 0
    for layer in any_demo.layers:
        halved = {layer.weight: params[layer.weight] * 0.5}
        keys = {layer.weight: "halved"}
        from_compact, again = program.run(x, halved, keys, resume=compact, keep=True,
                                          horizon=0)
        whole, _ = program.run(x, halved, keys)
        assert torch.equal(from_compact, whole), layer.name
        resumed += program.resume_index(keys, compact) > 0
        # the resumed run's own compact state resumes the dense plan again
        back, _ = program.run(x, resume=again)
        assert torch.equal(back, program.run(x)[0]), layer.name
    assert resumed == len(any_demo.layers)  # even the first layer: the input is kept


def test_compact_states_leave_out_what_no_resumed_run_reads():
    """A CIFAR ResNet-18: a conv's raw output feeds only its batch norm, the norm's output
    only its ReLU; neither is read across a point a run starts at."""
    bundle = load_demo("resnet18-cifar")
    x = torch.zeros((2, *bundle.input_shape))
    _, full = bundle.program.run(x, keep=True)
    _, compact = bundle.program.run(x, keep=True, horizon=0)
    print(f"per image: full {full.nbytes / 2 / 2**20:.2f} MiB, "
          f"compact {compact.nbytes / 2 / 2**20:.2f} MiB")
    assert compact.nbytes < full.nbytes / 2
    params = sum(p.nbytes for p in bundle.params().values())
    assert full.nbytes < 2 * 10 * 2**20 < params  # parameters are not counted


def test_the_horizon_trades_where_a_run_resumes_for_how_many_images_it_covers():
    """A CIFAR ResNet-18 under the default 512 MiB budget: a hundred images keep states to
    resume anywhere; thousands keep only what its last block reads, for every image."""
    bundle = load_demo("resnet18-cifar")
    program, budget = bundle.program, 512 * 2**20
    per_image = horizon_bytes(bundle)
    assert list(per_image.values()) == sorted(per_image.values(), reverse=True)
    assert choose_horizon(bundle, 100, budget) == program.starts[0]
    late = choose_horizon(bundle, 3000, budget)
    assert late > program.starts[len(program.starts) // 2]
    assert 2 * 3000 * per_image[late] <= budget  # every image's states fit


def test_a_late_horizon_changes_no_number_and_resumes_every_batch(cnn, digits):
    per_image = horizon_bytes(cnn)
    last = cnn.program.index_of(cnn.layers[-1].node)
    budget = 2 * len(digits) * per_image[last] + 1  # all images only past the last layer
    tight = Evaluator(cnn, digits, memory_budget=budget, batch_size=40)
    none = Evaluator(cnn, digits, tight.scores, memory_budget=0, batch_size=40)
    assert tight.horizon == last
    for fraction in (0.3, 0.6, 0.9):
        for layer in ("features.0", cnn.layers[-1].name):
            plan = Plan(sparsity={layer: fraction})
            assert tight.evaluate(plan) == none.evaluate(plan)
    before_horizon = Plan(sparsity={"classifier.1": 0.5})  # a layer before it: runs whole
    assert tight.evaluate(before_horizon) == none.evaluate(before_horizon)
    assert tight.last_start == 0
    past = Plan(sparsity={cnn.layers[-1].name: 0.5})  # the last layer: resumes there
    assert tight.evaluate(past) == none.evaluate(past)
    assert tight.kept_batches == 9 and tight.last_start == last
