#!/usr/bin/env bash
# One call on a bare GPU machine: build eco_train with CUDA, run every GPU test and benchmark, a
# short CUDA training run and (time allowing) the CPU tests, then print ONE summary table.
# Run from anywhere; it works in the repository that holds it. See docs/gpu.md.
#
#   tools/gpu_check.sh [--prebuilt DIR] [--build DIR] [--budget S] [--hard-limit S] [--jobs N]
#                      [--steps N] [--cpu-tests fast|all|none] [--bench-timeout S]
#                      [--build-timeout S]
#
#   --prebuilt DIR   use an existing build tree: no configure, no build
#   --build DIR      build tree to configure and build (default build_gpu; "build*/" is ignored)
#   --budget S       no stage starts once S seconds have passed (default 420 = 7 min)
#   --hard-limit S   every stage's timeout is cut so the script ends by S seconds (default 450)
#   --jobs N         build jobs (default: all cores)
#   --steps N        steps of the CUDA training smoke run (default 20)
#   --cpu-tests M    fast (default: the CPU suite minus $GPU_CHECK_SLOW_TESTS, per-test timeout
#                    120 s), all, or none; it runs last, in whatever time is left
#   --bench-timeout S  per benchmark program (default 120)
#   --build-timeout S  for configure + build each (default 360; still cut by --hard-limit)
#
# Stages, in order (each with its own timeout; PASS / FAIL / SKIP, seconds, key figures):
#   gpu_info   nvidia-smi: GPU name, driver, memory, clocks. No GPU found: every GPU stage SKIPs.
#   deps       unpacks deps/carry/prefix.tar.xz into deps/prefix when that is missing or stale
#              (tools/fetch_gpu_deps.sh makes both; the GPU machine has none of the Debian
#              packages). No prefix at all: the system's packages are used.
#   configure  cmake (Ninja when present) with deps/prefix, -DECO_CUDA=ON (when nvcc exists),
#              -DCMAKE_CUDA_ARCHITECTURES=90 (or $GPU_CHECK_CUDA_ARCH; GPU_CHECK_CUDA=OFF builds
#              without CUDA); extra cmake arguments from $GPU_CHECK_CMAKE_ARGS (word-split)
#   build      cmake --build, all cores
#   gpu_tests  ctest -R cuda (every test of tests/cuda is named test_cuda*), plus any test
#              labelled gpu or cuda; with a GPU, a test that skips counts as "skipped" in the
#              figures and the stage fails if every one skipped
#   bench      every build/bench/bench_gpu* program, one at a time, each with a timeout; their
#              RESULT lines (below) are collected
#   smoke      eco_train --set train.device=cuda for --steps steps on configs/tiny_cpu.json (the
#              Moby-Dick shards when data/ holds them, else byte-level shards made from this
#              repository's own text), then the same on the CPU for comparison; needs
#              train.device in `eco_train --help-config`, else SKIP; fails unless the CUDA run
#              exits 0 with a finite loss that fell
#   cpu_tests  ctest -E cuda (see --cpu-tests), jobs/2 tests at a time with OMP_NUM_THREADS=2
#
# RESULT lines. A benchmark reports each key figure on its own stdout line:
#     RESULT <name> <value> <unit> [ceiling <value> <unit>] [# comment]
#   <name>  one word ([A-Za-z0-9_.:-]), unique within the program, e.g. gemm_fp8_e4m3_8192
#   <value> a plain decimal number (printf "%g" is fine); <unit> one word, e.g. TFLOP/s, GB/s,
#           ms, tok/s, x (a ratio)
#   ceiling <value> <unit>  optional: the baseline or hardware ceiling measured IN THE SAME RUN
#           (e.g. cuBLASLt bf16 TFLOP/s, device-to-device copy GB/s); the summary prints
#           value/ceiling as a percentage when both units agree (a "(label)" suffix on a unit,
#           as in GB/s(copy), is ignored in that comparison).
#   # comment  optional free text to the end of the line (kept, not parsed).
#   Example:  RESULT optimizer_step_eco 3120.5 GB/s ceiling 4310.2 GB/s(copy)  # 0.41 ms/step
#   Anything else a benchmark prints is kept in its log. A benchmark that exits non-zero FAILs.
#
# Output: $OUT (the device tool's folder) or, when OUT is unset, ./gpu_check_out (which holds a
# .gitignore of "*", so git and the device tool ignore it). Written after every stage, so a
# killed run still returns something; at most four files, because the device tool brings back
# eight at most:
#   summary.txt    the table below        results.txt   every RESULT line, prefixed by its program
#   logs.tar.gz    one log per stage (plus CMake's and ctest's own), i.e. logs/NN_stage.log
#   console.log    everything this script printed
# When OUT is unset the logs also stay unpacked in gpu_check_out/logs/.
#
# Exit codes: 0 every stage that ran passed; 1 a stage failed; 2 bad arguments; 3 nothing failed
# but the time budget cut a GPU stage (gpu_tests, bench or smoke) before it started.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2

