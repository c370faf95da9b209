# The two entry points the README promises: `make demo` and `make test`.
# Both set up everything they need (apt packages as root, the venv).
PY := .venv/bin/python

.PHONY: setup demo test check lint unit netlink faults system system-full matrix system-ppc64 bench packages

setup:
	@scripts/setup

# The main job: crashhp on real CPU and memory hotplug in a QEMU guest.
demo: setup
	$(PY) -m tests.system.demo

# Everything CI runs: lint, types, unit, real-netlink tests, packages, real-kernel tests.
test: check packages system

# The fast suite (well under five minutes).
check: setup lint unit netlink faults

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/mypy packaging/gen_config.py packaging/check_deb_trixie.py packaging/bookworm_root.py \
		packaging/flavours.py packaging/unitfile.py packaging/vendor.py \
		packaging/check_deb_bookworm.py packaging/check_rpm.py

unit:
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

netlink:
	$(PY) -m pytest -q -p no:cacheprovider -m netlink tests/integration

# Fault injection on the real daemon in private namespaces (issue 7; about 3 minutes):
# storms, reload failures, the kernel's busy-lock race, SIGKILL and restart, hostile
# input and configs, missing kernel support.
faults:
	$(PY) -m pytest -q -p no:cacheprovider -m faults tests/faults

# The real-kernel tests, the kernel matrix included (bookworm 6.1, trixie 6.12, trixie-backports
# 7.3: tests/system/README.md). Its steps marked system_full are left out for CI time.
system:
	$(PY) -m pytest -q -p no:cacheprovider -m "system and not system_full" tests/system

# Everything of `make system` and the cases CI leaves out (marked system_full): the kernel
# matrix's extra steps, and the distribution's dump path for every load method (each a boot
# from a disk image and a crash; tests/system/README.md).
system-full: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "system or system_full" tests/system

# The kernel matrix alone, all its steps (about 8 minutes with the assets cached).
matrix: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "system or system_full" tests/system/test_matrix.py

# crashhp on ppc64le: a pseries guest under qemu-system-ppc64 (TCG), spapr cores and pc-dimm
# hotplug, the load modes, each scenario ending in a crash and a dump check. Not in CI (with
# the x86 suites it does not fit the 60 minutes): run it before closing a change that touches
# the ppc64 path, the dump check or the harness (tests/system/README.md, "ppc64le").
system-ppc64:
	@scripts/setup --ppc64
	$(PY) -m pytest -q -p no:cacheprovider -m ppc64 tests/system/test_ppc64.py

# The Debian packages (trixie's, and bookworm's with vendored pydantic and structlog) and
# the RPM into out/, checked by lintian and rpmlint; then each .deb is installed into a
# root of its release (chroots, no VM): trixie from the system tests' rootfs, bookworm
# from a cached debootstrap. The RPM is installed into a throwaway root with rpm --root.
# About a minute and a half with warm caches; see packaging/README.md.
packages: setup
	packaging/build-deb --flavour trixie
	packaging/build-deb --flavour bookworm
	packaging/build-rpm
	$(PY) packaging/check_deb_trixie.py
	$(PY) packaging/check_deb_bookworm.py
	$(PY) packaging/check_rpm.py

# The benchmarks (root): crashhp against the per-event reload helpers, side by side, all
# four parts. `python -m benchmarks` alone skips part 2, the QEMU guest (see README).
bench: setup
	$(PY) -m benchmarks --vm
