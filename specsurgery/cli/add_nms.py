"""``specsurgery add-nms MODEL --confidence NAME --coordinates NAME --labels FILE|a,b,c -o OUT``:
a raw detector becomes a detector pipeline with non-maximum suppression."""

from __future__ import annotations

from ._common import add_output


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help=".mlmodel or .mlpackage: the raw detector")
    parser.add_argument("--confidence", required=True, metavar="NAME",
                        help="the output with the class confidences, [boxes, classes]")
    parser.add_argument("--coordinates", required=True, metavar="NAME",
                        help="the output with the boxes, [boxes, 4]")
    parser.add_argument("--labels", required=True, metavar="FILE|a,b,c",
                        help="class labels: a file with one label a line, or a,b,c")
    parser.add_argument("--iou", type=float, default=0.45, metavar="T",
                        help="IoU above which a box is suppressed, 0..1 (default 0.45)")
    parser.add_argument("--threshold", type=float, default=0.25, metavar="T",
                        help="confidence below which a box is dropped, 0..1 (default 0.25)")
    parser.add_argument("--per-class", action="store_true",
                        help="suppress only among boxes of the same class")
    parser.add_argument("--box-format", choices=("cxcywh", "xyxy"), default="cxcywh",
                        help="how the model gives boxes: centre x, centre y, width, height (default) "
                             "or corners x1, y1, x2, y2 (converted in front of NMS)")
    parser.add_argument("--no-threshold-inputs", action="store_true",
                        help="do not add the optional iouThreshold / confidenceThreshold inputs")
    add_output(parser, help_text="the detector pipeline (.mlmodel, or .mlpackage for an ML Program)")


def run(args) -> int:
    from ..io import save
    from ..ops.nms import add_nms, detector_info
    from ..spec import model_type, pipeline_of, stage_names
    from ._common import label_list

    labels = label_list(args.labels, "--labels")
    result = add_nms(args.model, confidence=args.confidence, coordinates=args.coordinates, labels=labels,
                     iou_threshold=args.iou, confidence_threshold=args.threshold, per_class=args.per_class,
                     box_format=args.box_format, threshold_inputs=not args.no_threshold_inputs)
    save(result, args.output)
    spec = getattr(result, "spec", result)
    pipe = pipeline_of(spec)
    info = detector_info(spec)
    stages = ", ".join(f"{n} ({model_type(m)})" for n, m in zip(stage_names(pipe), pipe.models))
    print(f"pipeline v{spec.specificationVersion}: {stages}")
    print(f"nms: {len(info['labels'])} classes, IoU {info['iou_threshold']:g}, confidence "
          f"{info['confidence_threshold']:g}{', per class' if info['per_class'] else ''}")
    print(f"wrote {args.output}")
    return 0
