"""Regenerates ``pta/v1`` from ``proto/`` with the pinned grpcio-tools.

One entry point, used by ``make proto`` and by the test that proves the committed code is current.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "pta" / "v1"


def generate(out_root: Path) -> list[Path]:
    """Run protoc over every ``.proto`` file, writing into ``out_root/pta/v1``.

    Args:
        out_root: The directory standing in for the repository root.

    Returns:
        The generated files, sorted.

    Raises:
        RuntimeError: When protoc reports an error.
    """
    from grpc_tools import protoc  # type: ignore[import-untyped]  # noqa: PLC0415 - dev only

    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: see its message above")
    return sorted(p for p in (out_root / "pta" / "v1").iterdir() if p.name != "__init__.py")


def main() -> None:
    """Regenerate the committed code in place."""
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            shutil.copyfile(path, OUT_DIR / path.name)
            sys.stdout.write(f"wrote {OUT_DIR / path.name}\n")


if __name__ == "__main__":
    main()
