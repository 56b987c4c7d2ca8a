"""Kept states hold only what a resumed run reads (issue 11, item 1: which node values to
keep): a compact state resumes every layer's change exactly as a full run computes it."""

from __future__ import annotations

import torch

from explorer.load.demos import load_demo


def test_a_compact_state_resumes_every_layer_change_exactly(any_demo, digits):
    program = any_demo.program
    x = digits.x[:50]
    _, full = program.run(x, keep=True)
    _, compact = program.run(x, keep=True, compact=True)
    assert compact.nbytes <= full.nbytes
    params = any_demo.params()
    resumed = 0
    for layer in any_demo.layers:
        halved = {layer.weight: params[layer.weight] * 0.5}
        keys = {layer.weight: "halved"}
        from_compact, again = program.run(x, halved, keys, resume=compact, keep=True,
                                          compact=True)
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
    _, compact = bundle.program.run(x, keep=True, compact=True)
    print(f"per image: full {full.nbytes / 2 / 2**20:.2f} MiB, "
          f"compact {compact.nbytes / 2 / 2**20:.2f} MiB")
    assert compact.nbytes < full.nbytes / 2
    params = sum(p.nbytes for p in bundle.params().values())
    assert full.nbytes < 2 * 10 * 2**20 < params  # parameters are not counted
