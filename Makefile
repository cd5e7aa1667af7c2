# rtedge entry points. `make` lists them. The recipes stay short: building
# and booting images is done by the runner in images/ (`rtedge-image`),
# which owns every QEMU/uhyve command line, timeout and exit-code check.
#
# Pass-through: HV=qemu-microvm|qemu-q35|uhyve (several: HV="qemu-q35 uhyve"),
# RTEDGE_SMP=N (guest CPUs), RTEDGE_PORT=P (host port of the control plane),
# RTEDGE_TOKEN (release profiles), RTEDGE_INITRD=archive (boot files for
# `run`), RUNS=N (boot-time), V=1 (verbose runner).

SHELL := /bin/bash
CARGO ?= cargo
# The runner is quiet once built; while it must be (re)built (the first
# `make run` compiles it for a minute or two) cargo shows what it compiles.
RUNNER_STALE = $(shell test -x target/release/rtedge-image && test -z "$$(find images/src images/Cargo.toml net/proto/src Cargo.lock README.md net/CONTROL.md -newer target/release/rtedge-image -print -quit 2>/dev/null)" || echo stale)
RUNNER = $(CARGO) run --release $(if $(RUNNER_STALE),,--quiet) -p rtedge-images --
HV_ARGS = $(foreach hv,$(HV),--hv $(hv))
# Kernel command line words for run/run-uhyve/start (`make run APPEND=rt_idle=poll`).
APPEND_ARGS = $(if $(APPEND),--append '$(APPEND)')
RUNNER_FLAGS = $(if $(V),--verbose)
RUNS ?= 5

export RTEDGE_SMP RTEDGE_PORT RTEDGE_TOKEN RTEDGE_INITRD

.DEFAULT_GOAL := help
.PHONY: help deps run run-uhyve start stop test lint loom e2e fleet image disk bench boot-time info clean fuzz soak faults rt-isolation

help: ## list the targets
	@echo "rtedge — make targets:"
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z0-9-]+):.*## (.*)/\1|\2/' | awk -F'|' '{ printf "  %-11s %s\n", $$1, $$2 }'
	@echo "variables: HV=<hypervisor> RTEDGE_SMP=<cpus> RTEDGE_PORT=<port> NAME=<instance> RUNS=<n> ONLY=<scenario text> V=1"

deps: ## install what is missing: kernel target, QEMU, redis-cli, uhyve 0.10.0
	@ci/deps.sh

run: deps ## boot the appliance under QEMU with the console here (Ctrl-A X quits; APPEND='k=v ...' adds kernel command line words)
	$(RUNNER) $(RUNNER_FLAGS) run appliance $(HV_ARGS) $(APPEND_ARGS)

run-uhyve: deps ## boot the appliance under uhyve (Ctrl-C quits)
	$(RUNNER) $(RUNNER_FLAGS) run appliance --hv uhyve $(APPEND_ARGS)

start: deps ## boot the appliance in the background (NAME=...); then rtctl ps | console | stop
	$(RUNNER) $(RUNNER_FLAGS) run appliance --detach $(HV_ARGS) $(if $(NAME),--name $(NAME)) $(APPEND_ARGS)

stop: ## stop the background appliances: SHUTDOWN, then kill after 30 s (NAME=... for one)
	$(CARGO) run --release --quiet -p rtedge-ctl -- stop $(if $(NAME),$(NAME),--all)

test: deps ## the lint gate, host tests, every test image under every hypervisor, the end-to-end tests, then the libvirt fleet
	$(MAKE) --no-print-directory lint
	$(CARGO) test
	$(MAKE) --no-print-directory loom
	$(RUNNER) $(RUNNER_FLAGS) test $(HV_ARGS)
	$(RUNNER) $(RUNNER_FLAGS) e2e $(HV_ARGS)
	$(RUNNER) $(RUNNER_FLAGS) fleet --require-acpi-shutdown

