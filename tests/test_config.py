"""The typed configuration: one declaration per setting, lists derived from roles, no writes after parsing.

Two scans read the source with `ast` (as tests/test_architecture.py reads imports): no attribute of a
configuration is assigned anywhere in the tree, and no list of setting keys (flag names) is written
outside training/config.py and training/options.py.
"""
import ast
import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from data import CITYSCAPES, NYUV2
from training import config as config_module
from training import engine
from training.config import (BASELINE_MATCH, COMPARED_BY_PRESENCE, KIND_OF_RUN, NOT_COMPARED, RESTORED, RESTORED_UNLESS_GIVEN, RESUMABLE,
                             SUMMARISED, RunConfig, keys_with, rank_zero_only_values)
from training.options import build_parser, parse_options
from training.recorder import Recorder, read_run
from utils.errors import UserInputError

REPO_ROOT = Path(__file__).resolve().parent.parent
# Settings without a flag: the entry script sets the dataset, --seeds the group; the model family gets
# its flag with the second family.
KEYS_WITHOUT_FLAG = {"dataset", "group"}
FLAG_LISTS_ALLOWED_IN = {"training/config.py", "training/options.py"}
SKIPPED_FOLDERS = {"tests", "exps", "__pycache__", ".git"}


def project_sources():
    """(relative path, source) of every .py file of the project outside tests/."""
    for folder, subfolders, files in os.walk(REPO_ROOT):
        subfolders[:] = [name for name in subfolders if name not in SKIPPED_FOLDERS and not name.startswith(".")]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, REPO_ROOT), Path(path).read_text()


def configuration_writes(source):
    """Line numbers of the statements in `source` that write an attribute of something named like a
    configuration (config, options, ...: any name in the written attribute's chain) or call setattr /
    object.__setattr__ on one."""
    def names_configuration(node):
        while isinstance(node, ast.Attribute):
            if "config" in node.attr or "options" in node.attr:
                return True
            node = node.value
        return isinstance(node, ast.Name) and ("config" in node.id or "options" in node.id)

    lines = []
    for node in ast.walk(ast.parse(source)):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Call) and node.args:
            function = node.func
            if (isinstance(function, ast.Name) and function.id == "setattr") or (
                    isinstance(function, ast.Attribute) and function.attr == "__setattr__"):
                targets = [ast.Attribute(value=node.args[0], attr="_", ctx=ast.Store())]
        lines += [node.lineno for target in targets if isinstance(target, ast.Attribute) and names_configuration(target)]
    return lines


