"""Training: one engine and the recipes it runs.

``engine`` (TrainConfig, Batch, Recipe, Engine.fit) on top of one module per concern:
``schedule`` (AdamW groups, warm-up + cosine), ``data_order`` (batches and seeds),
``distributed`` (process group, device, collectives, ``gather_features``), ``checkpointing``
(run directory, saves, resume), ``metric_logging`` (metrics.jsonl, progress bar),
``validation`` (best weights, early stopping) and ``budget`` (steps that fit a wall time).
``pretrain`` is the masked-spectrogram recipe; ``plots`` draws the loss curve.
"""
