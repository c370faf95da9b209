# The two entry points the README promises: `make demo` and `make test`.
# Both set up everything they need (apt packages as root, the venv).
PY := .venv/bin/python

.PHONY: setup demo test check lint unit netlink faults system system-full bench packages

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
	.venv/bin/mypy packaging/gen_config.py packaging/check_deb_trixie.py

unit:
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

netlink:
	$(PY) -m pytest -q -p no:cacheprovider -m netlink tests/integration

# Fault injection on the real daemon in private namespaces (issue 7; about 3 minutes):
# storms, reload failures, the kernel's busy-lock race, SIGKILL and restart, hostile
# input and configs, missing kernel support.
faults:
	$(PY) -m pytest -q -p no:cacheprovider -m faults tests/faults

system:
	$(PY) -m pytest -q -p no:cacheprovider -m system tests/system

# The system tests plus the cases CI leaves out (issue 10): the distribution's dump path for
# every load method, each a boot from a disk image and a crash (see tests/system/README.md).
system-full: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "system or system_full" tests/system

# The Debian package and the RPM into out/, checked by lintian and rpmlint; then the
# .deb is installed into a trixie root (chroot of the system tests' rootfs, no VM)
# and checked there. About a minute; see packaging/README.md.
packages: setup
	packaging/build-deb
	packaging/build-rpm
	$(PY) packaging/check_deb_trixie.py

# The benchmarks (root): crashhp against the per-event reload helpers, side by side, all
# four parts. `python -m benchmarks` alone skips part 2, the QEMU guest (see README).
bench: setup
	$(PY) -m benchmarks --vm
