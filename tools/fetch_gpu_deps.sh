#!/usr/bin/env bash
# Makes deps/prefix: the Debian packages eco_train builds against, unpacked into a folder that can
# travel to a machine that has a compiler, CUDA, CMake and ninja but none of these packages and no
# network (the lent GPU machine; see docs/gpu.md). Run it HERE, on a Debian bookworm amd64 machine
# with apt; it never installs anything and never writes outside deps/.
#
#   tools/fetch_gpu_deps.sh [--force]
#
#   deps/debs/     the .deb files (apt-get download; kept, not carried)
#   deps/prefix/   each .deb unpacked with dpkg -x, minus docs, man pages and static
#                  libraries; Debian's update-alternatives links for OpenBLAS recreated inside it;
#                  absolute symlinks made relative; bin/pkg-config, a wrapper around the carried
#                  pkgconf for machines without one; MANIFEST.txt (package versions, sizes)
#   deps/carry/prefix.tar.xz   the same prefix, compressed (6 MB instead of 42 MB): carry the
#                  folder deps/carry; tools/gpu_check.sh unpacks it into deps/prefix when that is
#                  missing or stale
#
# Idempotent: debs already in deps/debs are not downloaded again, and the prefix is rebuilt only
# when the set of debs changed (or with --force). Prints the prefix's size at the end.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
deps=$root/deps
debs=$deps/debs
prefix=$deps/prefix
force=0
case ${1:-} in
  --force) force=1 ;;
  "") ;;
  -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "fetch_gpu_deps: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

say() { echo "fetch_gpu_deps: $*"; }
die() { echo "fetch_gpu_deps: error: $*" >&2; exit 1; }

# The build needs (CMakeLists.txt): nlohmann_json, spdlog (+ fmt), Catch2 v2 (catch2/catch.hpp),
# OpenBLAS (cblas.h, libopenblas.so), pcre2-8 through pkg-config. Runtime closure of the shared
# libraries, minus what any Linux with a C++ compiler has (libc6, libstdc++6, libgcc-s1, libgomp1):
# libfmt9 (spdlog), libgfortran5 + libquadmath0 (OpenBLAS). pkgconf-bin + libpkgconf3: a
# pkg-config for machines without one. libpcre2-dev's 16/32-bit and POSIX runtimes are left out:
# only libpcre2-8 is linked (their dangling .so links and .pc files are removed).
pkgs=(nlohmann-json3-dev libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 catch2
      libopenblas-pthread-dev libopenblas0-pthread libgfortran5 libquadmath0
      libpcre2-dev libpcre2-8-0 pkgconf-bin libpkgconf3)

for tool in apt-get dpkg dpkg-deb; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found: run this on a Debian machine"
done
arch=$(dpkg --print-architecture)
[[ $arch == amd64 ]] || die "this machine is $arch; the GPU machine is amd64 (x86-64): run this on an amd64 Debian"

