"""``specsurgery set MODEL -o OUT``: metadata, feature descriptions, class labels, spec version."""

from __future__ import annotations

from ._common import add_output


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help=".mlmodel or .mlpackage")
    add_output(parser, help_text="the edited model (.mlmodel or .mlpackage)")
    parser.add_argument("--author")
    parser.add_argument("--license")
    parser.add_argument("--description", help="the model's short description")
    parser.add_argument("--version-string", help="the model's own version, e.g. 1.2")
    parser.add_argument("--meta", action="append", metavar="KEY=VALUE",
                        help="user-defined metadata (repeatable); KEY= with no value removes KEY")
    parser.add_argument("--feature-description", action="append", metavar="NAME=TEXT",
                        help="describe an input or output (repeatable)")
    parser.add_argument("--labels", metavar="FILE|a,b,c",
                        help="replace a classifier's labels (same count): a file, one a line, or a,b,c")
    parser.add_argument("--spec-version", metavar="N|min",
                        help="set the spec version; 'min' lowers it to what the model needs")


def run(args) -> int:
    from ..errors import SpecSurgeryError
    from ..io import save
    from ..ops.metadata import set_metadata
    from ._common import key_values, label_list

    meta = {k: (v if v != "" else None) for k, v in key_values(args.meta, "--meta").items()}
    descriptions = key_values(args.feature_description, "--feature-description")
    labels = label_list(args.labels) if args.labels else None
    if not any(v is not None for v in (args.author, args.license, args.description, args.version_string,
                                       labels, args.spec_version)) and not meta and not descriptions:
        raise SpecSurgeryError("set: nothing to set; give at least one of --author, --license, "
                               "--description, --version-string, --meta, --feature-description, "
                               "--labels, --spec-version")
    edited = set_metadata(args.model, author=args.author, license=args.license,
                          description=args.description, version_string=args.version_string,
                          meta=meta, feature_descriptions=descriptions, labels=labels,
                          spec_version=args.spec_version)
    save(edited, args.output)
    spec = getattr(edited, "spec", edited)
    print(f"wrote {args.output} (spec version {spec.specificationVersion})")
    return 0
