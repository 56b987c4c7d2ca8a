"""The explanations each page carries: the app teaches, not only displays."""

from explorer.limits import (
    GUARDED_LOAD_MEMORY_BYTES,
    GUARDED_LOAD_SECONDS,
    MAX_DATA_TENSOR_BYTES,
    MAX_MODEL_FILE_BYTES,
    SESSION_MEMORY_BYTES,
)

INTRO = """
**Pruning** removes parts of a trained network that matter least, to make it smaller and
faster while keeping its accuracy. Four questions decide a pruning:

- **What granularity?** Remove single **weights** (unstructured: the tensor becomes sparse,
  the architecture stays; it only saves time on hardware or kernels that exploit sparsity),
  or whole **neurons / channels** (structured: layers become physically smaller, dense and
  faster on any hardware, but each removal takes more of the network with it).
- **What to remove?** A *criterion* scores each weight or neuron: weight magnitude |w|
  (Han et al. 2015), the norm of a neuron's weights, how active it is on data, or random
  scores as the control any criterion must beat.
- **How much, where?** A fraction per layer (layers differ a lot in how much they tolerate),
  or one global threshold across layers.
- **How to judge?** Accuracy on held-out data *next to* the size and the FLOPs it saves
  (Blalock et al. 2020: always report compression and theoretical speed-up together).

Start on the **Weights** and **Activations** pages to see what a criterion would remove,
use **Similarity** to spot redundant neurons, then drag the sliders on **Prune**.
"""

MODEL = """
The layer table lists every **prunable layer** (linear and convolution weights) in the
order the network runs them, with its parameters and its **FLOPs per input sample**
(2 FLOPs per multiply-add, as `torch.utils.flop_counter` counts; MACs = FLOPs / 2).
A layer's *share* tells where the cost sits: pruning a layer that holds 1% of the FLOPs
cannot speed the model up much, however sparse it gets.

The baseline accuracy comes with a **95% Wilson interval**: with a few hundred validation
samples, differences smaller than that interval are noise.
"""

WEIGHTS = """
Each chart is a **histogram of weight magnitudes |w|** of one layer. Magnitude pruning
removes the weights left of the **threshold** (the shaded bars): the smallest weights
change the layer's output least. A layer with a big pile of near-zero weights can lose
many of them cheaply; a layer whose weights are all similar in size cannot.

Use the **log scale** to see the smallest weights, which a linear axis squeezes into one
bar. For a **neuron** plan the page shows each neuron's weight norm instead: whole neurons
with the smallest norms are removed together.
"""

ACTIVATIONS = """
How each layer's neurons respond on the validation samples (after their nonlinearity).

- **Mean |activation|** per neuron: neurons that barely respond contribute little downstream.
- **APoZ** (average percentage of zeros, Hu et al. 2016): how often a ReLU neuron outputs
  exactly zero. A neuron that is zero on almost every input is a candidate for removal.
- **Dead neurons** are zero on every sample: removing them changes nothing at all.

These are *data-driven* views: they depend on the validation set, unlike weight magnitude.
"""

SIMILARITY = """
Each heatmap compares every pair of neurons in one layer: the **cosine similarity** of their
incoming weights, or the **correlation** of their activations over the validation samples.
Neurons are reordered by hierarchical clustering so that groups of near-duplicates show as
bright **blocks** on the diagonal.

Two neurons that compute nearly the same thing are **redundant**: one can be removed (and
its outgoing weights added to its twin) at little cost. Click a cell to compare the two
neurons side by side.
"""

PRUNE = """
Move the sliders to choose the fraction removed per layer (or one **global** fraction with
one threshold across layers). The metrics update live on the validation set:

- **Accuracy** with its 95% interval and the change against the dense model.
- **Size**: dense fp32 bytes; for weight pruning the sparse storage as values + bitmask or
  CSR (values + int32 indices); for neuron pruning the dense size of the smaller model.
- **FLOPs** per sample and the **theoretical speed-up** (dense / remaining FLOPs).
  Unstructured sparsity only turns into real speed on hardware or kernels that skip zeros.
- **Compression ratio**: parameters / nonzero parameters.

Every plan you evaluate becomes a point on the trade-off charts, so you can see which
choices keep accuracy for the FLOPs they save. *Undo* steps back; *Reset* clears the plan.
"""

COMPARE = """
Each line is one **criterion**: the accuracy on the validation set (y) when a growing
fraction (x) is removed by that criterion's ranking — lowest scores first. In **one layer**
mode only the chosen layer is pruned (for neurons, together with the layers coupled to it)
and every other layer stays dense: the curves tell how much that layer tolerates, and
which criterion picks the right parts to remove there. In **whole model** mode one global
threshold removes the same fraction across all layers at once.

- The dotted line is the **dense** accuracy. A curve that stays on it removes for free.
- **random** (dashed, grey) is the **control**: a criterion whose line is not above random
  tells you nothing about importance at that layer and sparsity. Differences smaller than
  the accuracy's 95% interval (a few points on a few hundred samples) are noise.
- **Data-driven** criteria (activation, APoZ, Taylor) score on the **validation set**:
  their curves depend on it, and with a small or unrepresentative set they can look
  better here than they will on new data (the same samples rank and judge). Weight-based
  criteria (magnitude, L1/L2 norms, redundancy) do not look at data at all.

Hover over a point for its FLOPs per sample (2 per multiply-add). The table gives each
criterion's accuracy at 50% and 80% removed, the best per column highlighted. All numbers
are without fine-tuning, which often narrows the gaps between criteria.
"""

