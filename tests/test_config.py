"""The Fashion-MNIST facts fmnist-yolo relies on, and the error types."""

import warnings

import pytest

from fmnist_yolo import config, errors


def test_class_folders_sort_in_label_order():
    assert sorted(config.CLASS_DIRS) == list(config.CLASS_DIRS) and len(config.CLASS_DIRS) == 10
    assert config.CLASS_DIRS[0] == "0_tshirt_top" and config.CLASS_DIRS[9] == "9_ankle_boot"


def test_own_keys_do_not_collide_with_ultralytics():
    from ultralytics.cfg import DEFAULT_CFG_DICT

    assert not set(config.OWN_TRAIN_KEYS) & set(DEFAULT_CFG_DICT)
    assert not {"val_size", "split_seed"} & set(DEFAULT_CFG_DICT)


def test_errors_are_domain_errors_the_cli_prints():
    for cls in (errors.ConfigError, errors.DataError, errors.IDXError, errors.ChecksumError, errors.RunError):
        assert issubclass(cls, errors.FmnistError) and issubclass(cls, ValueError)
    with pytest.warns(errors.FmnistWarning, match="heads up"):
        errors.warn("heads up")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # silenceable like any warning: here turned into an error
        with pytest.raises(errors.FmnistWarning):
            errors.warn("x")


# --- the argument schema: one declaration per option, from which help, checks and defaults are drawn ----------


def test_each_command_declares_each_key_once_and_own_keys_stay_apart():
    from collections import Counter

    from ultralytics.cfg import DEFAULT_CFG_DICT

    pairs = Counter((c, o.key) for o in config.OPTIONS for c in o.commands)
    assert max(pairs.values()) == 1, [p for p, n in pairs.items() if n > 1]
    assert not set(config.options("tune")) - set(config.OWN_TRAIN_KEYS) - {"name"} & set(DEFAULT_CFG_DICT)
    assert all(o.help and "\n" not in o.help for o in config.OPTIONS)


def test_config_defaults_are_drawn_from_the_schema():
    """DEFAULTS holds each option's one default (config.Config keeps no second copy); Config.verify is read."""
    import dataclasses
    import inspect

    from fmnist_yolo.data.prepare import prepare

    for f in dataclasses.fields(config.Config):
        if f.name != "raw_dir":
            assert {o.default for o in config.OPTIONS if o.key == f.name} == {getattr(config.DEFAULTS, f.name)}
    assert inspect.signature(prepare).parameters["verify"].default is config.DEFAULTS.verify


SIGNATURES = {  # command -> the library function it calls; keys whose default the CLI alone decides are left out
    "prepare": ("fmnist_yolo.data.prepare", "prepare", set()),
    "check": ("fmnist_yolo.data.check", "check", set()),
    "reproduce": ("fmnist_yolo.reproduction", "reproduce", set()),
    "val": ("fmnist_yolo.evaluation.evaluate", "evaluate", set()),
    "compare": ("fmnist_yolo.analysis.compare", "compare", {"csv"}),  # the CLI writes compare.csv unless told not to
    "report": ("fmnist_yolo.analysis.report", "report", set()),
    "export": ("fmnist_yolo.deployment.export", "export", set()),
}


@pytest.mark.parametrize("command", sorted(SIGNATURES))
def test_library_signatures_default_to_the_schema(command):
    """Every option a library function takes defaults to the schema's value: the help cannot say another."""
    import importlib
    import inspect

    module, name, cli_only = SIGNATURES[command]
    params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    compared = 0
    for key, option in config.options(command).items():
        if key in params and key not in cli_only and params[key].default is not inspect.Parameter.empty:
            assert params[key].default == option.default, (command, key)
            compared += 1
    assert compared


@pytest.mark.parametrize(
    "command, value, message",
    [
        ("prepare", -1, "val_size=-1 is out of range: val_size must be an integer >= 0"),
        ("prepare", "x", "val_size='x': expected an integer"),
        ("report", 2.5, "top=2.5: expected an integer"),
        ("tune", 0, "iterations=0 is out of range: iterations must be an integer >= 1"),
        ("train", "top5", "select_on must be one of top1_top5, top1, found 'top5'"),
        ("train", "yes", "mlflow='yes': expected True, False or nothing"),
    ],
)
def test_a_value_out_of_type_or_range_is_one_line_naming_the_key(command, value, message):
    key = message.split("=")[0].split(" ")[0]
    with pytest.raises(errors.ConfigError) as caught:
        config.check_options(command, {key: value})
    assert str(caught.value) == message


def test_unknown_key_suggests_the_closest_or_lists_what_is_allowed():
    with pytest.raises(errors.ConfigError, match=r"^unknown argument 'epocs'; did you mean 'epochs'\?$"):
        config.unknown_key({"epocs": 1}, {"epochs", "batch"})
    with pytest.raises(errors.ConfigError, match=r"^unknown recipes argument 'x'; it takes none$"):
        config.unknown_key(["x"], (), "recipes argument")
    with pytest.raises(errors.ConfigError, match=r"^unknown argument 'zzz' \(see it\)$"):
        config.unknown_key(["zzz"], {"epochs"}, otherwise=" (see it)")
    config.unknown_key(["epochs"], {"epochs"})  # a known key: nothing
