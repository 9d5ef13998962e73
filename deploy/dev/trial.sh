#!/usr/bin/env bash
# What `make run` runs once the services are up and the binaries built: the
# fake LMS on $FAKELMS_ADDR and `coordinator all` on $COORDINATOR_ADDR with
# configs/coordinator.yaml (whose http.addr, lms.url and JWT issuer follow
# these variables). It refuses to start when either port is taken, naming
# the variable that moves it: Coordinator must never run against whatever
# else owns the LMS's port (a devstack LMS on 18000). Ctrl-C stops both.
set -eu
: "${COORDINATOR_ADDR:?}" "${FAKELMS_ADDR:?}"
config=${RUN_CONFIG:-configs/coordinator.yaml}

answers() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
taken() { # variable name, address
	echo "make run: port ${2##*:} ($1=$2) is taken by another program." >&2
	echo "          Stop it, or choose a free port: make run $1=${2%:*}:PORT" >&2
	exit 1
}
for var in COORDINATOR_ADDR FAKELMS_ADDR; do
	if answers "${!var}"; then taken "$var" "${!var}"; fi
done

bin/fakelms --addr "$FAKELMS_ADDR" &
fake=$!
trap 'kill $fake 2>/dev/null' EXIT
# Wait until the port answers. The fake LMS binds before anything else and
# exits at once when it cannot, so if it is still running a moment later,
# the port is its own; if it exited (another program took the port since
# the check above), stop here.
until answers "$FAKELMS_ADDR" || ! kill -0 $fake 2>/dev/null; do sleep 0.1; done
sleep 0.3
kill -0 $fake 2>/dev/null || taken FAKELMS_ADDR "$FAKELMS_ADDR"

echo "make run: the fake LMS on http://$FAKELMS_ADDR, Coordinator on http://$COORDINATOR_ADDR" >&2
COORDINATOR_DEV=1 bin/coordinator --config "$config" all
