# Two entry points (see README): `make demo` and `make test`. Each installs what it needs first.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
TORCH_VERSION ?= 2.13.0
SYSTEM_PACKAGES = espeak-ng flite sox pulseaudio pulseaudio-utils libportaudio2 libsndfile1

.PHONY: demo test install install-test system-packages lint

# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
install:
	$(PIP) install -q "torch==$(TORCH_VERSION)"
	$(PIP) install -q -e .

install-test: install system-packages
	$(PIP) install -q -e ".[test]"

# Debian packages for test speech (espeak-ng, flite, sox) and the virtual microphone.
system-packages:
	@if command -v apt-get >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	  fi; \
	else echo "no apt-get: install$(SYSTEM_PACKAGES) yourself; tests needing them will skip"; fi

demo: install
	$(PYTHON) -m moonshine_live demo

test: install-test
	$(PYTHON) -m ruff check moonshine_live tests benchmarks demos
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check moonshine_live tests benchmarks demos
	$(PYTHON) -m ruff format --check moonshine_live tests benchmarks demos
