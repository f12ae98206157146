"""Runs trained on several caches: ``training_caches``, ``evaluate`` per dataset (one folder each and
a combined report), ``--dataset NAME`` for one of them, and the errors that name the run's datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facemtl.engine.checkpoint import load_checkpoint, save_checkpoint, training_cache, training_caches
from facemtl.errors import MissingFileError, UnknownNameError
from facemtl.reports.evaluate import evaluate

from ._fixtures import multi_run, two_caches


@pytest.fixture(scope="module")
def mrun(base):
    return multi_run(base)


@pytest.fixture(scope="module")
def mevaluated(mrun):
    return evaluate(mrun, device="cpu", figures=False)


def test_training_caches_of_a_multi_cache_run_and_of_an_old_checkpoint(mrun, base, tmp_path, monkeypatch):
    lm, at = two_caches(base)
    state = load_checkpoint(mrun)
    assert training_caches(state, mrun) == ([str(lm.absolute()), str(at.absolute())], ["lm", "at"])
    # recorded absolute paths gone (a checkpoint written before them): the paths as given, from the folder training ran in
    old = {k: v for k, v in state.items() if k not in ("data_paths", "data_names", "data_path")}
    old["config"] = {**state["config"], "data": {**state["config"]["data"], "sources": ["lm.h5", "at.h5"]}}
    old["cwd"] = str(lm.parent)
    monkeypatch.chdir(tmp_path)
    assert training_caches(old, mrun) == ([str(lm), str(at)], ["lm", "at"])
    # one cache, or no sources at all (checkpoints before several caches): the one training_cache finds
    single = {**old, "config": {**old["config"], "data": {**old["config"]["data"], "sources": []}}}
    paths, names = training_caches(single, mrun)
    assert paths == [training_cache(single, mrun)] and names == [Path(paths[0]).stem]


def test_every_task_on_every_dataset_that_labels_it(mevaluated, mrun, base):
    out = mevaluated.out_dir
    assert out == mrun / "eval-test"
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["format"] == "facemtl-evaluation" and doc["split"] == "test" and doc["checkpoint"].endswith("best.pt")
    assert list(doc["datasets"]) == ["lm", "at"] and doc["flip_test"] is False
    lm, at = doc["datasets"]["lm"], doc["datasets"]["at"]
    assert set(lm["tasks"]) == {"landmarks"} and set(lm["skipped"]) == {"smile"}  # lm.h5 has no attributes
    assert set(at["tasks"]) == {"smile"} and set(at["skipped"]) == {"landmarks"}
    assert lm["data"] == str(two_caches(base)[0].absolute()) and lm["samples"] == 20
    assert lm["tasks"]["landmarks"]["files"] == ["lm/landmarks.csv", "lm/landmarks_ced.csv"]  # relative to the combined report
    for name in ("lm", "at"):  # each dataset's own, complete single-cache report
        sub = json.loads((out / name / "metrics.json").read_text())
        assert sub["tasks"].keys() == doc["datasets"][name]["tasks"].keys()
        assert sub["tasks"] == {t: {**v, "files": [f.split("/", 1)[1] for f in v["files"]]} for t, v in doc["datasets"][name]["tasks"].items()}
        assert (out / name / "summary.md").exists()
    assert set(mevaluated.flat()) >= {"landmarks@lm/nme", "smile@at/balanced_accuracy"}
    assert not any(k.startswith(("landmarks@at", "smile@lm")) for k in mevaluated.flat())
    summary = (out / "summary.md").read_text()
    assert "| task | metric | lm | at | better |" in summary
    nme_row = next(line for line in summary.splitlines() if line.startswith("| landmarks | nme |"))
    assert nme_row.split("|")[4].strip() == ""  # blank: at.h5 does not label landmarks
    assert not list(out.parent.glob(".eval-test.partial-*"))


def test_flip_test_reaches_every_dataset(mrun, tmp_path):
    res = evaluate(mrun, out=tmp_path / "flip", device="cpu", figures=False, curves=False, flip_test=True)
    doc = json.loads((res.out_dir / "metrics.json").read_text())
    assert doc["flip_test"] is True
    assert all(json.loads((res.out_dir / n / "metrics.json").read_text())["flip_test"] is True for n in ("lm", "at"))


def test_dataset_name_evaluates_one_cache_alone(mrun, base):
    res = evaluate(mrun, dataset="at", device="cpu", figures=False, curves=False)
    assert res.out_dir == mrun / "eval-at-test" and not res.datasets
    doc = json.loads((res.out_dir / "metrics.json").read_text())
    assert doc["data"] == str(two_caches(base)[1].absolute()) and set(doc["tasks"]) == {"smile"}
    assert set(res.flat()) >= {"smile/balanced_accuracy"}


def test_unknown_dataset_name_lists_the_runs_datasets(mrun):
    with pytest.raises(UnknownNameError, match=r"(?s)Unknown dataset 'mtlf'.*\bat\b.*\blm\b"):
        evaluate(mrun, dataset="mtlf", device="cpu")


def test_a_moved_cache_says_pass_data(mrun, tmp_path):
    state = load_checkpoint(mrun)
    gone = str(tmp_path / "moved" / "at.h5")
    state["data_paths"] = [state["data_paths"][0], gone]
    state["config"] = {**state["config"], "data": {**state["config"]["data"], "sources": [state["data_paths"][0], gone]}}
    save_checkpoint(tmp_path / "moved.pt", {k: v for k, v in state.items() if k not in ("_path", "format", "version")})
    with pytest.raises(MissingFileError, match=r"(?s)moved/at.h5 \(the run's training cache 'at'\) does not exist.*Pass --data PATH.h5"):
        evaluate(tmp_path / "moved.pt", device="cpu")
    assert not (tmp_path / "moved" / "eval-test").exists() and not list(tmp_path.glob("moved*/eval*"))


def test_correlate_reads_one_of_the_runs_caches_by_name(mrun, base, tmp_path):
    from facemtl.reports.correlate import correlate

    res = correlate(mrun, dataset="at", split="test", out=tmp_path / "c", device="cpu", batches=1)
    doc = json.loads(next(res.out_dir.glob("*.json")).read_text())
    assert doc["data"] == str(two_caches(base)[1].absolute())
    first = correlate(mrun, split="test", out=tmp_path / "d", device="cpu", batches=1)
    assert json.loads(next(first.out_dir.glob("*.json")).read_text())["data"] == str(two_caches(base)[0].absolute())


# -- SynthFaces caches of one seed share their people ------------------------------------------
@pytest.mark.parametrize("train, other, split, shared", [
    ((0, 1500), (0, 500), "test", 50),     # the 8,000-image cache's test people 450-499 train the 24,000-image model
    ((0, 1500), (0, 500), "val", 450),
    ((0, 500), (0, 1500), "test", 0),      # its test people 1,350-1,499 were never drawn for 500
    ((0, 1500), (1, 500), "test", 0),      # another seed: other people
    ((0, 500), (0, 500), "test", 0),       # the same split rule: its own test people are held out
])
def test_shared_synthfaces_people(monkeypatch, train, other, split, shared):
    from facemtl.reports import _data

    provs = {"t": {"generator": "SynthFaces", "config": {"seed": train[0], "identities": train[1]}},
             "o": {"generator": "SynthFaces", "config": {"seed": other[0], "identities": other[1]}}}
    monkeypatch.setattr(_data, "cache_provenance", lambda path: provs[str(path)])
    assert _data.shared_synthfaces_people("t", "o", split) == shared
    provs["o"] = {"generator": "CelebA"}
    assert _data.shared_synthfaces_people("t", "o", split) == 0


def test_evaluate_warns_when_the_test_people_trained_the_model(tmp_path, caplog):
    """`evaluate --dataset synthetic` of a model trained on a larger SynthFaces cache of the same
    seed: the smaller cache's test people are training people, and evaluate says so."""
    from facemtl.data.synthetic import prepare_synthetic
    from facemtl.engine.config import apply_overrides, load_recipe
    from facemtl.engine.trainer import train

    from ._fixtures import synth_cache

    cache = synth_cache(tmp_path)  # 20 people: 0-17 train and validate
    small = tmp_path / "small.h5"
    prepare_synthetic(small, num_images=60, identities=10, sizes=(40,), workers=1, num_scenes=0)  # person 9 is its test
    cfg = apply_overrides(load_recipe("quick"), {"data.path": str(cache), "out": str(tmp_path / "run"), "train.epochs": 1,
                                                 "train.max_steps_per_epoch": 1, "tasks.names": ["landmarks"],
                                                 "model.backbone": "tcdcn", "model.input_size": 40, "augment.preset": "none"})
    train(cfg)
    with caplog.at_level("WARNING"):
        evaluate(tmp_path / "run", data=small, figures=False)
    assert any("1 person of" in r.getMessage() and "not held-out" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING"):
        evaluate(tmp_path / "run", figures=False)  # its own cache: held-out people, nothing said
    assert not any("not held-out" in r.getMessage() for r in caplog.records)
    from facemtl.data.cache import cache_provenance

    assert cache_provenance(small)["config"]["identities"] == 10
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    assert cache_provenance(tmp_path / "junk.h5") == {} and cache_provenance(tmp_path / "absent.h5") == {}