budget=420
hard=450
jobs=$(nproc 2>/dev/null || echo 4)
steps=20
cpu_mode=fast
bench_timeout=120
build_timeout=360
build=build_gpu
prebuilt=""
cuda_arch=${GPU_CHECK_CUDA_ARCH:-90}
# CPU tests left out of the "fast" subset (an extended regex on ctest names).
slow_tests=${GPU_CHECK_SLOW_TESTS:-'^(test_tokenizer_parity|test_config_fuzz)$'}

usage() { sed -n '2,/^set -uo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
need_arg() { [[ $# -ge 2 && -n $2 ]] || { echo "gpu_check: $1 needs a value" >&2; exit 2; }; }
need_int() { [[ $2 =~ ^[0-9]+$ ]] || { echo "gpu_check: $1 needs a whole number, not '$2'" >&2; exit 2; }; }
while (($#)); do
  case $1 in
    --prebuilt) need_arg "$@"; prebuilt=$2; shift ;;
    --build) need_arg "$@"; build=$2; shift ;;
    --budget) need_arg "$@"; need_int "$1" "$2"; budget=$2; shift ;;
    --hard-limit) need_arg "$@"; need_int "$1" "$2"; hard=$2; shift ;;
    --jobs) need_arg "$@"; need_int "$1" "$2"; jobs=$2; shift ;;
    --steps) need_arg "$@"; need_int "$1" "$2"; steps=$2; shift ;;
    --bench-timeout) need_arg "$@"; need_int "$1" "$2"; bench_timeout=$2; shift ;;
    --build-timeout) need_arg "$@"; need_int "$1" "$2"; build_timeout=$2; shift ;;
    --cpu-tests)
      need_arg "$@"
      [[ $2 =~ ^(fast|all|none)$ ]] || { echo "gpu_check: --cpu-tests is fast, all or none" >&2; exit 2; }
      cpu_mode=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
