"""Curves, selection, save/load, resume, and the streaming accumulators."""

import numpy as np
import pytest
import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

from helpers import StopAt
from isplit import IsplitError
from isplit.analysis import Analysis, analyze
from isplit.analysis.curves import CurveAccumulator, best_point, local_maxima


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=4).eval()


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 3, 32, 32, generator=g)
    y = torch.tensor([0] * 12 + [1] * 3 + [2] * 15)  # class 3 has no images
    return TensorDataset(x, y)


@pytest.fixture(scope="module")
def run(model, data):
    return analyze(model, data, batch_size=8, classes=["a", "b", "c", "d"], model_name="r18")


def test_global_curve_is_image_weighted_mean_of_class_curves(run):
    counts = np.bincount(run.labels, minlength=4)
    assert counts.tolist() == [12, 3, 15, 0]
    weighted = sum(counts[i] * run.per_class[c] for i, c in enumerate("abc")) / counts.sum()
    np.testing.assert_allclose(weighted, run.cui, rtol=1e-10)
    assert np.isnan(run.per_class["d"]).all()
    np.testing.assert_allclose(run.per_image.mean(0), run.cui, rtol=1e-5)


def test_candidates_and_best(run):
    admissible = [p.admissible for p in run.points]
    assert not run.points[-1].admissible  # flatten: not spatial
    i = [p.name for p in run.points].index(run.best)
    assert admissible[i] and run.cui[i] == max(c for c, a in zip(run.cui, admissible) if a)
    assert run.best in run.candidates


def test_budgets_restrict_the_best_split(model, data, run):
    budget = sorted(p.bytes for p in run.points)[len(run.points) // 2]
    small = analyze(model, data, batch_size=8, max_bytes=budget)
    best = small.points[small.point_names.index(small.best)]
    assert best.bytes <= budget
    assert all(p.bytes <= budget for p in small.points if p.admissible)
    flops = analyze(model, data, batch_size=8, max_head_flops=run.points[3].head_flops)
    assert flops.point_names.index(flops.best) <= 3


def test_local_maxima():
    assert local_maxima([1, 3, 2, 2, 5, 4]) == [1, 4]
    assert local_maxima([5, 1, 2]) == [0, 2]  # end points count when higher than the neighbour
    assert local_maxima([1, 2, 2, 1]) == [1]  # a plateau counts once, at its first point
    assert local_maxima([1, 9, 3, 4], mask=[True, False, True, True]) == [3]
    assert best_point([1, 9, 3, 4], [True, False, True, True]) == 3
    assert best_point([1, 2], [False, False]) is None


def test_save_load_round_trip(run, tmp_path):
    run.save(tmp_path)  # the data only: the commands draw curves.png (tests/report/test_outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.json", "per_image.npz"]
    for f in ("curves.json", "per_image.npz"):
        assert (tmp_path / f).stat().st_size > 0
    back = Analysis.load(tmp_path)
    np.testing.assert_allclose(back.cui, run.cui)
    np.testing.assert_array_equal(back.per_image, run.per_image)
    np.testing.assert_array_equal(back.labels, run.labels)
    np.testing.assert_array_equal(back.predictions, run.predictions)
    assert back.points == run.points
    assert back.candidates == run.candidates and back.best == run.best
    assert back.per_class.keys() == run.per_class.keys()
    np.testing.assert_allclose(back.per_class["a"], run.per_class["a"])
    assert back.to_json() == run.to_json()


def test_load_without_per_image_curves_is_a_clear_error(run, tmp_path):
    run.save(tmp_path)
    (tmp_path / "per_image.npz").unlink()
    with pytest.raises(IsplitError, match="per-image"):
        Analysis.load(tmp_path)


def test_accumulators_merge_exactly(run):
    cui, labels = run.per_image, run.labels
    a, b, whole = (CurveAccumulator(cui.shape[1], 4) for _ in range(3))
    a.add(cui[:13], labels[:13], labels[:13], np.arange(13))
    b.add(cui[13:], labels[13:], labels[13:], np.arange(13, 30))
    whole.add(cui, labels, labels)
    merged = b.merge(a)
    np.testing.assert_allclose(merged.global_curve(), whole.global_curve(), rtol=1e-12)
    np.testing.assert_array_equal(merged.arrays()["cui"], cui)
    restored = CurveAccumulator.from_state(merged.state())
    np.testing.assert_array_equal(restored.sums, merged.sums)


def test_dataloader_input_and_limit(model, data, run):
    res = analyze(model, DataLoader(data, batch_size=7), limit=20)
    assert res.per_image.shape == (20, len(run.points))
    np.testing.assert_allclose(res.per_image, run.per_image[:20], rtol=1e-4, atol=1e-12)


def test_interrupted_run_resumes_from_its_checkpoint(model, data, run, tmp_path):
    ckpt = tmp_path / "checkpoint.npz"
    with pytest.raises(KeyboardInterrupt):
        analyze(
            model,
            StopAt(data, 20),
            batch_size=8,
            classes=list("abcd"),
            checkpoint=ckpt,
            checkpoint_seconds=0,
        )
    assert ckpt.exists()
    resumed = analyze(
        model, StopAt(data, 3), batch_size=8, classes=list("abcd"), checkpoint=ckpt
    )  # would raise if it re-read an image before 16
    np.testing.assert_allclose(resumed.per_image, run.per_image, rtol=1e-5, atol=1e-12)
    assert not ckpt.exists()


def test_bad_options(model, data):
    with pytest.raises(IsplitError, match="unknown split point"):
        analyze(model, data, points=["nope"])
    with pytest.raises(IsplitError, match="target"):
        analyze(model, data, target="other")
    with pytest.raises(IsplitError, match="empty"):
        analyze(model, TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0).long()))


