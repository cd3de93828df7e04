# unibeam: `make demo` runs the main job, `make test` runs every test.
# Both install what they need with apt-get on a fresh Debian 12 machine.

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# What the build, the examples, the tests and the baseline benchmark need.
APT_PACKAGES := qemu-system-x86 erlang-base erlang-inets erlang-crypto rebar3 \
                busybox-static cpio curl
EXAMPLES := examples/hello
FIXTURES := tests/fixtures/halt
RELEASES := $(foreach p,$(EXAMPLES) $(FIXTURES),$(p)/_build/prod/rel/$(notdir $(p))/releases/start_erl.data)

.PHONY: all deps build releases demo test bench lint clean

all: build

# apt lists are refreshed too: unibeam fetches Debian's cloud kernel with
# `apt-get download` when /boot has none.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ] || ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then \
	  echo "make: installing $$missing"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

build:
	$(CARGO) build --release --workspace

releases: deps $(RELEASES)

%/releases/start_erl.data:
	cd $(firstword $(subst /_build/, ,$@)) && rebar3 as prod release

demo: deps build releases
	scripts/demo.sh

test: deps build releases
	$(CARGO) test --release --workspace

bench: deps build releases
	$(CARGO) bench -p unibeam-e2e --bench skeleton

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --release -- -D warnings

clean:
	$(CARGO) clean
	rm -rf bench/work $(foreach p,$(EXAMPLES) $(FIXTURES),$(p)/_build)
