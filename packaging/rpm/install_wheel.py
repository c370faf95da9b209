#!/usr/bin/env python3
"""Install a wheel into an RPM buildroot with explicit paths (the fallback for
%pyproject_install where pyproject-rpm-macros are missing, see macros.fallback).

Debian's python3 would put a plain ``python3 -m installer`` into /usr/local and
dist-packages; the RPM wants Fedora's /usr/lib/pythonX.Y/site-packages and /usr/bin.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--sitelib", required=True)
    parser.add_argument("--bindir", required=True)
    parser.add_argument("--interpreter", required=True)
    parser.add_argument("wheel", type=Path)
    args = parser.parse_args()
    sitelib, bindir = args.sitelib, args.bindir
    destination = SchemeDictionaryDestination(
        {
            "purelib": sitelib,
            "platlib": sitelib,
            "scripts": bindir,
            "data": str(Path(bindir).parent),
            "headers": f"{sitelib}/../include",
        },
        interpreter=args.interpreter,
        script_kind="posix",
        destdir=str(args.root),
        bytecode_optimization_levels=(),
    )
    with WheelFile.open(args.wheel) as source:
        install(source, destination, additional_metadata={"INSTALLER": b"rpm\n"})


if __name__ == "__main__":
    main()
