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
