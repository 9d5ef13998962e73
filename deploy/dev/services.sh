#!/usr/bin/env bash
# Makes sure the services Coordinator's tests and local trial need are up on
# this machine: Redis and PostgreSQL (started if not answering) and memcached
# (installed from Debian's packages and started if missing; not with
# --no-memcached, which `make run` passes when its config does not use it,
# while `make test` needs it); with --browser
# Debian's Chromium for the dashboard's browser test, and with --tools the
# tools the deployment tests run (kubectl, promtool, systemd-analyze) and
# the interpreters of the subscriber docs' snippets (python3, node, php) and
# Jinja2 for rendering the Tutor plugin.
# Idempotent; a service already answering is left alone.
set -eu

browser=no tools=no memcached=yes
for arg in "$@"; do
	case $arg in
	--no-memcached) memcached=no ;;
	--browser) browser=yes ;;
	--tools) tools=yes ;;
	*) echo "services: unknown flag $arg" >&2; exit 2 ;;
	esac
done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

wait_for() { # name, check command...
	name=$1; shift
	i=0
	until "$@" >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -gt 50 ]; then echo "services: $name did not come up" >&2; exit 1; fi
		sleep 0.2
	done
	echo "services: $name OK"
}

# A Redis already answering (the machine's own, shared) is never restarted.
# One started here keeps an append-only file, as a trial's queue should
# (fsync every second: production uses always, see deploy/README.md).
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
	echo "services: starting Redis"
	as_root mkdir -p /var/lib/redis /var/log/redis
	as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
		--appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
		--dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping

if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
	echo "services: starting PostgreSQL"
	as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432

apt_install() { # package...
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
		as_root apt-get update -q >/dev/null
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
	}
}

if [ "$memcached" = yes ] && ! command -v memcached >/dev/null 2>&1; then
	echo "services: installing memcached"
	apt_install memcached
fi
# Debian's Chromium runs the queue dashboard's browser test (--browser).
if [ "$browser" = yes ] && [ ! -x /usr/bin/chromium ]; then
	echo "services: installing chromium"
	apt_install chromium
fi
# The deployment tests validate deploy/ with the tools operators run.
# kubectl may come from another package (this kind of machine has one);
# only a missing command is installed. Services are not started by these
# packages' installs where policy-rc.d forbids it, and prometheus's own
# server is not needed: only its promtool.
if [ "$tools" = yes ]; then
	missing=""
	command -v kubectl >/dev/null 2>&1 || missing="$missing kubernetes-client"
	command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
	command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
	# The subscriber docs' signature snippets run in Python, Node and PHP.
	command -v python3 >/dev/null 2>&1 || missing="$missing python3"
	# The Tutor plugin's render test uses Jinja2, as Tutor does.
	python3 -c 'import jinja2' >/dev/null 2>&1 || missing="$missing python3-jinja2"
	command -v node >/dev/null 2>&1 || missing="$missing nodejs"
	command -v php >/dev/null 2>&1 || missing="$missing php-cli"
	if [ -n "$missing" ]; then
		echo "services: installing$missing"
		# shellcheck disable=SC2086
		apt_install --no-install-recommends $missing
	fi
	for tool in kubectl promtool systemd-analyze python3 node php; do
		command -v $tool >/dev/null 2>&1 || { echo "services: $tool missing after install" >&2; exit 1; }
	done
	python3 -c 'import jinja2' 2>/dev/null || { echo "services: python3-jinja2 missing after install" >&2; exit 1; }
	echo "services: deployment tools OK"
fi
if [ "$memcached" = yes ]; then
	if ! (exec 3<>/dev/tcp/127.0.0.1/11211) 2>/dev/null; then
		echo "services: starting memcached"
		as_root memcached -d -u memcache -l 127.0.0.1 -p 11211 -m 64 || as_root memcached -d -u root -l 127.0.0.1 -p 11211 -m 64
	fi
	wait_for memcached bash -c 'exec 3<>/dev/tcp/127.0.0.1/11211'
fi
