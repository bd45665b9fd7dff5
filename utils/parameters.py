"""Parameters: the train notebook's parameters, one definition each (default, check, what is expected), and their check."""
from __future__ import annotations

import os
from functools import partial
from typing import Any

from utils import data, degradation, synthetic
from utils.pipeline import DEFAULT_RESIZE_MODE, RESIZE_MODES

# The train notebook's parameters, the one definition of each: name -> (default, accepted types, check, what is
# expected). The notebook's `parameters` cell assigns the same names and defaults, each with its meaning in a comment
# (tests/test_notebooks.py keeps the two in step); every value is checked here before any work.
PARAMETERS: dict[str, tuple[Any, tuple[type, ...], Any, str]] = {
    "alpha": (0.2, (int, float), lambda v: 0 <= v < 1, "a LeakyReLU negative slope in [0, 1); 0 = ReLU baseline"),
    "epochs": (100, (int,), lambda v: v >= 1, "an integer >= 1"),
    "batch_size": (32, (int,), lambda v: v >= 1, "an integer >= 1 (per replica)"),
    "image_size": (224, (int,), lambda v: v >= 32, "an integer >= 32 (pixels; ResNet50 downsamples 32x)"),
    "resize_mode": (DEFAULT_RESIZE_MODE, (str,), lambda v: v in RESIZE_MODES,
                    "'resize' (whole image scaled to image_size) or 'crop' (image_size window at the image's own scale)"),
    "val_split": (0.25, (float,), lambda v: 0 < v < 1, "a fraction in (0, 1)"),
    "seed": (42, (int,), lambda v: v >= 0, "an integer >= 0"),
    "learning_rate": (0.001, (int, float), lambda v: 0 < v < 1, "a number in (0, 1)"),
    # A list (several datasets pooled) passes here; validate_params then checks its entries one by one.
    "data_dir": (None, (str, type(None), list),
                 lambda v: isinstance(v, list) or v is None or os.path.isdir(v) or v in synthetic.GENERATOR_NAMES,
                 f"None, an existing folder or one of {', '.join(synthetic.GENERATOR_NAMES)}, or a list of "
                 "folders and generators (several datasets)"),
    # Whether it names one of the sources is checked with data_dir (validate_params) and, by name, when indexing.
    "holdout_source": (None, (str, int, type(None)), lambda v: v is None or (v >= 0 if isinstance(v, int) else v != ""),
                       "None, a source name of a multi-source data_dir or its index in data_dir"),
    "max_images": (None, (int, type(None)), lambda v: v is None or v >= 2, "None or an integer >= 2 (per class)"),
    "flip": ("horizontal", (str, type(None)), lambda v: v in (None, "", "horizontal", "vertical", "horizontal_and_vertical"),
             "None, 'horizontal', 'vertical' or 'horizontal_and_vertical'"),
    "rotation": (0.1, (int, float, type(None)), lambda v: v is None or 0 <= v <= 1,
                 "None or a fraction of a full turn in [0, 1]"),
    "zoom": (0.1, (int, float, type(None)), lambda v: v is None or 0 <= v < 1, "None or a fraction in [0, 1)"),
    "contrast": (0.1, (int, float, type(None)), lambda v: v is None or 0 <= v <= 1, "None or a factor in [0, 1]"),
    # Train-time degradations (utils.degradation): each a probability and a [low, high] strength range.
    **{name: (default, (int, float), lambda v: 0 <= v <= 1, "a probability in [0, 1] (0 = off)")
       if name.endswith("_prob")
       else (default, (list, tuple), partial(degradation.valid_range, name), degradation.range_expected(name))
       for name, default in degradation.DEFAULT_DEGRADATION.items()},
    "weights": (None, (str, type(None)), lambda v: v in (None, "imagenet") or os.path.isfile(v),
                "None, 'imagenet' or an existing ResNet50 (no top) weights file"),
    "bn_momentum": (0.99, (float,), lambda v: 0 < v < 1,
                    "a BatchNormalization momentum in (0, 1); stock ResNet50: 0.99"),
    "early_stopping": (0, (int,), lambda v: v >= 0, "an integer >= 0 (patience in epochs; 0 = off)"),
    "output_dir": ("runs/train", (str,), lambda v: bool(v), "a folder path"),
    "allow_replica_change": (False, (bool,), lambda v: True, "True or False"),
    "time_budget_hours": (None, (int, float, type(None)), lambda v: v is None or v >= 0,
                          "None (just under Kaggle's session limit on Kaggle, off elsewhere), 0 (off) or hours > 0"),
    "plan_hash": (None, (str, type(None)), lambda v: v is None or (len(v) == 12 and v.isalnum()),
                  "None or the 12-digit hash of a study plan (utils.study_plan)"),
}
# Parameters added later: a namespace without them (an older copy of the notebook, a test) gets the default, and a
# run recorded before one existed ran at it.
ADDED_LATER = ("time_budget_hours", "resize_mode", "holdout_source", *degradation.DEFAULT_DEGRADATION,
               "allow_replica_change", "plan_hash")
PARAMETER_DEFAULTS = {name: PARAMETERS[name][0] for name in ADDED_LATER}


def validate_params(namespace: dict[str, Any]) -> dict[str, Any]:
    """Pick the train notebook's parameters out of `namespace` and check each; one ValueError names the first bad one."""
    namespace = {**PARAMETER_DEFAULTS, **namespace}
    missing = [name for name in PARAMETERS if name not in namespace]
    if missing:
        raise ValueError(f"missing parameter(s): {', '.join(missing)}")
    params = {}
    for name, (_, types, check, expected) in PARAMETERS.items():
        value = namespace[name]
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # papermill passes `-p val_split 1` style numbers as int
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types) or not check(value):
            raise ValueError(f"parameter {name}={value!r} is invalid: expected {expected}")
        if name in degradation.RANGES:
            value = degradation.normalise_range(name, value)  # a list, as params.json will hold it
        params[name] = value
    _check_sources(params["data_dir"], params["holdout_source"])
    return params


def _check_sources(data_dir: Any, holdout_source: str | int | None) -> None:
    """Raise a ValueError naming the bad entry of a list data_dir, or a holdout_source that cannot name a source."""
    if isinstance(data_dir, list):
        data.check_data_dirs(data_dir)  # a DataError (ValueError) naming the entry and what was expected
    if holdout_source is None:
        return
    if not isinstance(data_dir, list) or len(data_dir) < 2:
        raise ValueError(f"parameter holdout_source={holdout_source!r} is invalid: it needs data_dir to be a list of "
                         f"two or more datasets (one to hold out, the others to train on), got data_dir {data_dir!r}")
    if isinstance(holdout_source, int) and holdout_source >= len(data_dir):
        raise ValueError(f"parameter holdout_source={holdout_source!r} is invalid: expected an index of data_dir, "
                         f"0 to {len(data_dir) - 1}, or a source name")
