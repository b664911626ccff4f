#!/bin/sh
# lanmon agent installer, served by a lanmon server at GET /install.sh.
#
# The server prints, at start, one command per address that downloads this script, checks
# its SHA-256 and only then runs it:
#   sh install.sh --from http://SERVER:8081 --agent-sha256 HEX [OPTIONS] [AGENT FLAGS...]
# It downloads the server's agent binary (GET /download/agent), checks it against
# --agent-sha256 and installs nothing that does not match; then it runs
# `agent install [OPTIONS] AGENT FLAGS...`: a systemd service (see `agent install --help`).
# Without --host or --discover among the agent flags it adds --discover.
#
# OPTIONS: --root DIR (write into DIR, run nothing), --bin-dir DIR, --dry-run (show the plan).
# Needs: a POSIX sh (dash, bash, busybox), curl or wget, and sha256sum (coreutils, busybox)
# or openssl. Set TMPDIR if /tmp is mounted noexec.
set -u

say() { printf 'lanmon install: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

usage() {
    sed -n '2,15s/^# \{0,1\}//p' "$0" 2>/dev/null ||
        echo "usage: sh install.sh --from URL --agent-sha256 HEX [--root DIR] [--bin-dir DIR] [--dry-run] [AGENT FLAGS...]"
}

from='' sum='' root='' bindir='' dry='' target=''
n=$#
while [ "$n" -gt 0 ]; do
    arg=$1
    shift
    n=$((n - 1))
    case $arg in
    --from | --agent-sha256 | --root | --bin-dir)
        [ "$n" -gt 0 ] || die "$arg needs a value"
        val=$1
        shift
        n=$((n - 1))
        case $arg in
        --from) from=$val ;;
        --agent-sha256) sum=$val ;;
        --root) root=$val ;;
        --bin-dir) bindir=$val ;;
        esac
        ;;
    --from=*) from=${arg#*=} ;;
    --agent-sha256=*) sum=${arg#*=} ;;
    --root=*) root=${arg#*=} ;;
    --bin-dir=*) bindir=${arg#*=} ;;
    --dry-run) dry=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    --host | --host=* | --discover)
        target=1
        set -- "$@" "$arg"
        ;;
    *) set -- "$@" "$arg" ;;
    esac
done

case $from in
http://?* | https://?*) from=${from%/} ;;
*) die "--from must be the server's URL, e.g. --from http://10.0.0.5:8081 (got '$from')" ;;
esac
sum=$(printf '%s' "$sum" | tr 'A-F' 'a-f')
case $sum in
*[!0-9a-f]* | '') die "--agent-sha256 must be 64 hex digits (copy the whole command from the server's console)" ;;
esac
[ "${#sum}" -eq 64 ] || die "--agent-sha256 must be 64 hex digits (got ${#sum})"

if [ -z "$root" ] && [ -z "$dry" ] && [ "$(id -u)" != 0 ]; then
    die "run this as root (it installs a system service), or add --dry-run to see what it would do"
fi

fetch() { # URL FILE
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --retry 3 -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2" "$1"
    else
        die "neither curl nor wget is installed: install one of them"
    fi
}

sha256_of() { # FILE: prints the lowercase hex SHA-256
    if command -v sha256sum >/dev/null 2>&1; then
        out=$(sha256sum "$1") || return 1
    elif command -v busybox >/dev/null 2>&1 && busybox sha256sum "$1" >/dev/null 2>&1; then
        out=$(busybox sha256sum "$1") || return 1
    elif command -v openssl >/dev/null 2>&1; then
        out=$(openssl dgst -sha256 -r "$1") || return 1
    else
        die "no SHA-256 tool found (sha256sum, busybox or openssl): install coreutils"
    fi
    printf '%s\n' "${out%% *}" | tr 'A-F' 'a-f'
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lanmon-install.XXXXXX") || die "cannot create a temporary directory"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP

url=$from/download/agent
say "downloading $url"
fetch "$url" "$tmp/agent" || die "cannot download $url (is the server running? does it offer an agent: see its banner)"
got=$(sha256_of "$tmp/agent") || die "cannot compute the SHA-256 of the download"
if [ "$got" != "$sum" ]; then
    die "REFUSED: the agent from $url has SHA-256 $got, but the command expects $sum. Nothing was installed. The download was changed on the way, or the server now offers another build: copy the install command from the server's console again."
fi
chmod 755 "$tmp/agent"
if ! "$tmp/agent" --version >/dev/null 2>&1; then
    die "the downloaded agent does not run here ($(uname -m)): the server offers the agent built for its own platform (or ${TMPDIR:-/tmp} is mounted noexec: set TMPDIR)"
fi
say "agent checked: SHA-256 $sum"

[ -n "$target" ] || set -- --discover "$@"
[ -z "$bindir" ] || set -- --bin-dir "$bindir" "$@"
[ -z "$root" ] || set -- --root "$root" "$@"
[ -z "$dry" ] || set -- --dry-run "$@"
say "running: agent install $*"
"$tmp/agent" install "$@"
status=$?
exit "$status"
