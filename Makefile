# The two entry points the README promises: `make demo` and `make test`.
# Both set up everything they need (apt packages as root, the venv).
PY := .venv/bin/python

.PHONY: setup demo test check lint unit netlink system bench

setup:
	@scripts/setup

# The main job: crashhp on real CPU and memory hotplug in a QEMU guest.
demo: setup
	$(PY) -m tests.system.demo

# Everything CI runs: lint, types, unit, real-netlink and real-kernel tests.
test: check system

# The fast suite (well under five minutes).
check: setup lint unit netlink

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

unit:
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

netlink:
	$(PY) -m pytest -q -p no:cacheprovider -m netlink tests/integration

system:
	$(PY) -m pytest -q -p no:cacheprovider -m system tests/system

bench: setup
	$(PY) -m benchmarks
