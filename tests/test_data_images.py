"""Image datasets: CIFAR in torchvision's pickle format and an ImageNet ImageFolder tree, the
recipe transforms, class numbering shared by train and val, and the missing-data errors."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets as tvd
from torchvision.datasets import cifar as cifar_module

from spikemoe.data import collate_time_major, create_dataset, dataset_spec


def _fake_cifar10(root, n=6):
    """cifar-10-batches-py/ with real-format pickles (torchvision's MD5 check is patched out)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(range(n))}
        (folder / name).write_bytes(pickle.dumps(entry))
    meta = {"label_names": [f"c{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))


def test_cifar10_eval_is_exact_normalisation_and_train_augments(tmp_path, monkeypatch):
    _fake_cifar10(tmp_path)
    monkeypatch.setattr(cifar_module, "check_integrity", lambda *a: True)  # fake bytes, real format
    test = create_dataset("cifar10", "test", root=tmp_path)
    x, y = test[2]
    spec = dataset_spec("cifar10")
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (spec.mean, spec.std))
    raw = torch.from_numpy(test.data[2]).permute(2, 0, 1).float() / 255  # HWC uint8 -> CHW
    assert x.shape == (3, 32, 32) and y == 2
    torch.testing.assert_close(x, (raw - mean) / std)
    assert torch.equal(test[2][0], x)  # no randomness at evaluation
    train = create_dataset("cifar10", "train", root=tmp_path)
    torch.manual_seed(0)
    draws = [train[0][0] for _ in range(4)]
    assert all(d.shape == (3, 32, 32) for d in draws) and not torch.equal(draws[0], draws[1])
    assert len(train) == 30  # 5 batches of 6
    assert create_dataset("cifar10", "test", root=tmp_path, size=64)[0][0].shape == (3, 64, 64)
    xb, yb = collate_time_major([test[0], test[1]])
    assert xb.shape == (2, 3, 32, 32) and yb.tolist() == [0, 1]


def test_missing_cifar_names_the_layout_and_does_not_download(tmp_path, monkeypatch):
    monkeypatch.setattr(tvd.CIFAR100, "download", lambda self: pytest.fail("download attempted"))
    with pytest.raises(FileNotFoundError) as e:
        create_dataset("cifar100", "train", root=tmp_path)
    for part in (str(tmp_path), "cifar-100-python", "prepare_cifar.py", "download=True"):
        assert part in str(e.value)
    with pytest.raises(ValueError, match="needs root=DIR"):
        create_dataset("cifar10", "train")


def _imagenet(root, train=("n01440764", "n01443537"), val=("n01443537",)):
    for split, classes in (("train", train), ("val", val)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                img = np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8)
                Image.fromarray(img).save(root / split / c / f"{c}_{i}.png")


def test_imagenet_val_keeps_the_train_class_numbering(tmp_path):
    _imagenet(tmp_path)
    train = create_dataset("imagenet", "train", root=tmp_path, size=32)
    val = create_dataset("imagenet", "test", root=tmp_path, size=32)
    assert [y for _, y in train.samples] == [0, 0, 1, 1]
    assert [y for _, y in val.samples] == [1, 1]  # not renumbered to 0: val lacks class 0
    x, _ = val[0]
    assert x.shape == (3, 32, 32) and torch.equal(val[0][0], x)
    assert train[0][0].shape == (3, 32, 32)
    assert train.skipped_files == [] == val.skipped_files  # the attribute every dataset has


def test_imagenet_bad_layouts_are_explained(tmp_path):
    _imagenet(tmp_path / "a", val=("n01440764", "n09999999"))
    with pytest.raises(ValueError, match=r"\['n09999999'\] that train/ lacks.*n01440764, n014435"):
        create_dataset("imagenet", "test", root=tmp_path / "a")
    _imagenet(tmp_path / "b", train=("n01440764", "goldfish"))
    with pytest.raises(ValueError, match="'goldfish'.*not a WordNet ID.*n01440764"):
        create_dataset("imagenet", "train", root=tmp_path / "b")
    with pytest.raises(FileNotFoundError, match=r"no folder .*c/train.*ROOT/train/<wnid>/\*\.JPEG"):
        create_dataset("imagenet", "train", root=tmp_path / "c")
    with pytest.raises(ValueError, match="cannot be downloaded"):
        create_dataset("imagenet", "train", root=tmp_path / "a", download=True)
