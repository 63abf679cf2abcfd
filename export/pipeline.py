"""Export a trained flow for serving: SavedModel, ONNX, TF Serving files.

    python export/pipeline.py MODEL.keras OUT_DIR [--name NAME]

The same code runs as `tfflows export`; see export/README.md.
"""

import argparse
import json
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a .keras file holding a tfflows.Flow")
    parser.add_argument("out", help="output folder")
    parser.add_argument("--name", help="served model name (default: file stem)")
    args = parser.parse_args(argv)
    from tfflows.export import pipeline
    summary = pipeline.run(args.model, args.out, name=args.name)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
