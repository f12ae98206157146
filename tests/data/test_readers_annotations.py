"""The shared whitespace-table parser and the manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facemtl.data import schema
from facemtl.data.readers import READERS
from facemtl.data.readers._annotations import MAX_SHOWN, Problems, check_same_ids, read_table
from facemtl.data.readers.manifest import available, load_manifest
from facemtl.errors import DataFormatError, MissingFileError, UnknownNameError


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


def test_count_header_runs_of_spaces_crlf_and_blank_lines(tmp_path: Path) -> None:
    text = "3\r\nimage_id x_1 y_1 width height\r\n000001.jpg    95  71 226 313\r\n\r\n  000002.jpg 72 94  221 306   \r\n000003.jpg\t1 2 3 4\r\n\r\n\r\n"
    p = Problems()
    t = read_table(write(tmp_path / "b.txt", text), p, count_line=True, header_line=True, num_values=4)
    assert not p
    assert t.ids == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert t.header == ["x_1", "y_1", "width", "height"]
    np.testing.assert_array_equal(t.values[0], [95, 71, 226, 313])
    assert t.lines == [3, 5, 6]  # line numbers survive the blank lines


def test_bom_and_trailing_space_header(tmp_path: Path) -> None:
    p = Problems()
    t = read_table(write(tmp_path / "a.txt", "\ufeff1\nA B \nx.jpg -1  1\n"), p, count_line=True, header_line=True, allowed=(1, -1))
    assert not p and t.header == ["A", "B"] and t.values.tolist() == [[-1, 1]]


def test_every_problem_is_collected_with_file_and_line(tmp_path: Path) -> None:
    text = "4\nA B\na.jpg 1 1\nb.jpg 1\nc.jpg 1 x\nd.jpg 1 2\na.jpg 1 1\n"
    p = Problems()
    t = read_table(write(tmp_path / "attr.txt", text), p, count_line=True, header_line=True, allowed=(1, -1))
    assert t.ids == ["a.jpg"]
    msgs = "\n".join(p.errors)
    assert "attr.txt:4: expected 3 fields (id + 2 values), found 2" in msgs
    assert "attr.txt:5: non-numeric" in msgs
    assert "attr.txt:6: values must be one of [-1, 1], found 2" in msgs
    assert "attr.txt:7: 'a.jpg' already listed on line 3" in msgs
    assert "attr.txt:1: line 1 says 4 images but the file lists 5" in msgs


def test_error_message_lists_all_then_truncates(tmp_path: Path) -> None:
    p = Problems()
    for i in range(MAX_SHOWN + 5):
        p.add("f.txt", i + 1, "bad")
    with pytest.raises(DataFormatError) as e:
        p.raise_if_any("celeba")
    msg = str(e.value)
    assert f"{MAX_SHOWN + 5} problem(s)" in msg and "f.txt:20: bad" in msg and "f.txt:21" not in msg
    assert "... and 5 more problems" in msg and "nothing was written" in msg


def test_missing_only_is_missing_file_error() -> None:
    p = Problems()
    p.add_missing("identity (Anno/identity_CelebA.txt)")
    with pytest.raises(MissingFileError, match="identity_CelebA.txt"):
        p.raise_if_any("celeba")


def test_same_ids_reports_both_directions(tmp_path: Path) -> None:
    p = Problems()
    a = read_table(write(tmp_path / "a.txt", "x.jpg 0\ny.jpg 1\n"), p, count_line=False, header_line=False, num_values=1)
    b = read_table(write(tmp_path / "b.txt", "x.jpg 0\nz.jpg 1\nw.jpg 2\n"), p, count_line=False, header_line=False, num_values=1)
    check_same_ids([a, b], p)
    msgs = "\n".join(p.errors)
    assert "lists 3 images but a.txt lists 2" in msgs and "has no row for y.jpg" in msgs and "lists z.jpg, w.jpg" in msgs


@pytest.mark.parametrize("name", ["celeba", "lfwa", "mtfl", "fer2013", "ckplus"])
def test_manifests_load_and_every_dataset_has_a_reader(name: str) -> None:
    m = load_manifest(name)
    assert m.name == name and m.obtain and m.data["licence"] and m.files
    assert name in READERS


def test_manifest_facts() -> None:
    c = load_manifest("celeba")
    assert c.image_count == 202599 and c.data["images"]["identities"] == 10177
    assert c.split_counts == {"train": 162770, "val": 19867, "test": 19962}
    assert tuple(c.attribute_names) == schema.CELEBA_ATTRIBUTES
    assert load_manifest("fer2013").split_counts == {"train": 28709, "val": 3589, "test": 3589}
    assert load_manifest("mtfl").image_count == 12995
    assert c.count_warnings(202599, {"train": 162770, "val": 19867, "test": 19962}) == []
    assert "subset?" in c.count_warnings(10, {"train": 10, "val": 0, "test": 0})[0]
    assert set(available()) >= {"celeba", "lfwa", "mtfl", "fer2013", "ckplus"}


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="celeba, ckplus, fer2013, folder, lfwa, mtfl"):
        READERS.get("celebb")