BROKE = """
The same validation samples, run through the **dense** model and the **pruned** one (the
current plan). Accuracy is one number; the damage rarely is spread evenly.

- **Per class**: each class's accuracy (correct / samples of that class) before and after.
  Pruning often hurts a few classes badly while the others barely move — the overall
  accuracy hides that (Hooker et al. 2019, *What do compressed deep neural networks forget?*).
- **Confusion change**: pruned minus dense counts, rows the true class, columns the
  predicted one. Red off the diagonal: more samples now go to that wrong class; blue on the
  diagonal: fewer correct. Each row sums to zero.
- **Flipped samples**: whose prediction changed. *Broken*: the dense model was right, the
  pruned one is wrong. *Fixed*: the other way round. *Changed*: both wrong, differently.
  The accuracy moves by (fixed - broken) / samples: a small drop can hide many flips.

Fine-tuning after pruning usually wins back much of what broke; compare again afterwards.
"""

SENSITIVITY = """
A **sensitivity scan** asks, for each prunable unit on its own: how much accuracy is lost
when only this unit is pruned, by a growing fraction? It is the classic first step for
choosing per-layer sparsity (Han et al. 2015, "Learning both Weights and Connections";
Li et al. 2017, "Pruning Filters for Efficient ConvNets", whose per-layer curves showed
that some layers tolerate most of their filters going while others break at once).

- A **unit** is a layer for **weights**; for **neurons** it is a **coupled group**: layers
  whose channels are added together (residual connections) must lose the same channels, so
  they are swept together, labelled with all their members. Layers whose neurons cannot be
  removed (e.g. the output classes) are listed as skipped.
- Each unit is swept **alone**: every other layer stays as in the **base**, the dense model
  or your current plan (a per-layer plan; a global plan has no per-layer fractions to keep).
- **Lines**: accuracy (or loss) of each unit vs the fraction removed; the dotted line is
  the dense model. A flat line means the unit tolerates pruning: give it a high sparsity.
  A line that falls early marks a sensitive unit: prune it little or not at all.
- **Heatmap**: the accuracy drop in points, unit by fraction. Read it row by row for where
  each unit starts to break. Drops smaller than the accuracy's 95% interval are noise.
- **Chosen on one half, judged on the other**: the scan and the suggested plans are made on
  the **calibration** samples (about half of each class); a suggestion's accuracy is then
  also measured on the **held-out** samples no choice saw. A plan picked as best on some
  samples looks better on them than it is; the held-out number is the one to trust.

Units interact: sensitivities found alone do not simply add up when several units are
pruned together, so check the combined plan on the Prune page. The scan runs in the
background (cancel keeps what is done); finished scans are kept, so the same scan in any
session shows at once.
"""

EXPORT = """
Take the current plan out of the explorer (change it on **Prune**, or load a plan file in
the sidebar). Every file is made from copies: the loaded model is never changed.

- **plan.json**: the plan itself; load it in the sidebar, or evaluate it with the CLI
  (`pruning-explorer evaluate --model digits-cnn --plan plan.json --json`).
- **pruned.safetensors**: the model's weights with the plan made permanent. Removed
  weights are zeros in place and every tensor keeps its shape, so the original
  architecture loads it (`model.load_state_dict(safetensors.torch.load_file(...))`).
  Zeros save space only when stored sparsely, and time only on kernels that skip them.
- **shrunk.pt2** (neuron plans only): the physically smaller model as a `torch.export`
  program (`torch.export.load("shrunk.pt2").module()`): dense, smaller and faster on any
  hardware. A weight plan removes single weights, so no layer gets smaller.
- **apply_plan.py**: a script that applies the plan to your own copy of the model with
  `torch.nn.utils.prune`. A magnitude weight plan is re-derived by torch's own L1
  selection; any other plan needs the exact keep-masks in **masks.safetensors**.
- **pruning_ratio_dict.json**: the fraction removed per layer, in the form Torch-Pruning's
  `pruning_ratio_dict` takes (Torch-Pruning picks the channels by its own importance).

The **round trip** loads pruned.safetensors (and shrunk.pt2) back the way a user would and
evaluates them with no plan at all: the figures must equal those shown for the plan.
"""

