# Ember's top-level commands. See README.md.
#
#   make / make build   install missing packages, build everything (programs,
#                       guest kernel, root filesystem, nested host) — slow
#                       parts are cached in $(EMBER_CACHE)
#   make test           all test tiers; ends with `N passed, N failed`
#   make demo           the main job, end to end
#   make bench          benchmarks; writes bench/results/latest.json
#   make clean          removes build/ and build-asan/ (not the cache)

EMBER_CACHE ?= /var/cache/ember
export EMBER_CACHE

MESON_SETUP = meson setup --wrap-mode=nodownload

.PHONY: all build deps programs programs-asan artifacts test unit demo bench clean

all: build

deps:
	@scripts/deps.sh

build/build.ninja: | deps
	$(MESON_SETUP) build

build-asan/build.ninja: | deps
	$(MESON_SETUP) build-asan -Db_sanitize=address,undefined \
	  -Db_lundef=false -Dstatic_init=false

programs: build/build.ninja
	ninja -C build

programs-asan: build-asan/build.ninja
	ninja -C build-asan

# Guest kernel, base root filesystem and nested host, linked into
# build/artifacts/ from the cache.
artifacts: programs
	@scripts/artifacts.sh

build: programs programs-asan artifacts

test: build
	@python3 tests/run.py

# Unit and kvm tiers only: quick, no nested host.
unit: programs-asan
	@python3 tests/run.py --suite unit --suite kvm

demo: programs artifacts
	@scripts/demo.sh

bench: build
	@bench/run.sh

clean:
	rm -rf build build-asan
