#!/usr/bin/env bash
# The whole test suite on a fresh machine: virtual environment, pip packages, Debian's chromium (browser
# tests) and g++ (tfprobe's native kernel), then `ruff check .`, `ruff format --check .`, the docs build (`mkdocs build --strict`)
# and pytest. Extra arguments go to pytest;
# `--fast` (first) runs the fast suite only: -m "not slow and not browser and not native".
# As root (CI) or with passwordless sudo, missing system packages are installed with apt-get; otherwise
# the script says what is missing and how to install it, and runs what can run.
set -euo pipefail
markers=()
if [ "${1:-}" = "--fast" ]; then
  shift
  markers=(-m "not slow and not browser and not native")
fi

have_compiler() {  # the compilers tfprobe.kernels.native looks for
  for c in "${CXX:-}" g++ c++ clang++; do
    [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && return 0
  done
  return 1
}
missing() {
  command -v chromium >/dev/null 2>&1 || printf ' chromium'
  have_compiler || printf ' g++'
}

todo=$(missing)
if [ -n "$todo" ] && [ -x /usr/bin/apt-get ]; then
  SUDO=none
  if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  fi
  if [ "$SUDO" != none ]; then
    # Where it can install (CI), a failed install fails the run rather than skipping tests.
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $todo >/dev/null; } ||
      { echo "scripts/test.sh: apt-get install$todo failed" >&2; exit 1; }
    todo=$(missing)
  fi
fi
say_missing() {
  echo "scripts/test.sh: missing:$todo. Install with: sudo apt-get install -y$todo" >&2
  case "$todo" in *chromium*) echo "  without chromium the browser tests are not run (-m \"not browser\")" >&2 ;; esac
  case "$todo" in *g++*) echo "  without a C++ compiler the native kernel tests are skipped" >&2 ;; esac
}
if [ -n "$todo" ]; then
  say_missing
  trap say_missing EXIT  # again after pytest's output
  case "$todo" in *chromium*) [ ${#markers[@]} -gt 0 ] || markers=(-m "not browser") ;; esac
fi

. "$(dirname "$0")/setup_env.sh"
export TF_CPP_MIN_LOG_LEVEL=2
ruff check .
ruff format --check .  # the code's layout is ruff's (`ruff format .` rewrites it)
# The documentation site with warnings as errors: a broken link, anchor or API reference fails the run.
site=$(mktemp -d)
# (Not --quiet: it hides the warnings from --strict, which then passes.)
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir "$site"
rm -rf "$site"
python -m pytest -q "${markers[@]}" "$@"
