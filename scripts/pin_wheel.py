"""Stamps a freshly built wheel with the torch it was built against.

The op library uses torch's C++ API, whose ABI changes between torch releases, so a wheel
built for torch 2.X only works with torch 2.X.*. This rewrites the wheel's metadata:
  version   0.1.0  ->  0.1.0+torch2.13cpu (or +torch2.11cu130)
  Requires-Dist: torch>=...  ->  torch==2.13.*
and renames the .dist-info folder and the file to match (RECORD regenerated).

    python scripts/pin_wheel.py dist/raw/involution_ext-0.1.0-*.whl --out dist/pinned
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import zipfile
from pathlib import Path


def local_tag(torch_version: str, cuda: str | None) -> tuple[str, str]:
    release = ".".join(torch_version.split("+")[0].split(".")[:2])
    variant = f"cu{cuda.replace('.', '')}" if cuda else "cpu"
    return release, f"torch{release}{variant}"


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def pin(wheel: Path, out_dir: Path, torch_version: str, cuda: str | None) -> Path:
    release, tag = local_tag(torch_version, cuda)
    name, version, rest = wheel.name.split("-", 2)
    new_version = f"{version.split('+')[0]}+{tag}"
    old_info, new_info = f"{name}-{version}.dist-info", f"{name}-{new_version}.dist-info"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}-{new_version}-{rest}"
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        records = []
        for item in src.infolist():
            data = src.read(item)
            arcname = item.filename.replace(old_info + "/", new_info + "/", 1)
            if arcname == f"{new_info}/RECORD":
                continue
            if arcname == f"{new_info}/METADATA":
                text = data.decode()
                text = re.sub(r"^Version: .*$", f"Version: {new_version}", text, count=1, flags=re.M)
                text, n = re.subn(r"^Requires-Dist: torch\b[^;\n]*", f"Requires-Dist: torch=={release}.*", text, flags=re.M)
                if n != 1:
                    raise SystemExit("METADATA has no single torch requirement to pin")
                data = text.encode()
            info = zipfile.ZipInfo(arcname, item.date_time)
            info.external_attr = item.external_attr
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, data)
            records.append(record_line(arcname, data))
        records.append(f"{new_info}/RECORD,,")
        dst.writestr(f"{new_info}/RECORD", "\n".join(records) + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    facts = build_facts(args.wheel)
    cuda = facts["torch_cuda_version"] if facts["cuda"] else None
    print(pin(args.wheel, args.out, facts["torch_version"], cuda))


def build_facts(wheel: Path) -> dict:
    """The build facts the wheel carries (``involution_ext/_build_facts.py``, a plain literal
    written by CMake), read as data: nothing from the wheel is executed."""
    import ast

    with zipfile.ZipFile(wheel) as z:
        source = z.read("involution_ext/_build_facts.py").decode()
    tree = ast.parse(source)
    assign = next(node for node in tree.body if isinstance(node, ast.Assign)
                  and getattr(node.targets[0], "id", "") == "BUILD_INFO")
    return ast.literal_eval(assign.value)


if __name__ == "__main__":
    main()
