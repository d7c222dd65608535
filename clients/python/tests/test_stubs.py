"""The committed stubs under baton/_pb are what regen.py makes from host/proto now."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import regen  # noqa: E402


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not regen.PROTO_ROOT.is_dir():
        pytest.skip(f"no {regen.PROTO_ROOT}: not in a Baton checkout")
    out = tmp_path_factory.mktemp("stubs") / "_pb"
    out.mkdir()
    regen.generate(out)
    return out


def test_committed_stubs_are_fresh(fresh: Path) -> None:
    stale = regen.differences(regen.OUT_DIR, fresh)
    assert not stale, f"stale stubs {stale}: run `python clients/python/regen.py` and commit"


def test_the_check_notices_an_edited_stub(fresh: Path, tmp_path: Path) -> None:
    edited = tmp_path / "_pb"
    shutil.copytree(regen.OUT_DIR, edited, ignore=shutil.ignore_patterns("__pycache__"))
    target = edited / "baton" / "v1" / "modules_pb2.py"
    target.write_text(target.read_text() + "\n# hand edit\n")
    (edited / "mvccpb" / "kv_pb2.pyi").unlink()
    assert regen.differences(edited, fresh) == ["baton/v1/modules_pb2.py", "mvccpb/kv_pb2.pyi"]


def test_stubs_import_nothing_outside_the_package() -> None:
    for path in regen.OUT_DIR.rglob("*.py*"):
        for line in path.read_text().splitlines():
            for top in ("mvccpb", "authpb", "etcdserverpb", "baton.v1"):
                assert not line.startswith((f"from {top} ", f"import {top}")), (path, line)
