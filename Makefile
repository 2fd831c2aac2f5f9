# Makefile - the human entry point. CMake does the real build; the scripts do
# what CMake cannot (packages, private PostgreSQL/Redis, running, testing).
#
#   make            configure + build build/ (RelWithDebInfo)
#   make asan       configure + build build-asan/ (ASan + UBSan)
#   make run        scripts/run.sh: deps, build, services, migrate, chatd
#   make test       scripts/test.sh: deps, both builds, every CTest run
#   make services-stop   stop the PostgreSQL/Redis left by `make run`
#   make format     clang-format the C sources
#   make clean      remove both build trees (not .data/)

JOBS ?= 2

.PHONY: all asan run test clean services-stop format

all:
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build -j$(JOBS)

asan:
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=asan
	cmake --build build-asan -j$(JOBS)

run:
	scripts/run.sh

test:
	scripts/test.sh

clean:
	rm -rf build build-asan build-fuzz

# run.sh knows where the data dir is (CHATD_DATA_DIR, possibly from .env).
services-stop:
	scripts/run.sh stop

format:
	@if [ ! -f .clang-format ]; then echo "no .clang-format; nothing to do"; exit 0; fi; \
	files=$$(find src tests/unit bench -name '*.[ch]' 2>/dev/null); \
	if [ -n "$$files" ]; then clang-format -i $$files; fi
