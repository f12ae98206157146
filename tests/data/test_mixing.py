"""Several caches in one run: the label layout, the mix, per-sample / per-batch mixing, DDP shares."""

from __future__ import annotations

import numpy as np
import pytest

from facemtl.data import schema
from facemtl.data.cache import FaceCache
from facemtl.data.mixing import MixedLoader, UnionLayout, epoch_counts, mix_weights, source_names
from facemtl.errors import ConfigError, UnknownNameError
from tests.conftest import write_toy_cache


@pytest.fixture
def three(tmp_path):
    """Three caches of 200 / 100 / 60 train rows, different attribute sets and stored sizes."""
    a = write_toy_cache(tmp_path / "a.h5", n=200, sizes=(16,), attrs=("Male", "Smiling"), splits=np.zeros(200, np.int8))
    b = write_toy_cache(tmp_path / "b.h5", n=100, sizes=(16, 24), attrs=("Smiling", "Eyeglasses"), seed=1, splits=np.zeros(100, np.int8))
    c = write_toy_cache(tmp_path / "c.h5", n=60, sizes=(24,), attrs=("Young",), seed=2, splits=np.zeros(60, np.int8))
    return [FaceCache(p) for p in (a, b, c)]


def rows_by_source(loader) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in loader.caches]
    for batch in loader:
        for s, r in zip(batch["source"].tolist(), batch["index"].tolist()):
            out[s].append(r)
    return out


def test_names_and_weights():
    assert source_names(["x/celeba.h5", "y/celeba.h5", "fer.h5"]) == ["celeba", "celeba-2", "fer"]
    names, sizes = ["a", "b"], [300, 100]
    assert np.allclose(mix_weights("proportional", names, sizes), [0.75, 0.25])
    assert np.allclose(mix_weights("uniform", names, sizes), [0.5, 0.5])
    assert np.allclose(mix_weights("temperature:2", names, sizes), np.sqrt([3, 1]) / np.sqrt([3, 1]).sum())
    assert np.allclose(mix_weights("a=1,b=3", names, sizes), [0.25, 0.75])
    with pytest.raises(UnknownNameError, match="'c'"):
        mix_weights("c=1", names, sizes)
    with pytest.raises(UnknownNameError):
        mix_weights("balanced", names, sizes)
    with pytest.raises(ConfigError, match="temperature"):
        mix_weights("temperature:0", names, sizes)
    with pytest.raises(ConfigError, match="weight 0"):
        mix_weights("a=0,b=0", names, sizes)


def test_epoch_counts_never_ask_a_source_for_more_than_it_holds():
    assert epoch_counts(np.array([0.75, 0.25]), [300, 100]).tolist() == [300, 100]
    assert epoch_counts(np.array([0.5, 0.5]), [300, 100]).tolist() == [100, 100]
    assert epoch_counts(np.array([0.2, 0.8]), [300, 100]).tolist() == [25, 100]


def test_union_layout_matches_attributes_by_name_and_shifts_identities(three):
    lay = UnionLayout.build(three)
    assert lay.attribute_names == ("Male", "Smiling", "Eyeglasses", "Young")
    b = lay.labels_of(1, three[1])
    assert (b["attributes"][:, 0] == -1).all() and (b["attributes"][:, 3] == -1).all()
    assert (b["attributes"][:, 1:3] == three[1].labels["attributes"]).all()
    ids_a = three[0].labels["identity"]
    assert (b["identity"] == three[1].labels["identity"] + ids_a.max() + 1).all()
    assert lay.num_identities == sum(int(c.labels["identity"].max()) + 1 for c in three)


def test_proportional_is_one_exact_pass_over_every_source(three):
    for mix_by, batches in (("sample", np.ceil(360 / 32)), ("batch", np.ceil(200 / 32) + np.ceil(100 / 32) + np.ceil(60 / 32))):
        ld = MixedLoader(three, ["a", "b", "c"], [16], 32, seed=3, mix_by=mix_by)
        got = rows_by_source(ld)
        for c, rows in zip(three, got):
            assert sorted(rows) == list(range(c.num_samples))
        assert len(ld) == int(batches) == len(list(ld))


def test_uniform_draws_equally_each_sample_at_most_once_and_rotates_over_epochs(three):
    ld = MixedLoader(three, ["a", "b", "c"], [16], 30, mix="uniform", seed=1)
    seen: list[set] = [set(), set(), set()]
    for epoch in range(4):
        ld.set_epoch(epoch)
        got = rows_by_source(ld)
        assert [len(r) for r in got] == [60, 60, 60]
        for s, rows in enumerate(got):
            assert len(set(rows)) == len(rows)  # at most once per epoch
            seen[s] |= set(rows)
    assert len(seen[0]) == 200 and len(seen[1]) == 100  # the larger sources' passes run on across epochs


