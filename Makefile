# unibeam: `make demo` runs the main job, `make test` runs every test.
# Both install what they need with apt-get on a fresh Debian 12 machine.

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# What the build, the examples, the tests and the baseline benchmark need,
# then what `unibeam kernel build` needs (the list in kbuild.rs).
APT_PACKAGES := qemu-system-x86 erlang-base erlang-inets erlang-crypto rebar3 elixir \
                erlang-os-mon erlang-mnesia e2fsprogs erlang-cowlib erlang-jiffy \
                chromium python3-venv \
                busybox-static cpio curl dash \
                linux-source-6.1 make gcc libc6-dev bc bison flex libelf-dev xz-utils \
                g++ systemd skopeo genisoimage iproute2 erlang-ssl tcpdump dnsmasq-base util-linux
HELLO := examples/hello/_build/prod/rel/hello
HALT := tests/fixtures/halt/_build/prod/rel/halt
HELLO_ELIXIR := examples/hello_elixir/_build/prod/rel/hello_elixir
CLUSTER := examples/cluster/_build/prod/rel/cluster
STOCK := tests/fixtures/stock/_build/prod/rel/stock
SRCCONF := tests/fixtures/srcconf/_build/prod/rel/srcconf
MIXENV := tests/fixtures/mixenv/_build/prod/rel/mixenv
NOTES := examples/notes/_build/prod/rel/notes
CHAT := examples/chat/_build/prod/rel/chat
CRUD := examples/crud/_build/prod/rel/crud
TLSCLUSTER := tests/fixtures/tlscluster/_build/prod/rel/tlscluster
RELEASES := $(HELLO)/releases/start_erl.data $(HELLO)/hello-0.1.0.tar.gz \
            $(HALT)/releases/start_erl.data $(HELLO_ELIXIR)/releases/start_erl.data \
            $(CLUSTER)/releases/start_erl.data \
            $(STOCK)/releases/start_erl.data $(SRCCONF)/releases/start_erl.data \
            $(MIXENV)/releases/start_erl.data $(NOTES)/releases/start_erl.data \
            $(CHAT)/releases/start_erl.data $(CRUD)/releases/start_erl.data \
            $(TLSCLUSTER)/releases/start_erl.data
sources = $(shell find $(addprefix $(1)/,$(2)) -type f 2>/dev/null)

# The browser and API tests' tools: playwright-core (npm) drives Debian's
# chromium; schemathesis (PyPI) checks the API against its OpenAPI document.
PLAYWRIGHT := tests/browser/node_modules/playwright-core/package.json
SCHEMATHESIS := build/venv/bin/schemathesis

.PHONY: all deps build releases kernel demo test tools test-debian-kernel bench bench-density lint fuzz clean

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

# Images get the guest profile's smaller init (see Cargo.toml).
build:
	$(CARGO) build --release --workspace
	$(CARGO) build --profile guest -p unibeam-init

releases: deps $(RELEASES)

# Releases are rebuilt when their sources change.
$(HELLO)/releases/start_erl.data: $(call sources,examples/hello,rebar.config apps config)
	cd examples/hello && rebar3 as prod release

$(HELLO)/hello-0.1.0.tar.gz: $(HELLO)/releases/start_erl.data
	cd examples/hello && rebar3 as prod tar

$(CLUSTER)/releases/start_erl.data: $(call sources,examples/cluster,rebar.config apps config)
	cd examples/cluster && rebar3 as prod release

$(NOTES)/releases/start_erl.data: $(call sources,examples/notes,rebar.config apps config)
	cd examples/notes && rebar3 as prod release

$(CHAT)/releases/start_erl.data: $(call sources,examples/chat,rebar.config apps config)
	cd examples/chat && rebar3 as prod release

$(CRUD)/releases/start_erl.data: $(call sources,examples/crud,rebar.config apps config)
	cd examples/crud && rebar3 as prod release

$(HALT)/releases/start_erl.data: $(call sources,tests/fixtures/halt,rebar.config apps config)
	cd tests/fixtures/halt && rebar3 as prod release

