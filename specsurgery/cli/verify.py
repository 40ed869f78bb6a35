"""``specsurgery verify REFERENCE CANDIDATE``: same outputs on seeded random inputs?"""

from __future__ import annotations

from ._common import add_bundle, add_json, add_quiet, add_search_path
from .run import add_max_memory, runtime_limits


def configure(parser) -> None:
    parser.add_argument("reference", metavar="REFERENCE", help="the model inputs are drawn for")
    parser.add_argument("candidate", metavar="CANDIDATE", help="the model compared against it")
    add_search_path(parser)
    add_bundle(parser)
    parser.add_argument("--samples", type=int, default=3, metavar="N", help="random samples (default 3)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="first seed (default 0)")
    parser.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    parser.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance (default 1e-5)")
    parser.add_argument("--int-range", default=None, metavar="LO,HI",
                        help="integer inputs are drawn from [LO, HI) (default: below the "
                             "vocabulary size they index)")
    parser.add_argument("--per-layer", action="store_true",
                        help="also compare every intermediate value (first sample) and name the layers "
                             "that differ while their inputs match")
    add_max_memory(parser)
    add_quiet(parser)
    add_json(parser)


def run(args) -> int:
    from ..errors import SpecSurgeryError
    from ..runtime import verify
    from ._common import Progress, print_json

    int_range = None
    if args.int_range:
        try:
            lo, hi = (int(v) for v in args.int_range.split(","))
        except ValueError:
            raise SpecSurgeryError(f"--int-range {args.int_range!r}: expected LO,HI (two integers)") from None
        if hi <= lo:
            raise SpecSurgeryError(f"--int-range {args.int_range!r}: HI must be greater than LO")
        int_range = (lo, hi)
    if args.samples < 1:
        raise SpecSurgeryError("--samples must be at least 1")
    for flag, value in (("--rtol", args.rtol), ("--atol", args.atol)):
        if not value >= 0:   # NaN too: it would make every comparison fail
            raise SpecSurgeryError(f"{flag} {value}: a tolerance must be a number >= 0 "
                                   "(e.g. --rtol 1e-3 --atol 1e-4)")
    with runtime_limits(args), Progress.for_args(args, args.samples, "verify", unit="sample") as bar:
        report = verify(args.reference, args.candidate, samples=args.samples, seed=args.seed,
                        rtol=args.rtol, atol=args.atol, search_path=args.search_path,
                        bundle=args.bundle, int_range=int_range, progress=bar.step,
                        per_layer=args.per_layer)
    if args.json:
        print_json(report.to_json())
    else:
        print(report.summary())
    return 0 if report.ok else 1