((hard >= budget)) || hard=$budget
[[ -n $prebuilt ]] && build=$prebuilt
[[ $build == /* ]] || build=$root/$build

# ---- output -------------------------------------------------------------------------------------
if [[ -n ${OUT:-} ]]; then
  outdir=$OUT
  work=$(mktemp -d /tmp/gpu_check.XXXXXX)
else
  outdir=$root/gpu_check_out
  work=$outdir
fi
mkdir -p "$outdir" || { echo "gpu_check: cannot create $outdir" >&2; exit 2; }
[[ -z ${OUT:-} ]] && echo '*' >"$outdir/.gitignore"
logs=$work/logs
rm -rf "$logs" "$work/smoke"
mkdir -p "$logs"
rm -f "$outdir/summary.txt" "$outdir/results.txt" "$outdir/logs.tar.gz" "$outdir/console.log"
: >"$outdir/results.txt"
exec 3>&1 4>&2
exec > >(tee "$outdir/console.log") 2>&1
tee_pid=$!

t0=$SECONDS
elapsed() { printf '%d:%02d' $(((SECONDS - t0) / 60)) $(((SECONDS - t0) % 60)); }
say() { echo "gpu_check [$(elapsed)] $*"; }

# ---- stage bookkeeping --------------------------------------------------------------------------
names=() statuses=() secs=() notes=()
have_gpu=0 gpu_name="" budget_cut=0 stage_no=0
STATUS="" NOTE="" LOG="" DEADLINE=0

write_summary() {
  local i total=$((SECONDS - t0)) overall=PASS
  for i in "${!statuses[@]}"; do [[ ${statuses[$i]} == FAIL ]] && overall=FAIL; done
  {
    echo "gpu_check summary: $(date -u +%Y-%m-%dT%H:%M:%SZ), host $(hostname 2>/dev/null || echo '?'), GPU: ${gpu_name:-none}"
    printf '%-10s %-6s %6s  %s\n' stage status secs "key figures"
    printf '%-10s %-6s %6s  %s\n' ---------- ------ ------ ------------------------------------------
    for i in "${!names[@]}"; do
      printf '%-10s %-6s %6s  %s\n' "${names[$i]}" "${statuses[$i]}" "${secs[$i]}" "${notes[$i]}"
    done
    printf '%-10s %-6s %6s  %s\n' total "$overall" "$total" "budget ${budget}s, hard limit ${hard}s, logs in logs.tar.gz"
    if [[ -s $outdir/results.txt ]]; then
      echo "RESULT lines (program name value unit [ceiling value unit] [% of ceiling]):"
      awk '{
        line = "  " $0; u = $4; c = $7; sub(/\(.*\)$/, "", u); sub(/\(.*\)$/, "", c)
        if (NF >= 7 && $5 == "ceiling" && u == c && $6 + 0 > 0) line = line sprintf("  [%.1f%% of ceiling]", 100 * $3 / $6)
        print line }' "$outdir/results.txt"
    fi
  } >"$outdir/summary.txt"
  tar -C "$work" -czf "$outdir/logs.tar.gz.tmp" logs 2>/dev/null && mv "$outdir/logs.tar.gz.tmp" "$outdir/logs.tar.gz"
}

record() {  # name status secs note
  names+=("$1") statuses+=("$2") secs+=("$3") notes+=("$4")
  write_summary
}

# run_stage NAME DEFAULT_TIMEOUT FUNCTION GPU_STAGE(0|1)
# The function sets STATUS (PASS/FAIL/SKIP) and NOTE; it runs commands through `limited`, which
# keeps every command inside the stage's deadline.
run_stage() {
  local name=$1 want=$2 fn=$3 gpu_stage=$4 start left
  stage_no=$((stage_no + 1))
  LOG=$logs/$(printf '%02d' "$stage_no")_$name.log
  if ((SECONDS - t0 >= budget)); then
    say "$name: not started, the ${budget}s budget is used up"
    ((gpu_stage)) && budget_cut=1
    record "$name" SKIP 0 "not started: ${budget}s budget used up"
    return
  fi
  left=$((t0 + hard - SECONDS))
  ((want > left)) && want=$left
  if ((want < 5)); then
    ((gpu_stage)) && budget_cut=1
    record "$name" SKIP 0 "not started: under 5 s left before the ${hard}s hard limit"
    return
  fi
  DEADLINE=$((SECONDS + want))
  STATUS=FAIL NOTE=""
  echo "# gpu_check stage $name, started at $(elapsed), timeout ${want}s" >"$LOG"
  say "== $name (timeout ${want}s) -> logs/$(basename "$LOG")"
  start=$SECONDS
  "$fn"
  say "   $name: $STATUS in $((SECONDS - start))s${NOTE:+: $NOTE}"
  echo "# $name: $STATUS in $((SECONDS - start))s${NOTE:+: $NOTE}" >>"$LOG"
  if [[ $STATUS == FAIL ]]; then
    echo "   ---- last 25 lines of logs/$(basename "$LOG") ----"
    tail -n 25 "$LOG" 2>/dev/null | sed 's/^/   | /'
  fi
  record "$name" "$STATUS" "$((SECONDS - start))" "$NOTE"
}

# limited [-t SECONDS] CMD... : runs CMD (output appended to $LOG) within the stage deadline and
# the optional per-command cap. Returns CMD's status; 124 means it was stopped at its timeout.
limited() {
  local cap=0
  if [[ $1 == -t ]]; then cap=$2; shift 2; fi
  local t=$((DEADLINE - SECONDS))
  ((cap > 0 && cap < t)) && t=$cap
  ((t < 1)) && return 124
  echo "\$ $*  (timeout ${t}s)" >>"$LOG"
  timeout -k 10 "$t" "$@" >>"$LOG" 2>&1
  local rc=$?
  ((rc == 137)) && rc=124
  ((rc == 124)) && echo "gpu_check: stopped after its ${t}s timeout" >>"$LOG"
  return $rc
}

# ---- tools --------------------------------------------------------------------------------------
find_tool() {  # name [python module whose BIN_DIR/CMAKE_BIN_DIR holds it]
  local p
  p=$(command -v "$1" 2>/dev/null) && { echo "$p"; return 0; }
  for p in /usr/local/bin/$1 /opt/torch/.venv/bin/$1 /usr/local/cuda/bin/$1 ${CUDA_HOME:+$CUDA_HOME/bin/$1}; do
    [[ -x $p ]] && { echo "$p"; return 0; }
  done
  if [[ -n ${2:-} ]] && command -v python3 >/dev/null 2>&1; then
    p=$(python3 -c "import $2 as m; print(getattr(m, 'CMAKE_BIN_DIR', getattr(m, 'BIN_DIR', '')))" 2>/dev/null)
    [[ -n $p && -x $p/$1 ]] && { echo "$p/$1"; return 0; }
  fi
  return 1
}
CMAKE=$(find_tool cmake cmake) || CMAKE=""
CTEST=""
[[ -n $CMAKE && -x $(dirname "$CMAKE")/ctest ]] && CTEST=$(dirname "$CMAKE")/ctest
[[ -z $CTEST ]] && CTEST=$(find_tool ctest cmake) || true
NINJA=$(find_tool ninja ninja) || NINJA=""
NVCC=$(find_tool nvcc) || NVCC=""
CXX_BIN=$(find_tool "${CXX:-g++}") || CXX_BIN=$(find_tool c++) || CXX_BIN=""

prefix=$root/deps/prefix
use_prefix=0
triplet=x86_64-linux-gnu
rt_ld=""       # LD_LIBRARY_PATH for programs built against deps/prefix
set_prefix_env() {
  use_prefix=1
  rt_ld=$prefix/usr/lib/$triplet:$prefix/usr/lib/$triplet/openblas-pthread
  export PKG_CONFIG_LIBDIR=$prefix/usr/lib/$triplet/pkgconfig:$prefix/usr/share/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$prefix
}
with_rt() { LD_LIBRARY_PATH="$rt_ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"; }

# ---- stages -------------------------------------------------------------------------------------
stage_gpu_info() {
  local smi
  if ! smi=$(find_tool nvidia-smi); then
    STATUS=SKIP NOTE="no nvidia-smi: no GPU here, every GPU stage will SKIP"
    return
  fi
  limited -t 30 "$smi" -L
  if ! grep -q '^GPU [0-9]' "$LOG"; then
    STATUS=SKIP NOTE="nvidia-smi lists no GPU: every GPU stage will SKIP"
    return
  fi
  have_gpu=1
  limited -t 30 "$smi"
  local q=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw,power.limit,compute_mode,mig.mode.current
  limited -t 30 "$smi" --query-gpu=$q --format=csv
  local line
  line=$("$smi" --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>/dev/null | head -n1)
  gpu_name=$(echo "$line" | cut -d, -f1 | sed 's/^ *//;s/ *$//')
  STATUS=PASS
  NOTE="$(grep -c '^GPU [0-9]' "$LOG") GPU(s): $line"
}

stage_deps() {
  local tarball=$root/deps/carry/prefix.tar.xz want have
  if [[ -f $tarball ]]; then
    want=$(tar -xJOf "$tarball" prefix/.stamp 2>/dev/null ||
           python3 -c "import tarfile,sys; print(tarfile.open(sys.argv[1]).extractfile('prefix/.stamp').read().decode().strip())" "$tarball" 2>/dev/null)
    have=$(cat "$prefix/.stamp" 2>/dev/null)
    if [[ -n $want && $want == "$have" ]]; then
      NOTE="deps/prefix up to date ($want)"
    else
      rm -rf "$prefix"
      if command -v xz >/dev/null 2>&1; then
        limited -t 120 tar -C "$root/deps" -xJf "$tarball"
      else
        limited -t 120 python3 -c "import tarfile,sys; kw = {'filter': 'tar'} if hasattr(tarfile, 'tar_filter') else {}
tarfile.open(sys.argv[1]).extractall(sys.argv[2], **kw)" "$tarball" "$root/deps"
      fi || { NOTE="could not unpack deps/carry/prefix.tar.xz"; return; }
      NOTE="unpacked deps/carry/prefix.tar.xz ($(($(stat -c %s "$tarball") / 1024)) KiB)"
    fi
  elif [[ -f $prefix/.stamp ]]; then
    NOTE="deps/prefix as carried"
  else
    STATUS=SKIP NOTE="no deps/prefix(.tar.xz): building against the system's packages"
    return
  fi
  [[ -f $prefix/usr/include/catch2/catch.hpp && -e $prefix/usr/lib/$triplet/libopenblas.so ]] ||
    { NOTE="$NOTE; but deps/prefix is incomplete (run tools/fetch_gpu_deps.sh --force)"; return; }
  set_prefix_env
  if ! command -v pkg-config >/dev/null 2>&1; then NOTE="$NOTE; pkg-config: carried pkgconf"; fi
  STATUS=PASS
  cat "$prefix/MANIFEST.txt" >>"$LOG" 2>/dev/null
}

stage_configure() {
  {
    echo "cmake: ${CMAKE:-none}  ctest: ${CTEST:-none}  ninja: ${NINJA:-none}  nvcc: ${NVCC:-none}  c++: ${CXX_BIN:-none}"
    [[ -n $CMAKE ]] && "$CMAKE" --version | head -n1
    [[ -n $NVCC ]] && "$NVCC" --version | tail -n2
    [[ -n $CXX_BIN ]] && "$CXX_BIN" --version | head -n1
  } >>"$LOG" 2>&1
  [[ -n $CMAKE && -n $CTEST ]] || { NOTE="no cmake/ctest on this machine"; return; }
  [[ -n $CXX_BIN ]] || { NOTE="no host C++ compiler (g++/c++) on this machine: nothing can be built"; return; }
  local cuda=OFF args=() gen
  if [[ ${GPU_CHECK_CUDA:-} == OFF ]]; then
    cuda=OFF
  elif [[ -n $NVCC ]]; then
    cuda=ON
    args+=(-DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$cuda_arch")
  elif ((have_gpu)); then
    NOTE="a GPU but no nvcc: cannot build the CUDA backend"; return
  fi
  if [[ -f $build/CMakeCache.txt ]]; then
    gen=$(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "$build/CMakeCache.txt")
  elif [[ -n $NINJA ]]; then
    gen=Ninja
    args+=(-DCMAKE_MAKE_PROGRAM="$NINJA")
  else
    gen="Unix Makefiles"
  fi
  args+=(-G "$gen" -DCMAKE_BUILD_TYPE=Release -DECO_CUDA="$cuda")
  [[ -f $build/CMakeCache.txt ]] || args+=(-DCMAKE_CXX_COMPILER="$CXX_BIN")
  if ((use_prefix)); then
    local inc="-isystem $prefix/usr/include"
    local link="-Wl,-rpath-link,$prefix/usr/lib/$triplet:$prefix/usr/lib/$triplet/openblas-pthread"
    args+=(-DCMAKE_PREFIX_PATH="$prefix/usr"
           -DCMAKE_CXX_FLAGS="$inc" -DCMAKE_EXE_LINKER_FLAGS="$link" -DCMAKE_SHARED_LINKER_FLAGS="$link")
    [[ $cuda == ON ]] && args+=(-DCMAKE_CUDA_FLAGS="$inc")
    command -v pkg-config >/dev/null 2>&1 || args+=(-DPKG_CONFIG_EXECUTABLE="$prefix/bin/pkg-config")
  fi
  # shellcheck disable=SC2206  # word splitting is the point
  [[ -n ${GPU_CHECK_CMAKE_ARGS:-} ]] && args+=($GPU_CHECK_CMAKE_ARGS)
  if limited "$CMAKE" -S "$root" -B "$build" "${args[@]}"; then
    STATUS=PASS
    NOTE="$gen, CUDA $cuda${NVCC:+ (nvcc $("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), sm_$cuda_arch)}, $(basename "$CXX_BIN") $("$CXX_BIN" -dumpfullversion 2>/dev/null)"
    grep -q 'CUDA backend ON' "$LOG" || { [[ $cuda == ON ]] && { STATUS=FAIL NOTE="$NOTE; but CMake did not enable the CUDA backend"; }; }
  else
    NOTE="cmake failed (rc $?)"
  fi
}

