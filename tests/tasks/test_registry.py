"""Every task kind describes itself through facemtl.tasks.registry: one source of truth for export and reports."""

import pytest

from facemtl.reports.task_reports import SECTION_BUILDERS
from facemtl.tasks import DataInfo, build_task, valid_task_names
from facemtl.tasks.registry import OUTPUTS, SECTIONS, OutputKind, ReportSection, register_output, register_section

INFO = DataInfo(attribute_names=("Smiling", "Male", "Eyeglasses"), num_identities=3,
                labels=("face", "landmarks", "attributes", "identity", "expression", "pose_class", "pose"))
NAMES = [n for n in valid_task_names() if n != "attr:*"]


@pytest.mark.parametrize("name", NAMES)
def test_each_task_names_a_registered_section_output_and_report_builder(name):
    task = build_task(name, INFO)
    kind, dim, labels = task.export_output()
    assert kind in OUTPUTS and task.report_section in SECTIONS and task.report_section in SECTION_BUILDERS
    assert dim >= task.out_dim and (not labels or len(labels) == dim)
    rows = task.output_names()
    assert not rows or len(rows) >= task.out_dim


def test_headlines_are_the_ablation_tables_first_metrics():
    # the values the reports used before the registry (evaluate.HEADLINE and ablate.TABLE_METRICS)
    want = {"attributes": ("balanced_accuracy", True), "landmarks": ("nme", False), "detection": ("accuracy", True),
            "identity": ("verification_auc", True), "classes": ("accuracy", True)}
    for name, (metric, higher) in want.items():
        sec = SECTIONS.get(name)
        assert (sec.headline, sec.higher_is_better(sec.headline)) == (metric, higher)


def test_a_kind_registered_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_output(OutputKind("landmarks", "", lambda y, labels, crop: {}))
    with pytest.raises(ValueError, match="registered twice"):
        register_section(ReportSection("classes", ("accuracy",)))


def test_only_detection_finds_faces():
    assert [n for n in OUTPUTS if OUTPUTS.get(n).finds_faces] == ["detection"]