mkdir -p "$debs"
missing=()
for p in "${pkgs[@]}"; do
  compgen -G "$debs/${p}_*_*.deb" >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
  say "downloading ${missing[*]}"
  # apt-get download writes into the current directory. When run as root, apt's _apt user may not
  # be able to write there; that is only a warning.
  if ! (cd "$debs" && apt-get download "${missing[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed'); then
    die "apt-get download failed (stale package lists? try: apt-get update)"
  fi
  for p in "${missing[@]}"; do
    compgen -G "$debs/${p}_*_*.deb" >/dev/null || die "no .deb for $p after apt-get download"
  done
else
  say "all ${#pkgs[@]} debs already in deps/debs"
fi

# Only the debs of the current list (an older version left behind is ignored: the newest name wins).
sel=()
for p in "${pkgs[@]}"; do
  sel+=("$(ls "$debs/${p}"_*_*.deb | sort -V | tail -n1)")
done
# The stamp names the debs and this script's own text (how they were unpacked).
stamp=$( (for f in "${sel[@]}"; do basename "$f"; done; cat "$0") | sha256sum | cut -c1-16)

if [[ $force -eq 0 && -f $prefix/.stamp && $(cat "$prefix/.stamp") == "$stamp" ]]; then
  say "deps/prefix is up to date"
else
  say "unpacking ${#sel[@]} debs into deps/prefix"
  rm -rf "$prefix"
  mkdir -p "$prefix"
  for f in "${sel[@]}"; do dpkg -x "$f" "$prefix"; done

  # Not needed to build or run: documentation, man pages, lintian data, static libraries.
  rm -rf "$prefix/usr/share/doc" "$prefix/usr/share/man" "$prefix/usr/share/lintian" \
         "$prefix/usr/share/bug"
  find "$prefix" -name '*.a' -delete
  # OpenBLAS's reference-interface libblas.so.3 and liblapack.so.3 (7.7 MB): eco_train links
  # libopenblas.so only.
  rm -f "$prefix"/usr/lib/x86_64-linux-gnu/openblas-pthread/lib{blas,lapack}.so*

  # Absolute symlinks would point into the host's / once carried: make them relative.
  while IFS= read -r -d '' link; do
    target=$(readlink "$link")
    [[ $target == /* ]] || continue
    rel=$(realpath -m --relative-to="$(dirname "$link")" "$prefix$target")
    ln -sfn "$rel" "$link"
  done < <(find "$prefix" -type l -print0)

  # Debian points /usr/lib/<triplet>/libopenblas.so* at the pthread flavour through
  # update-alternatives (a postinst step dpkg -x does not run); recreate those links.
  lib=$prefix/usr/lib/x86_64-linux-gnu
  inc=$prefix/usr/include/x86_64-linux-gnu
  [[ -e $lib/openblas-pthread/libopenblas.so.0 ]] || die "libopenblas.so.0 missing in the prefix"
  ln -sfn openblas-pthread/libopenblas.so.0 "$lib/libopenblas.so.0"
  ln -sfn openblas-pthread/libopenblas.so "$lib/libopenblas.so"
  for h in cblas.h openblas_config.h f77blas.h lapack.h lapacke.h lapacke_config.h lapacke_mangling.h lapacke_utils.h; do
    [[ -e $inc/openblas-pthread/$h ]] && ln -sfn "openblas-pthread/$h" "$inc/$h"
  done

  # pkg-config for machines without one: the carried pkgconf with its library. Callers set
  # PKG_CONFIG_LIBDIR and PKG_CONFIG_SYSROOT_DIR (tools/gpu_check.sh does) so that the prefix's
  # .pc files (which say prefix=/usr) resolve into the prefix.
  mkdir -p "$prefix/bin"
  cat >"$prefix/bin/pkg-config" <<'EOF'
#!/bin/sh
# pkgconf from deps/prefix (tools/fetch_gpu_deps.sh), with its own libpkgconf.
here=$(cd "$(dirname "$0")/.." && pwd)
LD_LIBRARY_PATH="$here/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  exec "$here/usr/bin/pkgconf" "$@"
EOF
  chmod +x "$prefix/bin/pkg-config"

  # The pcre2 flavours whose runtimes are not carried.
  rm -f "$lib"/libpcre2-{16,32,posix}.so "$lib"/pkgconfig/libpcre2-{16,32,posix}.pc
  dangling=$(find "$prefix" -xtype l)
  [[ -z $dangling ]] || die "dangling links in the prefix: $dangling"

  {
    echo "# deps/prefix, made by tools/fetch_gpu_deps.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(. /etc/os-release && echo "$PRETTY_NAME")"
    for f in "${sel[@]}"; do
      dpkg-deb -f "$f" Package Version | paste -sd' '
    done
    echo "# highest glibc symbol version needed by the carried shared libraries:"
    find "$prefix" -name '*.so*' -type f -exec objdump -T {} + 2>/dev/null |
      grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1
  } >"$prefix/MANIFEST.txt"
  echo "$stamp" >"$prefix/.stamp"
  rm -f "$deps/carry/prefix.tar.xz"
fi

if [[ ! -f $deps/carry/prefix.tar.xz ]]; then
  say "compressing deps/prefix into deps/carry/prefix.tar.xz (a minute)"
  mkdir -p "$deps/carry"
  tar -C "$deps" -cf - prefix | xz -T0 -6 >"$deps/carry/prefix.tar.xz.tmp"
  mv "$deps/carry/prefix.tar.xz.tmp" "$deps/carry/prefix.tar.xz"
fi

size_kib=$(du -sk "$prefix" | cut -f1)
size_bytes=$(find "$prefix" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
say "deps/prefix: $(find "$prefix" -type f | wc -l) files, $((size_bytes / 1024)) KiB of file data ($size_kib KiB on disk)"
tar_bytes=$(stat -c %s "$deps/carry/prefix.tar.xz")
say "deps/carry/prefix.tar.xz: $((tar_bytes / 1024)) KiB (carry the folder deps/carry)"
say "deps/debs:   $(du -sk "$debs" | cut -f1) KiB (not carried)"
(( tar_bytes < 16 * 1024 * 1024 )) || die "deps/carry/prefix.tar.xz is over 16 MiB: too large to carry comfortably"
