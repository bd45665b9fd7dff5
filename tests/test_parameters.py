"""The train notebook's parameters: each checked, named when bad, defaulted when added later."""
from __future__ import annotations

import json

import pytest
from conftest import GOOD_PARAMS

from utils import parameters


def test_good_parameters_pass_and_ints_become_floats():
    params = parameters.validate_params({**GOOD_PARAMS, "val_split": 0.25, "alpha": 0, "unrelated": object()})
    assert params["alpha"] == 0.0 and isinstance(params["alpha"], float)
    assert "unrelated" not in params
    assert parameters.validate_params({**GOOD_PARAMS, "data_dir": "synthetic:bilinear"})["data_dir"] == "synthetic:bilinear"


@pytest.mark.parametrize("name, value, expected", [
    ("alpha", 1.5, "[0, 1)"), ("alpha", "0.2", "[0, 1)"), ("epochs", 0, ">= 1"), ("epochs", 2.5, ">= 1"),
    ("val_split", 1.0, "(0, 1)"), ("image_size", 16, ">= 32"), ("data_dir", "/no/such/folder", "existing folder"),
    ("data_dir", "synthetic:pixelshuffle", "synthetic:nearest"),
    ("flip", "diagonal", "horizontal"), ("weights", "missing.h5", "imagenet"), ("max_images", 1, ">= 2"),
    ("batch_size", True, ">= 1"), ("bn_momentum", 1.0, "(0, 1)"),
    ("resize_mode", "pad", "'crop'"), ("blur_prob", 1.5, "probability in [0, 1]"), ("jpeg_prob", -0.1, "[0, 1]"),
    ("noise_prob", "0.5", "probability"), ("blur_sigma", [3.0, 1.0], "0 <= low <= high <= 10"),
    ("blur_sigma", 2.0, "[low, high]"), ("jpeg_quality", [0, 90], "1 <= low <= high <= 100"),
    ("jpeg_quality", [30.5, 90], "integer JPEG qualities"), ("rescale_range", [0.5, 1.5], "<= high <= 1"),
    ("noise_sigma", [0.0, 80.0], "grey levels"), ("noise_sigma", [1.0, 2.0, 3.0], "[low, high]"),
    ("allow_replica_change", "yes", "True or False"), ("allow_replica_change", 1, "True or False"),
])
def test_each_bad_parameter_is_named(name, value, expected):
    with pytest.raises(ValueError) as error:
        parameters.validate_params({**GOOD_PARAMS, name: value})
    assert f"parameter {name}=" in str(error.value) and expected in str(error.value)


def test_degradation_and_resize_mode_parameters_default_off_and_are_recorded_as_lists():
    params = parameters.validate_params(GOOD_PARAMS)  # a namespace without them (an older notebook) gets the defaults
    assert params["resize_mode"] == "resize" and params["blur_prob"] == 0.0 and params["jpeg_quality"] == [30, 100]
    params = parameters.validate_params({**GOOD_PARAMS, "resize_mode": "crop", "blur_prob": 1, "blur_sigma": (0, 3),
                                         "jpeg_quality": (40, 90)})
    assert params["resize_mode"] == "crop" and params["blur_prob"] == 1.0
    assert params["blur_sigma"] == [0.0, 3.0] and all(isinstance(v, float) for v in params["blur_sigma"])
    assert params["jpeg_quality"] == [40, 90] and all(isinstance(v, int) for v in params["jpeg_quality"])
    json.dumps(params)  # recorded in params.json and metrics.json as they are


def test_several_datasets_and_holdout_source_are_checked(tmp_path):
    """A list data_dir is checked entry by entry; holdout_source must be able to name one of its sources."""
    a, b = str(tmp_path), "synthetic:nearest"
    params = parameters.validate_params({**GOOD_PARAMS, "data_dir": [a, b], "holdout_source": 1})
    assert params["data_dir"] == [a, b] and params["holdout_source"] == 1
    assert parameters.validate_params(GOOD_PARAMS)["holdout_source"] is None  # an older notebook: no holdout
    assert parameters.PARAMETER_DEFAULTS["holdout_source"] is None  # so runs recorded before it still match
    bad = [({"data_dir": []}, "data_dir is an empty list"),
           ({"data_dir": [a, str(tmp_path / "gone")]}, f"entry 1 ('{tmp_path / 'gone'}') does not exist"),
           ({"data_dir": [a, a]}, "entry 1 ('%s') repeats entry 0" % a),
           ({"data_dir": a, "holdout_source": "x"}, "holdout_source='x' is invalid: it needs data_dir to be a list"),
           ({"data_dir": [a, b], "holdout_source": 2}, "holdout_source=2 is invalid: expected an index of data_dir, 0 to 1"),
           ({"data_dir": [a, b], "holdout_source": -1}, "parameter holdout_source=-1 is invalid"),
           ({"data_dir": [a, b], "holdout_source": ""}, "parameter holdout_source='' is invalid")]
    for change, message in bad:
        with pytest.raises(ValueError) as error:
            parameters.validate_params({**GOOD_PARAMS, **change})
        assert message in str(error.value), (change, str(error.value))


def test_missing_parameter_is_named():
    params = dict(GOOD_PARAMS)
    del params["seed"]
    with pytest.raises(ValueError, match="missing parameter.*seed"):
        parameters.validate_params(params)


@pytest.mark.parametrize("mount", ["datasets/me/resnet50-notop/versions/3", "datasets/me/resnet50-notop",
                                   "resnet50-notop"])
def test_weights_file_in_an_attached_dataset_of_either_layout(tmp_path, mount):
    """weights may name a file under an attached dataset: /kaggle/input/datasets/<owner>/<slug>/[versions/<N>/]
    since 2026, /kaggle/input/<slug>/ before; any existing file passes, whatever the layout."""
    path = tmp_path / "input" / mount / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    assert parameters.validate_params({**GOOD_PARAMS, "weights": str(path)})["weights"] == str(path)
    with pytest.raises(ValueError, match="parameter weights=.* is invalid"):
        parameters.validate_params({**GOOD_PARAMS, "weights": str(path.with_name("missing.h5"))})
