"""Resume: a run folder is claimed, protected against other parameters, and continued from an attached Kaggle output."""
from __future__ import annotations

import json

import pytest
from conftest import GOOD_PARAMS, simulated_kaggle

from utils import parameters, resume
from utils.runtime import BUILD_RECORD


def test_run_recorded_before_new_parameters_resumes_at_their_defaults(tmp_path):
    """An older params.json lacks resize_mode and the degradations: that run used the defaults, so it may continue."""
    params = parameters.validate_params({**GOOD_PARAMS, "output_dir": str(tmp_path)})
    older = {k: v for k, v in params.items() if k not in parameters.PARAMETER_DEFAULTS}
    (tmp_path / "params.json").write_text(json.dumps(older))
    (tmp_path / "backup").mkdir()
    resume.claim_output_dir(tmp_path, params)
    (tmp_path / "params.json").write_text(json.dumps(older))
    with pytest.raises(ValueError, match=r"blur_prob: 0\.0 -> 0\.5"):
        resume.claim_output_dir(tmp_path, {**params, "blur_prob": 0.5})


def test_run_folder_with_other_parameters_is_protected(tmp_path):
    resume.claim_output_dir(tmp_path, GOOD_PARAMS)
    (tmp_path / "model.keras").write_bytes(b"a trained model")
    resume.claim_output_dir(tmp_path, {**GOOD_PARAMS, "epochs": 10})  # continuing with more epochs is fine
    with pytest.raises(ValueError, match=r"alpha: 0.2 -> 0.1"):
        resume.claim_output_dir(tmp_path, {**GOOD_PARAMS, "alpha": 0.1})
    assert json.loads((tmp_path / "params.json").read_text())["epochs"] == 10


def _kaggle_run_folder(monkeypatch, tmp_path, record: dict | None):
    """A simulated /kaggle with a build record (None: no record) and the run folder working/train."""
    inputs, working = simulated_kaggle(monkeypatch, tmp_path)
    if record is not None:
        (working / BUILD_RECORD).write_text(json.dumps(record))
    return inputs, working / "train"


def test_a_resume_that_finds_no_attached_run_stops_before_any_data(monkeypatch, tmp_path):
    """push --resume-from me/train-a, and its output is attached without this run folder: stop, name the ref, the
    folder looked for and what is attached."""
    inputs, out = _kaggle_run_folder(monkeypatch, tmp_path, {"slug": "train-b", "resume_from": "me/train-a"})
    (inputs / "datasets/xhlulu/140k-real-and-fake-faces/real_vs_fake").mkdir(parents=True)
    (inputs / "notebooks/me/train-a/other-run").mkdir(parents=True)
    (inputs / "notebooks/me/train-a/other-run/params.json").write_text("{}")
    with pytest.raises(resume.ResumeNotFoundError) as error:
        resume.claim_output_dir(out, GOOD_PARAMS)
    message = str(error.value)
    assert "--resume-from me/train-a" in message and "run folder train/ (with params.json)" in message
    assert "notebooks/me/train-a/[versions/<N>/]train/ and train-a/train/" in message
    assert "notebooks/me/train-a/: other-run/" in message and "datasets/xhlulu/140k-real-and-fake-faces/" in message
    assert not (out / "params.json").exists()  # nothing claimed


def test_a_resume_continues_the_attached_run_in_either_layout(monkeypatch, tmp_path):
    """The run folder attached at notebooks/<owner>/<slug>/versions/<N>/ (2026) is copied; so is <slug>/ (older)."""
    inputs, out = _kaggle_run_folder(monkeypatch, tmp_path, {"resume_from": "me/train-a/3"})
    attached = inputs / "notebooks/me/train-a/versions/3/train"
    (attached / "backup").mkdir(parents=True)
    (attached / "params.json").write_text(json.dumps(GOOD_PARAMS))
    (attached / "backup" / "training_metadata.json").write_text('{"epoch": 0}')
    resume.claim_output_dir(out, GOOD_PARAMS)
    assert (out / "backup" / "training_metadata.json").read_text() == '{"epoch": 0}'

    inputs, out = _kaggle_run_folder(monkeypatch, tmp_path / "legacy", {"resume_from": "train-a"})
    (inputs / "train-a/train").mkdir(parents=True)
    (inputs / "train-a/train/params.json").write_text(json.dumps(GOOD_PARAMS))
    (inputs / "train-a/train/model.keras").write_bytes(b"a finished run")
    resume.claim_output_dir(out, GOOD_PARAMS)
    assert (out / "model.keras").read_bytes() == b"a finished run"


def test_no_resume_asked_or_a_run_of_its_own_needs_nothing_attached(monkeypatch, tmp_path):
    _, out = _kaggle_run_folder(monkeypatch, tmp_path, {"resume_from": None})
    resume.claim_output_dir(out, GOOD_PARAMS)  # a fresh run
    assert json.loads((out / "params.json").read_text()) == GOOD_PARAMS
    _, out = _kaggle_run_folder(monkeypatch, tmp_path / "own", {"resume_from": "me/train-a"})
    (out / "backup").mkdir(parents=True)  # this session's own interrupted run (a rerun in the same session)
    resume.claim_output_dir(out, GOOD_PARAMS)
    _, out = _kaggle_run_folder(monkeypatch, tmp_path / "outside", {"resume_from": "me/train-a"})
    with pytest.raises(resume.ResumeNotFoundError, match="lies outside the working folder"):
        resume.claim_output_dir(tmp_path / "elsewhere", GOOD_PARAMS)


def test_attached_run_is_found_and_copied_writable(tmp_path, monkeypatch):
    """On Kaggle, an empty run folder is filled from the same folder of an attached output (one with a backup
    preferred), as writable copies; elsewhere nothing is looked for."""
    inputs, working = simulated_kaggle(monkeypatch, tmp_path, run_type=None)  # not on Kaggle yet
    old = inputs / "notebooks" / "me" / "train-old" / "versions" / "2" / "train"  # the 2026 mount, newest version
    (old / "backup").mkdir(parents=True)
    (old / "params.json").write_text('{"alpha": 0.2}')
    (old / "backup" / "training_metadata.json").write_text('{"epoch": 0}')
    stale = inputs / "notebooks" / "me" / "train-old" / "versions" / "1" / "train"  # an older version: not taken
    (stale / "backup").mkdir(parents=True)
    (stale / "params.json").write_text("{}")
    finished = inputs / "train-finished" / "train"  # the older layout, <slug>/: found, but has no backup
    finished.mkdir(parents=True)
    (finished / "params.json").write_text("{}")
    (inputs / "faces" / "real_vs_fake").mkdir(parents=True)  # a dataset beside them is not taken for a run
    for path in [old / "params.json", old / "backup" / "training_metadata.json", old / "backup", old]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    assert resume.attached_run(working / "train") is None
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert resume.attached_run(working / "train") == old
    assert resume.attached_run(working / "other") is None
    assert resume.attached_run(tmp_path / "elsewhere" / "train") is None  # outside the working folder
    out = resume.claim_output_dir(working / "train", {"alpha": 0.2})
    copied = out / "backup" / "training_metadata.json"
    assert copied.read_text() == '{"epoch": 0}' and copied.stat().st_mode & 0o200
    copied.write_text("{}")  # writable: training goes on in it
    for path in [old, old / "backup"]:
        path.chmod(0o755)
