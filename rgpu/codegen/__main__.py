"""``python -m rgpu.codegen cuda`` regenerates the CUDA shim's C; ``build`` compiles the shim."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rgpu.codegen import shimbuild

ROOT = Path(__file__).resolve().parent.parent.parent


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["vulkan"]:
        from rgpu.codegen import vulkan

        return vulkan.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m rgpu.codegen")
    sub = parser.add_subparsers(dest="what", required=True)
    gen = sub.add_parser("cuda", help="regenerate interpose/generated/ from cuda.h")
    gen.add_argument("--include", type=Path, default=None, help="dir with cuda.h, cudaTypedefs.h")
    gen.add_argument("--out", type=Path, default=None, help="default: interpose/generated")
    bld = sub.add_parser("build", help="compile librgpu_cuda.so (pip install does this too)")
    bld.add_argument(
        "--sanitize",
        default=None,
        help="sanitizer build, e.g. address or address,undefined (default output: "
        "rgpu/lib/sanitize-<name>/)",
    )
    bld.add_argument("--out", type=Path, default=None, help="output directory")
    args = parser.parse_args(argv)
    if not (ROOT / "interpose").is_dir() and (args.what == "build" or args.out is None):
        print(
            f"rgpu: error: {ROOT} is not an rgpu source checkout (no interpose/); "
            "run this from a git clone installed with: pip install -e .",
            file=sys.stderr,
        )
        return 1

    if args.what == "cuda":
        from rgpu.codegen import cuda

        include = args.include or cuda.DEFAULT_INCLUDE
        if not (include / "cuda.h").is_file() or not (include / "cudaTypedefs.h").is_file():
            print(
                f"rgpu: error: cuda.h/cudaTypedefs.h not found in {include}; pass --include DIR "
                "(pip's nvidia-cuda-runtime wheel ships them under nvidia/cu13/include)",
                file=sys.stderr,
            )
            return 1
        out = args.out or ROOT / "interpose" / "generated"
        for path in cuda.generate(include, out).values():
            print(path)
        return 0

    from rgpu.codegen.shimlib import variant_dir

    out = args.out or variant_dir(args.sanitize)
    try:
        print(shimbuild.build(ROOT, out, sanitize=args.sanitize))
    except shimbuild.ShimBuildError as exc:
        print(f"rgpu: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
