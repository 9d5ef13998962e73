"""Tutor plugin: runs Coordinator next to an Open edX platform.

    pip install -e deploy/tutor && tutor plugins enable coordinator
    tutor config save && tutor local launch     (or: tutor k8s launch)

It adds coordinator-api and coordinator-worker, on a Redis of their own
(every write on disk before it is acknowledged, nothing ever evicted: Tutor's
Redis is an LRU cache shared with the LMS), published by Caddy on
COORDINATOR_HOST, and an LMS init task that creates the staff service user
and the client-credentials OAuth application the worker uses. Every tier and
secret is a COORDINATOR_* setting (deploy/README.md lists them), and so are
the shops (COORDINATOR_INTEGRATIONS) and subscribers (COORDINATOR_WEBHOOKS).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from glob import glob

import importlib_resources
from tutor import hooks

from .__about__ import __version__

hooks.Filters.CONFIG_DEFAULTS.add_items(
    [
        ("COORDINATOR_VERSION", __version__),
        ("COORDINATOR_DOCKER_IMAGE", "ghcr.io/openedx/coordinator:{{ COORDINATOR_VERSION }}"),
        # Where `tutor images build coordinator` takes the source from
        # (or `tutor mounts add /path/to/coordinator`).
        ("COORDINATOR_REPOSITORY", "https://github.com/openedx/coordinator.git"),
        ("COORDINATOR_REPOSITORY_VERSION", "v{{ COORDINATOR_VERSION }}"),
        # Shops POST orders to https://COORDINATOR_HOST/orders/fulfill.
        ("COORDINATOR_HOST", "coordinator.{{ LMS_HOST }}"),
        ("COORDINATOR_DEV_PORT", 8140),
        ("COORDINATOR_API_REPLICAS", 1),
        # Workers x rate <= the LMS's throttle for the service user (120/min
        # unless raised): more only collects 429s.
        ("COORDINATOR_WORKER_REPLICAS", 1),
        ("COORDINATOR_LMS_RATE_PER_MINUTE", 120),
        ("COORDINATOR_OAUTH2_CLIENT_ID", "coordinator-worker"),
        ("COORDINATOR_SERVICE_USER", "coordinator_worker"),
        # The queue's own Redis; set COORDINATOR_RUN_REDIS: false and
        # COORDINATOR_REDIS_URL to use another (persistent, noeviction) one.
        ("COORDINATOR_RUN_REDIS", True),
        ("COORDINATOR_REDIS_DOCKER_IMAGE", "{{ DOCKER_IMAGE_REDIS }}"),
        ("COORDINATOR_REDIS_URL", "redis://coordinator-redis:6379/0"),
        ("COORDINATOR_REDIS_MAXMEMORY", "0"),
        ("COORDINATOR_REDIS_STORAGE", "1Gi"),
        # Optional tiers, off when empty: a Postgres URL (ledger, reconciler,
        # sites; migrated before the API and workers start) and memcached
        # host:port (one token cache for every process).
        ("COORDINATOR_DATABASE_URL", ""),
        ("COORDINATOR_MEMCACHED_ADDR", ""),
        # The queue dashboard at https://COORDINATOR_HOST/admin/queues/.
        ("COORDINATOR_ADMIN_USER", "ops"),
        # Shops posting webhooks, subscribers, and the signal map: the
        # config file's integrations:, webhooks: and signals: sections, as
        # YAML values (docs/integrations.md). Secrets are written there as
        # ${NAME}, and COORDINATOR_SECRET_ENV gives each NAME its value: the
        # containers get them as environment variables (Kubernetes: from the
        # Secret), never in the config file or its ConfigMap.
        ("COORDINATOR_INTEGRATIONS", []),
        ("COORDINATOR_WEBHOOKS", []),
        ("COORDINATOR_SIGNALS", {}),
        ("COORDINATOR_SECRET_ENV", {}),
    ]
)
hooks.Filters.CONFIG_UNIQUE.add_items(
    [
        ("COORDINATOR_OAUTH2_CLIENT_SECRET", "{{ 32|random_string }}"),
        ("COORDINATOR_ADMIN_PASSWORD", "{{ 24|random_string }}"),
        ("COORDINATOR_SECRET_KEY", "{{ 32|coordinator_hex }}"),
    ]
)


def _bcrypt(password: str) -> str:
    """A bcrypt hash of password (cost 10) whose salt derives from it, so that
    rendering the environment again does not change it."""
    from Crypto.Protocol.KDF import bcrypt  # Tutor depends on pycryptodome

    salt = hashlib.sha256(("coordinator:" + password).encode()).digest()[:16]
    return bcrypt(password.encode(), 10, salt).decode()


def _hex(nbytes: int) -> str:
    return secrets.token_hex(nbytes)


hooks.Filters.ENV_TEMPLATE_FILTERS.add_items(
    [("coordinator_bcrypt", _bcrypt), ("coordinator_hex", _hex)]
)

# The image: pulled, pushed, or built from COORDINATOR_REPOSITORY.
hooks.Filters.IMAGES_BUILD.add_item(
    (
        "coordinator",
        ("plugins", "coordinator", "build", "coordinator"),
        "{{ COORDINATOR_DOCKER_IMAGE }}",
        (),
    )
)
hooks.Filters.IMAGES_PULL.add_item(("coordinator", "{{ COORDINATOR_DOCKER_IMAGE }}"))
hooks.Filters.IMAGES_PUSH.add_item(("coordinator", "{{ COORDINATOR_DOCKER_IMAGE }}"))


@hooks.Filters.IMAGES_BUILD_MOUNTS.add()
def _build_from_checkout(mounts: list[tuple[str, str]], path: str) -> list[tuple[str, str]]:
    if os.path.basename(path) == "coordinator":
        mounts.append(("coordinator-src", path))
    return mounts


@hooks.Filters.APP_PUBLIC_HOSTS.add()
def _public_hosts(hosts: list[str], context_name: str) -> list[str]:
    if context_name == "local":
        hosts.append("{{ COORDINATOR_HOST }}")
    return hosts


hooks.Filters.ENV_TEMPLATE_ROOTS.add_item(
    str(importlib_resources.files("tutorcoordinator") / "templates")
)
# coordinator/apps/config/coordinator.yaml: the config file, mounted into
# the containers (local) or made a ConfigMap (k8s).
hooks.Filters.ENV_TEMPLATE_TARGETS.add_items([("coordinator/build", "plugins"), ("coordinator/apps", "plugins")])

# Runs in the LMS container on `tutor local|k8s do init`.
hooks.Filters.CLI_DO_INIT_TASKS.add_item(
    (
        "lms",
        """
./manage.py lms manage_user {{ COORDINATOR_SERVICE_USER }} {{ COORDINATOR_SERVICE_USER }}@coordinator.invalid --staff
./manage.py lms create_dot_application \\
    --grant-type client-credentials \\
    --client-id {{ COORDINATOR_OAUTH2_CLIENT_ID }} \\
    --client-secret {{ COORDINATOR_OAUTH2_CLIENT_SECRET }} \\
    --update \\
    coordinator-worker {{ COORDINATOR_SERVICE_USER }}
""",
    )
)

# Each file in patches/ is the Tutor patch of the same name.
for _path in glob(str(importlib_resources.files("tutorcoordinator") / "patches" / "*")):
    with open(_path, encoding="utf-8") as _f:
        hooks.Filters.ENV_PATCHES.add_item((os.path.basename(_path), _f.read()))
