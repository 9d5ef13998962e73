"""Tutor plugin: runs Coordinator next to an Open edX platform.

    pip install -e deploy/tutor && tutor plugins enable coordinator
    tutor config save && tutor local launch

It adds coordinator-api and coordinator-worker to the local docker-compose
deployment, on Tutor's Redis (DB 2; Tutor uses 0 and 1), and an LMS init task
that creates the staff service user and the client-credentials OAuth
application the worker uses (LMS.md section 8).
"""

from tutor import hooks

hooks.Filters.CONFIG_DEFAULTS.add_items(
    [
        ("COORDINATOR_VERSION", "latest"),
        ("COORDINATOR_DOCKER_IMAGE", "ghcr.io/openedx/coordinator:{{ COORDINATOR_VERSION }}"),
        ("COORDINATOR_PORT", "8140"),
        ("COORDINATOR_OAUTH2_CLIENT_ID", "coordinator-worker"),
        ("COORDINATOR_SERVICE_USER", "coordinator_worker"),
        ("COORDINATOR_REDIS_DB", "2"),
    ]
)
hooks.Filters.CONFIG_UNIQUE.add_items(
    [
        ("COORDINATOR_OAUTH2_CLIENT_SECRET", "{{ 32|random_string }}"),
    ]
)

_ENV = """
      HTTP_ADDR: "0.0.0.0:{{ COORDINATOR_PORT }}"
      REDIS_URL: "redis://{{ REDIS_HOST }}:{{ REDIS_PORT }}/{{ COORDINATOR_REDIS_DB }}"
      LMS_URL: "http://lms:8000"
      LMS_CLIENT_ID: "{{ COORDINATOR_OAUTH2_CLIENT_ID }}"
      LMS_CLIENT_SECRET: "{{ COORDINATOR_OAUTH2_CLIENT_SECRET }}"
      JWT_ISSUER: "{{ JWT_COMMON_ISSUER }}"
      JWT_AUDIENCE: "{{ JWT_COMMON_AUDIENCE }}"
      JWT_SECRET_KEY: "{{ JWT_COMMON_SECRET_KEY }}"
      DATABASE_URL: ""
      COORDINATOR_SECRET_KEY: ""
      MEMCACHED_ADDR: ""
"""

hooks.Filters.ENV_PATCHES.add_item(
    (
        "local-docker-compose-services",
        """
coordinator-api:
    image: {{ COORDINATOR_DOCKER_IMAGE }}
    command: ["api"]
    restart: unless-stopped
    stop_grace_period: 40s
    environment:"""
        + _ENV
        + """
    ports:
      - "127.0.0.1:{{ COORDINATOR_PORT }}:{{ COORDINATOR_PORT }}"
    depends_on: [redis, lms]
coordinator-worker:
    image: {{ COORDINATOR_DOCKER_IMAGE }}
    command: ["worker"]
    restart: unless-stopped
    stop_grace_period: 40s
    environment:"""
        + _ENV
        + """
    depends_on: [redis, lms]
""",
    )
)

# Runs in the LMS container on `tutor local do init`.
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
