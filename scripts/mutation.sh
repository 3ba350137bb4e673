#!/usr/bin/env bash
# Mutation testing (mutmut 3, configured in pyproject.toml's [tool.mutmut]) of the modules that
# compute what users read: evaluate, predict, metrics, train/schedule, data/transforms,
# train/classify; plus the recipes (YAML, which mutmut does not mutate): scripts/recipe_mutants.py
# perturbs each recipe value in a temporary copy and checks that tests/test_recipes.py fails.
#
# Runs in a temporary copy of src/, tests/, pyproject.toml and README.md (never in this tree),
# and writes benchmarks/results/mutation.json.
#
#   scripts/mutation.sh                 # the current figures ("after": the top-level fields)
#   scripts/mutation.sh --label before  # stored under "before" (the top-level fields are kept)
#
# Environment: MUTATION_JOBS (parallel mutants, default 2), MUTATION_WORKDIR (keep the copy there
# and reuse mutmut's cache across runs; default: a fresh temporary directory, removed afterwards).
# Two cores: about an hour.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LABEL=after
if [ "${1:-}" = "--label" ]; then LABEL="$2"; fi
JOBS="${MUTATION_JOBS:-2}"

if [ -n "${MUTATION_WORKDIR:-}" ]; then
  WORK="$MUTATION_WORKDIR"
  mkdir -p "$WORK"
else
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/reslab-mutation.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
fi

# the working tree as it is (uncommitted edits included), without caches
(cd "$ROOT" && tar --exclude=__pycache__ --exclude='*.pyc' --exclude=.pytest_cache -cf - src tests pyproject.toml README.md) \
  | (cd "$WORK" && tar -xf -)

cd "$WORK"
python "$ROOT/scripts/mutation_report.py" prepare
# one intra-op thread per mutant: JOBS mutants in parallel share the cores
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
start=$(date +%s)
mutmut run --max-children "$JOBS" 2>&1 | tail -n 40 | tr '\r' '\n' | grep -v '^\s*$' | tail -n 15
python "$ROOT/scripts/recipe_mutants.py" --src "$WORK/src" --tests "$WORK/tests" --json "$WORK/recipes.json"
python "$ROOT/scripts/mutation_report.py" report --label "$LABEL" --recipes "$WORK/recipes.json" \
  --seconds "$(( $(date +%s) - start ))" --jobs "$JOBS" --out "$ROOT/benchmarks/results/mutation.json"
