#!/usr/bin/env bash
# Fuzzing in CI (called by .ci/run; see fuzz/README.md, "Fuzzing in CI"). For every target of
# this directory: replay each input kept in regressions/<target>/ once, then fuzz for
# FUZZ_SECONDS (default 45) from the target's seeds. Any crash, timeout or out-of-memory
# fails the run; its input is copied into regressions/<target>/ (keep it: commit it with the
# fix) and printed in hex.
#
#   fuzz/ci.sh                 # all targets
#   fuzz/ci.sh starttls rule   # some of them
#
# COMPAT_CORPUS: the compatibility corpus seeding `config` (default ../shared/compat-corpus
# from the repository root; skipped with a message when absent).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-45}
compat=${COMPAT_CORPUS:-../../shared/compat-corpus}

# One build for all targets: they share every dependency.
cargo fuzz build --sanitizer none
if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sallyport-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The seed directories and libFuzzer options of a target (as in fuzz/README.md).
seeds_of() {
    local target=$1
    case $target in
        client_hello) echo ../l4/testdata/tls ;;
        quic_initial) echo seeds/quic_initial ../l4/testdata/quic ;;
        config)
            if [[ -d $compat ]]; then
                # The config target reads its first byte as the format: odd YAML, even TOML.
                local dir=$work/compat-config file n=0
                mkdir -p "$dir"
                while IFS= read -r -d '' file; do
                    n=$((n + 1))
                    case $file in
                        *.toml) { printf T; cat "$file"; } >"$dir/$n.toml" ;;
                        *) { printf Y; cat "$file"; } >"$dir/$n.yml" ;;
                    esac
                done < <(find "$compat" -type f \( -name '*.yml' -o -name '*.yaml' -o -name '*.toml' \) -print0)
                echo "config: $n files of the compatibility corpus ($compat) as seeds" >&2
                echo seeds/config "$dir"
            else
                echo "config: no compatibility corpus at $compat, seeded with seeds/config only" >&2
                echo seeds/config
            fi
            ;;
        *) if [[ -d seeds/$target ]]; then echo "seeds/$target"; fi ;;
    esac
}

options_of() {
    case $1 in
        proxy_header) echo -max_len=4200 ;;
        config) echo -max_len=16384 ;;
        *) echo -max_len=4096 ;;
    esac
}

# Copies what libFuzzer left in the artifacts directory into regressions/<target>/.
keep_crashes() {
    local target=$1 artifacts=$2 file
    mkdir -p "regressions/$target"
    for file in "$artifacts"/*; do
        [[ -f $file ]] || continue
        cp "$file" "regressions/$target/"
        echo "::error::fuzz target $target failed on fuzz/regressions/$target/$(basename "$file"):"
        od -A x -t x1z -v "$file" | head -n 64
    done
}

failed=()
for target in "${targets[@]}"; do
    # Where cargo fuzz has libFuzzer write a failing input; emptied so only this run's show.
    artifacts=artifacts/$target
    rm -rf "$artifacts"
    mkdir -p "$artifacts" "$work/corpus/$target"
    if compgen -G "regressions/$target/*" >/dev/null; then
        echo "== $target: replaying fuzz/regressions/$target/"
        if ! cargo fuzz run --sanitizer none "$target" "regressions/$target" -- \
            -runs=0 -timeout=10; then
            echo "::error::fuzz target $target fails on an input in fuzz/regressions/$target/"
            failed+=("$target (regression)")
            continue
        fi
    fi
    read -r -a seeds <<<"$(seeds_of "$target")"
    read -r -a options <<<"$(options_of "$target")"
    echo "== $target: fuzzing for ${seconds}s from ${seeds[*]:-no seeds}"
    if ! cargo fuzz run --sanitizer none "$target" "$work/corpus/$target" "${seeds[@]}" -- \
        "-max_total_time=$seconds" -timeout=10 "${options[@]}" \
        -print_final_stats=1 2>"$work/$target.log"; then
        tail -n 40 "$work/$target.log"
        keep_crashes "$target" "$artifacts"
        failed+=("$target")
        continue
    fi
    grep -E '^(Done|stat::number_of_executed_units)' "$work/$target.log" || true
done

if ((${#failed[@]} > 0)); then
    echo "fuzzing failed: ${failed[*]}; inputs kept in fuzz/regressions/ (see fuzz/README.md)"
    exit 1
fi
echo "fuzzing: ${#targets[@]} targets, no crash"
