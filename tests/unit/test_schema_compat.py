import json
import shutil
from pathlib import Path

import pytest

from orchestrator.admin import check_schemas, raise_on_findings
from orchestrator.codec import SCHEMAS_DIR
from orchestrator.errors import SchemaCompatibilityError


def _tree_with_previous(tmp_path: Path, name: str) -> tuple[Path, dict]:
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, root)
    previous = json.loads((root / f"{name}.avsc").read_text())
    (root / "versions" / name).mkdir(parents=True, exist_ok=True)  # may hold older versions
    (root / "versions" / name / "1.avsc").write_text(json.dumps(previous))
    return root, previous


def test_shipped_schemas_are_compatible_with_their_history() -> None:
    assert check_schemas(use_git=True) == []


def test_every_field_has_a_doc_and_enums_have_a_default() -> None:
    def walk(t: object, where: str) -> None:
        if isinstance(t, list):
            for x in t:
                walk(x, where)
        elif isinstance(t, dict):
            if t.get("type") == "record":
                for f in t["fields"]:
                    assert f.get("doc"), f"{where}.{f['name']} has no doc"
                    walk(f["type"], f"{where}.{f['name']}")
            elif t.get("type") == "enum":
                assert t.get("default") in t["symbols"], f"{where}: enum without default"
            elif t.get("type") in ("array", "map"):
                walk(t.get("items", t.get("values")), where)

    for path in SCHEMAS_DIR.glob("*.avsc"):
        walk(json.loads(path.read_text()), path.stem)


def test_removed_field_without_default_is_rejected(tmp_path: Path) -> None:
    root, previous = _tree_with_previous(tmp_path, "Action")
    current = dict(previous)
    current["fields"] = [f for f in previous["fields"] if f["name"] != "template_id"]
    (root / "Action.avsc").write_text(json.dumps(current))

    findings = check_schemas(root=root, use_git=False)
    assert [(f.schema, f.direction) for f in findings] == [("Action", "forward")]
    with pytest.raises(SchemaCompatibilityError, match=r"Action\.avsc.*template_id"):
        raise_on_findings(findings)


def test_added_field_with_default_is_accepted(tmp_path: Path) -> None:
    root, previous = _tree_with_previous(tmp_path, "Action")
    current = dict(previous)
    current["fields"] = [
        *previous["fields"],
        {"name": "campaign", "type": ["null", "string"], "default": None, "doc": "Campaign."},
    ]
    (root / "Action.avsc").write_text(json.dumps(current))
    assert check_schemas(root=root, use_git=False) == []


def test_added_field_without_default_is_rejected(tmp_path: Path) -> None:
    root, previous = _tree_with_previous(tmp_path, "DeliveryReceipt")
    current = dict(previous)
    current["fields"] = [*previous["fields"], {"name": "cost", "type": "long", "doc": "Cost."}]
    (root / "DeliveryReceipt.avsc").write_text(json.dumps(current))
    findings = check_schemas(root=root, use_git=False)
    assert [f.direction for f in findings] == ["backward"]
