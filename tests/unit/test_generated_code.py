"""The committed generated protobuf code is exactly what protos/ generates today."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    # In a child process: grpc_tools' protoc and OR-Tools' bundled protobuf abort when they
    # share one interpreter.
    env = dict(os.environ)
    # protoc finds the mypy plugins (protoc-gen-mypy) on PATH, next to this interpreter.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(tmp_path)],
        check=True,
        env=env,
        capture_output=True,
    )
    fresh_dir = tmp_path / "fleet" / "v1"
    committed_dir = ROOT / "fleet" / "v1"
    fresh = {p.name: p.read_text() for p in fresh_dir.iterdir() if p.is_file()}
    committed = {p.name: p.read_text() for p in committed_dir.iterdir() if p.is_file()}
    assert sorted(fresh) == sorted(committed), "generated file set differs: run `make protos`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"generated code is stale for {stale}: run `make protos`"


def test_every_proto_field_and_message_has_a_comment() -> None:
    """Vendors read the protos: every message, field, enum value and rpc carries a comment."""
    missing: list[str] = []
    for proto in sorted((ROOT / "protos").rglob("*.proto")):
        lines = proto.read_text().splitlines()
        for i, line in enumerate(lines):
            s = line.strip()
            declares = s.startswith(("message ", "enum ", "service ", "rpc ")) or (
                s.endswith(";") and "=" in s and not s.startswith(("option", "syntax"))
            )
            if declares and not lines[i - 1].strip().startswith("//"):
                missing.append(f"{proto.name}:{i + 1}: {s}")
    assert not missing, "uncommented declarations:\n" + "\n".join(missing)