lint: deps ## cargo fmt --check, and clippy with warnings denied on every crate (host crates and the kernel target)
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --release --target x86_64-unknown-none -p rtedge-kernel -p rtedge-arch -p rtedge-plane -p rtedge-app -p rtedge-ktest --all-features --bins -- -D warnings

loom: ## model-check the engine's lock-free state machines (every interleaving, loom)
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test --release -p rtedge-engine --test 'loom_*'

e2e: deps ## boot the appliance and drive it with redis-cli, redis-benchmark and rtctl (ONLY=text filters)
	$(RUNNER) $(RUNNER_FLAGS) e2e $(HV_ARGS) $(foreach o,$(ONLY),--only $(o))

fuzz: ## millions of generated frames through the RESP parser and the dispatcher; prints cases/s (FUZZ_CASES=n)
	$(CARGO) test --release -p rtedge-control --test fuzz -- --ignored --nocapture

soak: deps ## >= 1 000 000 requests against the booted appliance with subscribers; errors, heap, slots and misses before/after
	RTEDGE_SOAK=1 $(RUNNER) $(RUNNER_FLAGS) e2e --hv qemu-microvm --only soak::

rt-isolation: deps ## the 1 ms RT thread's misses and release latency idle vs 20 silent, 20 reading, 20 non-reading subscribers (3 interleaved rounds, RTEDGE_RT_ROUNDS=n; ratios and ranges per run): RT CPU halting when idle, polling (rt_idle=poll), polling with its vCPU pinned alone (over a tap device when root)
	RTEDGE_RT_BENCH=1 RTEDGE_E2E_APPEND=irqsoff=1 $(RUNNER) $(RUNNER_FLAGS) e2e --hv qemu-microvm --only isolation::rt_deadlines
	RTEDGE_RT_BENCH=1 RTEDGE_E2E_APPEND="irqsoff=1 rt_idle=poll" $(RUNNER) $(RUNNER_FLAGS) e2e --hv qemu-microvm --only isolation::rt_deadlines
	RTEDGE_RT_BENCH=1 RTEDGE_RT_PIN=1 RTEDGE_E2E_APPEND="irqsoff=1 rt_idle=poll" $(if $(filter 0,$(shell id -u)),RTEDGE_E2E_NET=tap) $(RUNNER) $(RUNNER_FLAGS) e2e --hv qemu-microvm --only isolation::rt_deadlines

faults: deps ## every command completes while the guest's NIC path drops and corrupts 10 % of the packets (net_faults=10,10)
	RTEDGE_E2E_APPEND="net_faults=10,10" $(RUNNER) $(RUNNER_FLAGS) e2e --hv qemu-microvm --only faults::
fleet: deps ## three appliances under a private libvirtd: virsh define/start/console/shutdown/destroy, autostart, rtctl --fleet
	$(RUNNER) $(RUNNER_FLAGS) fleet --require-acpi-shutdown

image: deps ## build the appliance image and print its path and size
	$(RUNNER) $(RUNNER_FLAGS) build appliance

disk: deps ## build the appliance as disk images (hybrid ISO for BIOS+UEFI, GPT raw/qcow2 for UEFI) and print their sizes; RELEASE=1 needs RTEDGE_TOKEN or RTEDGE_TOKEN_FILE
	$(RUNNER) $(RUNNER_FLAGS) disk $(if $(RELEASE),--release)

bench: deps ## run the benchmark image and print its figures per hypervisor; then `make rt-isolation`
	$(RUNNER) $(RUNNER_FLAGS) bench $(HV_ARGS)
	$(MAKE) --no-print-directory rt-isolation

boot-time: deps ## boot the ktest image RUNS times per hypervisor and report boot times
	$(RUNNER) $(RUNNER_FLAGS) boot-time --runs $(RUNS) $(HV_ARGS)

info: ## show the profiles, built images and hypervisor versions
	$(RUNNER) $(RUNNER_FLAGS) info

clean: ## remove build output (target/, including images and the dev token)
	$(CARGO) clean
