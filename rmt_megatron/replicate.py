"""`python -m rmt_megatron.replicate`: reproduce the evidence tables
(`rmt_megatron.study.replication`, also installed as `rmt-replicate`)."""

import sys

from rmt_megatron.cli import command
from rmt_megatron.study.replication import build_parser, replicate, settings_from_args


@command
def main(argv: list[str] | None = None) -> int:
    replicate(settings_from_args(build_parser().parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
