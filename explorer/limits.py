"""Bounds on what one user's input may cost the server: bytes, memory, time and jobs.

Every uploaded or command-line file is untrusted, and the app serves many browser sessions
from one process. These numbers keep one user's input from taking the machine (or the other
users' numbers) down; a file or request over a bound is refused with a message *before* the
work starts. The README's "Security and limits" section states them for users; change both
together.
"""

from __future__ import annotations

MiB = 1 << 20
GiB = 1 << 30

# Files (the app's upload limit, server.maxUploadSize in .streamlit/config.toml, is the same).
MAX_MODEL_FILE_BYTES = 200 * MiB
MAX_DATA_FILE_BYTES = 200 * MiB
MAX_PLAN_FILE_BYTES = 1 * MiB
MAX_PLAN_JSON_DEPTH = 8  # a plan is at most 3 levels deep; deeper JSON is refused unparsed
MAX_PLAN_LAYERS = 10_000  # layer names in one plan
MAX_NAMED_IN_MESSAGE = 5  # offending items a message names ("a, b, c, d, e and 12 more")

# Validation data, decoded: x as float32 and y as int64, before anything else is allocated.
MAX_DATA_TENSOR_BYTES = 1 * GiB
# The pickle of a torch.save data file (a dict of tensors takes a few hundred bytes); a larger
# one could unpickle into gigabytes of Python lists before any tensor is seen.
MAX_DATA_PICKLE_BYTES = 1 * MiB
# Members listed by a data archive's central directory (an .npz has x and y, a torch.save dict
# a few per tensor): Python's zipfile turns each entry into an object of ~500 bytes, so a
# 200 MB archive of empty entries would take gigabytes just to be opened.
MAX_DATA_ARCHIVE_MEMBERS = 1_000
MAX_ARCHIVE_MEMBERS = 50_000  # any archive (a TorchScript file holds a member per code file)
# What one session's model and data may take in memory, estimated before loading: the data
# plus the activations the evaluator keeps for every image at every prunable layer's input.
SESSION_MEMORY_BYTES = 3 * GiB
# All sessions' uploads together (the demos are shared and not counted); past it a new upload
# is refused until other sessions end.
SERVER_MEMORY_BYTES = 12 * GiB

# The first execution of an untrusted model file happens in a child process with these limits.
GUARDED_LOAD_SECONDS = 120
GUARDED_LOAD_MEMORY_BYTES = 6 * GiB

# Background jobs (fine-tuning, scans): bounded per request and per server.
MAX_FINETUNE_EPOCHS = 200  # per step when iterative
MAX_ITERATIVE_STEPS = 20
MAX_LOTTERY_ROUNDS = 10  # prune-rewind-train rounds of the lottery-ticket lab
MAX_RUNNING_JOBS = 4  # across all sessions of one server; the machine has 2 cores
MAX_JOBS_PER_SESSION = 2
# A job whose browser session has been disconnected this long is cancelled (tab closed). A
# reconnect within it (a network blip) keeps the job; Streamlit itself keeps a disconnected
# session 120 s for reconnects, but nobody watches a job that long after its tab is gone.
ORPHANED_JOB_SECONDS = 10

# An app script run whose evaluation is smaller than this (FLOPs per image x images) runs
# torch on one intra-op thread, larger ones on torch's default. On small work the threads
# mostly spin-wait on each other, the browser and other sessions: a digits-cnn slider move's
# evaluation (1.1 GFLOPs) took 13-124 ms with 2 threads and 6-7 ms with 1 on a loaded 2-core
# machine here. Large work (a CIFAR ResNet-18 on 3,000 images: 3.3 TFLOPs) needs the cores.
SMALL_EVALUATION_FLOPS = 5 * 10**9

# Latency measurement (explorer/export/latency.py): one batch of random inputs per form, timed
# for about a second each; a batch of 256 CIFAR images through a ResNet-18 is ~0.4 GB of
# activations. Threads beyond the machine's cores only make the figures noisier.
MAX_LATENCY_BATCH = 256
MAX_LATENCY_THREADS = 64

# Sweeps on a Ray cluster (explorer/decide/cluster.py). `--ray local` starts a cluster on
# this machine with this many CPUs (one worker each) and a bounded object store (the model,
# data and scores of one sweep: a CIFAR ResNet-18 with 3,000 images is ~80 MB); an address
# that does not answer within RAY_CONNECT_SECONDS is refused (ray.init itself waits minutes).
RAY_LOCAL_CPUS = 2
RAY_LOCAL_OBJECT_STORE_BYTES = 512 * MiB
RAY_CONNECT_SECONDS = 5
