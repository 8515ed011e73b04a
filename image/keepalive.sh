#!/bin/sh
# agentenv-keepalive: what a long-running environment container (agentenv up)
# runs once the entrypoint has set up its home.
#
# The file `up` in the handoff directory means "ready, and alive": this
# process holds an flock on it for as long as it lives, so the host can tell a
# live container from a dead one with no engine call (the lock goes with the
# process, also on SIGKILL). `agentenv up` waits for it, and wrappers exec
# straight into the container while it is held. A stop (SIGTERM, passed on by
# the container's init) removes the file first.
ready=/run/agentenv/handoff/up
trap 'rm -f "$ready"; exit 0' TERM INT HUP
# locked before it has its name: no one ever sees it unlocked while we live
exec 9>"$ready.new"
flock -x 9
mv -f "$ready.new" "$ready"
while :; do
	sleep infinity &
	wait $! || true
done