stage_build() {
  if limited "$CMAKE" --build "$build" -j"$jobs"; then
    STATUS=PASS NOTE="$jobs jobs, $(find "$build" -maxdepth 3 -type f -name 'test_*' -perm -u+x | wc -l) test programs"
  else
    local rc=$?
    NOTE=$([[ $rc == 124 ]] && echo "timed out" || echo "build failed: $(grep -m1 -E 'error|Error' "$LOG" | cut -c1-120)")
  fi
}

prebuilt_check() {  # for --prebuilt: the tree must exist; make its recorded paths resolvable here
  local cache=$build/CMakeCache.txt src bin
  [[ -f $cache ]] || { echo "gpu_check: --prebuilt $build has no CMakeCache.txt" >&2; return 1; }
  src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$cache")
  bin=$(sed -n 's/^CMAKE_CACHEFILE_DIR:INTERNAL=//p' "$cache")
  # ctest files and the tests' compiled-in paths are absolute: a tree built in another checkout
  # needs its old paths to lead here. As root we can add links; otherwise say so.
  if [[ -n $src && ! -e $src ]]; then
    mkdir -p "$(dirname "$src")" 2>/dev/null && ln -s "$root" "$src" 2>/dev/null &&
      echo "gpu_check: linked $src -> $root (the prebuilt tree's source path)"
  fi
  if [[ -n $bin && ! -e $bin ]]; then
    mkdir -p "$(dirname "$bin")" 2>/dev/null && ln -s "$build" "$bin" 2>/dev/null &&
      echo "gpu_check: linked $bin -> $build (the prebuilt tree's own path)"
  fi
  [[ -z $src || -e $src ]] || echo "gpu_check: WARNING: the prebuilt tree's source path $src does not exist here"
  [[ -z $bin || -e $bin ]] || echo "gpu_check: WARNING: the prebuilt tree's path $bin does not exist here"
  return 0
}

