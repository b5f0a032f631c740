#!/usr/bin/env bash
# Lint and run the whole test suite, as CI does (.ci/run calls this and nothing else).
#
#   ./run-tests.sh [PYTEST ARGS...]     e.g. ./run-tests.sh -k differential
#
# On a fresh clone it first installs everything (./install.sh --no-run). Runs as root:
# the integration and interop tiers start real containers.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$repo"

# A fresh machine or clone: no virtualenv, or a peer missing.
needed=(runc crun containerd ctr busybox skopeo umoci docker-registry unshare script tini-static nft)
missing=0
[[ -x .venv/bin/python ]] || missing=1
# pyproject.toml or install.sh changed since the last install: dependencies may have too.
sha256sum --status -c .venv/.dockyard-installed 2>/dev/null || missing=1
for tool in "${needed[@]}"; do
    command -v "$tool" >/dev/null || missing=1
done
if [[ $missing == 1 ]]; then
    ./install.sh --no-run
fi

# systemd's hybrid layout mounts hugetlb as a v1 hierarchy; a host that left it in the
# cgroup2 tree at /sys/fs/cgroup/unified makes crun refuse every container ("cgroups
# in hybrid mode not supported"). Do what systemd would have done.
unified=/sys/fs/cgroup/unified
if [[ -s $unified/cgroup.controllers ]] && grep -qw hugetlb "$unified/cgroup.controllers"; then
    mkdir -p /sys/fs/cgroup/hugetlb
    mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
fi

.venv/bin/ruff check src tests bench

# The container suite, again with crun as the containers' runtime (--runtime through
# the monitor): "the whole container suite passes with crun as well".
container_suite=(tests/interop/test_cli_containers.py tests/interop/test_cli_lifecycle.py
                 tests/interop/test_cli_containers_volumes.py tests/interop/test_cli_tty.py
                 tests/interop/test_cli_container_files.py tests/interop/test_cli_init.py
                 tests/interop/test_cli_health.py tests/interop/test_cli_events.py
                 tests/interop/test_cli_volumes_from.py tests/interop/test_cli_network.py)

# pytest's 5 means "no tests collected": for CI that is a broken suite, not a pass
# (but PYTEST ARGS such as -k may select none of the container suite for its crun run).
run_pytest() {
    local empty_ok=$1 code=0
    shift
    "$@" || code=$?
    if [[ $code == 5 && $empty_ok == 1 ]]; then
        code=0
    elif [[ $code == 5 ]]; then
        echo "run-tests.sh: pytest collected no tests: $*" >&2
        code=1
    fi
    return "$code"
}

status=0
run_pytest 0 .venv/bin/python -m pytest -n 2 tests "$@" || status=$?
crun_status=0
DOCKYARD_TEST_RUNTIME=crun run_pytest $(($# > 0)) .venv/bin/python -m pytest -n 2 "${container_suite[@]}" \
    "$@" || crun_status=$?
if [[ $crun_status != 0 ]]; then
    echo "run-tests.sh: the container suite failed with crun as the runtime" >&2
    [[ $status != 0 ]] || status=$crun_status
fi
exit "$status"
