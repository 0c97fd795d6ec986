"""The benchmark, `python -m blipexp.bench`: blipexp's speed against the notebook's loop and the machine's limit,
in one run. A peer of cli at the top: it may import every package but cli.

Sections (each a module here, each returns plain numbers):
  peak       matrix-multiply throughput, fp32 and bf16: the machine's limit
  training   the notebook's loop, a plain loop and blipexp's Trainer path on the BLIP-base architecture
             (random init: no download), full fine-tuning / frozen encoder / cached features; FLOPs and MFU
  generation captions/s, batched vs one image at a time
  trial      one tiny trial: the share of its time spent in evaluation, and in writes to MLflow
  sweep      the tiny football_lr_sweep: blipexp with cache and pruning, without them, full fine-tuning, and
             HF `Trainer.hyperparameter_search(backend="optuna")` on the same space, trial count and data
  pruners    the same tiny sweep with the median rule and with the paired pruner, seed by seed: best validation
             and test CIDEr, wall time, epochs trained
  adapters   the tiny football_baseline trained with full fine-tuning, a frozen encoder (cached) and LoRA:
             trainable parameters, s/epoch, best validation CIDEr
  evidence   bootstrap intervals and paired tests over many scored images; `evaluate` captioning, then cached
  serving    `mlflow models serve` under concurrent clients: images/s, latency, malformed requests, memory

It prints each figure as it is measured, then writes report.json and report.md to --out. `--quick` swaps
BLIP-base for the tiny architecture and shrinks every section: a smoke check (CI runs it), not a measurement.
"""