def test_explicit_points_are_put_in_network_order(model, data):
    res = analyze(model, data, points=["layer2.0.relu_1", "maxpool"], batch_size=16)
    assert res.point_names == ["maxpool", "layer2.0.relu_1"]


def test_official_protocol_uses_the_authors_layers_and_predicted_class(model, data):
    res = analyze(model, data, protocol="official", batch_size=16)
    assert res.settings["target"] == "predicted"
    assert res.point_names[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert len(res.point_names) == 4 + 8  # resnet18: 8 basic blocks


class _SlowImages(torch.utils.data.Dataset):
    """A data set that takes ``delay`` seconds per image, like a slow decoder."""

    def __init__(self, base, delay: float):
        self.base, self.delay = base, delay

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        import time

        time.sleep(self.delay)
        return self.base[i]


def test_timing_tells_a_slow_data_set_from_a_fast_one(model, data, run, capsys):
    from isplit.cli.analyze import DATA_BOUND_SHARE, _print_pace

    fast = run.timing
    assert fast["images"] == len(data) and fast["images_per_s"] > 0
    assert 0 <= fast["data_wait_seconds"] <= fast["seconds"]
    slow = analyze(model, _SlowImages(data, 0.1), batch_size=8, workers=0).timing
    # 30 images, 0.1 s each: about 3 s of loading (2.2 s outside the first batch, which is
    # loaded before the loop starts), against a few hundredths of a second of compute each batch
    # (a few tenths on a machine busy with other work: the share stays above the note's bound)
    assert slow["images"] == len(data)
    assert slow["data_wait_seconds"] >= 2.0 and slow["data_wait_share"] >= DATA_BOUND_SHARE
    assert slow["data_wait_share"] > fast["data_wait_share"]
    _print_pace(slow, workers=0)
    out, err = capsys.readouterr()
    assert f"analysed {len(data)} images in" in out
    assert "waited for the data set" in err and "--workers, now 0" in err
    _print_pace(fast, workers=None)
    assert "waited for the data set" not in capsys.readouterr().err
