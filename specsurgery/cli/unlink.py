"""``specsurgery unlink MODEL -o OUT``: inline linked stubs' targets back."""

from __future__ import annotations

from ._common import add_bundle, add_search_path


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model with linkedModel stages")
    add_search_path(parser)
    add_bundle(parser)
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help=".mlmodel to write")


def run(args) -> int:
    from ..io import save
    from ..ops.link import unlink

    out = unlink(args.model, search_path=args.search_path, bundle=args.bundle)
    save(out, args.output)
    print(f"wrote {args.output}: linked stages inlined, spec version {getattr(out, 'spec', out).specificationVersion}")
    return 0
