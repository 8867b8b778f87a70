# Build the C agent trio: bin/devopsAgent, bin/devopsDaemon, bin/upgrader.
#
#   make              build the three binaries (installs missing Debian packages first)
#   make check        every test: unit (C), script lint, integration (pytest)
#   make demo         main job: fake BK-CI server + daemon + agent run a real build
#   make dist         release tarball of this platform in dist/ (docs/deploy.md);
#                     its version is the one bin/devopsAgent was built with
#   make check-asan   the whole suite built with AddressSanitizer + UBSan
#   make check-valgrind   the unit tests under valgrind (errors, definite leaks)
#   make analyze      cppcheck + clang-tidy (.clang-tidy), clean or it fails
#   make VERSION=v1.2.3   set the version printed by `devopsAgent version`

VERSION    ?= v1.0.0
GIT_COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BUILD_TIME ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)

BUILD ?= build
BIN   ?= bin
PYTHON ?= /usr/bin/python3

CC ?= cc
WARN = -Wall -Wextra -Wshadow -Wformat=2 -Wmissing-prototypes -Werror
OPT ?= -O2 -g
SAN ?=
CFLAGS_ALL = -std=c11 -D_GNU_SOURCE $(WARN) $(OPT) $(SAN) $(CFLAGS) \
	-Icommon -I/usr/include/iniparser \
	$(shell pkg-config --cflags libcurl libcjson libarchive openssl 2>/dev/null) \
	-DAGENT_VERSION='"$(VERSION)"' -DAGENT_GIT_COMMIT='"$(GIT_COMMIT)"' \
	-DAGENT_BUILD_TIME='"$(BUILD_TIME)"'
LIBS = $(shell pkg-config --libs libcurl libcjson libarchive openssl 2>/dev/null) -liniparser
# Redis task queue (docs/queue.md): Debian's hiredis.
CFLAGS_ALL += $(shell pkg-config --cflags hiredis 2>/dev/null)
LIBS += $(shell pkg-config --libs hiredis 2>/dev/null || echo -lhiredis)
LDFLAGS_ALL = $(SAN) -Wl,--as-needed $(LDFLAGS)
# libarchive is dlopen()ed at the first unpack (common/archive.c): -ldl for
# a C library before glibc 2.34 (dropped by --as-needed where unused).
LIBS += -ldl
# Operator side: the local Prometheus endpoint (agent/prom.c).
CFLAGS_ALL += $(shell pkg-config --cflags libmicrohttpd 2>/dev/null)
LIBS += $(shell pkg-config --libs libmicrohttpd 2>/dev/null)

