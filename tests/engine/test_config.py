"""Configs, recipes and schedules."""

from __future__ import annotations

import math

import pytest

from facemtl.engine.config import RunConfig, apply_overrides, load_recipe, recipe_names, to_toml
from facemtl.engine.schedules import lr_multiplier
from facemtl.errors import ConfigError, MissingFileError, UnknownNameError

SEED_RECIPES = {"mcfa", "tcdcn", "dynamic-fr-fer", "gender-glasses", "celeba40", "default"}


def test_recipes_listed_and_parse():
    assert set(recipe_names()) >= SEED_RECIPES
    for name in recipe_names():
        cfg = load_recipe(name)
        assert cfg.name == name and cfg.written_for and cfg.description


def test_unknown_recipe_lists_valid():
    with pytest.raises(UnknownNameError, match="tcdcn"):
        load_recipe("nope")
    with pytest.raises(MissingFileError):
        load_recipe("missing.toml")


def test_overrides_and_toml_round_trip(tmp_path):
    cfg = apply_overrides(load_recipe("tcdcn"), {"train.epochs": "3", "tasks.names": ["landmarks", "smile"], "train.lr": None})
    assert cfg.train.epochs == 3 and cfg.tasks.names == ("landmarks", "smile")
    assert cfg.train.lr == load_recipe("tcdcn").train.lr
    p = tmp_path / "r.toml"
    p.write_text(to_toml(cfg))
    assert load_recipe(str(p)) == cfg


def test_extends_takes_the_base_and_lays_the_file_on_top(tmp_path):
    """``extends``: the base recipe's settings, this file's on top table by table."""
    s2r, default = load_recipe("synth-to-real"), load_recipe("default")
    assert s2r.name == "synth-to-real" and s2r.train == default.train and s2r.model == default.model
    assert s2r.augment == default.augment and s2r.mine == default.mine and s2r.data == default.data
    (tmp_path / "mine.toml").write_text('name = "mine"\nextends = "default"\n[model.options]\nmixstyle = 0.0\n'
                                        '[train]\nepochs = 5\n[tasks]\nnames = ["landmarks"]\n')
    mine = load_recipe(str(tmp_path / "mine.toml"))
    assert mine.model.options == {"mixstyle": 0.0, "ibn": True}  # the base's ibn is kept beside the new value
    assert mine.train.epochs == 5 and mine.train.lr == default.train.lr and mine.tasks.names == ("landmarks",)
    (tmp_path / "more.toml").write_text('name = "more"\nextends = "mine.toml"\n[train]\nlr = 0.01\n')
    more = load_recipe(str(tmp_path / "more.toml"))  # a file beside this one, itself extending a packaged recipe
    assert (more.name, more.train.epochs, more.train.lr, more.model.options["ibn"]) == ("more", 5, 0.01, True)


@pytest.mark.parametrize("body, error, match", [
    ('extends = "defualt"', UnknownNameError, "Did you mean 'default'"),
    ('extends = "gone.toml"', MissingFileError, "extends .*gone.toml, which does not exist"),
    ('extends = "r.toml"', ConfigError, "goes round in a circle"),
    ("extends = 3", ConfigError, "'extends' must be a recipe name or a TOML file"),
])
def test_extends_errors_name_the_file(tmp_path, body, error, match):
    (tmp_path / "r.toml").write_text(body + "\n")
    with pytest.raises(error, match=match):
        load_recipe(str(tmp_path / "r.toml"))


def test_bad_keys_and_types():
    with pytest.raises(ConfigError, match="unknown setting"):
        apply_overrides(RunConfig(), {"train.epoch": 3})
    with pytest.raises(ConfigError, match="must be int"):
        apply_overrides(RunConfig(), {"train.epochs": "three"})
    with pytest.raises(ConfigError, match="unknown key"):
        RunConfig.from_dict({"trian": {}})


def test_digest_tracks_network_shape_only():
    a = RunConfig()
    assert a.digest() == apply_overrides(a, {"train.epochs": 99}).digest()
    assert a.digest() != apply_overrides(a, {"model.backbone": "tcdcn"}).digest()
    assert a.digest() != apply_overrides(a, {"tasks.names": ["landmarks"]}).digest()


