"""The dataset spec registry: a tiny in-memory spec registered from a test goes through
``create_dataset`` / ``dataset_info`` / ``verify_dataset`` like a built-in one; duplicates are
refused; unregistering and ``temporary_dataset`` leave the registry as it was."""
import dataclasses

import pytest
import torch
from torch.utils.data import TensorDataset

from spikemoe.data import (
    BuildOptions,
    DatasetInfo,
    DatasetSpec,
    create_dataset,
    dataset_info,
    dataset_spec,
    list_datasets,
    register_dataset,
    temporary_dataset,
    unregister_dataset,
)
from spikemoe.data.verify import verify_dataset

BUILT_IN = ["digits-dvs", "cifar10-dvs", "dvs128-gesture", "n-mnist", "cifar10", "cifar100",
            "imagenet", "stdlib-bytes"]


def _build(spec, split, options: BuildOptions):
    """4 train / 2 test images ``[3, 4, 4]`` whose pixels hold their index; labels i % 2."""
    n = 4 if split == "train" else 2
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 4, 4)
    ds = TensorDataset(x, torch.arange(n) % 2)
    ds.options = options  # what create_dataset handed over, for the test to read
    return ds


def _tiny(name="tiny-images", needs_root=False) -> DatasetSpec:
    return DatasetSpec(
        info=DatasetInfo(name, "images", 2, 3, (4, 4), "none", "tests/test_data_spec.py",
                         needs_root=needs_root),
        build=_build, verify=lambda spec, root, deep: ([], [f"in memory, deep={deep}"]))


def test_a_registered_spec_is_built_described_and_verified_through_the_registry():
    assert list_datasets() == BUILT_IN
    with temporary_dataset(_tiny()) as spec:
        assert list_datasets() == [*BUILT_IN, "tiny-images"]
        assert dataset_info("tiny-images") is spec.info and dataset_spec("tiny-images") is spec
        info = dataset_info("tiny-images")
        assert (info.kind, info.num_classes, info.in_channels, info.native_size) == \
            ("images", 2, 3, (4, 4))
        train = create_dataset("tiny-images", "train", T=3, seed=7, augment=False)
        test = create_dataset("tiny-images", "test")
        assert len(train) == 4 and len(test) == 2
        x, y = train[3]
        assert x.shape == (3, 4, 4) and x.sum() == 3 * 16 * 3 and y == 1  # 48 pixels of 3
        assert train.options == BuildOptions(T=3, seed=7, augment=False)  # the rest defaults
        assert train.skipped_files == [] == test.skipped_files  # added by create_dataset
        with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
            create_dataset("tiny-images", "val")
        report = verify_dataset("tiny-images", None, deep=True)
        assert report.ok and report.notes == ["in memory, deep=True"]
    assert list_datasets() == BUILT_IN
    with pytest.raises(ValueError, match=r"unknown dataset 'tiny-images'\..* Known: digits-dvs"):
        dataset_info("tiny-images")


def test_a_spec_that_needs_a_root_is_not_verified_without_one(tmp_path):
    with temporary_dataset(_tiny("tiny-on-disk", needs_root=True)):
        report = verify_dataset("tiny-on-disk", None)
        assert report.problems == ["tiny-on-disk needs --root DIR; expected layout: see "
                                   "tests/test_data_spec.py (tests/test_data_spec.py)"]
        missing = tmp_path / "absent"
        assert verify_dataset("tiny-on-disk", missing).problems[0].startswith(
            f"root {missing} does not exist")
        assert verify_dataset("tiny-on-disk", tmp_path).notes == ["in memory, deep=False"]


def test_a_duplicate_name_is_refused_unless_replace_is_asked():
    with pytest.raises(ValueError, match=r"dataset 'cifar10' is already registered \(card "
                       r"datasets/cifar.md\); pass replace=True to replace it, or "
                       r"unregister_dataset\('cifar10'\) first"):
        register_dataset(_tiny("cifar10"))
    assert dataset_info("cifar10").num_classes == 10  # untouched
    with temporary_dataset(_tiny()), pytest.raises(ValueError, match="already registered"):
        register_dataset(_tiny())
    # replace=True stands in for the original, which comes back in its place afterwards
    original = dataset_spec("cifar10")
    with temporary_dataset(_tiny("cifar10"), replace=True):
        assert dataset_info("cifar10").num_classes == 2 and list_datasets() == BUILT_IN
    assert dataset_spec("cifar10") is original and list_datasets() == BUILT_IN


def test_the_decorator_registers_what_the_function_returns_and_unregister_removes_it():
    try:
        @register_dataset
        def tiny() -> DatasetSpec:
            return _tiny()

        assert callable(tiny) and dataset_info("tiny-images").card == "tests/test_data_spec.py"

        @register_dataset(replace=True)
        def tiny_text() -> DatasetSpec:
            return dataclasses.replace(tiny(), info=dataclasses.replace(tiny().info, kind="text"))

        assert dataset_info("tiny-images").kind == "text"
    finally:
        removed = unregister_dataset("tiny-images")
    assert removed.info.kind == "text" and list_datasets() == BUILT_IN


def test_malformed_specs_are_refused_with_what_is_expected():
    bad_kind = dataclasses.replace(_tiny(), info=dataclasses.replace(_tiny().info, kind="audio"))
    with pytest.raises(ValueError, match=r"kind must be one of \('events', 'images', 'text'\), "
                       "got 'audio'"):
        register_dataset(bad_kind)
    with pytest.raises(TypeError, match="expects a DatasetSpec"):
        register_dataset(lambda: _tiny().info)
    with pytest.raises(ValueError, match="build and verify must be callables"):
        register_dataset(dataclasses.replace(_tiny(), build=None))
    assert list_datasets() == BUILT_IN
