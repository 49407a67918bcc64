#!/usr/bin/env bash
# Checks the layering rule of ARCHITECTURE.md on every #include "..." under src/:
#   lib  <-  core  <-  drivers, http  <-  cli  <-  src/*.c (main.c, daemon.c)
# A file may include its own layer and the layers below it; drivers and http, the
# surfaces, never include each other. Prints each edge against the rule; exits 1 if any.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rank() {
    case $1 in
    lib) echo 0 ;;
    core) echo 1 ;;
    drivers | http) echo 2 ;;
    cli) echo 3 ;;
    *) echo 4 ;;
    esac
}

bad=0
while IFS=: read -r file _ line; do
    target=$(sed -n 's/^#include "\([^"]*\)".*/\1/p' <<<"$line")
    [[ $target == */* ]] || continue # version.h, daemon.h: the top's own
    from=${file#src/}
    from=${from%%/*}
    [[ $file == src/*/* ]] || from=top
    to=${target%%/*}
    if (($(rank "$to") > $(rank "$from"))) ||
        { [[ $from != "$to" ]] && (($(rank "$to") == $(rank "$from"))); }; then
        echo "$file: includes $target ($from may not include $to)"
        bad=1
    fi
done < <(grep -rn '^#include "' src)
exit $bad
