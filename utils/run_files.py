"""A training run folder's files: the one place that names them. The train notebook writes them; the resume, the
analysis, prediction and tools.kaggle read them."""
from __future__ import annotations

METRICS = "metrics.json"  # the run record (params, dataset, metrics): what makes a folder a finished training run
PARAMS = "params.json"  # the parameters, written before training: what a resume or a rerun is compared with
MODEL = "model.keras"  # the best checkpoint by validation loss
HISTORY = "history.csv"  # one row per epoch
REPLICAS = "replicas.json"  # the replica count training ran on (and earlier counts): a resume compares it
BACKUP = "backup"  # Keras' BackupAndRestore folder, there while training is unfinished
THRESHOLD = "threshold.json"  # the validation-chosen decision threshold the analysis writes; utils.predict reads it
