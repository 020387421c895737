"""Generate the Python code for protos/fleet/v1 into fleet/v1 (or another output root).

protoc's Python imports follow the proto path, so `protos/fleet/v1/x.proto` becomes the module
`fleet.v1.x_pb2`: the generated code lives in the `fleet.v1` sub-package. Never edit it by hand:
change the .proto and run `make protos`; tests/unit/test_generated_code.py checks they match.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def generate(out_root: Path) -> list[Path]:
    """Generate into `out_root`/fleet/v1 and return the files written."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(PROTO_ROOT.glob("fleet/v1/*.proto"))
    out_dir = out_root / "fleet" / "v1"
    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    init = out_dir / "__init__.py"
    init.write_text('"""Generated from protos/fleet/v1 by scripts/gen_protos.py. Do not edit."""\n')
    return sorted(p for p in out_dir.iterdir() if p.is_file())


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for path in generate(out):
        print(path.relative_to(out))
