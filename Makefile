# The two commands of the README: `make run` and `make test`. Both install any missing
# Debian packages first (apt-get, through sudo when not root), then configure and build.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CONFIG     ?= config/default.yaml

DEB_PACKAGES := build-essential cmake pkg-config clang clang-format python3 curl sqlite3 \
	libsqlite3-dev libmicrohttpd-dev libwebsockets-dev libyaml-dev libjansson-dev libcriterion-dev \
	libgnutls28-dev gnutls-bin openssl valgrind \
	libprotobuf-c-dev protobuf-c-compiler libgrpc-dev \
	etcd-server etcd-client libcurl4-openssl-dev libreadline-dev postgresql libpq-dev nettle-dev \
	chromium

.PHONY: all deps build build-asan run test test-fast format check-format clean

all: build

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD) -j$(JOBS)

build-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DGS_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j$(JOBS)

run: build
	./$(BUILD)/gatestream --config $(CONFIG)

# Every test: formatting, then the full suite on the release build (valgrind smoke test
# included) and again on the ASan + UBSan build.
test: build build-asan check-format
	cd $(BUILD) && ctest --output-on-failure -j2
	cd $(ASAN_BUILD) && ctest --output-on-failure -j2 -LE valgrind

check-format:
	@files=$$(git ls-files '*.c' '*.h'); \
	if ! clang-format --dry-run --Werror $$files; then \
	  echo "formatting differs from .clang-format: run 'make format'"; exit 1; fi

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
