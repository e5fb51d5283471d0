"""The generated protocol code in sdk/pb is exactly what scripts/gen_protos.py makes from protos/."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    generated = {p.name: p.read_text() for p in load_generator().generate(tmp_path)}
    committed = {p.name: p.read_text() for p in (ROOT / "sdk" / "pb").iterdir() if p.is_file()}
    assert sorted(generated) == sorted(committed), (
        "sdk/pb has extra or missing files: run scripts/gen_protos.py"
    )
    stale = [name for name in generated if generated[name] != committed[name]]
    assert not stale, f"sdk/pb is stale ({', '.join(stale)}): run python scripts/gen_protos.py"
