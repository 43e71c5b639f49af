# Entry points: `make demo` (the local demo) and `make test` (the whole suite).
# Each runs the dependency setup and the builds it needs first.
JOBS ?= $(shell nproc)
CMAKE_GEN := $(shell command -v ninja >/dev/null 2>&1 && echo -G Ninja)

.PHONY: all setup build release asan fuzz test test-unit test-kvm bench demo images clean

all: build

setup:
	@bash scripts/setup

build/release/build.ninja build/release/Makefile:
	cmake -S . -B build/release $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release

build/asan/build.ninja build/asan/Makefile:
	cmake -S . -B build/asan $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DSPORELET_SANITIZE=ON

build/fuzz/build.ninja build/fuzz/Makefile:
	CC=clang cmake -S . -B build/fuzz $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DSPORELET_FUZZ=ON

release: setup
	@[ -f build/release/CMakeCache.txt ] || cmake -S . -B build/release $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release
	cmake --build build/release -j $(JOBS)

asan: setup
	@[ -f build/asan/CMakeCache.txt ] || cmake -S . -B build/asan $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DSPORELET_SANITIZE=ON
	cmake --build build/asan -j $(JOBS)

fuzz: setup
	@[ -f build/fuzz/CMakeCache.txt ] || CC=clang cmake -S . -B build/fuzz $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DSPORELET_FUZZ=ON
	cmake --build build/fuzz -j $(JOBS)

build: release

# The whole suite: unit + kvm (+ registry, linux, containerd) under ASan/UBSan, fuzz smoke runs, then the
# benchmarks on the release build (their RESULT lines are printed at the end).
test: release asan fuzz
	cd build/asan && ctest --output-on-failure -L 'unit|kvm|registry|linux|containerd'
	cd build/fuzz && ctest --output-on-failure -L fuzz
	cd build/release && { ctest --output-on-failure -L bench -V > bench.log 2>&1; s=$$?; \
	  grep -E '^[0-9]+: RESULT ' bench.log | sed 's/^[0-9]*: //'; tail -n 4 bench.log; exit $$s; }

demo: release
	bash scripts/demo build/release

# The chart's images (charts/README.md): build/images/sporelet-node.oci.tar and
# sporelet-operator.oci.tar, OCI archives for skopeo copy or ctr images import.
images: release
	python3 scripts/build-images build/release -o build/images

clean:
	rm -rf build
