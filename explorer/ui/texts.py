"""The explanations each page carries: the app teaches, not only displays."""

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
images, differences smaller than that interval are noise.
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
How each layer's neurons respond on the validation images (after their nonlinearity).

- **Mean |activation|** per neuron: neurons that barely respond contribute little downstream.
- **APoZ** (average percentage of zeros, Hu et al. 2016): how often a ReLU neuron outputs
  exactly zero. A neuron that is zero on almost every input is a candidate for removal.
- **Dead neurons** are zero on every image: removing them changes nothing at all.

These are *data-driven* views: they depend on the validation set, unlike weight magnitude.
"""

SIMILARITY = """
Each heatmap compares every pair of neurons in one layer: the **cosine similarity** of their
incoming weights, or the **correlation** of their activations over the validation images.
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
  the accuracy's 95% interval (a few points on a few hundred images) are noise.
- **Data-driven** criteria (activation, APoZ, Taylor) score on the **validation set**:
  their curves depend on it, and with a small or unrepresentative set they can look
  better here than they will on new data (the same images rank and judge). Weight-based
  criteria (magnitude, L1/L2 norms, redundancy) do not look at data at all.

Hover over a point for its FLOPs per sample (2 per multiply-add). The table gives each
criterion's accuracy at 50% and 80% removed, the best per column highlighted. All numbers
are without fine-tuning, which often narrows the gaps between criteria.
"""