TRADEOFFS = """
Every plan you have evaluated in this session (each slider position on the Prune page, each
applied suggestion) is a point: **accuracy against FLOPs per sample** (left) and **against
size** (right; the smallest storage: the shrunk model for neuron plans, values + bitmask or
CSR for weight plans). Both cost axes are logarithmic.

- The **Pareto front** (orange) joins the plans that no other plan beats on both accuracy
  and cost: the only ones worth keeping. It is chosen on the **calibration** samples and
  reported on the **held-out** samples no choice saw (switch the chart between them); on
  held-out samples a front plan may fall below another plan: the noise its choice fitted.
- The **baselines** every pruning paper should compare against (Blalock et al. 2020, "What
  is the State of Neural Network Pruning?"): the **same fraction in every layer**
  (uniform), **one global magnitude threshold**, and **random** removal, each fitted to
  compression ratios 2, 4, 8, 16 and 32 (parameters / nonzero parameters). A plan of yours
  below the global-magnitude curve does worse than the simplest method.
- **Pin** a plan to name it; compare any two plans (or a plan and the dense model) layer
  by layer, metric by metric and class by class below.
"""

LATENCY = """
**Theoretical** speed-up is dense FLOPs / the plan's effective FLOPs: it assumes every
removed weight saves its multiply-add. **Measured** speed-up is the dense model's median time
for one batch / the fastest pruned form's, timed here with `torch.utils.benchmark`.

Why masks alone do not make a model faster: a weight set to zero is still multiplied. The
**masked** form (what `torch.nn.utils.prune` gives you) runs the same dense kernels on the
same shapes, so a 90% weight plan costs what the dense model costs. What does make it faster:

- **Structure**: a neuron / channel plan gives a physically **shrunk** model, smaller dense
  matrices that any hardware runs faster (by less than the FLOPs promise when the layers are
  small, the batch is small or the time goes to the layers you did not prune).
- **Sparse kernels**: the **sparse** form stores pruned linear weights as CSR; on a CPU it
  usually pays off only at very high sparsity and large layers (there is no sparse
  convolution kernel on the CPU at all). Measured here, never assumed.
- **Hardware**: GPUs with 2:4 semi-structured sparsity, or runtimes such as ONNX Runtime or
  DeepSparse, turn some patterns of zeros into real savings (not installed here).

The layer chart shows where the time goes: each prunable layer's share of the fastest
pruned form's forward time beside its share of the plan's FLOPs (layers are matched by
module name with `torch.profiler`). The rest of the time goes to activations, pooling and
overhead, which no plan removes. Batch size and threads change the picture: try both.
"""

FINETUNE = """
Pruning after training costs accuracy; **retraining the weights that are left** wins most of
it back, because they can take over the work of those removed (Han et al. 2015).

- **Fine-tune the plan**: the plan's masks are held fixed and the remaining weights are
  trained for a number of epochs on the **training split** (never on the validation samples
  the accuracy is measured on). Removed weights stay **exactly zero**: their gradients are
  zeroed and the mask is applied again after every step, so the optimizer cannot revive
  them.
- **Iterative pruning** reaches the plan in steps: prune a little, fine-tune, repeat, each
  time removing the smallest weights of the *retrained* network (Han et al. 2015). The
  **cubic** schedule (Zhu & Gupta 2017) takes big steps first, while many weights are
  redundant, and small ones near the end; **linear** takes equal steps. Removed weights
  stay removed.

The curve shows the training loss and the validation accuracy and loss after each epoch,
live while it runs; the page stays usable and **Cancel** keeps what was trained so far.
The result is a **new model** (same architecture, zeros in place): explore it on every page,
export it, or download its weights (`pruning-explorer evaluate --model FILE` reads them).
Recipe: Adam, batches of 64, cosine learning-rate decay, a fixed seed and batch order.
"""

UPLOAD_SAFETY = (
    "**What runs, what is refused.** Every file is untrusted data. Weights (safetensors, "
    "`torch.save` state_dicts) and data files are read as tensors only: pickled Python "
    "objects are refused. A `.pt2` program is checked member by member before it is read: "
    "pickled payloads, compiled libraries (AOTInductor), custom operators and classes, guard "
    "code and any operation outside standard ATen tensor operations are refused. A "
    "TorchScript file is a program, so it and every `.pt2` are first loaded and run in a "
    "separate, locked-down process (no file writes, no network, at most "
    f"{GUARDED_LOAD_MEMORY_BYTES >> 30} GiB and {GUARDED_LOAD_SECONDS} s), which hands "
    "back a plain graph of ATen operations that is checked again: only that graph runs here. "
    f"Files up to {MAX_MODEL_FILE_BYTES >> 20} MB; data up to "
    f"{MAX_DATA_TENSOR_BYTES >> 30} GiB once decoded, and as many samples as fit this "
    f"session's {SESSION_MEMORY_BYTES >> 30} GiB."
)

BN_RECALIBRATION = """
Removing channels (or many weights) changes what every BatchNorm layer after the change
sees, but its stored running mean and variance still describe the dense model. Judged with
those stale statistics (**raw**), a pruned model looks far worse than it is: on
digits-resnet, 30% of neurons removed by L1 norm shows 22% raw and 76% recalibrated.
**Recalibrated** re-estimates them for each plan with one pass over a few hundred
calibration images (never the validation images; no weights change), as Li et al. 2020
(EagleEye) do: those numbers rank plans far closer to their accuracy after fine-tuning.
Turn it off to see the raw figures.
"""
