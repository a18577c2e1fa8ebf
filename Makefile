# stasis — thin driver over CMake. See docs/build.md.
#
#   make demo          deps + build, then scripts/demo.sh
#   make test          deps, gcc + ASan + libFuzzer builds, ctest in gcc and ASan
#                      builds, fuzzing, clang-tidy, cppcheck; one summary line
#   make bench         deps + build, then bench/run.sh --full
#   make bench-quick   deps + build, then bench/run.sh --quick
#
# Pieces (no deps step): build asan fuzz-build test-gcc test-asan fuzz lint
# tidy cppcheck. `make help` lists them with the knobs below.

SHELL := /bin/bash
.DEFAULT_GOAL := build
.DELETE_ON_ERROR:

JOBS        ?= $(shell nproc 2>/dev/null || echo 2)
BUILD       ?= build
ASAN_BUILD  ?= build-asan
FUZZ_BUILD  ?= build-fuzz
BUILD_TYPE  ?= RelWithDebInfo
# Builds in which `make test` runs the whole ctest suite: any of gcc asan.
TEST_VARIANTS ?= gcc asan
CTEST_JOBS  ?= 2
# Seconds each libFuzzer target runs in `make test` / `make fuzz`.
FUZZ_SECONDS ?= 60
FUZZ_JOBS   ?= 2

export BUILD ASAN_BUILD FUZZ_BUILD TEST_VARIANTS CTEST_JOBS FUZZ_SECONDS FUZZ_JOBS JOBS

# Sanitizer runtime options for everything ctest runs in the ASan build.
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

CMAKE_GCC  := cmake -S . -B $(BUILD) -DCMAKE_C_COMPILER=gcc \
              -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DSTASIS_WERROR=ON
CMAKE_ASAN := cmake -S . -B $(ASAN_BUILD) -DCMAKE_C_COMPILER=clang \
              -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-O1 -g" \
              -DSTASIS_WERROR=ON -DSTASIS_SANITIZE=ON
CMAKE_FUZZ := cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang \
              -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-O1 -g" \
              -DSTASIS_WERROR=ON -DSTASIS_FUZZ=ON

.PHONY: all deps build asan fuzz-build demo test test-gcc test-asan fuzz lint \
        tidy cppcheck bench bench-quick model-long clean help

all: build

deps:
	@scripts/deps.sh

# --- builds (no deps step; the public targets below add it) -------------------
build:
	@$(CMAKE_GCC) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

asan:
	@$(CMAKE_ASAN) >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)

fuzz-build:
	@$(CMAKE_FUZZ) >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzzers

# --- checks on existing builds -------------------------------------------------
test-gcc:
	ctest --test-dir $(BUILD) --output-on-failure -j $(CTEST_JOBS) --no-tests=error

test-asan:
	env $(SAN_ENV) ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(CTEST_JOBS) --no-tests=error

fuzz:
	scripts/ci-fuzz.sh

lint: tidy cppcheck

tidy:
	scripts/ci-lint.sh tidy

cppcheck:
	scripts/ci-lint.sh cppcheck

# --- what README promises ------------------------------------------------------
test: deps
	scripts/ci-test.sh

demo: deps
	@$(MAKE) --no-print-directory build
	scripts/demo.sh

bench: deps
	@$(MAKE) --no-print-directory build
	@test -f bench/run.sh || { echo "bench/run.sh not there yet" >&2; exit 1; }
	bash bench/run.sh --full

bench-quick: deps
	@$(MAKE) --no-print-directory build
	@test -f bench/run.sh || { echo "bench/run.sh not there yet" >&2; exit 1; }
	bash bench/run.sh --quick

# The writable layer's randomized model test, long (needs root and /dev/fuse).
model-long: build
	STASIS=$(BUILD)/stasis STASISD=$(BUILD)/stasisd BUILD_DIR=$(BUILD) SRC_DIR=$(CURDIR) \
	  TESTS_BIN=$(BUILD)/tests WL_MODEL_OPS=$${WL_MODEL_OPS:-1000000} WL_MODEL_EVERY=10000 \
	  bash tests/integration/wl-model.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

help:
	@sed -n '2,10p' Makefile | sed 's/^# \{0,1\}//'
	@echo
	@echo "Knobs (make VAR=value): TEST_VARIANTS='$(TEST_VARIANTS)' FUZZ_SECONDS=$(FUZZ_SECONDS)"
	@echo "  FUZZ_JOBS=$(FUZZ_JOBS) CTEST_JOBS=$(CTEST_JOBS) JOBS=$(JOBS) BUILD_TYPE=$(BUILD_TYPE)"
	@echo "  STASIS_SKIP_DEPS=1 skips the apt step."