COMMON_SRC   = $(wildcard common/*.c)
AGENT_SRC    = $(wildcard agent/*.c)
DAEMON_SRC   = $(wildcard daemon/*.c)
UPGRADER_SRC = $(wildcard upgrader/*.c)
UNIT_SRC     = $(wildcard tests/unit/test_*.c)

COMMON_OBJ   = $(COMMON_SRC:%.c=$(BUILD)/%.o)
AGENT_OBJ    = $(AGENT_SRC:%.c=$(BUILD)/%.o)
DAEMON_OBJ   = $(DAEMON_SRC:%.c=$(BUILD)/%.o)
UPGRADER_OBJ = $(UPGRADER_SRC:%.c=$(BUILD)/%.o)
UNIT_BIN     = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/unit/%)
# Corpus replays of the fuzz targets (fuzz/replay.c), run with the unit tests.
FUZZ_NAMES   = $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_REPLAY  = $(FUZZ_NAMES:%=$(BUILD)/fuzz-replay/fuzz_%)
# Agent objects minus main.o, linked into unit tests of agent modules.
AGENT_LIB_OBJ = $(filter-out $(BUILD)/agent/main.o,$(AGENT_OBJ))

PROGS = $(BIN)/devopsAgent $(BIN)/devopsDaemon $(BIN)/upgrader

all: $(PROGS)

# A fresh Debian machine needs nothing else: each target first installs the
# Debian packages of its purpose that are missing (one dpkg-query when none
# is). They are order-only prerequisites, so they never force a rebuild.
DEPS = deps-build deps-test deps-analysis deps-fuzz deps-bench
$(DEPS):
	@scripts/dev/install-deps.sh $(@:deps-%=%)

.PHONY: $(DEPS)

$(BUILD)/libcommon.a: $(COMMON_OBJ)
	@ar rcs $@ $^

$(BUILD)/libagent.a: $(AGENT_LIB_OBJ)
	@ar rcs $@ $^

$(BUILD)/%.o: %.c | deps-build
	@mkdir -p $(@D)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_ALL) -MMD -MP -c -o $@ $<

$(BIN)/devopsAgent: $(BUILD)/agent/main.o $(BUILD)/libagent.a $(BUILD)/libcommon.a
	@mkdir -p $(@D)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)

$(BIN)/devopsDaemon: $(DAEMON_OBJ) $(BUILD)/libcommon.a
	@mkdir -p $(@D)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)

$(BIN)/upgrader: $(UPGRADER_OBJ) $(BUILD)/libcommon.a
	@mkdir -p $(@D)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)

$(BUILD)/unit/%: tests/unit/%.c tests/unit/t.h $(BUILD)/libagent.a $(BUILD)/libcommon.a
	@mkdir -p $(@D)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_ALL) -Itests/unit -Iagent $(LDFLAGS_ALL) -o $@ $< \
		$(BUILD)/libagent.a $(BUILD)/libcommon.a $(LIBS)

# Unit tests: every tests/unit/test_*.c is one program; the runner sums them.
unit: $(UNIT_BIN) $(FUZZ_REPLAY) | deps-test
	@tests/unit/run.sh $(UNIT_BIN) $(FUZZ_REPLAY)

lint: | deps-test
	@tests/lint.sh

integration: all | deps-test
	AGENT_BIN_DIR=$(abspath $(BIN)) $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

check: all unit lint integration

# Sanitizer reports go to files (log_path), so that every instrumented
# process of the suite counts, also those a test starts in the background and
# whose output nobody reads: any report fails the target, which prints it.
# verify_asan_link_order=0 lets the fault tests LD_PRELOAD their shim.
SAN_REPORTS = $(abspath build/asan/reports)
SAN_ENV = ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:verify_asan_link_order=0:log_path=$(SAN_REPORTS)/asan \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$(SAN_REPORTS)/ubsan

check-asan:
	@rm -rf $(SAN_REPORTS) && mkdir -p $(SAN_REPORTS)
	@$(SAN_ENV) $(MAKE) BUILD=build/asan BIN=build/asan/bin \
		OPT="-O1 -g -fno-omit-frame-pointer" \
		SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" check; \
	rc=$$?; \
	if [ -n "$$(ls -A $(SAN_REPORTS))" ]; then \
		echo "check-asan: sanitizer reports:"; cat $(SAN_REPORTS)/*; rc=1; \
	else \
		echo "check-asan: no sanitizer report"; \
	fi; \
	exit $$rc

# Unit tests under valgrind: any memcheck error or definite leak fails.
VALGRIND = valgrind -q --error-exitcode=99 --leak-check=full \
	--errors-for-leak-kinds=definite --show-leak-kinds=definite

check-valgrind: $(UNIT_BIN) $(FUZZ_REPLAY) | deps-test
	@UNIT_WRAPPER="$(VALGRIND)" tests/unit/run.sh $(UNIT_BIN) $(FUZZ_REPLAY)

demo: all | deps-test
	$(PYTHON) tests/demo.py

# Operator side: the release tarball (docs/deploy.md): the three binaries,
# the control scripts, the docs and SHA256SUMS, plus the tarball's .sha256.
DIST ?= dist
dist: $(PROGS)
	@scripts/dev/dist.sh $(BIN) $(DIST)

clean:
	rm -rf build $(PROGS)

.PHONY: all unit lint integration check check-asan check-valgrind demo clean dist

# ---------------------------------------------------------------- analysis
# `make analyze`: cppcheck, then clang-tidy (checks and exclusions in
# .clang-tidy) over every C file of the four programs; any finding fails.
# cppcheck knows POSIX (--library=posix) for leak and misuse checks; its
# "non-reentrant function" advice (getpwnam, readdir ...) is suppressed:
# every process is single-threaded and readdir_r is deprecated.
# clang-tidy runs one file per process: clang-tidy 14's valist checker keeps
# state across the files of one run and then reports false positives.
NPROC ?= $(shell nproc 2>/dev/null || echo 2)
ANALYZE_SRC = $(COMMON_SRC) $(AGENT_SRC) $(DAEMON_SRC) $(UPGRADER_SRC)
CPPCHECK_FLAGS = --enable=warning,performance,portability --std=c11 \
	--library=posix --error-exitcode=1 --inline-suppr --quiet \
	--suppress=getpwnamCalled --suppress=getpwuidCalled \
	--suppress=readdirCalled --suppress=getgrnamCalled \
	--suppress=localtimeCalled --suppress=strerrorCalled \
	-D_GNU_SOURCE -D__linux__ -Icommon
TIDY_RUNS = $(ANALYZE_SRC:%=tidy/%)

analyze: | deps-analysis
	@echo "  CPPCHECK $(words $(ANALYZE_SRC)) files"
	@cppcheck $(CPPCHECK_FLAGS) $(ANALYZE_SRC)
	@$(MAKE) --no-print-directory -j$(NPROC) tidy

tidy: $(TIDY_RUNS)

$(TIDY_RUNS): tidy/%: | deps-analysis
	@echo "  TIDY    $*"
	@out=$$(clang-tidy --quiet $* -- $(CFLAGS_ALL) -Iagent 2>&1) || \
		{ printf '%s\n' "$$out" | grep -v 'warnings generated'; exit 1; }

.PHONY: analyze tidy $(TIDY_RUNS)

# Benchmarks print figures; they never fail on a number (machines are noisy).
# Each records its figures in build/bench; bench/report.py makes the table
# and plots of them (build/bench/report), `make bench-docs` puts them into
# docs/benchmarks.md and docs/img.
bench: all | deps-bench
	$(PYTHON) bench/memory.py	# memory: idle, 16 and 64 builds
	$(PYTHON) bench/idle_cost.py	# idle CPU and wakeups (5 min)
	$(PYTHON) bench/server_load.py	# requests per idle minute, ask and legacy
	$(PYTHON) bench/restart_latency.py	# kill -9 to a new agent, beside a trivial program
	$(PYTHON) bench/build_latency.py	# pickup: claim to exec, queue to exec, slot re-claim
	$(PYTHON) bench/scale.py	# scale on one machine: 300 builds, cap 64
	$(PYTHON) bench/throughput.py	# throughput: task output vs cat, upgrade download vs curl+md5sum
	$(PYTHON) bench/fleet.py	# fleet: 100-400 agents, one fake server, a 60 s outage (~15 min)
	$(PYTHON) bench/queue_throughput.py	# Redis task queue
	$(PYTHON) bench/docker_pickup.py	# container builds
	$(PYTHON) bench/report.py

bench-docs: | deps-bench
	$(PYTHON) bench/report.py --docs

.PHONY: bench bench-docs

# ---------------------------------------------------------------- fuzzing
# fuzz/fuzz_<name>.c: one libFuzzer target per parser of outside input
# (fuzz/README.md). Built with clang into build/fuzz; every run starts from
# the checked-in fuzz/corpus/<name>/ and keeps what it finds in
# fuzz/corpus-run/<name>/ (not committed). Crashes land in
# build/fuzz/artifacts/<name>/ and fail the target.
#   make fuzz-smoke              every target FUZZ_SMOKE_SECONDS (30) s (CI)
#   make fuzz FUZZ_SECONDS=600   every target longer
FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 30
FUZZ_SAN = -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_MAKE = $(MAKE) --no-print-directory BUILD=build/fuzz BIN=build/fuzz/bin \
	CC=clang WARN="-Wall -Wextra" OPT="-O1 -g -fno-omit-frame-pointer" \
	SAN="$(FUZZ_SAN) -fsanitize=fuzzer-no-link"
FUZZ_RUNS = $(FUZZ_NAMES:%=fuzz-run/%)

$(BUILD)/fuzz-replay/fuzz_%: fuzz/fuzz_%.c fuzz/replay.c fuzz/fuzz.h \
		$(BUILD)/libagent.a $(BUILD)/libcommon.a
	@mkdir -p $(@D)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_ALL) -Ifuzz -Iagent -DFUZZ_NAME='"$*"' $(LDFLAGS_ALL) \
		-o $@ $< fuzz/replay.c $(BUILD)/libagent.a $(BUILD)/libcommon.a $(LIBS)

$(BUILD)/libfuzzer/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz.h \
		$(BUILD)/libagent.a $(BUILD)/libcommon.a
	@mkdir -p $(@D)
	@echo "  FUZZ-LD $@"
	@$(CC) $(CFLAGS_ALL) -Ifuzz -Iagent -fsanitize=fuzzer $(LDFLAGS_ALL) \
		-o $@ $< $(BUILD)/libagent.a $(BUILD)/libcommon.a $(LIBS)

fuzz-build: | deps-fuzz
	@$(FUZZ_MAKE) fuzz-bins

fuzz-bins: $(FUZZ_NAMES:%=$(BUILD)/libfuzzer/fuzz_%)
	@:

fuzz-smoke: fuzz-build
	@$(FUZZ_MAKE) -j$(NPROC) FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) fuzz-runs

fuzz: fuzz-build
	@$(FUZZ_MAKE) -j$(NPROC) FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz-runs

fuzz-runs: $(FUZZ_RUNS)

# One target: its dictionary is fuzz/<name>.dict, else fuzz/json.dict.
$(FUZZ_RUNS): fuzz-run/%: $(BUILD)/libfuzzer/fuzz_%
	@mkdir -p fuzz/corpus-run/$* $(BUILD)/artifacts/$* $(BUILD)/fuzz-logs
	@dict=fuzz/$*.dict; [ -f $$dict ] || dict=fuzz/json.dict; \
	log=$(BUILD)/fuzz-logs/$*.log; \
	$< -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -dict=$$dict \
		-artifact_prefix=$(BUILD)/artifacts/$*/ \
		fuzz/corpus-run/$* fuzz/corpus/$* >$$log 2>&1; rc=$$?; \
	execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $$log); \
	cov=$$(grep -o 'cov: [0-9]*' $$log | tail -n 1); \
	echo "fuzz_$*: $${execs:-0} executions in $(FUZZ_SECONDS) s, $$cov, exit $$rc"; \
	if [ $$rc -ne 0 ]; then tail -n 40 $$log; \
		echo "fuzz_$*: crash input in $(BUILD)/artifacts/$*/"; exit 1; fi

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-bins fuzz-runs $(FUZZ_RUNS)

-include $(COMMON_OBJ:.o=.d) $(AGENT_OBJ:.o=.d) $(DAEMON_OBJ:.o=.d) $(UPGRADER_OBJ:.o=.d)

# devopsDaemon restart latency only: median and p95 over 50 SIGKILLs of the
# agent (real bin/devopsAgent when built, else the stub agent).
bench-restart: $(BIN)/devopsDaemon $(BIN)/devopsAgent
	AGENT_BIN_DIR=$(abspath $(BIN)) $(PYTHON) bench/restart_latency.py

.PHONY: bench-restart
