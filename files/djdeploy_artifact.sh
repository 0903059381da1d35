#!/bin/bash
# Artifacts on a server: a tree built here packed once, and installed elsewhere whole or not at
# all. Bash and coreutils, tar, zstd and curl only: it runs before any Python is installed.
#
#   djdeploy_artifact.sh pack TREE ARCHIVE
#       Pack TREE (for example /opt/pyenv/versions/3.11.2) into ARCHIVE, a zstd-compressed tar
#       whose one top folder is TREE's name, written under a temporary name and then renamed.
#       Prints "<sha256> <bytes>" of ARCHIVE.
#
#   djdeploy_artifact.sh install TREE SHA256 SOURCE -- CHECK...
#       SOURCE is an archive file (removed afterwards) or an http(s) URL of one. It must have
#       the sha256 SHA256; it is unpacked into a temporary folder next to TREE, renamed into
#       place, and proven by running CHECK. On any failure TREE is as it was before and one line
#       "artifact: <reason>" goes to stderr, exit status 3.
set -euo pipefail

WORK_PREFIX=.djdeploy-artifact-
WORK=""     # the temporary folder of an install, removed on exit
CONSUMED="" # an uploaded archive, removed on exit

cleanup() {
    if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
    if [ -n "$CONSUMED" ]; then rm -f "$CONSUMED"; fi
}
trap cleanup EXIT

fail() {
    echo "artifact: $*" >&2
    exit 3
}

pack() {
    [ $# -eq 2 ] || usage
    local tree=${1%/} archive=$2
    [ -d "$tree" ] || fail "no folder $tree to pack"
    mkdir -p "$(dirname "$archive")"
    # POSIX (pax) format: modification times to the nanosecond, without access/change times.
    tar -C "$(dirname "$tree")" --format=posix --pax-option=delete=atime,delete=ctime \
        -cf - "$(basename "$tree")" | zstd -q -T0 -3 >"$archive.part"
    mv -f "$archive.part" "$archive"
    printf '%s %s\n' "$(sha256sum "$archive" | cut -d' ' -f1)" "$(stat -c %s "$archive")"
}

install_tree() {
    [ $# -ge 5 ] && [ "$4" = "--" ] || usage
    local tree=${1%/} sha=$2 source=$3
    shift 4
    local parent base work archive
    parent=$(dirname "$tree")
    base=$(basename "$tree")
    mkdir -p "$parent"
    # Leftovers of an install that was interrupted are never a tree anyone uses.
    rm -rf "$parent/$WORK_PREFIX"*
    work=$(mktemp -d "$parent/${WORK_PREFIX}XXXXXX")
    WORK=$work
    case $source in
        http://* | https://*)
            archive=$work/archive
            curl -fsSL --retry 2 --connect-timeout 20 -o "$archive" "$source" 2>"$work/curl.err" \
                || fail "download failed: $(tail -n 1 "$work/curl.err")"
            ;;
        *)
            archive=$source
            CONSUMED=$archive
            [ -f "$archive" ] || fail "no archive at $archive"
            ;;
    esac
    local actual
    actual=$(sha256sum "$archive" | cut -d' ' -f1)
    [ "$actual" = "$sha" ] \
        || fail "sha256 mismatch: the archive has ${actual:0:12}, its manifest says ${sha:0:12}" \
                "(a corrupt or changed file)"
    zstd -dcq "$archive" 2>"$work/unpack.err" | tar -xf - -C "$work" 2>>"$work/unpack.err" \
        || fail "cannot unpack the archive: $(tail -n 1 "$work/unpack.err")"
    [ -d "$work/$base" ] || fail "the archive holds no folder $base"
    if [ -e "$tree" ] || [ -L "$tree" ]; then
        mv "$tree" "$work/previous"
    fi
    mv "$work/$base" "$tree"
    local out
    if ! out=$("$@" 2>&1); then
        rm -rf "$tree"
        if [ -e "$work/previous" ] || [ -L "$work/previous" ]; then
            mv "$work/previous" "$tree"
        fi
        fail "the unpacked tree failed its check ($*): $(printf '%s\n' "$out" | tail -n 1)"
    fi
    echo "installed $tree: $(printf '%s\n' "$out" | tail -n 1)"
}

usage() {
    echo "usage: $0 pack TREE ARCHIVE | install TREE SHA256 SOURCE -- CHECK..." >&2
    exit 2
}

case ${1:-} in
    pack) shift; pack "$@" ;;
    install) shift; install_tree "$@" ;;
    *) usage ;;
esac
