"""`python -m vkgrad [--json]`: print what a bug report needs (see vkgrad/report.py)."""
import argparse
import json

from .report import collect, format_report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vkgrad", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    data = collect()
    print(json.dumps(data, indent=2) if args.json else format_report(data))


if __name__ == "__main__":
    main()