def setting_key_lists(source, keys):
    """Line numbers of the tuples, lists and sets of two or more string constants in `source` that are
    all setting keys."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2
            and all(isinstance(item, ast.Constant) and item.value in keys for item in node.elts)]


def test_the_scans_find_what_they_look_for():
    written = ("options.height = 3\nconfig.data.width += 1\ncontext.config.run = None\n"
               "setattr(options, 'x', 1)\nobject.__setattr__(run_config, 'x', 1)\nother.height = 3\n")
    assert configuration_writes(written) == [1, 2, 3, 4, 5]
    listed = 'A = ("height", "width")\nB = ["lp", "not a key"]\nC = {"epochs", "lr"}\n'
    assert setting_key_lists(listed, set(keys_with())) == [1, 3]


def test_no_configuration_is_written_after_parsing():
    found = {path: lines for path, source in project_sources() if (lines := configuration_writes(source))}
    assert found == {}


def test_no_list_of_flag_names_outside_the_configuration_and_the_parser():
    keys = set(keys_with())
    found = {path: lines for path, source in project_sources()
             if path not in FLAG_LISTS_ALLOWED_IN and (lines := setting_key_lists(source, keys))}
    assert found == {}


def test_every_flag_is_one_setting_and_every_setting_but_two_has_a_flag():
    for profile in (CITYSCAPES, NYUV2):
        destinations = {action.dest for action in build_parser(profile)._actions if action.dest != "help"}
        assert destinations == set(keys_with()) - KEYS_WITHOUT_FLAG
    assert len(keys_with()) == len(set(keys_with()))


def test_the_derived_lists_are_the_ones_the_repository_used_to_keep_by_hand():
    assert set(keys_with(RESUMABLE)) == {
        "epochs", "resume", "workers", "cache_dir", "no_cache", "notqdm", "no_plots", "show", "view_only", "run_only",
        "time_inf", "cpu", "input_path", "save_path", "deterministic", "tensorboard", "amp", "channels_last",
        "gpu_augment", "compile", "peer_timeout"}
    assert set(keys_with(SUMMARISED)) == {
        "single_task", "group", "balancing", "gradnorm_form", "enc_layers", "num_classes", "height", "width", "epochs",
        "batch_size", "lr", "alpha", "gamma", "label_smoothing", "lp", "tdep_loss", "tseg_loss", "batch_norm",
        "wider_ttnet", "seed", "demo", "consistency", "dwa_temperature", "pcgrad_weighting", "model", "tasks", "no_augment",
        "distill_from", "adaptor_lr"}
    assert rank_zero_only_values() == {"notqdm": True, "time_inf": False, "show": False, "view_only": False}
    assert keys_with(RESTORED) == ("height", "width", "num_classes", "ignore_index", "tasks")  # tasks: new with --tasks
    assert set(keys_with(RESTORED_UNLESS_GIVEN)) == {"input_path", "batch_size"}
    assert set(keys_with(BASELINE_MATCH)) == {"dataset", "num_classes", "height", "width", "enc_layers"}
    assert keys_with(KIND_OF_RUN) == ("dataset", "single_task", "distill_from", "demo")
    assert keys_with(COMPARED_BY_PRESENCE) == ("distill_from",)
    not_compared = set(keys_with(NOT_COMPARED))
    assert {"seed", "seeds", "group", "save_path", "input_path", "workers", "cache_dir", "no_cache", "amp",
            "channels_last", "gpu_augment", "compile", "cpu", "notqdm"} <= not_compared
    assert not not_compared & {"lr", "epochs", "balancing", "alpha", "gamma", "height", "enc_layers", "single_task",
                               "demo", "dataset", "lp"}


def test_an_unknown_role_is_refused_where_it_is_declared():
    with pytest.raises(ValueError, match="roles \\['resumeable'\\]"):
        config_module.setting(1, "resumeable")


def test_the_configuration_is_frozen_and_changes_make_a_new_one():
    config = parse_options(CITYSCAPES, ["--epochs", "3"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.optimization.epochs = 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.data = None
    longer = config.replace(epochs=5, seed=2)
    assert (config["epochs"], config["seed"]) == (3, 0)
    assert (longer.optimization.epochs, longer.optimization.seed, longer.explicit) == (5, 2, ("epochs",))
    assert longer.data == config.data and longer.model is not None
    with pytest.raises(KeyError, match="no setting \\['epoch'\\]"):
        config.replace(epoch=5)
    with pytest.raises(KeyError):
        config["epoch"]


def test_parsing_fills_the_sections_the_entry_script_describes():
    config = parse_options(NYUV2, ["--uncertainty_weights", "--seeds", "1", "2", "--enc_layers", "18", "--no_amp"])
    assert config.data.dataset == "nyu" and (config.data.height, config.data.width) == (288, 384)
    assert config.balancing.method == "uncertainty" and config.model.xtask.enc_layers == 18
    assert config.optimization.seeds == (1, 2) and config.speed.amp is False and config.speed.channels_last == "auto"
    assert config.model.arguments(13) == {"enc_layers": 18, "num_classes": 13, "batch_norm": False,
                                          "wider_ttnet": False, "single_task": None}
    assert config.explicit == ("amp", "balancing", "enc_layers", "seeds")


def test_config_json_round_trips_and_an_older_file_takes_the_defaults_it_lacks():
    config = parse_options(CITYSCAPES, ["--gradnorm", "--gradnorm_form", "original", "--seeds", "0", "1", "-b", "4"])
    content = json.loads(json.dumps(config.to_json()))
    assert content["balancing"] == {"method": "gradnorm", "gradnorm_alpha": 0.16, "gradnorm_form": "original",
                                    "dwa_temperature": 2.0, "pcgrad_weighting": "none"}
    assert RunConfig.from_json(content, parse_options(CITYSCAPES, [])) == config
    older = {"data": {"dataset": "cityscapes", "height": 64, "retired_setting": 1}, "explicit": ["height"]}
    restored = RunConfig.from_json(older, parse_options(CITYSCAPES, ["--lr", "0.5"]))
    assert (restored["height"], restored["width"], restored["lr"], restored.explicit) == (64, 256, 0.5, ("height",))
    flat = {"height": 96, "balancing": "uncertainty", "seeds": [3], "explicit": ["height"]}
    restored = RunConfig.from_json(flat, parse_options(CITYSCAPES, []))
    assert (restored.data.height, restored.balancing.method, restored.optimization.seeds) == (96, "uncertainty", (3,))
    with pytest.raises(ValueError, match="expected a JSON object"):
        RunConfig.from_json(["height"], config)


def write_folder(folder, content=None, status=None, results=None):
    """An experiment folder holding the given config.json content, status and results.json."""
    os.makedirs(folder / "checkpoints")
    for name, value in (("config.json", content), ("results.json", results)):
        if value is not None:
            (folder / name).write_text(value if isinstance(value, str) else json.dumps(value))
    if status is not None:
        (folder / "status").write_text(status + "\n")
    return folder


def test_read_run_reads_what_the_recorder_writes(tmp_path):
    config = parse_options(NYUV2, ["--save_path", str(tmp_path), "--epochs", "2", "--uncertainty_weights"])
    parts = engine.build_training(config.replace(enc_layers=18), torch.device("cpu"), 13)
    recorder = Recorder.start(config, torch.device("cpu"), parts, {}, torch.Generator())
    record = read_run(recorder.folder)
    assert record.config == config and record.status == "running" and not record.finished
    assert (record.history, record.results, record.checkpoints) == ((), None, ())
    recorder.write_status("finished")
    assert read_run(recorder.folder).finished


def test_read_run_of_older_and_damaged_folders(tmp_path):
    old = write_folder(tmp_path / "001", {"options": {"input_path": "data/nyu", "num_classes": 13, "height": 64}},
                       results={"metrics": {"abs": 0.5}})
    record = read_run(old)
    assert (record.config.data.dataset, record.config["height"], record.config["single_task"]) == ("nyu", 64, "depth")
    assert record.status is None and record.finished
    assert read_run(write_folder(tmp_path / "002")).config is None
    for name, content, message in (("003", "{not json", "config.json cannot be read"),
                                   ("004", "[1, 2]", "config.json is not a JSON object"),
                                   ("005", {"device": "cpu"}, "config.json holds no configuration"),
                                   ("006", {"config": {"data": {"dataset": "kitti"}}}, "dataset 'kitti' is none of")):
        with pytest.raises(UserInputError, match=message):
            read_run(write_folder(tmp_path / name, content))


def test_single_task_baselines_take_the_original_single_task_adam_betas_unless_given():
    assert (parse_options(CITYSCAPES, [])["b1"], parse_options(CITYSCAPES, [])["b2"]) == (0.9, 0.99)
    baseline = parse_options(NYUV2, ["--single_task", "depth"])
    assert (baseline["b1"], baseline["b2"]) == (0.9, 0.999) and "b2" not in baseline.explicit
    given = parse_options(NYUV2, ["--single_task", "segmentation", "--b2", "0.95"])
    assert (given["b1"], given["b2"]) == (0.9, 0.95)
    optimizer = engine.build_training(baseline.replace(enc_layers=18), torch.device("cpu"), 13).optimizer
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999)
