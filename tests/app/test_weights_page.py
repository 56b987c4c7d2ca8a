"""The Weights page on the real demo models, checked against |w| computed here with torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.plan import Plan

MAX_FIGURE_BYTES = 200_000


def weight(bundle, layer: str) -> torch.Tensor:
    """A layer's weight straight from the nn.Module (not through the engine)."""
    return dict(bundle.model.named_parameters())[f"{layer}.weight"].detach()


def bars(figure: dict, charts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(middles, counts, widths) of all bars (kept and pruned), sorted by position."""
    parts = [t for name in ("kept", "pruned") for t in charts.traces(figure, name)]
    x = np.concatenate([np.asarray(t["x"], dtype=float) for t in parts])
    y = np.concatenate([np.asarray(t["y"], dtype=float) for t in parts])
    w = np.concatenate([np.asarray(t["width"], dtype=float) for t in parts])
    order = np.argsort(x)
    return x[order], y[order], w[order]


def thresholds(figure: dict, charts) -> list[float]:
    return [float(t["x"][0]) for t in charts.traces(figure, "threshold")]


def choose_layer(at, model: str, layer: str):
    return at.selectbox(key=f"wt_layer::{model}").set_value(layer).run()


@pytest.mark.parametrize("model", ["digits-mlp", "digits-cnn", "digits-resnet"])
@pytest.mark.parametrize("plan", [
    Plan(),
    Plan(scope="global", amount=0.7),
    Plan(criterion="random", scope="global", amount=0.5),
    Plan(granularity="neurons", criterion="l2", scope="global", amount=0.4),
], ids=["dense", "global-magnitude", "random", "neurons"])
def test_page_loads_for_every_demo_model(open_page, charts, model, plan):
    at = open_page("weights", model, plan)
    assert not at.exception
    assert not at.error
    figures = charts.of(at)
    expected = {"wt_grid", "wt_hist"} | ({"wt_neurons"} if plan.granularity == "neurons" else set())
    assert set(figures) == expected
    assert max(charts.sizes(at).values()) < MAX_FIGURE_BYTES
    names = [a["text"] for a in figures["wt_grid"]["layout"]["annotations"]]
    assert names == list(at.selectbox(key=f"wt_layer::{model}").options)
    assert len(at.dataframe[0].value) == len(names)


def test_linear_and_log_bins_follow_the_weights(open_page, charts, cnn):
    at = open_page("weights", "digits-cnn")
    at = choose_layer(at, "digits-cnn", "features.2")
    mags = weight(cnn, "features.2").abs().flatten().numpy().astype(np.float64)

    x, y, w = bars(charts.of(at)["wt_hist"], charts)
    edges = np.linspace(0, mags.max(), 201)
    assert len(x) == 200
    np.testing.assert_allclose(x, (edges[:-1] + edges[1:]) / 2, rtol=1e-5)
    np.testing.assert_allclose(w, np.diff(edges), rtol=1e-5)
    assert y.sum() == mags.size

    at = at.radio(key="wt_scale").set_value("log").run()
    assert not at.exception
    figure = charts.of(at)["wt_hist"]
    assert figure["layout"]["xaxis"]["type"] == "log"
    x_log, y_log, w_log = bars(figure, charts)
    nonzero = mags[mags > 0]
    edges = np.geomspace(nonzero.min(), nonzero.max(), 201)
    assert len(x_log) == 200
    np.testing.assert_allclose(x_log - w_log / 2, edges[:-1], rtol=1e-4)
    np.testing.assert_allclose(x_log + w_log / 2, edges[1:], rtol=1e-4)
    assert y_log.sum() == nonzero.size
    assert not np.allclose(x_log, x)
    grid = charts.of(at)["wt_grid"]["layout"]
    log_axes = [k for k in grid if k.startswith("xaxis") and grid[k].get("type") == "log"]
    assert len(log_axes) == len(cnn.layers)  # one per small multiple


def test_choosing_a_layer_changes_the_large_chart(open_page, charts, resnet):
    at = open_page("weights", "digits-resnet")
    first = charts.of(at)["wt_hist"]["layout"]["title"]["text"]
    assert first.startswith("stem.0 ")

    at = choose_layer(at, "digits-resnet", "layer2.conv1")
    figure = charts.of(at)["wt_hist"]
    assert figure["layout"]["title"]["text"].startswith("layer2.conv1 (conv2d, 32 x 16 x 3 x 3)")
    _, counts, _ = bars(figure, charts)
    assert counts.sum() == weight(resnet, "layer2.conv1").numel()


def test_a_layers_threshold_follows_its_sparsity(open_page, charts, cnn):
    mags = weight(cnn, "features.2").abs().flatten()
    at = open_page("weights", "digits-cnn", Plan(sparsity={"features.2": 0.5}))
    at = choose_layer(at, "digits-cnn", "features.2")
    seen = []
    for fraction in (0.5, 0.8):
        at.session_state["plan"] = Plan(sparsity={"features.2": fraction})
        at = at.run()
        assert not at.exception
        k = round(fraction * mags.numel())
        expected = torch.kthvalue(mags, k).values.item()
        figures = charts.of(at)
        (drawn,) = thresholds(figures["wt_hist"], charts)
        assert drawn == pytest.approx(expected, rel=1e-6)
        assert thresholds(figures["wt_grid"], charts) == [pytest.approx(expected, rel=1e-6)]
        # Shaded bars: every bin holding a removed weight, and none to the right of it.
        pruned = charts.traces(figures["wt_hist"], "pruned")[0]
        kept = charts.traces(figures["wt_hist"], "kept")[0]
        assert np.max(pruned["x"]) < np.min(kept["x"])
        assert np.sum(pruned["y"]) >= k
        assert np.sum(pruned["y"]) - pruned["y"][-1] <= k
        table = at.dataframe[0].value.set_index("layer")
        assert table.loc["features.2", "weights removed"] == k
        assert table["weights removed"].sum() == k
        seen.append(drawn)
    assert seen[1] > seen[0]


def test_global_scope_draws_one_threshold_across_layers(open_page, charts, mlp):
    mags = torch.cat([weight(mlp, n).abs().flatten() for n in ("fc1", "fc2", "fc3")])
    k = round(0.6 * mags.numel())
    expected = torch.kthvalue(mags, k).values.item()
    at = open_page("weights", "digits-mlp", Plan(scope="global", amount=0.6))
    assert not at.exception
    drawn = thresholds(charts.of(at)["wt_grid"], charts)
    assert len(drawn) == 3
    assert max(drawn) == pytest.approx(expected, rel=1e-6)
    assert all(t <= expected * (1 + 1e-6) for t in drawn)
    assert at.dataframe[0].value["weights removed"].sum() == k


def test_random_criterion_has_counts_but_no_threshold(open_page, charts, cnn):
    plan = Plan(criterion="random", sparsity={"features.0": 0.5, "classifier.1": 0.25})
    at = open_page("weights", "digits-cnn", plan)
    assert not at.exception
    assert any("no magnitude threshold" in info.value for info in at.info)
    for figure in charts.of(at).values():
        assert thresholds(figure, charts) == []
        assert charts.traces(figure, "pruned") == []
    table = at.dataframe[0].value.set_index("layer")
    assert "threshold" not in table.columns
    assert table.loc["features.0", "weights removed"] == round(0.5 * 288)
    assert table.loc["classifier.1", "weights removed"] == round(
        0.25 * weight(cnn, "classifier.1").numel())


def test_neuron_plan_shades_the_lowest_norm_neurons(open_page, charts, mlp):
    at = open_page("weights", "digits-mlp",
                   Plan(granularity="neurons", criterion="l1", sparsity={"fc1": 0.5}))
    assert not at.exception
    figure = charts.of(at)["wt_neurons"]
    assert figure["layout"]["title"]["text"].startswith("fc1 ")
    norms = weight(mlp, "fc1").abs().sum(1)
    lowest = torch.topk(norms, 150, largest=False).indices
    (pruned,) = charts.traces(figure, "pruned")
    (kept,) = charts.traces(figure, "kept")
    assert set(np.asarray(pruned["customdata"]).tolist()) == set(lowest.tolist())
    assert len(kept["customdata"]) == 300 - 150
    values = np.concatenate([np.asarray(pruned["y"]), np.asarray(kept["y"])])
    assert np.all(np.diff(values) >= 0)  # sorted ascending, removed first
    table = at.dataframe[0].value.set_index("layer")
    assert table.loc["fc1", "neurons removed"] == 150
    assert table.loc["fc1", "threshold"] == pytest.approx(norms[lowest].max().item(), rel=1e-5)


def test_a_two_of_four_plan_shows_its_groups_in_the_mask_view(open_page, charts, cnn):
    plan = Plan(scope="global", pattern="2:4")
    at = open_page("weights", "digits-cnn", plan)
    at = choose_layer(at, "digits-cnn", "features.2")
    assert not at.exception and not at.error
    figure = charts.of(at)["wt_mask"]
    zoom = np.asarray(figure["data"][0]["z"], dtype=bool)
    assert zoom.shape == (16, 32)
    # every group of 4 inputs at kernel position (0, 0) keeps its 2 largest |w| (ties low)
    mags = weight(cnn, "features.2")[:16, :32, 0, 0].abs().numpy()
    want = np.zeros_like(zoom)
    for row in range(16):
        for start in range(0, 32, 4):
            group = mags[row, start : start + 4]
            best = sorted(range(4), key=lambda i: (-group[i], i))[:2]
            want[row, [start + i for i in best]] = True
    np.testing.assert_array_equal(zoom, want)
    assert len(figure["layout"]["shapes"]) == 7  # a line after each of the first 7 groups
    assert not charts.traces(figure, "threshold")
    table = at.dataframe[0].value.set_index("layer")
    assert table.loc["features.2", "weights removed"] == weight(cnn, "features.2").numel() // 2
    assert table.loc["features.0", "weights removed"] == 0

    at = choose_layer(at, "digits-cnn", "features.0")
    assert "wt_mask" not in charts.of(at)
    assert any("stays dense" in c.value for c in at.caption)