# ctest_run LOGNAME ARGS... : runs ctest in the build tree; sets C_PASS C_FAIL C_SKIP C_TOTAL
# C_FAILED (names) C_TIMEDOUT (1 when the stage deadline stopped it).
ctest_run() {
  local rc
  (cd "$build" && with_rt limited "$CTEST" --output-on-failure "$@")
  rc=$?
  C_TIMEDOUT=$((rc == 124))
  C_PASS=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed ' "$LOG")
  C_SKIP=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*\*\*\*Skipped' "$LOG")
  C_FAILED=$(grep -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: ' "$LOG" | grep -E '\*\*\*(Failed|Timeout|Exception|Not Run)|\*\*\*[A-Z]' |
             grep -v '\*\*\*Skipped' | sed -E 's/.*Test +#[0-9]+: ([^ ]+).*/\1/' | paste -sd, -)
  C_FAIL=0; [[ -n $C_FAILED ]] && C_FAIL=$(tr ',' '\n' <<<"$C_FAILED" | wc -l)
  C_TOTAL=$((C_PASS + C_SKIP + C_FAIL))
  return $rc
}

stage_gpu_tests() {
  local extra="" n labels
  # Tests labelled gpu/cuda whose names do not say cuda (no such labels exist today). ctest ANDs
  # -R and -L, so those run as a second selection.
  labels=$(cd "$build" && "$CTEST" --print-labels 2>/dev/null)
  grep -qiE '^ *(gpu|cuda)$' <<<"$labels" && extra=1
  ctest_run -R cuda --timeout 300
  local p=$C_PASS s=$C_SKIP f=$C_FAIL bad=$C_FAILED to=$C_TIMEDOUT
  if [[ -n $extra ]]; then
    ctest_run -L '^(gpu|cuda)$' -E cuda --timeout 300
    p=$((p + C_PASS)) s=$((s + C_SKIP)) f=$((f + C_FAIL)) bad=$bad${C_FAILED:+,$C_FAILED} to=$((to | C_TIMEDOUT))
  fi
  n=$((p + s + f))
  NOTE="$p passed, $f failed, $s skipped of $n (ctest -R cuda${extra:+ + labels gpu|cuda})"
  [[ -n $bad ]] && NOTE="$NOTE; failed: ${bad#,}"
  ((to)) && NOTE="$NOTE; stopped at the stage timeout"
  if ((f > 0 || to)); then STATUS=FAIL
  elif ((n == 0)); then
    if ((have_gpu)); then STATUS=FAIL NOTE="no GPU tests in the build (was it built with CUDA?)"
    else STATUS=SKIP NOTE="no GPU, and no GPU tests in this build"; fi
  elif ((!have_gpu)); then STATUS=SKIP NOTE="no GPU: $NOTE"
  elif ((p == 0)); then STATUS=FAIL NOTE="a GPU is here but every GPU test skipped: $NOTE"
  else STATUS=PASS
  fi
}