def test_per_sample_batches_mix_the_sources_and_per_batch_batches_do_not(three):
    mixed = MixedLoader(three, ["a", "b", "c"], [16], 40, mix="uniform", mix_by="sample")
    assert max(len(set(b["source"].tolist())) for b in mixed) == 3
    single = MixedLoader(three, ["a", "b", "c"], [16], 40, mix="uniform", mix_by="batch")
    batches = list(single)
    assert all(len(set(b["source"].tolist())) == 1 for b in batches)
    assert sum(len(b["index"]) for b in batches) == 180


def test_images_labels_and_present_follow_the_rows(three):
    ld = MixedLoader(three, ["a", "b", "c"], [16], 64, seed=2)
    lay = ld.layout
    labels = [lay.labels_of(i, c) for i, c in enumerate(three)]
    for batch in ld:
        img = batch["images"][16]
        assert img.shape[1:] == (3, 16, 16)
        src, idx = batch["source"].numpy(), batch["index"].numpy()
        for i in range(3):
            sel = src == i
            assert (batch["attributes"].numpy()[sel] == labels[i]["attributes"][idx[sel]]).all()
            if i < 2:  # stored at 16 px: the pixel that encodes the row survives
                assert (img[sel, 0, 0, 0].numpy() == idx[sel] % 251).all()
        assert batch["present"]["landmarks"] == len(idx)
        assert batch["present"]["attributes"] == len(idx)


def test_a_source_without_the_size_is_resized_in_the_loader(three):
    ld = MixedLoader(three, ["a", "b", "c"], [20], 16, mix="uniform")
    batch = next(iter(ld))
    assert batch["images"][20].shape[1:] == (3, 20, 20)
    assert batch["images"][20].dtype.is_floating_point is False


@pytest.mark.parametrize("mix_by", ["sample", "batch"])
def test_ranks_draw_disjoint_shares_with_the_same_batches(three, mix_by):
    loaders = [MixedLoader(three, ["a", "b", "c"], [16], 16, mix_by=mix_by, mix="uniform", seed=5, rank=r, world_size=2,
                           drop_last=True) for r in range(2)]
    for epoch in range(2):
        got = []
        for ld in loaders:
            ld.set_epoch(epoch)
            got.append(rows_by_source(ld))
        assert len(loaders[0]) == len(loaders[1]) == len(list(loaders[0]))
        for s in range(3):
            assert not set(got[0][s]) & set(got[1][s])
        comp = [[np.bincount(b["source"].numpy(), minlength=3).tolist() for b in ld] for ld in loaders]
        assert comp[0] == comp[1]


def test_same_epoch_same_batches(three):
    ld = MixedLoader(three, ["a", "b", "c"], [16], 32, mix="temperature:2", seed=9)
    ld.set_epoch(2)
    first = [b["index"].tolist() for b in ld]
    second = [b["index"].tolist() for b in ld]
    assert first == second
    ld.set_epoch(3)
    assert [b["index"].tolist() for b in ld] != first


def test_streamed_sources_give_the_same_rows_as_in_memory(three):
    kw = dict(mix="uniform", seed=4)
    ram = rows_by_source(MixedLoader(three, ["a", "b", "c"], [16], 32, in_memory=True, **kw))
    disk = rows_by_source(MixedLoader(three, ["a", "b", "c"], [16], 32, in_memory=False, **kw))
    assert [sorted(r) for r in ram] == [sorted(r) for r in disk]


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("mix_by", ["sample", "batch"])
def test_every_label_image_and_present_count_is_the_rows_own(three, tmp_path, in_memory, mix_by):
    """The batch gathers labels from the concatenated layout arrays and images straight from each
    source: every value must still be the one of (source, row), with partly missing labels."""
    import h5py

    path = tmp_path / "b.h5"
    three[1].close()
    with h5py.File(path, "r+") as f:  # some rows of b lack landmarks or attributes
        lm = f["labels/landmarks"][:]
        lm[::3] = np.nan
        f["labels/landmarks"][:] = lm
        at = f["labels/attributes"][:]
        at[::2] = -1
        f["labels/attributes"][:] = at
    caches = [three[0], FaceCache(path), three[2]]
    ld = MixedLoader(caches, ["a", "b", "c"], [16], 24, mix="temperature:2", mix_by=mix_by, in_memory=in_memory, seed=6)
    ref = [ld.layout.labels_of(i, c) for i, c in enumerate(caches)]
    for batch in ld:
        src, idx = batch["source"].numpy(), batch["index"].numpy()
        assert (np.diff(src) >= 0).all()  # parts in source order
        for k in ld.layout.keys:
            want = np.concatenate([ref[s][k][r:r + 1] for s, r in zip(src, idx)])
            np.testing.assert_array_equal(batch[k].numpy(), want)
            known = ~schema.LABELS[k].is_missing(want)
            assert batch["present"][k] == int(known.sum())
        for s, r, img in zip(src, idx, batch["images"][16].permute(0, 2, 3, 1)):
            if s < 2:  # stored at 16 px
                np.testing.assert_array_equal(img.numpy(), caches[s].read_images(16, r, r + 1)[0])
