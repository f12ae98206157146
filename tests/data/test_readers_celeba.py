"""CelebA reader: both layouts, the crop transforms, torchvision parity, bad input, --check, resume."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from facemtl.data.cache import CacheWriter, FaceCache, partial_path, shard_rows
from facemtl.data.readers import _plan, build_plan, prepare_dataset
from facemtl.data.readers._images import square_window
from facemtl.data.readers.celeba import wild_window
from facemtl.errors import DataFormatError, MissingFileError

SIZES = (32, 48)


def prep(root: Path, out: Path, **kw) -> FaceCache:
    kw.setdefault("sizes", SIZES)
    kw.setdefault("workers", 1)
    prepare_dataset("celeba", out, root=root, **kw)
    return FaceCache(out)


def anno(root: Path, name: str) -> Path:
    return next(root.rglob(name))


def test_official_and_torchvision_layouts_agree(make_celeba, tmp_path: Path) -> None:
    a = prep(make_celeba("off"), tmp_path / "a.h5")
    b = prep(make_celeba("tv", layout="torchvision"), tmp_path / "b.h5", workers=2)
    for k in ("attributes", "identity", "landmarks", "face"):
        np.testing.assert_array_equal(a.labels[k], b.labels[k])
    np.testing.assert_array_equal(a.split, b.split)
    np.testing.assert_array_equal(a.read_images(32, 0, 12), b.read_images(32, 0, 12))
    assert a.num_samples == 12 and a.attribute_names[0] == "5_o_Clock_Shadow" and len(a.attribute_names) == 40
    assert a.provenance["variant"] == "aligned" and a.provenance["files"]["attributes"] == "Anno/list_attr_celeba.txt"


def test_aligned_centre_square_and_landmarks(make_celeba, celeba_truth, tmp_path: Path) -> None:
    root = make_celeba()
    c = prep(root, tmp_path / "a.h5")
    recs = celeba_truth(12)
    lm = np.stack([r.landmarks_align for r in recs]).astype(np.float64)
    want = np.stack([lm[..., 0] / 178, (lm[..., 1] - 20) / 178], -1)
    np.testing.assert_allclose(c.labels["landmarks"], want, atol=1e-6)
    assert np.isnan(c.labels["bbox"]).all()  # in-the-wild boxes mean nothing in the aligned frame
    np.testing.assert_array_equal(c.labels["attributes"], (np.stack([r.attributes for r in recs]) + 1) // 2)
    np.testing.assert_array_equal(c.labels["identity"], [r.identity for r in recs])
    np.testing.assert_array_equal(c.split, [r.partition for r in recs])
    jpeg = Image.open(root / "Img/img_align_celeba/000003.jpg").convert("RGB")
    assert square_window(None, *jpeg.size) == (0, 20, 178)
    big = prep(root, tmp_path / "big.h5", sizes=(112,))  # window < 2 x size: decoded at full scale
    ref = np.asarray(jpeg.resize((112, 112), Image.Resampling.BILINEAR, box=(0, 20, 178, 198)))
    np.testing.assert_array_equal(big.read_images(112, 2, 3)[0], ref)
    # window >= 2 x size: libjpeg decodes at 1/2 scale (draft), a little different, much faster
    ref = np.asarray(jpeg.resize((48, 48), Image.Resampling.BILINEAR, box=(0, 20, 178, 198))).astype(int)
    assert np.abs(c.read_images(48, 2, 3)[0] - ref).mean() < 1.0


def test_wild_window_carries_box_and_landmarks(make_celeba, celeba_truth, tmp_path: Path) -> None:
    root = make_celeba()
    c = prep(root, tmp_path / "w.h5", variant="wild", margin=0.2)
    recs = celeba_truth(12)
    boxes = np.stack([r.bbox for r in recs]).astype(np.float64)
    win = np.array([square_window(w, 0, 0) for w in wild_window(boxes, 0.2)], np.float64)
    x0, y0, side = win[:, :1], win[:, 1:2], win[:, 2:]
    want_box = np.concatenate([(boxes[:, :1] - x0) / side, (boxes[:, 1:2] - y0) / side, boxes[:, 2:] / side], 1)
    np.testing.assert_allclose(c.labels["bbox"], want_box, atol=1e-6)
    lm = np.stack([r.landmarks_wild for r in recs])
    np.testing.assert_allclose(c.labels["landmarks"], (lm - win[:, None, :2]) / side[:, None], atol=1e-6)
    # the box is centred and takes 1 / (1 + 2 margin) of the longer side
    centre = want_box[:, :2] + want_box[:, 2:] / 2
    np.testing.assert_allclose(centre, 0.5, atol=0.02)
    assert c.provenance["margin"] == 0.2 and c.provenance["variant"] == "wild"
    # a window that leaves the photo is padded with black, the rest is the photo itself
    i = int(np.argmin(boxes[:, 0]))
    photo = Image.open(root / "Img/img_celeba" / f"{i + 1:06d}.jpg").convert("RGB")
    x, y, s = (int(v) for v in win[i])
    ref = np.asarray(photo.crop((x, y, x + s, y + s)).resize((48, 48), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(c.read_images(48, i, i + 1)[0], ref)


def test_torchvision_parity(make_celeba, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import CelebA

    root = make_celeba("tv", n=12, layout="torchvision").parent / "tv"
    # torchvision checks md5s of the real annotation files; these are a tiny copy in the same format
    monkeypatch.setattr(CelebA, "_check_integrity", lambda self: True)
    ds = CelebA(str(root), split="all", target_type=["attr", "identity", "bbox", "landmarks"], download=False)
    for variant in ("aligned", "wild"):
        r = cli("prepare", "celeba", "--root", root, "--out", tmp_path / f"{variant}.h5", "--variant", variant, "--sizes", "32", "--workers", "1")
        assert r.exit_code == 0, r.output
    a, w = FaceCache(tmp_path / "aligned.h5"), FaceCache(tmp_path / "wild.h5")
    assert [x.decode() for x in a.h5["image_ids"][:]] == list(ds.filename)
    assert a.attribute_names == [n for n in ds.attr_names if n]
    np.testing.assert_array_equal(a.labels["attributes"], ds.attr.numpy())
    np.testing.assert_array_equal(a.labels["identity"], ds.identity[:, 0].numpy())
    lm = a.labels["landmarks"].astype(np.float64)
    back = np.stack([lm[..., 0] * 178, lm[..., 1] * 178 + 20], -1).reshape(-1, 10)
    np.testing.assert_array_equal(np.round(back), ds.landmarks_align.numpy())
    for name, code in (("train", 0), ("valid", 1), ("test", 2)):
        split = CelebA(str(root), split=name, download=False)
        assert list(np.asarray(ds.filename)[a.split == code]) == list(split.filename)
    win = np.array([square_window(v, 0, 0) for v in wild_window(ds.bbox.numpy(), 0.15)], np.float64)
    b = w.labels["bbox"].astype(np.float64)
    back = np.concatenate([b[:, :2] * win[:, 2:] + win[:, :2], b[:, 2:] * win[:, 2:]], 1)
    np.testing.assert_array_equal(np.round(back), ds.bbox.numpy())


def test_crlf_extra_spaces_and_blank_lines_read_the_same(make_celeba, tmp_path: Path) -> None:
    ref = build_plan("celeba", root=make_celeba("ref"), variant="wild")
    odd = make_celeba("odd", newline="\r\n")
    for p in odd.rglob("*.txt"):
        lines = p.read_bytes().decode().split("\r\n")
        lines = ["  " + s.replace(" ", "   ") + "  " if s else s for s in lines]
        p.write_bytes(("\r\n".join(lines) + "\r\n\r\n \r\n").encode())
    got = build_plan("celeba", root=odd, variant="wild")
    assert got.image_ids == ref.image_ids and got.attribute_names == ref.attribute_names
    for k in ref.labels:
        np.testing.assert_array_equal(got.labels[k], ref.labels[k])
    np.testing.assert_array_equal(got.points, ref.points)
    np.testing.assert_array_equal(got.boxes, ref.boxes)


def test_missing_annotation_file_is_named(make_celeba, tmp_path: Path, cli) -> None:
    root = make_celeba()
    anno(root, "identity_CelebA.txt").unlink()
    anno(root, "list_eval_partition.txt").unlink()
    r = cli("prepare", "celeba", "--root", root, "--out", tmp_path / "c.h5")
    assert r.exit_code == 1
    assert "identity_CelebA.txt" in r.output and "list_eval_partition.txt" in r.output
    assert not (tmp_path / "c.h5").exists() and not partial_path(tmp_path / "c.h5").exists()
    with pytest.raises(MissingFileError):
        build_plan("celeba", root=root)


def test_wild_needs_in_the_wild_files(make_celeba) -> None:
    root = make_celeba()
    anno(root, "list_landmarks_celeba.txt").unlink()
    build_plan("celeba", root=root)  # aligned does not need them
    with pytest.raises(MissingFileError, match="list_landmarks_celeba.txt"):
        build_plan("celeba", root=root, variant="wild")


def test_wrong_field_counts_listed_with_file_and_line(make_celeba, tmp_path: Path, cli) -> None:
    root = make_celeba()
    attr = anno(root, "list_attr_celeba.txt")
    lines = attr.read_text().splitlines()
    lines[4] = lines[4].rsplit(" ", 2)[0]  # line 5 loses a value
    lines[8] += " 1"  # line 9 gains one
    attr.write_text("\n".join(lines) + "\n")
    bbox = anno(root, "list_bbox_celeba.txt")
    lines = bbox.read_text().splitlines()
    lines[6] = lines[6] + " 7"
    bbox.write_text("\n".join(lines) + "\n")
    r = cli("prepare", "celeba", "--root", root, "--out", tmp_path / "c.h5")
    assert r.exit_code == 1
    out = r.output
    assert f"{attr}:5: expected 41 fields" in out and f"{attr}:9: expected 41 fields" in out
    assert f"{bbox}:7: expected 5 fields" in out
    assert not (tmp_path / "c.h5").exists()


def test_attribute_names_must_match_manifest(make_celeba) -> None:
    root = make_celeba()
    attr = anno(root, "list_attr_celeba.txt")
    attr.write_text(attr.read_text().replace("Smiling", "Smile", 1))
    with pytest.raises(DataFormatError, match="column 32 is 'Smile', expected 'Smiling'"):
        build_plan("celeba", root=root)


def test_counts_that_disagree_between_files_are_an_error(make_celeba) -> None:
    root = make_celeba()
    ident = anno(root, "identity_CelebA.txt")
    ident.write_text("".join(ident.read_text().splitlines(keepends=True)[:-2]))
    with pytest.raises(DataFormatError) as e:
        build_plan("celeba", root=root)
    assert "identity_CelebA.txt: lists 10 images but list_eval_partition.txt lists 12" in str(e.value)
    assert "has no row for 000011.jpg, 000012.jpg" in str(e.value)


def _break_images(root: Path) -> None:
    d = root / "Img/img_align_celeba"
    (d / "000002.jpg").unlink()
    (d / "000005.jpg").write_bytes(b"not a jpeg at all")
    data = (d / "000009.jpg").read_bytes()
    (d / "000009.jpg").write_bytes(data[: len(data) // 2])  # header fine, fails only when decoded


def test_bad_images_are_all_listed_and_nothing_is_left(make_celeba, tmp_path: Path, cli) -> None:
    root = make_celeba()
    _break_images(root)
    out = tmp_path / "c.h5"
    r = cli("prepare", "celeba", "--root", root, "--out", out, "--sizes", "32", "--workers", "1")
    assert r.exit_code == 1
    assert "000002.jpg: is missing" in r.output and "000005.jpg: is not a readable image" in r.output
    assert "--skip-bad" in r.output
    make_only_truncated(root)
    with pytest.raises(DataFormatError, match="000009.jpg: does not decode"):
        prepare_dataset("celeba", out, root=root, sizes=(32,), workers=1)
    assert not out.exists() and not partial_path(out).exists()
    assert list(tmp_path.glob("c.*")) == []


def make_only_truncated(root: Path) -> Path:
    """Put back the two removed images so only the truncated one is bad (found at decode, not pre-check)."""
    d = root / "Img/img_align_celeba"
    for name in ("000002.jpg", "000005.jpg"):
        Image.new("RGB", (178, 218), (120, 90, 60)).save(d / name)
    return root


def test_skip_bad_records_provenance_and_report(make_celeba, tmp_path: Path, cli) -> None:
    root = make_celeba()
    _break_images(root)
    out, report = tmp_path / "c.h5", tmp_path / "skips.tsv"
    r = cli("prepare", "celeba", "--root", root, "--out", out, "--sizes", "32", "--workers", "2", "--skip-bad", "--report", report)
    assert r.exit_code == 0, r.output
    c = FaceCache(out)
    ids = [x.decode() for x in c.h5["image_ids"][:]]
    assert c.num_samples == 9 and not {"000002.jpg", "000005.jpg", "000009.jpg"} & set(ids)
    assert c.provenance["skipped_count"] == 3 and c.provenance["skip_report"] == str(report)
    reasons = {Path(s["image"]).name: s["reason"] for s in c.provenance["skipped"]}
    assert reasons["000002.jpg"] == "is missing" and "does not decode" in reasons["000009.jpg"]
    rows = report.read_text().splitlines()
    assert rows[0] == "image\treason" and len(rows) == 4 and all(str(root) in row for row in rows[1:])
    # the rows kept are the right ones: labels follow their image ids
    full = build_plan("celeba", root=root)
    keep = [full.image_ids.index(k) for k in ids]
    np.testing.assert_array_equal(c.labels["attributes"], full.labels["attributes"][keep])
    assert not partial_path(out).exists() and not list(tmp_path.glob("*.uncompacted*"))


def test_check_reports_without_writing(make_celeba, tmp_path: Path, cli) -> None:
    root = make_celeba()
    r = cli("prepare", "celeba", "--check", "--root", root)
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "ok: ready to prepare" in text and "a subset?" in text and "present" in text
    anno(root, "list_bbox_celeba.txt").unlink()
    (root / "Img/img_align_celeba/000004.jpg").unlink()
    r = cli("prepare", "celeba", "--check", "--root", root)
    text = " ".join(r.output.split())
    assert r.exit_code == 1 and "missing" in text and "list_bbox_celeba.txt" in text
    assert list(tmp_path.rglob("*.h5*")) == []


def test_limit_takes_the_first_images(make_celeba, tmp_path: Path) -> None:
    c = prep(make_celeba(), tmp_path / "l.h5", limit=5)
    assert c.num_samples == 5 and [x.decode() for x in c.h5["image_ids"][:]] == [f"{i:06d}.jpg" for i in range(1, 6)]
    assert c.provenance["limit"] == 5


def test_resume_after_interrupt_gives_the_same_cache(make_celeba, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_celeba(n=20)
    monkeypatch.setattr(_plan, "BLOCK", 4)
    prep(root, tmp_path / "ref.h5", variant="wild")
    out = tmp_path / "r.h5"
    real_write, calls = CacheWriter.write, {"n": 0}

    def flaky(self, start, batch):
        if calls["n"] == 2:
            raise KeyboardInterrupt
        calls["n"] += 1
        real_write(self, start, batch)

    monkeypatch.setattr(CacheWriter, "write", flaky)
    with pytest.raises(KeyboardInterrupt):
        prep(root, out, variant="wild")
    assert partial_path(out).exists() and not out.exists()
    assert shard_rows(partial_path(out)) == 8
    monkeypatch.setattr(CacheWriter, "write", real_write)
    decoded = []
    real_decode = _plan.decode_block
    monkeypatch.setattr(_plan, "decode_block", lambda a, b, **kw: decoded.append((a, b)) or real_decode(a, b, **kw))
    prep(root, out, variant="wild", resume=True)
    assert decoded[0][0] == 8 and sum(b - a for a, b in decoded) == 12  # only the rows not yet written
    with h5py.File(tmp_path / "ref.h5") as a, h5py.File(out) as b:
        names = []
        a.visit(names.append)
        for k in names:
            if isinstance(a[k], h5py.Dataset):
                np.testing.assert_array_equal(a[k][()], b[k][()], err_msg=k)
        for k in a.attrs:
            if k != "created":
                assert a.attrs[k] == b.attrs[k], k
    assert json.loads(b_attrs(out)["provenance"])["variant"] == "wild"


def b_attrs(path: Path) -> dict:
    with h5py.File(path) as f:
        return dict(f.attrs)


def test_parallel_blocks_in_shared_memory_equal_serial(make_celeba, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    root = make_celeba()
    _break_images(root)  # a decode failure inside a shared-memory block, too
    shm = (lambda: {p for p in os.listdir("/dev/shm") if p.startswith("psm_")}) if os.path.isdir("/dev/shm") else (lambda: set())
    before = shm()
    monkeypatch.setattr(_plan, "BLOCK", 4)  # several blocks: results come back through shared memory
    a = prep(root, tmp_path / "serial.h5", variant="wild", skip_bad=True)
    b = prep(root, tmp_path / "parallel.h5", variant="wild", skip_bad=True, workers=2)
    for s in SIZES:
        np.testing.assert_array_equal(a.read_images(s, 0, a.num_samples), b.read_images(s, 0, b.num_samples))
    for k in a.labels:
        np.testing.assert_array_equal(a.labels[k], b.labels[k])
    assert shm() <= before  # every block was unlinked