def test_schedules():
    kw = dict(total_steps=100, warmup_steps=0, step_size=2, gamma=0.5)
    assert lr_multiplier("cosine", epoch=0, step=0, **kw) == pytest.approx(1.0)
    assert lr_multiplier("cosine", epoch=0, step=50, **kw) == pytest.approx(0.5)
    assert lr_multiplier("cosine", epoch=0, step=100, **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr_multiplier("step", epoch=5, step=0, **kw) == pytest.approx(0.25)  # 0.5 ** (5 // 2)
    # seed 004: L_i = L_{i-1} (1 - 1/(i+1)) -> base / (e + 1)
    lr = 1.0
    for e in range(1, 6):
        lr *= 1 - 1 / (e + 1)
        assert lr_multiplier("inverse-epoch", epoch=e, step=0, **kw) == pytest.approx(lr)
    assert lr_multiplier("constant", epoch=3, step=7, total_steps=10, warmup_steps=10) == pytest.approx(0.8)
    with pytest.raises(UnknownNameError):
        lr_multiplier("linear", epoch=0, step=0, total_steps=1)
    assert math.isclose(lr_multiplier("seed004", epoch=0, step=0, **kw), 1.0)


def test_other_tasks_drop_the_recipes_select_when_its_task_is_gone():
    """The default recipe keeps best.pt by landmarks/nme; a run of it without landmarks follows the
    summed validation loss, and a --select given with the tasks still wins."""
    default = load_recipe("default")
    assert default.train.select == "landmarks/nme"
    assert apply_overrides(default, {"tasks.names": ["smile"]}).train.select == "val_loss"
    assert apply_overrides(default, {"tasks.names": "landmarks,smile"}).train.select == "landmarks/nme"
    assert apply_overrides(default, {"tasks.names": ["smile"], "train.select": "smile/f1"}).train.select == "smile/f1"
    assert apply_overrides(default, {"train.epochs": 2}).train.select == "landmarks/nme"


# -- another backbone, in the config layer (issue 14 item 14) --------------------------------------------
def test_another_backbone_drops_the_recipes_model_settings_before_the_overrides():
    tcdcn = load_recipe("tcdcn")
    assert tcdcn.model.options and tcdcn.model.input_size  # the recipe's, chosen for its tcdcn backbone
    cfg = apply_overrides(tcdcn, {"model.backbone": "small", "model.options.width": 8})
    assert cfg.model.options == {"width": 8} and cfg.model.input_size is None  # --set kept, recipe's dropped
    cfg = apply_overrides(tcdcn, {"model.backbone": "small", "model.input_size": 48})
    assert cfg.model.input_size == 48 and cfg.model.options == {}
    same = apply_overrides(tcdcn, {"model.backbone": "tcdcn"})  # the recipe's own backbone keeps its settings
    assert same.model == tcdcn.model


def test_cli_backbone_and_set_reach_the_config():
    from facemtl.cli.train import _parse_set, build_config

    cfg = build_config("tcdcn", overrides={"model.backbone": "small", **_parse_set(["model.options.width=8"])})
    assert cfg.model.options == {"width": 8}


# -- damaged recipe and run configuration files (issue 14 item 8) ----------------------------------------
@pytest.mark.parametrize("content, match", [
    (b'name = "x"\n[train]\nepochs = 3\nlr = = 2\n', r"r\.toml is not valid TOML: .*line 4"),
    (b'name = "x"\n# caf\xe9\n', r"r\.toml is not UTF-8 text \(byte 0xe9 on line 2\)"),
    (b'[train]\nepochs = "many"\n', r"r\.toml \[train\]: 'epochs' must be int"),
])
def test_damaged_recipe_names_file_and_line(tmp_path, content, match):
    p = tmp_path / "r.toml"
    p.write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        load_recipe(str(p))


def test_recipe_that_is_a_folder(tmp_path):
    (tmp_path / "d.toml").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        load_recipe(str(tmp_path / "d.toml"))


def test_resume_with_a_corrupt_config_toml_is_one_clear_line(tmp_path):
    from typer.testing import CliRunner

    from facemtl.cli.main import app

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_bytes(b'name = "x"\n[model\nbackbone = "small"\n')
    r = CliRunner().invoke(app, ["train", "--resume", "--out", str(run)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "config.toml is not valid TOML" in r.output and "line 2" in r.output