stage_bench() {
  local progs=() b name rc results nres=0 failed=() ran=()
  while IFS= read -r b; do progs+=("$b"); done < <(find "$build/bench" -maxdepth 1 -type f -name 'bench_gpu*' -perm -u+x 2>/dev/null | sort)
  if ((${#progs[@]} == 0)); then
    STATUS=SKIP NOTE="no bench_gpu* programs in $(basename "$build")/bench"
    echo "no bench_gpu* programs" >>"$LOG"
    return
  fi
  if ((!have_gpu)); then
    STATUS=SKIP NOTE="no GPU; would run: $(for b in "${progs[@]}"; do basename "$b"; done | paste -sd' ' -)"
    return
  fi
  for b in "${progs[@]}"; do
    name=$(basename "$b")
    if ((DEADLINE - SECONDS < 5)); then failed+=("$name(not started)"); continue; fi
    echo "==== $name" >>"$LOG"
    local before
    before=$(wc -l <"$LOG")
    (cd "$build" && with_rt limited -t "$bench_timeout" "$b")
    rc=$?
    ran+=("$name")
    results=$(tail -n +"$((before + 1))" "$LOG" | grep -E '^RESULT [^ #]+ [-+0-9.eE]+ [^ #]+( ceiling [-+0-9.eE]+ [^ #]+)? *(#.*)?$' || true)
    if [[ -n $results ]]; then
      sed "s/^RESULT /$name /" <<<"$results" >>"$outdir/results.txt"
      nres=$((nres + $(wc -l <<<"$results")))
    fi
    if ((rc != 0)); then
      failed+=("$name(rc $rc$( ((rc == 124)) && echo ', timeout'))")
    elif [[ -z $results ]]; then
      failed+=("$name(no RESULT line)")
    fi
  done
  NOTE="ran ${#ran[@]}: ${ran[*]:-none}; $nres RESULT lines"
  if ((${#failed[@]})); then NOTE="$NOTE; failed: ${failed[*]}"; else STATUS=PASS; fi
}

# Prints the first and the last train_loss and the last tokens_per_s of a metrics.jsonl ("?" for
# one that is missing; a non-numeric value such as NaN is printed as it is).
metrics_figures() {
  local m=$1 first last tps
  first=$(grep -o '"train_loss": *[^,}]*' "$m" 2>/dev/null | head -n1 | sed 's/.*: *//')
  last=$(grep -o '"train_loss": *[^,}]*' "$m" 2>/dev/null | tail -n1 | sed 's/.*: *//')
  tps=$(grep -o '"tokens_per_s": *[^,}]*' "$m" 2>/dev/null | tail -n1 | sed 's/.*: *//')
  awk -v a="${first:-?}" -v b="${last:-?}" -v t="${tps:-?}" 'function f(x, fmt) { return x == x + 0 ? sprintf(fmt, x) : x }
    BEGIN { print f(a, "%.4f"), f(b, "%.4f"), f(t, "%.0f") }'
}

stage_smoke() {
  local eco=$build/eco_train prep=$build/eco_prepare
  [[ -x $eco ]] || { NOTE="no eco_train in $(basename "$build")"; return; }
  local help
  help=$(with_rt "$eco" --help-config 2>>"$LOG")
  if ! grep -q 'train\.device' <<<"$help"; then
    STATUS=SKIP NOTE="eco_train has no train.device key yet"
    return
  fi
  ((have_gpu)) || { STATUS=SKIP NOTE="no GPU"; return; }
  local data=${ECO_DATA:-$root/data} sets=() dsrc
  if [[ -f $data/tiny/train.bin && -f $data/tiny/val.bin && -f $data/tokenizer/encoder.json ]]; then
    sets=(--set "data.train=$data/tiny/train.bin" --set "data.val=$data/tiny/val.bin"
          --set "data.tokenizer_dir=$data/tokenizer")
    dsrc="Moby-Dick GPT-2 shards"
  else
    # No corpus on the machine: byte-level shards of this repository's own text.
    local sd=$work/smoke/data train_txt val_txt
    mkdir -p "$sd"
    mapfile -t train_txt < <(find "$root/src" "$root/tests" -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' \) | sort)
    mapfile -t val_txt < <(find "$root/docs" -name '*.md' | sort)
    limited -t 60 "$prep" --tokenizer byte --out "$sd/train" "${train_txt[@]}" &&
      limited -t 60 "$prep" --tokenizer byte --out "$sd/val" "$root/README.md" "${val_txt[@]}" ||
      { NOTE="eco_prepare could not make byte shards"; return; }
    sets=(--set "data.train=$sd/train.bin" --set "data.val=$sd/val.bin" --set data.tokenizer=byte
          --set model.vocab_size=256)
    dsrc="byte shards of the repo's text"
  fi
  sets+=(--set "train.steps=$steps" --set "train.eval_every=$(((steps + 1) / 2))" --set train.checkpoint_every=$(((steps + 1) / 2))
         --set log.every=5)
  local rc first last tps
  echo "==== CUDA run" >>"$LOG"
  (with_rt limited -t 180 "$eco" --config "$root/configs/tiny_cpu.json" "${sets[@]}" --set train.device=cuda \
     --out "$work/smoke/cuda" --overwrite)
  rc=$?
  read -r first last tps < <(metrics_figures "$work/smoke/cuda/metrics.jsonl")
  NOTE="$dsrc, $steps steps: cuda loss $first -> $last, $tps tok/s"
  if ((rc != 0)); then
    NOTE="$NOTE; eco_train exited $rc$( ((rc == 124)) && echo ' (timeout)')"
    return
  fi
  if ! awk -v a="$first" -v b="$last" 'BEGIN { exit !(a == a + 0 && b == b + 0 && b < a) }'; then
    NOTE="$NOTE; loss did not fall (or is not finite)"
    return
  fi
  STATUS=PASS
  echo "==== CPU run (same config, for comparison)" >>"$LOG"
  if (with_rt limited -t 120 "$eco" --config "$root/configs/tiny_cpu.json" "${sets[@]}" --set train.device=cpu \
        --out "$work/smoke/cpu" --overwrite); then
    read -r first last tps < <(metrics_figures "$work/smoke/cpu/metrics.jsonl")
    NOTE="$NOTE; cpu loss $first -> $last, $tps tok/s"
  else
    NOTE="$NOTE; the CPU comparison run failed or timed out (not counted)"
  fi
  cp "$work/smoke/cuda/metrics.jsonl" "$logs/smoke_cuda_metrics.jsonl" 2>/dev/null
  cp "$work/smoke/cpu/metrics.jsonl" "$logs/smoke_cpu_metrics.jsonl" 2>/dev/null
}

stage_cpu_tests() {
  # Tests run side by side, two OpenMP threads each: one test per core with every test spreading
  # over all cores would oversubscribe the machine many times over.
  local args par=$(((jobs + 1) / 2))
  case $cpu_mode in
    none) STATUS=SKIP NOTE="--cpu-tests none"; return ;;
    all) args=(-E cuda -j"$par" --timeout 900) ;;
    fast) args=(-E "cuda|$slow_tests" -j"$par" --timeout 120) ;;  # ctest takes one -E
  esac
  OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1 ctest_run "${args[@]}"
  NOTE="$C_PASS passed, $C_FAIL failed, $C_SKIP skipped of $C_TOTAL ($cpu_mode subset)"
  [[ -n $C_FAILED ]] && NOTE="$NOTE; failed: $C_FAILED"
  if ((C_TIMEDOUT)); then
    # "If time allows": a run cut by the budget is reported, not failed, when nothing failed.
    NOTE="$NOTE; cut at the stage deadline"
    ((C_FAIL > 0)) && return
    STATUS=SKIP
    return
  fi
  if ((C_FAIL > 0 || C_TOTAL == 0)); then return; fi
  STATUS=PASS
}

# ---- main ---------------------------------------------------------------------------------------
say "repo $root, build $build${prebuilt:+ (prebuilt)}, out $outdir, budget ${budget}s, hard limit ${hard}s, $jobs jobs"
run_stage gpu_info 60 stage_gpu_info 0
run_stage deps 150 stage_deps 0
build_ok=0
if [[ -n $prebuilt ]]; then
  if prebuilt_check; then
    record configure SKIP 0 "--prebuilt $prebuilt"
    record build SKIP 0 "--prebuilt $prebuilt"
    build_ok=1
  else
    record configure FAIL 0 "--prebuilt $prebuilt: no CMakeCache.txt there"
  fi
else
  run_stage configure "$build_timeout" stage_configure 0
  if [[ ${statuses[-1]} == PASS ]]; then
    run_stage build "$build_timeout" stage_build 0
    [[ ${statuses[-1]} == PASS ]] && build_ok=1
  else
    record build SKIP 0 "configure did not pass"
  fi
fi
if ((build_ok)); then
  run_stage gpu_tests 300 stage_gpu_tests 1
  run_stage bench 300 stage_bench 1
  run_stage smoke 300 stage_smoke 1
  run_stage cpu_tests 600 stage_cpu_tests 0
else
  for s in gpu_tests bench smoke cpu_tests; do record "$s" SKIP 0 "no usable build"; done
fi

rc=0
for s in "${statuses[@]}"; do [[ $s == FAIL ]] && rc=1; done
((rc == 0 && budget_cut)) && rc=3
write_summary
# Back to the original stdout: tee sees its input close and finishes console.log first.
exec 1>&3 2>&4
wait "$tee_pid" 2>/dev/null
{
  echo
  cat "$outdir/summary.txt"
  echo "gpu_check: exit $rc; files in $outdir: $(cd "$outdir" && ls | paste -sd' ' -)"
} | tee -a "$outdir/console.log"
[[ -n ${OUT:-} ]] && rm -rf "$work"
exit $rc