# tlscluster is examples/cluster's code (apps/ and config/ are links to
# it) released with ssl: only its rebar.config is its own.
$(TLSCLUSTER)/releases/start_erl.data: $(call sources,tests/fixtures/tlscluster,rebar.config) $(call sources,examples/cluster,apps config)
	cd tests/fixtures/tlscluster && rebar3 as prod release

$(HELLO_ELIXIR)/releases/start_erl.data: $(call sources,examples/hello_elixir,mix.exs lib config)
	cd examples/hello_elixir && MIX_ENV=prod mix release --overwrite </dev/null

# Fixtures made the way their authors make them (tests/unchanged.rs).
$(STOCK)/releases/start_erl.data: $(call sources,tests/fixtures/stock,rebar.config apps config)
	cd tests/fixtures/stock && rebar3 as prod release

$(SRCCONF)/releases/start_erl.data: $(call sources,tests/fixtures/srcconf,rebar.config apps config)
	cd tests/fixtures/srcconf && rebar3 as prod release

$(MIXENV)/releases/start_erl.data: $(call sources,tests/fixtures/mixenv,mix.exs lib config rel)
	cd tests/fixtures/mixenv && MIX_ENV=prod mix release --overwrite </dev/null

tools: deps $(PLAYWRIGHT) $(SCHEMATHESIS)

$(PLAYWRIGHT): tests/browser/package-lock.json
	@command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends nodejs npm
	cd tests/browser && npm ci --no-audit --no-fund
	touch $@

$(SCHEMATHESIS):
	python3 -m venv build/venv
	build/venv/bin/pip install -q schemathesis==4.32.5

# The specialised guest kernel (6-7 minutes once; cached afterwards).
kernel: deps build
	target/release/unibeam kernel build

demo: deps build releases kernel
	scripts/demo.sh

test: deps build releases kernel tools
	$(CARGO) test --release --workspace

# The same suite with Debian's cloud kernel in every image instead.
test-debian-kernel: deps build releases
	UNIBEAM_KERNEL=debian $(CARGO) test --release --workspace

bench: deps build releases kernel tools
	$(CARGO) bench -p unibeam-e2e --bench boot_bench
	$(CARGO) bench -p unibeam-e2e --bench image
	$(CARGO) bench -p unibeam-e2e --bench runner
	$(CARGO) bench -p unibeam-e2e --bench cluster
	$(CARGO) bench -p unibeam-e2e --bench stats
	$(CARGO) bench -p unibeam-e2e --bench volume
	$(CARGO) bench -p unibeam-e2e --bench dashboard
	$(CARGO) bench -p unibeam-e2e --bench snapshot

# How many idle hello VMs (--memory 64M) the host holds, all answering HTTP:
# a tb-size sweep, then up to 200 VMs (half an hour or more under TCG).
# Not in `bench`, since it is long; it switches host KSM on while it runs
# when it may (root) and restores it after.
bench-density: deps build releases kernel
	$(CARGO) bench -p unibeam-e2e --bench density

# Every fuzz target for FUZZ_SECONDS each (fuzz/run.sh); fails on a crash.
# g++ builds libFuzzer; stable Rust runs cargo-fuzz with RUSTC_BOOTSTRAP=1.
FUZZ_SECONDS ?= 60
fuzz: deps
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	FUZZ_SECONDS=$(FUZZ_SECONDS) CARGO=$(CARGO) fuzz/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --release -- -D warnings
	$(CARGO) test --release -p unibeam-e2e --test file_cycles

clean:
	$(CARGO) clean
	rm -rf bench/work examples/hello/_build examples/hello_elixir/_build examples/cluster/_build tests/fixtures/halt/_build \
	       tests/fixtures/stock/_build tests/fixtures/srcconf/_build tests/fixtures/mixenv/_build \
	       examples/notes/_build examples/chat/_build examples/crud/_build build tests/browser/node_modules
