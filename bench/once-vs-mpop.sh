#!/bin/sh
# Kept for old habits: "pophook once" against mpop to a Maildir with DELE,
# now one scenario of bench/run.sh (see there; extra arguments go to it).
exec "$(dirname "$0")/run.sh" -only maildir "$@"
