"""Import samples processed by the reference pipeline (its ``.pk`` pickles) as a processed data set.

Usage::

    python scripts/import_pk.py <folder> --trust-pickle [--out data/processed/<name>] [--name NAME] [--prefix P]

``<folder>`` holds ``<prefix>_train.pk``, ``<prefix>_validation.pk`` and
``<prefix>_test.pk``, as the reference writes them (e.g. ``dataSet_geolife_*``).
Unpickling runs code from the files, so the script reads them only with
``--trust-pickle``. The result is an ordinary processed folder (Parquet, no
pickle) that ``python train.py dataset=<name>`` reads; its metadata records the
files' sha256 and that it has no location table. Errors: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from nextloc.data.reference_pickle import find_reference_files, load_reference_pickles, sample_set_from_reference
from nextloc.data.samples import SPLITS
from nextloc.data.store import file_checksum, write_processed
from nextloc.errors import ConfigError, NextlocError

log = logging.getLogger("import_pk")


class TrustRequired(NextlocError):
    """Reading the files needs the user's explicit opt-in."""


TRUST_REFUSAL = (
    "refusing to read {folder}: unpickling runs arbitrary code from the file, so import only pickles "
    "from a trusted source (e.g. ones you made with the reference code); to do so, add --trust-pickle"
)


def main(argv: list[str] | None = None) -> int:
    """Run the import; return the exit code (0 done, 2 user error)."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        _import(args)
    except (NextlocError, OSError) as err:  # OSError: an existing --out, unreadable or unwritable paths
        log.error("error: %s", err)
        return 2
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert the reference pipeline's <prefix>_{train,validation,test}.pk samples "
        "into a processed data set (Parquet, no pickle).",
    )
    parser.add_argument("folder", type=Path, help="folder holding <prefix>_train.pk, _validation.pk, _test.pk")
    parser.add_argument(
        "--trust-pickle", action="store_true",
        help="required: unpickling runs code from the files; give it only for files from a trusted source",
    )
    parser.add_argument("--prefix", help="which data set to read when the folder holds several, e.g. dataSet_geolife")
    parser.add_argument(
        "--name", help="data set name in the metadata (default: the prefix without 'dataSet_', e.g. geolife)"
    )
    parser.add_argument(
        "--out", type=Path, help="output folder, must not exist (default: data/processed/<name>-reference)"
    )
    parser.add_argument("--num-locations", type=int, help="the reference's total_loc_num, e.g. 1187 for GeoLife")
    parser.add_argument("--num-users", type=int, help="the reference's total_user_num, e.g. 46 for GeoLife")
    return parser.parse_args(argv)


def _import(args: argparse.Namespace) -> None:
    # Refuse before touching any file: nothing is unpickled without the explicit opt-in.
    if not args.trust_pickle:
        raise TrustRequired(TRUST_REFUSAL.format(folder=args.folder))
    files = find_reference_files(args.folder, args.prefix)
    prefix = files["train"].name.removesuffix("_train.pk")
    name = args.name or _default_name(prefix)
    if Path(name).name != name or name.startswith("."):
        raise ConfigError(f"--name={name!r}: give a plain data set name, without '/' or a leading '.'")
    # not data/processed/<name>: that folder holds this project's own preprocessing variants
    out = args.out or Path("data/processed") / f"{name}-reference"
    if out.exists():
        raise FileExistsError(f"{out} already exists; remove it or choose another --out")

    samples_by_split = load_reference_pickles(args.folder, prefix)
    sample_set = sample_set_from_reference(
        samples_by_split, {s: str(f) for s, f in files.items()}, args.num_locations, args.num_users
    )
    for split in SPLITS:
        samples = sample_set.samples[split]
        steps = int((samples["history_end"] - samples["history_start"]).sum())
        log.info("%s: %d samples, %d history steps", split, len(samples), steps)
    checksums = {f.name: {"split": s} | file_checksum(f) for s, f in files.items()}
    write_processed(
        out,
        sample_set,
        name=name,
        parameters={"source": "reference_pickle", "files": checksums},
        locations=None,
        extra={
            "imported_from": str(args.folder.resolve()),
            "location_table": "none: the reference's pickles carry no location coordinates",
            "staypoint_layout": "one block per sample: its history rows, then its target row",
        },
    )
    log.info("wrote %s: L=%d location classes, U=%d", out, sample_set.num_locations, sample_set.num_users)


def _default_name(prefix: str) -> str:
    """``dataSet_geolife`` -> ``geolife``, matching ``conf/dataset/geolife.yaml``."""
    for lead in ("dataSet_", "dataset_"):
        if prefix.startswith(lead) and len(prefix) > len(lead):
            return prefix[len(lead):]
    return prefix


if __name__ == "__main__":
    sys.exit(main())
